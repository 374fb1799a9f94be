"""Checks on the files a script is about to write, made before anything is written, and
writing a set of outputs together.

An output file (a submission, a report, a pseudo-label CSV) must not be one of the
dataset's own files (a submission written over train.csv silently replaces the
labels), must not lie inside the dataset's image folders, and must not be an existing
directory (os.replace would fail half-way through a run of writes) or a device, a named pipe or
a socket (replaced by a regular file, it would be gone). It must not be a file the command reads
(an input replaced by the output), nor lie in a run folder (a folder holding config.json, whose
files predict.py and the tools read) unless the script writes there on purpose (predict.py's
--submission, tools/plot_probs.py's plots). A symbolic link is checked, and later written, as its
target (utils/common/atomic.py write_target). Its folder must take
a new file: `check_can_write` creates and removes one there, which holds for root, for
read-only mounts and immutable folders alike, where os.access does not. `write_together`
writes several files so that a failure leaves all of them as they were.
"""
import os
import shutil
from pathlib import Path

from utils.common.atomic import refuse_special, special_kind, write_target
from utils.common.errors import DataError
from utils.common.temp_files import make_temp, sweep
from utils.common.text import read_json
from utils.common.write_errors import found_in_chain, write_fault
from utils.data.image_files import IMAGE_EXTS

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


RUN_MARKS = ("result.json", "history.csv", "preds", "checkpoints")  # what else a run folder holds


def run_folder(path):
    """The run folder `path` (resolved) lies in: its nearest folder holding config.json and one of
    RUN_MARKS or a config.json naming an arch and a fold; None when it lies in none."""
    for folder in Path(path).resolve().parents:
        if not (folder / "config.json").is_file():
            continue
        if any((folder / m).exists() for m in RUN_MARKS):
            return folder
        try:
            config = read_json(folder / "config.json")
        except DataError:
            return folder  # a broken run record is still a run folder
        if isinstance(config, dict) and "arch" in config and "fold" in config:
            return folder
    return None


def check_output_file(path, flag, data_roots=(), allow=(), inputs=(), in_runs=False):
    """Raise DataError unless `path` can be written as a new or replaced file.

    path: the file to write; flag: how the user gave it (e.g. '--out'), named in the
    message; data_roots: data folders whose own files (DATASET_FILES) and image folders
    must not be written; allow: dataset file names this output is meant to be (e.g.
    'duplicates.csv' for the duplicate finder); inputs: the files the command reads
    (None entries skipped); in_runs: True for a script that writes in run folders on
    purpose. Refuses an existing directory, a device, a named pipe or a socket, a parent
    that is a file, a dataset file, anything inside an image folder, an input and (unless
    in_runs) a file inside a run folder. A symbolic link is checked as its target. Returns
    the Path as given.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{flag} {path}: is an existing directory; give a file name (outside the data folder)")
    refuse_special(path, flag)
    parent = next((p for p in write_target(path).parents if p.exists()), None)
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
    for given in inputs:
        if given is not None and Path(given).resolve() == target:
            raise DataError(f"{flag} {path}: is {given}, a file this command reads; writing would replace it. "
                            f"Give another file")
    if not in_runs and (run := run_folder(target)) is not None:
        raise DataError(f"{flag} {path}: is inside the run folder {run} (it holds config.json), whose files "
                        f"predict.py and the tools read; give a file outside it (e.g. in the folder that holds "
                        f"the runs)")
    return path


def check_output_dir(path, flag):
    """Raise DataError when `path` (a folder to create or reuse) exists as something else than a folder.

    Also refuses a parent that is a file. Returns the Path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        what = special_kind(path) or "an existing file"
        raise DataError(f"{flag} {path}: is {what}, not a folder; give a folder (it is created if needed)")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise DataError(f"{flag} {path}: {parent} is a file, not a folder; give a path in a folder")
    return path


def check_can_write(folder, flag):
    """Raise DataError unless a file can be created in `folder` (str or Path).

    A folder that does not exist yet is tried at its nearest existing parent, where it will
    be created. The check creates a temp file there and removes it at once. flag: the option
    that named the folder (e.g. '--report-dir'), named in the message. Returns the Path.
    """
    folder = Path(folder)
    there = next((p for p in (folder, *folder.parents) if p.is_dir()), Path.cwd())
    try:
        fd, tmp = make_temp(there / ".write-check")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        why = e.strerror or str(e)
        raise DataError(f"{flag}: cannot write in {there}{'' if there == folder else f' (to make {folder})'}: "
                        f"{why}; give a folder you can write to") from None
    return folder


def write_together(writers):
    """Write every output or none: each to a temp file beside it first, then all moved into place.

    writers: {path: fill(temp_path)}, fill writing the whole file at the path it is given.
    A failure while writing removes the temp files and leaves every target as it was; a
    failure while moving puts back the files already replaced (removes those that are new).
    A refused write (disk full, permission, ...) raises utils.common.write_errors.WriteFault
    naming the target. Returns the list of Paths written.
    """
    targets = [write_target(p) for p in writers]  # a symbolic link: its target is replaced, the link kept
    for path in targets:
        refuse_special(path)
    staged, backups = {}, {}
    try:
        for path, fill in zip(targets, writers.values()):
            staged[path] = _temp_beside(path)
            try:
                fill(staged[path])
            except Exception as e:
                raise _named(e, path)
        for path in targets:
            if path.exists():
                backups[path] = _temp_beside(path)
                _keep_copy(path, backups[path])
        moved = []
        try:
            for path in targets:
                try:
                    os.replace(staged[path], path)
                except OSError as e:
                    raise _named(e, path)
                del staged[path]
                moved.append(path)
        except BaseException:
            for path in moved:  # undo: the previous file back, or no file where there was none
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    path.unlink(missing_ok=True)
            raise
    finally:
        for tmp in (*staged.values(), *backups.values()):
            Path(tmp).unlink(missing_ok=True)
    return targets


def _temp_beside(path):
    """An empty temp file next to `path` (its folder created), named so that `sweep` knows its owner."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(path)
        os.close(fd)
    except OSError as e:
        raise _named(e, path)
    sweep(path.parent, path.name)
    return Path(tmp)


def _keep_copy(path, backup):
    """The current `path` kept at `backup` (a hard link, else a copy) until the new one is in place."""
    try:
        backup.unlink()
        os.link(path, backup)
    except OSError:
        try:
            shutil.copy2(path, backup)
        except OSError as e:
            raise _named(e, path)


def _named(exc, path):
    """`exc` as a WriteFault naming `path` (not a temp file) when it is a refused write; else exc."""
    err = found_in_chain(exc)
    if err is None:
        return exc
    fault = write_fault(OSError(err.errno, os.strerror(err.errno)), path)
    fault.__cause__ = exc
    return fault
