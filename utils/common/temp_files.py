"""Temp files that say whose they are, so the ones a killed process left behind can be removed.

A temp file for `path` is `.<name>.<host>-<pid>.<random>.tmp` in path's folder. A process
removes its own on every failure it sees; one killed outright (SIGKILL, power cut) cannot,
so writers call `sweep` first: it deletes the temp files of processes of this host that no
longer run. Temp files of other hosts (a shared folder) and of live processes are kept.
"""
import os
import re
import socket
import tempfile
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"
_OWNER = re.compile(r"\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\.[^.]*\.tmp$")


def owner_tag():
    """This process's part of a temp file name: '<host>-<pid>'."""
    return f"{_HOST}-{os.getpid()}"


def make_temp(path):
    """Create and open the temp file for `path` (a Path) in its folder: (fd, temp path as str)."""
    return tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp", dir=path.parent)


def is_alive(pid):
    """True when a process `pid` runs on this machine (or exists but belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(folder, name="*"):
    """Delete the temp files in `folder` of dead processes of this host; `name`: the target's
    file name (glob) whose temp files to look at. Returns the paths removed (list of Path)."""
    removed = []
    try:
        candidates = list(Path(folder).glob(f".{name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        m = _OWNER.search(tmp.name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not is_alive(int(m["pid"])):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed
