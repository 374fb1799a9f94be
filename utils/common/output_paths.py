"""Checks on the files a script is about to write, made before anything is written.

An output file (a submission, a report, a pseudo-label CSV) must not be one of the
dataset's own files (a submission written over train.csv silently replaces the
labels), must not lie inside the dataset's image folders, and must not be an existing
directory (os.replace would fail half-way through a run of writes).
"""
import os
from pathlib import Path

from utils.data.dataset import IMAGE_EXTS
from utils.common.errors import DataError

# The files of a data folder (see the data layout): reading scripts rely on them.
DATASET_FILES = ("train.csv", "labels.txt", "sample_submission.csv", "folds.csv", "duplicates.csv",
                 "test_labels.csv")  # the last: the demo and mosaic generators' held-out answers


def image_folders(root):
    """The folders directly under the data folder `root` that hold image files (train/, test/, variants).

    Hidden folders (the .cache) are skipped. Returns resolved Paths; [] when root is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in os.scandir(root):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if entry.name in ("train", "test") or _holds_images(entry.path):
            found.append(Path(entry.path).resolve())
    return found


def _holds_images(folder):
    with os.scandir(folder) as it:
        return any(e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS for e in it)


def check_output_file(path, flag, data_roots=(), allow=()):
    """Raise DataError unless `path` can be written as a new or replaced file.

    path: the file to write; flag: how the user gave it (e.g. '--out'), named in the
    message; data_roots: data folders whose own files (DATASET_FILES) and image folders
    must not be written; allow: dataset file names this output is meant to be (e.g.
    'duplicates.csv' for the duplicate finder). Refuses an existing directory, a parent
    that is a file, a dataset file and anything inside an image folder. Returns the Path.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{flag} {path}: is an existing directory; give a file name (outside the data folder)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(f"{flag} {path}: {parent} is a file, not a folder; give a path in a folder")
    target = path.resolve()
    for root in data_roots:
        if root is None:
            continue
        root = Path(root).resolve()
        own = {(root / f).resolve(): f for f in DATASET_FILES if f not in allow}
        if target in own:
            raise DataError(f"{flag} {path}: is the dataset's own {own[target]} in {root}; writing it would "
                            f"replace it. Give another file, outside the data folder")
        for folder in image_folders(root):
            if folder in target.parents:
                raise DataError(f"{flag} {path}: is inside the dataset's image folder {folder}; "
                                f"give a file outside it")
    return path


def check_output_dir(path, flag):
    """Raise DataError when `path` (a folder to create or reuse) exists as something else than a folder.

    Also refuses a parent that is a file. Returns the Path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{flag} {path}: is an existing file, not a folder; give a folder (it is created if needed)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(f"{flag} {path}: {parent} is a file, not a folder; give a path in a folder")
    return path
