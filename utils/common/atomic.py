"""Atomic file writes.

Every file another script reads (checkpoints, predictions, records) is written to a
temporary name in the same folder, fsynced, then moved into place with os.replace,
so a reader sees the old file or the new one, never half of one. A write the machine
refuses (disk full, quota, read-only, permission) raises WriteFault naming the file, with
the temp file removed and the previous file intact; temp files that killed processes left
beside the file are removed first (utils/common/temp_files.py). A symbolic link is written
through: its target is replaced, the link stays. An existing path that is no regular file (a
device, a named pipe, a socket) is refused (DataError): replacing it would break what it is.
"""
import json
import os
import stat
from pathlib import Path

from utils.common.errors import DataError
from utils.common.temp_files import make_temp, sweep
from utils.common.write_errors import write_fault


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

# what a path is when it is neither a regular file nor a folder, in the words of the messages
SPECIAL = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
           (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def _mode(path):
    """st_mode of `path`, symbolic links followed; None when nothing is there."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def special_kind(path):
    """What an existing `path` is when it is no regular file and no folder ('a character device',
    'a block device', 'a named pipe (FIFO)', 'a socket'); None otherwise, or when it does not exist."""
    mode = _mode(path)
    if mode is None:
        return None
    return next((what for test, what in SPECIAL if test(mode)), None)


def write_target(path):
    """The file a write to `path` replaces: a symbolic link's final target (the link is kept), else `path`."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def refuse_special(path, flag=None):
    """Raise DataError when `path` exists as something a write must not replace (special_kind).

    flag: the option that named the path (e.g. '--out'), named in the message."""
    what = special_kind(path)
    if what:
        raise DataError(f"{flag + ' ' if flag else ''}{path}: is {what}, not a regular file; writing would replace "
                        f"it with one. Give the name of a file to write")


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

    Returns the Path written (a symbolic link's target: the link is kept). DataError when `path` is
    a device, a named pipe or a socket (refuse_special). On any error the temp file is removed and the old
    file (if any) is untouched; a refused write (full disk, quota, file size limit,
    read-only, permission; in write_fn's exception chain too) raises
    utils.common.write_errors.WriteFault naming `path`.
    """
    path = write_target(path)
    refuse_special(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(path)
    except OSError as e:
        raise write_fault(e, path) or e
    sweep(path.parent, path.name)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        fault = write_fault(e, path) if isinstance(e, Exception) else None
        if fault is not None:
            raise fault from None
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
    import torch  # lazy: most users of this module write no checkpoint (tools/make_demo.py never loads torch)

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_csv(path, df, **kwargs):
    """Write a DataFrame as CSV atomically (no index unless asked)."""
    kwargs.setdefault("index", False)
    return atomic_write_text(path, df.to_csv(**kwargs))
