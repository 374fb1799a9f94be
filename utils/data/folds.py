"""Cross-validation folds: fold assignment and the folds file (DATA/folds.csv, image_name,fold).

Folds are made once per dataset by iterative stratification of the label matrix (near-duplicate
groups kept in one fold when DATA/duplicates.csv exists), written atomically, and reused by every
later run: `plan_folds` reads or makes them without writing, `write_folds` writes them once every
other check has passed, `load_or_make_folds` does both. A folds file whose K or image set no longer
matches train.csv is refused with what to do.
"""
import logging
import os
from pathlib import Path

from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
import numpy as np
import pandas as pd

from utils.common.atomic import atomic_write_csv
from utils.common.errors import DataError, preview
from utils.data.folds_file import name_problems, read_folds_file
from utils.data.duplicates import DUPLICATES_FILE, group_folds, train_groups

log = logging.getLogger(__name__)


def make_folds(y, k=5, seed=42, groups=None):
    """Fold id per row (0..k-1) by iterative stratification of the (N, L) label matrix.

    groups: optional (N,) ids of near-duplicate groups; rows of one group share a fold
    (utils.data.duplicates.group_folds stratifies the groups' label vectors instead).
    """
    if k < 2:
        raise DataError(f"--folds-k {k}: cross-validation needs at least 2 folds")
    if len(y) < k:
        raise DataError(f"{len(y)} images cannot be split into {k} folds; use --folds-k {max(2, len(y))} or fewer")
    if groups is not None:
        return group_folds(y, groups, k, seed)
    folds = np.zeros(len(y), np.int64)
    mskf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val) in enumerate(mskf.split(np.zeros((len(y), 1)), stratify_target(y))):
        folds[val] = f
    return folds


def stratify_target(y):
    """The (N, L) 0/1 label matrix as iterstrat takes it: with one label (L = 1, e.g. one tag on
    every image) scikit-learn reads it as a 'binary' target and refuses it, so its complement is
    added as a second column (stratifying one label and its absence is the same split)."""
    y = np.asarray(y, np.uint8).reshape(len(y), -1)
    return np.hstack([y, 1 - y]) if y.shape[1] < 2 else y


def folds_k_for(path, k, given):
    """The number of folds a run uses: the existing folds file's own K when --folds-k was not
    typed on the command line (given False), else k. A file that cannot be read gives k
    (plan_folds then says what is wrong with it)."""
    path = Path(path)
    if given or not path.is_file():
        return k
    try:
        folds = read_folds_file(path)
    except DataError:
        return k
    return max(folds.values()) + 1


def plan_folds(spec, k=5, seed=42, path=None):
    """Fold id per training image, read from the folds file or made in memory (not written).

    Returns (folds int64 (N,), path, new): `new` is True when the file does not exist yet
    and must be written with `write_folds` once every other check has passed. Making folds
    is a pure function of (labels, k, seed), so every process computes the same ones.
    Raises DataError when an existing file has a bad value (utils.data.folds_file: naming the rows),
    another K or another image set (naming the added and removed images), or when a new one could
    not be written.
    """
    path = Path(path) if path else spec.root / "folds.csv"
    if not path.is_file():
        parent = next(d for d in (path.parent, *path.parent.parents) if d.exists())
        if not os.access(parent, os.W_OK):
            raise DataError(f"{path.parent}: not writable, cannot create {path.name}; "
                            f"copy the dataset or pass --folds-file PATH")
        return make_folds(spec.y, k, seed, groups=duplicate_groups(spec, path)), path, True
    stored = read_folds_file(path)  # every value checked: integers 0..K-1, no empty fold
    k_file = max(stored.values()) + 1
    problems = []
    if k_file != k:
        problems.append(f"it has K={k_file} folds, the command line asks --folds-k {k}: leave --folds-k out "
                        f"(the file's K is used) or pass --folds-k {k_file}")
    moved, remedies = name_problems(stored, spec.names, path.name)
    problems += moved
    if problems:
        fix = "".join(f"{r}, " for r in remedies) + f"or move {path.name} away to make a new split " \
            f"(earlier runs' out-of-fold predictions will no longer line up)"
        raise DataError(f"{path}: the existing folds do not match this run; every run must share one "
                        f"folds file:\n" + "\n".join(f"  - {p}" for p in problems) + f"\n{fix}")
    return np.array([stored[n] for n in spec.names], np.int64), path, False


def write_folds(spec, folds, path):
    """Write image_name,fold for the training images atomically."""
    atomic_write_csv(path, pd.DataFrame({"image_name": spec.names, "fold": folds}))


def load_or_make_folds(spec, k=5, seed=42, path=None):
    """Fold id per training image, from folds.csv (made and written once, then reused).

    spec: DataSpec; k, seed: used only when the file is created; path: defaults to
    DATA/folds.csv. Raises DataError as plan_folds. Callers that check more before
    writing anything use plan_folds and write_folds.
    """
    folds, path, new = plan_folds(spec, k, seed, path)
    if new:
        write_folds(spec, folds, path)
    return folds


def duplicate_groups(spec, folds_path=None):
    """Near-duplicate group id per training image from DATA/duplicates.csv, else from a
    duplicates.csv beside the folds file (read-only data); None without either."""
    for path in (spec.root / DUPLICATES_FILE, *([Path(folds_path).parent / DUPLICATES_FILE] if folds_path else [])):
        if path.is_file():
            return train_groups(path, spec.names)
    return None


def unlearnable_labels(y_train, labels):
    """Labels the training rows cannot teach: (no positive, positive on every row) name lists.

    y_train: (n, L) 0/1 tags of one fold's training rows; labels: the L names.
    """
    y = np.asarray(y_train).reshape(len(y_train), len(labels))
    pos = y.sum(0)
    return [l for l, p in zip(labels, pos) if p == 0], [l for l, p in zip(labels, pos) if p == len(y) > 0]


def warn_unlearnable_labels(spec, train_rows, label_idx, fold):
    """Log a warning naming each label with no positive image among the fold's training rows
    (it cannot be learned, whatever the loss: its validation positives are all missed) and
    each label on every training image (the model can only learn to always predict it).

    spec: DataSpec; train_rows: int rows (into spec.names) trained on; label_idx: the run's
    label columns; fold: the validation fold, for the message. Returns the two name lists.
    """
    labels = [spec.labels[j] for j in label_idx]
    none, every = unlearnable_labels(spec.y[np.asarray(train_rows)][:, label_idx], labels)
    if none:
        counts = ", ".join(f"{l!r} ({int(spec.y[:, spec.labels.index(l)].sum())} in the dataset)" for l in none)
        log.warning("fold %d: no training image carries label(s) %s, so the model cannot learn them (their "
                    "validation positives will be missed); add examples, or train without them (--label-group)",
                    fold, counts)
    if every:
        log.warning("fold %d: every training image carries label(s) %s; the model can only learn to always "
                    "predict them", fold, preview(every))
    return none, every
