"""Training without listed images (train.py --exclude FILE).

The iMet 2019 winner dropped training images whose out-of-fold error was very high;
tools/label_issues.py ranks such images and its CSV (image_name column) is such a
list. Excluded images keep their folds: they are left out of the training rows
only, so a run still predicts its whole validation fold and its out-of-fold file
lines up with every other run's. The list's SHA-1 is part of the run's
configuration (config.json `exclude`, a resume key and a model key).
"""
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from utils.data.dataset import image_stem, name_key
from utils.common.atomic import atomic_write_csv
from utils.common.errors import DataError, report_problems
from utils.common.text import read_csv


def read_exclusion(path, names):
    """Rows of `names` (train.csv order) listed in the image_name column of the file `path`.

    Names match after Unicode normalisation (`name_key`), with or without their image extension. Returns (sorted unique int64
    rows, SHA-1 hex digest of the file's bytes). Raises DataError naming the file for a
    missing or unreadable file, a missing image_name column, or (with their rows)
    names that are not training images.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--exclude {path}: file not found")
    try:
        df = read_csv(path, dtype=str, keep_default_na=False)
    except DataError as e:  # empty or unparsable file
        raise DataError(f"--exclude {e}; expected a column image_name") from e
    if "image_name" not in df.columns:
        raise DataError(f"--exclude {path}: no image_name column (found {list(df.columns)[:5]}); "
                        f"expected a CSV with a header line image_name, e.g. tools/label_issues.py's output")
    exact = {name_key(n): i for i, n in enumerate(names)}
    stems = {image_stem(n): i for i, n in enumerate(names)}
    rows, problems = [], []
    for r, n in enumerate(df["image_name"].str.strip()):
        i = exact.get(name_key(n), stems.get(image_stem(n)))
        if i is None:
            problems.append(f"row {r + 2}: {n!r} is not a training image (train.csv)")
        else:
            rows.append(i)
    report_problems(f"--exclude {path}: unknown images; fix the list or the --data it was made for", problems)
    return np.unique(np.asarray(rows, np.int64)), hashlib.sha1(path.read_bytes()).hexdigest()


def write_exclusion(path, names):
    """Write an image_name list (the run's copy of its --exclude list), atomically."""
    return atomic_write_csv(path, pd.DataFrame({"image_name": list(names)}))
