"""The folds file (DATA/folds.csv, image_name,fold): reading it with every value checked.

A folds file is a text file people edit by hand, so its values are checked as train.csv's
are: a fold id is an integer, K (the number of folds) is the number of distinct ids and the
ids are 0..K-1 (so every fold holds an image), K >= 2, each image is listed once with a
name. A run of fold 7 in a 5-fold file would otherwise make K 8 with empty folds, and a fold
-1 would put its images in no validation fold. `read_folds_file` returns the checked file or
raises one DataError naming the rows and what to do; `name_problems` compares it with
train.csv's images.
"""
import math
import re
from pathlib import Path

from utils.common.errors import DataError, preview
from utils.common.text import read_csv
from utils.data.dataset import name_key

_INTEGER = re.compile(r"[+-]?\d+")


def fold_id(text):
    """A fold cell's text -> int, or None when it is not an integer ('1.0' is 1; '1.5', '', 'a' are None)."""
    text = str(text).strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


def _rows(rows):
    """'row 3' / 'rows 3, 7, 9 (+2 more)' (file line numbers, header = 1)."""
    return f"row {rows[0]}" if len(rows) == 1 else "rows " + preview(rows).replace("'", "")


def _not_integers(bad, n=5):
    """"row 5: fold '1.5' is not an integer" / "rows 3, 4: folds must be integers: '1.5' (row 3),
    'abc' (row 4)" (the first n values with their rows) for [(row, cell text)]."""
    if len(bad) == 1:
        return f"row {bad[0][0]}: fold {bad[0][1]!r} is not an integer"
    more = f" (+{len(bad) - n} more)" if len(bad) > n else ""
    return (f"{_rows([r for r, _ in bad])}: folds must be integers: "
            + ", ".join(f"{c!r} (row {r})" for r, c in bad[:n]) + more)


def value_problems(names, cells):
    """Problems of a folds file's columns (raw strings; row i is file line i + 2), and the
    {name (NFC): fold} of its good rows. Each problem names its rows."""
    problems, folds, first, by_id = [], {}, {}, {}
    not_int, negative, unnamed, repeated = [], [], [], []
    for i, (name, cell) in enumerate(zip(names, cells)):
        row, name, f = i + 2, name_key(str(name).strip()), fold_id(cell)
        if not name:
            unnamed.append(row)
        elif name in first:
            repeated.append(f"{name!r} at row {row} (first at row {first[name]})")
        if f is None:
            not_int.append((row, str(cell)))
        elif f < 0:
            negative.append((row, f))
        elif name and name not in first:
            folds[name] = f
            by_id.setdefault(f, []).append(row)
        first.setdefault(name, row)
    if not_int:
        problems.append(_not_integers(not_int))
    if negative:
        problems.append(f"{_rows([r for r, _ in negative])}: fold {negative[0][1]} is negative")
    if unnamed:
        problems.append(f"{_rows(unnamed)}: empty image_name")
    if repeated:
        problems.append(f"{len(repeated)} image(s) listed twice: {', '.join(repeated[:5])}"
                        + (f" (+{len(repeated) - 5} more)" if len(repeated) > 5 else ""))
    k = len(by_id)
    beyond = sorted(f for f in by_id if f >= k)
    if beyond:
        empty = [f for f in range(max(by_id) + 1) if f not in by_id]
        rows = sorted(r for f in beyond for r in by_id[f])
        problems.append(f"{_rows(rows)}: fold {', '.join(map(str, beyond))} is out of range: the file has {k} "
                        f"distinct fold(s), so the ids must be 0..{k - 1}, and no image has fold "
                        f"{', '.join(map(str, empty))}")
    elif k == 1:
        problems.append(f"every image has fold {next(iter(by_id))}: cross-validation needs at least 2 folds")
    return problems, folds


def read_folds_file(path):
    """{image name (NFC): fold int} of a folds file, every value checked.

    Raises DataError naming the file, the bad rows (first few of each kind) and what to do:
    missing columns, no rows, a fold that is not an integer or negative, ids that are not
    0..K-1 (an empty fold), fewer than 2 folds, an empty or repeated image name.
    """
    path = Path(path)
    df = read_csv(path, dtype=str, keep_default_na=False)
    if list(df.columns[:2]) != ["image_name", "fold"]:
        raise DataError(f"{path}: expected columns image_name,fold; got {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path}: no rows; expected one row per training image, or move {path.name} away to "
                        f"make new folds")
    problems, folds = value_problems(df["image_name"], df["fold"])
    if problems:
        raise DataError(f"{path}: the folds file has problems:\n" + "\n".join(f"  - {p}" for p in problems) +
                        f"\n{fix_line(path)}")
    return folds


def fix_line(path):
    """What to do about a folds file that does not fit (the last line of every such message)."""
    return (f"fix those rows (one row per train.csv image, fold ids 0..K-1), or move {Path(path).name} away to "
            f"make new folds (earlier runs' out-of-fold predictions will then no longer line up)")


def name_problems(folds, names, file_name="folds.csv"):
    """Problems of a checked folds file ({name: fold}) against train.csv's image names (NFC),
    and the remedies for them: images of train.csv it lacks (added since; add them to the folds
    file `file_name` or remove them from train.csv), and images it lists that train.csv lacks
    (restore them in train.csv or remove them from the file). Returns (problems, remedies)."""
    now = set(names)
    added = [n for n in names if n not in folds]
    removed = [n for n in folds if n not in now]
    out, remedies = [], []
    if added:
        out.append(f"{len(added)} image(s) of train.csv are not in it (added since): {preview(added)}")
        remedies.append(f"add those images to {file_name} (or remove them from train.csv)")
    if removed:
        out.append(f"{len(removed)} image(s) in it are no longer in train.csv (removed since, or misspelt): "
                   f"{preview(removed)}")
        remedies.append(f"restore those rows of train.csv (or remove them from {file_name})")
    return out, remedies
