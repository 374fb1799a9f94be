"""Atomic file writes, tolerant text reading, the project's error type, the prediction-file format.

Every file another script reads (checkpoints, predictions, records) is written to a
temporary name in the same folder, fsynced, then moved into place with os.replace,
so a reader sees the old file or the new one, never half of one.

Every text file the project reads (CSV, labels.txt, folds, configs, prediction files,
path maps) goes through `read_text` (or `read_csv` / `read_lines` / `read_json` built on
it), so all of them tolerate the same things: a UTF-8 byte-order mark (Excel, Notepad),
Windows (CRLF) or old Mac (CR) line ends, and whitespace around names and values.
"""
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


class DataError(Exception):
    """Bad input the user must fix (exit code 2). The message says what and where."""


def preview(items, n=5):
    """The first n items, repr'd and comma-joined, with how many more there are: "'a', 'b' (+3 more)"."""
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(repr(x) for x in items[:n]) + more


def report_problems(title, problems, limit=20):
    """Raise DataError listing the first `limit` of `problems` (strings) and their count.

    Does nothing when `problems` is empty.
    """
    if not problems:
        return
    lines = [f"{title}: {len(problems)} problem(s)"]
    lines += [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    raise DataError("\n".join(lines))


def read_text(path):
    """The text of a UTF-8 file: BOM dropped, CRLF and CR line ends turned into LF.

    Raises DataError naming the file when it is missing, unreadable or not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read, file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}); save it as UTF-8") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path):
    """Non-empty lines of a text file (read_text), each stripped of surrounding whitespace."""
    return [s.strip() for s in read_text(path).split("\n") if s.strip()]


def read_json(path):
    """A JSON file read through read_text; DataError naming the file and position when invalid."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: unreadable, not valid JSON ({e})") from e


def read_csv(path, **kwargs):
    """pandas.read_csv of a file read through read_text; column names and text cells stripped.

    kwargs go to pandas (dtype, keep_default_na, ...). Raises DataError naming the file
    when it is missing, empty (no header) or not parsable as CSV.
    """
    text = read_text(path)
    try:
        df = pd.read_csv(io.StringIO(text), **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header line)") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path}: cannot parse as CSV ({e})") from e
    df.columns = [c.strip() if isinstance(c, str) else c for c in df.columns]
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].map(lambda v: v.strip() if isinstance(v, str) else v)
    return df


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write_fn, mode="wb"):
    """Write `path` atomically: `write_fn(fileobj)` fills a temp file, then os.replace.

    Returns the Path written. On any error the temp file is removed and the old
    file (if any) is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path, text):
    """Write a string to `path` atomically (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(path, obj):
    """Write `obj` as indented JSON to `path` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_save_torch(path, obj):
    """torch.save `obj` to `path` atomically (temp file, fsync, os.replace)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_csv(path, df, **kwargs):
    """Write a DataFrame as CSV atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    return atomic_write_text(path, df.to_csv(**kwargs))


def write_preds(path, names, labels, probs):
    """Write probabilities in the preds format: image_name, then one column per label.

    names: N image names; labels: L label names; probs: (N, L) array in [0, 1].
    Values keep 7 significant digits. Written atomically.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(names), len(labels)):
        raise ValueError(f"probs shape {probs.shape} != ({len(names)}, {len(labels)})")
    df = pd.DataFrame(probs, columns=list(labels))
    df.insert(0, "image_name", list(names))
    return atomic_write_csv(path, df, float_format="%.7g")


def read_preds(path):
    """Read a preds file; return (names: list[str], labels: list[str], probs: float64 (N, L)).

    Raises DataError naming the file for a missing image_name column, duplicate or
    empty names, non-numeric, NaN or out-of-range [0, 1] values.
    """
    path = Path(path)
    df = read_csv(path, dtype={"image_name": str}, keep_default_na=False)
    if df.columns.size < 2 or df.columns[0] != "image_name":
        raise DataError(f"{path}: expected columns image_name,<label>...; got {list(df.columns)[:5]}")
    names = df["image_name"].astype(str).tolist()
    problems = []
    dup = df["image_name"][df["image_name"].duplicated()].tolist()
    if dup:
        problems.append(f"{len(dup)} duplicate image name(s): {preview(dup)}")
    if any(n == "" for n in names):
        problems.append("empty image names")
    try:
        probs = df.iloc[:, 1:].apply(pd.to_numeric, errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: non-numeric probability ({e})") from e
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        problems.append(f"{int(bad.sum())} NaN or out-of-range values (first: row {r + 2}, "
                        f"column {df.columns[c + 1]!r} = {probs[r, c]})")
    report_problems(f"{path}: bad prediction file", problems)
    return names, [str(c) for c in df.columns[1:]], probs


def submission_frame(names, labels, decisions):
    """image_name,tags DataFrame (tags space-separated, in label order) from (N, L) 0/1 decisions."""
    labels = np.asarray(labels)
    tags = [" ".join(labels[np.asarray(row).astype(bool)]) for row in decisions]
    return pd.DataFrame({"image_name": list(names), "tags": tags})
