"""A training process's hold on its run folder: one process per run, and the folder still there.

`RunLock` is an exclusive fcntl lock on <run>/run.lock, held while train.py runs (rank 0
under torchrun). A second train.py on the same folder, a new run or a --resume, is refused
(DataError, exit 2) naming the holder's pid, host and start. The kernel drops the lock
when its process dies, so the lock of a killed run is simply taken over. On a file system
without fcntl locks (some network mounts) the run goes on unlocked, with a warning.

`RunFolder` remembers the folder a run started in and tells when it vanished or was
replaced (deleted while training): the trainer checks before it writes and stops instead
of writing a run without config.json that no tool can see.
"""
import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from utils.common.errors import DataError
from utils.common.write_errors import WriteFault

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"


class RunLock:
    """The lock on `run_dir` (a Path); `acquire` takes it or raises DataError, `release` gives it back."""

    def __init__(self, run_dir):
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self._fd, self._made = None, []

    def acquire(self):
        """Take the lock, creating the run folder (and its parents) if needed; DataError naming
        the holder when another live process holds it. Returns self."""
        self._made = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not self._lock(fd):
                return self
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # its holder removed it as we opened it: try the new one
                same = False
            if same:
                self._fd = fd
            else:
                os.close(fd)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps(holder()).encode())
        return self

    def _lock(self, fd):
        """flock fd; False when the file system has no locks (then the run goes on unlocked)."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            info = _read_holder(fd)
            os.close(fd)
            self._undo_dir()
            raise DataError(in_use_message(self.run_dir, info)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.close(fd)
            log.warning("%s: this file system has no file locks; nothing stops a second run on this folder",
                        self.run_dir)
            return False

    def release(self):
        """Remove the lock file and give the lock back; the run folder (and the parents) go too
        when acquire made them and nothing else was written there."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()  # before unlocking: a waiting process then sees the file is gone
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._undo_dir()

    def _undo_dir(self):
        for d in self._made:
            try:
                d.rmdir()
            except OSError:
                break


def in_use_message(run_dir, info):
    """The refusal of a run folder another train.py holds (info: its holder())."""
    return (f"{run_dir}: in use by train.py (pid {info.get('pid', '?')} on {info.get('host', '?')}, since "
            f"{info.get('started', '?')}); wait for it to end, stop it, or choose another --name")


def check_not_in_use(run_dir):
    """Raise DataError (in_use_message) when a live process holds run_dir's lock; else return.
    Takes and gives back the lock at once; creates nothing."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        raise DataError(in_use_message(run_dir, _read_holder(fd))) from None
    except OSError:
        pass  # no locks on this file system: nothing to tell
    finally:
        os.close(fd)


def holder():
    """Who holds a lock: {"pid", "host", "started"} of this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _read_holder(fd):
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def hold_run(run_dir):
    """Lock `run_dir` for the rest of this process (released at exit; DataError if another
    train.py holds it). Returns the RunLock."""
    lock = RunLock(run_dir).acquire()
    atexit.register(lock.release)
    return lock


class RunFolder:
    """The run folder as it was when training started (config.json written)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)
        self._id = self._identity()

    def _identity(self):
        try:
            os.stat(self.run_dir / "config.json")
            return os.stat(self.run_dir).st_dev, os.stat(self.run_dir).st_ino
        except FileNotFoundError:
            return None

    def check(self, while_doing="training"):
        """Raise WriteFault (exit 1) when the folder or its config.json is gone, or the folder was
        replaced by another one, since this object was made (`while_doing` names the work in the message)."""
        now = self._identity()
        if now is None or now != self._id:
            what = "was deleted or lost its config.json" if now is None else "was replaced by another folder"
            raise WriteFault(errno.ENOENT, f"{self.run_dir}: the run folder {what} while {while_doing}; stopped "
                             f"without writing anything more; start a new run", self.run_dir)
