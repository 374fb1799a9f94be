"""File checksums: what a run records of an input file (pseudo-labels, teachers, weights) so that
a resume or a rebuild can tell whether it is still the same file."""
import hashlib


def file_sha256(path):
    """Hex SHA-256 (str, 64 chars) of the file at `path`, read in 1 MiB blocks.

    Raises OSError when the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
