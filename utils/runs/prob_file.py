"""Reading a file that must hold probabilities, and saying what it is when it does not.

A probability file is what predict.py (runs/<run>/preds/test.<tta>.csv) and stack.py
(stack_test.csv) write: a header `image_name,<label 1>,...,<label L>` and one row per
image with each label's probability in [0, 1] (after the sigmoid). Other CSVs of the
project look alike and are easy to pass by mistake: a submission (image_name,tags, tags as
words), a thresholded 0/1 table (a binarised submission, a --mode hard pseudo-label file),
a folds file (image_name,fold), logits or scores (values outside [0, 1]). `read_probs`
names which of these a file looks like, what was expected, and the first wrong row and
column, before utils.runs.pred_files.read_preds parses it.
"""
from pathlib import Path

import numpy as np

from utils.common.errors import DataError
from utils.common.text import read_csv
from utils.runs.pred_files import read_preds

EXPECTED = ("a predictions csv of probabilities as predict.py (runs/<run>/preds/test.<tta>.csv) or "
            "stack.py (stack_test.csv) writes it: a header image_name,<label>,... (one column per label) and one "
            "row per image with values in [0, 1]")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def describe(df, hard_ok=False, name=""):
    """What a CSV (read as strings, utils.common.text.read_csv) is when it is not a probability table:
    (what it looks like, where: the first wrong row and column or None); (None, None) when
    it is one. Rows are the file's lines (the header is row 1). hard_ok: a 0/1 table is
    accepted (pseudo-labels of --mode hard); name: the file's name (train.csv is named so)."""
    cols = [str(c) for c in df.columns]
    if cols[:1] != ["image_name"]:
        if sum(_is_number(c) for c in cols) >= max(1, len(cols) - 1):
            return f"a file without a header line (its first line is data: {','.join(cols[:4])}...)", None
        return f"a CSV whose first column is {cols[0]!r}, not image_name (columns {cols[:6]})", None
    if cols == ["image_name", "tags"]:
        first = next((f"row {i + 2}: tags {v!r}" for i, v in enumerate(df["tags"]) if v), None)
        if name == "train.csv":
            return "the training labels of a dataset (train.csv: image_name,tags, tags as words)", first
        return "a submission (image_name,tags: tags as words)", first
    if cols == ["image_name", "fold"]:
        return "a folds file (image_name,fold)", None
    if len(cols) < 2:
        return "a list of image names with no label column", None
    if len(df) == 0:
        return "a header without rows", None
    values = df.iloc[:, 1:]
    for j, c in enumerate(values.columns):
        for i, v in enumerate(values[c]):
            if v == "":
                return "a table with an empty cell", f"row {i + 2}, column {c!r} is empty"
            if not _is_number(v):
                return "a table with text, not numbers", f"row {i + 2}, column {c!r} = {v!r} is not a number"
    x = values.astype(float).to_numpy()
    bad = ~np.isfinite(x) | (x < 0) | (x > 1)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        return ("a table of scores or logits, not probabilities after the sigmoid",
                f"{int(bad.sum())} value(s) outside [0, 1], the first at row {i + 2}, column "
                f"{values.columns[j]!r} = {values.iat[i, j]}")
    if np.isin(x, (0.0, 1.0)).all() and not hard_ok:
        return ("a thresholded 0/1 table (a binarised submission or a --mode hard pseudo-label file)",
                f"every one of its {x.size} values is 0 or 1")
    return None, None


def read_probs(path, flag="--probs", hard_ok=False, test_only=False):
    """(names list[str], labels list[str], probs float64 (N, L)) of a probability file.

    hard_ok: 0/1 values are accepted (a --mode hard pseudo-label file); test_only: the
    file must hold test predictions, not out-of-fold predictions of training images
    (`training_predictions`). Raises DataError naming `flag` and `path`, what the file
    looks like (`describe`), what was expected (EXPECTED) and the first wrong row and
    column; then utils.runs.pred_files.read_preds' own checks (duplicate or empty image names).
    """
    df = read_csv(path, dtype=str, keep_default_na=False)
    what, where = describe(df, hard_ok, Path(path).name)
    if what:
        raise DataError(f"{flag} {path}: not a probability file but {what}" + (f" ({where})" if where else "")
                        + f".\n  Expected {EXPECTED}.")
    why = training_predictions(path, df["image_name"]) if test_only else None
    if why:
        raise DataError(f"{flag} {path}: {why}; this needs probabilities of test images")
    return read_preds(path)


def training_predictions(path, names):
    """Why the probability file `path` (image names `names`) holds out-of-fold predictions of
    training images rather than test predictions, or None when nothing says so: a run's
    preds/val.<tta>.csv, a stack's stack_oof.csv, or a file with the image names of the
    stack_oof.csv beside it."""
    path = Path(path)
    run = path.parent.parent
    if path.parent.name == "preds" and path.name.startswith("val.") and (run / "config.json").is_file():
        return (f"the out-of-fold predictions of run {run.name} for its validation (training) images; "
                f"use {path.parent / ('test.' + path.name[4:])} (python predict.py --runs {run} --split test)")
    if path.name.startswith("stack_oof"):
        return (f"a stack's out-of-fold predictions of the training images; use {path.parent / 'stack_test.csv'} "
                f"beside it")
    oof = path.parent / "stack_oof.csv"
    if oof.is_file() and set(read_csv(oof, usecols=["image_name"], dtype=str)["image_name"]) == set(names):
        return f"the same images as {oof}, the training images; use {path.parent / 'stack_test.csv'}"
    return None

