"""Image files: which files are images, the file of an image name, why there is none, whether it reads.

IMAGE_EXTS are the extensions looked for (any case); files are decoded by content. An image
name without its file is explained by what is there (`ImageFolder.why_missing`): several
candidates, the file in a subfolder, a symlink to a missing file, a file of that name in a
format not read here, a name differing only in case. `check_header` opens a header only;
`check_complete` also finds files cut short (an interrupted copy): a file whose format's end
marker is missing is decoded in full, and only a file that does not decode completely is
refused, so a JPEG with data after its end marker (a phone's motion photo) is an image.
"""
import os
import unicodedata
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from utils.common.errors import DataError
from utils.data.bands import check_tiff_header, is_tiff
from utils.data.heif import HEIF_EXTS, heif_problem

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", *HEIF_EXTS)


def name_key(name):
    """An image name as a person sees it: Unicode NFC. macOS writes file names decomposed
    (NFD, 'e' + combining accent) while a CSV typed elsewhere holds them composed (NFC);
    every match of an image name against a file or another list goes through this."""
    return unicodedata.normalize("NFC", name)


def index_folder(folder):
    """Map file names in `folder` to Paths: by name and by stem (image files only), both keyed
    by `name_key` (NFC).

    Returns (by_name, by_stem); a stem shared by several files maps to None (ambiguous).
    Raises DataError naming both files when two names are equal after normalisation.
    """
    by_name, by_stem = {}, {}
    with os.scandir(folder) as it:
        for e in it:
            if not e.is_file():
                continue
            key = name_key(e.name)
            if key in by_name:
                raise DataError(f"{folder}: files {by_name[key].name!r} and {e.name!r} have the same name once "
                                f"Unicode-normalised (NFC; they differ only in how accents are encoded); "
                                f"rename or remove one of them")
            stem, ext = os.path.splitext(key)
            by_name[key] = Path(e.path)
            if ext.lower() in IMAGE_EXTS:
                by_stem[stem] = None if stem in by_stem else Path(e.path)
    return by_name, by_stem


def resolve_file(name, by_name, by_stem):
    """The file for an image_name with or without extension (matched by `name_key`), or None."""
    name = name_key(name)
    if name in by_name:
        return by_name[name]
    stem, ext = os.path.splitext(name)
    if ext.lower() in IMAGE_EXTS:  # a name like 'a.jpg' whose file is 'a.png'
        return by_stem.get(stem)
    return by_stem.get(name)


def files_by_stem(by_name):
    """stem -> sorted file names (image files only) of an index_folder by_name map."""
    out = {}
    for n in sorted(by_name):
        stem, ext = os.path.splitext(n)
        if ext.lower() in IMAGE_EXTS:
            out.setdefault(stem, []).append(n)
    return out


def _keys(name):
    """The keys an entry is found by: its name and, for an image file, its stem (NFC)."""
    key = name_key(name)
    stem, ext = os.path.splitext(key)
    return (key, stem) if ext.lower() in IMAGE_EXTS else (key,)


class ImageFolder:
    """The files of one image folder: the file of an image name, and why there is none.

    folder: Path; the index is read once (index_folder, DataError as it); what else lies there
    (subfolders, dangling symlinks, other files) is read only when a name has no file.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.by_name, self.by_stem = index_folder(self.folder)
        self._stems = self._elsewhere = None

    def resolve(self, name):
        """The file (Path) of image_name `name`, with or without extension; None when there is none."""
        return resolve_file(name, self.by_name, self.by_stem)

    def why_missing(self, name):
        """Why image_name `name` has no file here, saying what is there instead (one line)."""
        stem, ext = os.path.splitext(name_key(name))
        want = stem if ext.lower() in IMAGE_EXTS else name_key(name)
        self._stems = self._stems if self._stems is not None else files_by_stem(self.by_name)
        cands = self._stems.get(want, [])
        if len(cands) > 1:
            return (f"{len(cands)} candidate files for {name!r} in {self.folder}: {', '.join(cands)}; keep one of "
                    f"them, or write the extension in image_name (e.g. {cands[0]})")
        self._elsewhere = self._elsewhere if self._elsewhere is not None else self._look_elsewhere()
        nested, dangling, other, folded = self._elsewhere
        for key in dict.fromkeys((name_key(name), want)):
            if key in nested:
                return (f"no image file for {name!r} in {self.folder}: {self.folder / nested[key]} is in a subfolder; "
                        f"images must lie directly in {self.folder}/ (move them up)")
            if key in dangling:
                link, target = dangling[key]
                return (f"no image file for {name!r}: {self.folder / link} is a symlink to a missing file {target} "
                        f"(restore the file, or the link)")
            if key in other:
                found = other[key]
                return (f"no image file for {name!r} in {self.folder}: {found} is there, but "
                        f"{os.path.splitext(found)[1] or 'a file without extension'} is not an image format read "
                        f"here ({' '.join(IMAGE_EXTS)}); convert it (e.g. to .png)")
            if key.casefold() in folded:
                return (f"no image file for {name!r} in {self.folder}: {folded[key.casefold()]} differs only in "
                        f"case; rename the file or the row")
        return f"no image file for {name!r} in {self.folder}"

    def nested_images(self):
        """Image files in subfolders (Paths relative to the folder, sorted), which are not read.
        Only the subfolders are walked (not hidden ones: the image cache, .git)."""
        with os.scandir(self.folder) as it:
            subs = sorted(e.path for e in it if e.is_dir() and not e.name.startswith("."))
        return [Path(top, f).relative_to(self.folder) for sub in subs for top, dirs, files in os.walk(sub)
                for f in sorted(files) if os.path.splitext(f)[1].lower() in IMAGE_EXTS]

    def _look_elsewhere(self):
        """(files in subfolders, dangling symlinks, files of other formats, names by casefold),
        each keyed by name and image stem (NFC)."""
        nested, dangling, other, folded = {}, {}, {}, {}
        for top, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # not the image cache, not .git
            for f in sorted(files):
                path = Path(top) / f
                if Path(top) != self.folder:
                    for key in _keys(f):
                        nested.setdefault(key, path.relative_to(self.folder))
                elif path.is_symlink() and not path.exists():
                    for key in _keys(f):
                        dangling.setdefault(key, (f, os.readlink(path)))
                elif os.path.splitext(f)[1].lower() not in IMAGE_EXTS:
                    other.setdefault(name_key(os.path.splitext(f)[0]), f)
                    other.setdefault(name_key(f), f)
                else:
                    for key in _keys(f):
                        folded.setdefault(key.casefold(), f)
        return nested, dangling, other, folded


def check_header(path):
    """Open an image's header only (no pixel decode). Returns a problem string or None."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"{path}: a symlink to a missing file {os.readlink(path)} (restore the file, or the link)"
    if problem := heif_problem(path):
        return problem
    try:
        if os.path.getsize(path) == 0:
            return f"{path}: empty file"
        if is_tiff(path):  # PIL cannot open many multi-band or 16-bit TIFFs; tifffile reads them
            return check_tiff_header(path)
        with Image.open(path) as im:
            w, h = im.size
        if w == 0 or h == 0:
            return f"{path}: image has zero size"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return f"{path}: not a readable image ({type(e).__name__}: {e})"
    return None


# What a complete file of each format ends with (after any zero/whitespace padding). A file
# without it is decoded in full to tell a file cut short from one with data after the marker.
_ENDINGS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",), "GIF": (b";",)}


def check_complete(path):
    """Whether an image file is complete: its header reads, and it decodes to the end.

    Cheap for a usual file (the header and the last bytes); a JPEG, PNG or GIF whose end
    marker is missing is decoded in full (PIL, truncated images not tolerated): only one that
    does not decode completely is a problem. Returns a problem string or None.
    """
    problem = check_header(path)
    if problem or is_tiff(path):  # a TIFF has no end marker (and PIL cannot open many)
        return problem
    try:
        with Image.open(path) as im:
            fmt = im.format
        if fmt not in _ENDINGS:
            return None
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            tail = f.read().rstrip(b"\x00 \r\n\t")
    except OSError as e:
        return f"{path}: cannot read ({e})"
    if tail.endswith(_ENDINGS[fmt]):
        return None
    return decode_problem(path, fmt)


def decode_problem(path, fmt="image"):
    """None when every frame of the image at `path` decodes completely, else why not ('truncated ...')."""
    strict, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(path) as im:
            for frame in range(getattr(im, "n_frames", 1)):
                im.seek(frame)
                im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return f"{path}: truncated {fmt}: it does not decode completely ({type(e).__name__}: {e})"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = strict
    return None
