"""Writes the machine refuses (disk full, quota, file size limit, read-only, permission) as one line.

Such a failure is the environment's, not a bug and not bad input: scripts print the
message naming the file and exit with status 1 (utils/common/cli.py run_script).
torch.save and other writers wrap the OSError in their own exception; `write_fault`
finds it anywhere in the exception's chain.
"""
import errno
import os
import shutil

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}

_WHAT = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
         errno.EFBIG: "file too large for this file system or the file size limit (ulimit -f)",
         errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
_FIX = {errno.ENOSPC: "free space or write elsewhere", errno.EDQUOT: "free space or write elsewhere",
        errno.EFBIG: "write elsewhere or raise the limit", errno.EROFS: "write elsewhere",
        errno.EACCES: "write elsewhere or fix the folder's permissions",
        errno.EPERM: "write elsewhere or fix the folder's permissions"}


class WriteFault(OSError):
    """A refused write: str() is one line naming the path, the reason and what to do; errno kept."""

    def __init__(self, err_no, message, path):
        super().__init__(err_no, message, str(path))
        self.message = message

    def __str__(self):
        return self.message


def found_in_chain(exc):
    """The first WriteFault, or OSError with an errno of WRITE_ERRNOS, in exc, its __cause__ or
    __context__ chain; else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, WriteFault) or isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def write_fault(exc, path, fix=None):
    """WriteFault naming `path` for an exception whose chain holds a refused write; None for any other.

    fix: what the user should do (default: by errno, e.g. "free space or write elsewhere").
    """
    os_err = found_in_chain(exc)
    if os_err is None:
        return None
    if isinstance(os_err, WriteFault):
        return os_err
    return WriteFault(os_err.errno, f"{_WHAT[os_err.errno]} writing {path}; {fix or _FIX[os_err.errno]}", path)


def fault_message(exc):
    """One line for an exception whose chain holds a refused write or access, else None: a
    WriteFault's message, or the reason and the file of a bare OSError (which may have been
    a read: the line does not say "writing")."""
    os_err = found_in_chain(exc)
    if os_err is None:
        return None
    if isinstance(os_err, WriteFault):
        return str(os_err)
    files = " -> ".join(str(f) for f in (os_err.filename, os_err.filename2) if f) or "(no file named)"
    return f"{_WHAT[os_err.errno]}: {files}"


def free_mb(folder):
    """Free megabytes (float) for an unprivileged user in `folder`'s file system."""
    return shutil.disk_usage(folder).free / 2**20


def preallocate(fd, nbytes, path, fix):
    """Reserve nbytes for the open file `fd` so a full disk fails here, not as SIGBUS on a memory map.

    Raises WriteFault naming `path`, the megabytes needed and free, and `fix`, when the
    file system has no room. Where posix_fallocate is missing or not supported, the free
    space is compared instead.
    """
    try:
        if not hasattr(os, "posix_fallocate"):
            raise OSError(errno.EOPNOTSUPP, "posix_fallocate")
        os.posix_fallocate(fd, 0, nbytes)
        return
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise no_room(e.errno, path, nbytes, fix) from e
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    if free_mb(os.path.dirname(os.path.abspath(path))) * 2**20 < nbytes:
        raise no_room(errno.ENOSPC, path, nbytes, fix)


def no_room(err_no, path, nbytes, fix):
    """WriteFault: no room for nbytes at `path` (with the megabytes needed and free) and `fix`."""
    free = free_mb(os.path.dirname(os.path.abspath(path)))
    what = _WHAT[err_no] if err_no != errno.EFBIG else "file too large (file size limit)"
    return WriteFault(err_no, f"{what} writing {path} (needs {_mb(nbytes / 2**20)} MB, {_mb(free)} MB free); {fix}",
                      path)


def _mb(x):
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"
