"""train.py's default run name: what the run is, which configuration, which fold, and when.

    <arch>-<images>-<tag>-f<fold>-<YYYYmmdd-HHMMSS>-<pid>

The tag is a short hash of the run's flags of configuration (the flag table's tag column: what
is learnt, not how to run), so runs of one configuration share it. The process id
keeps apart two runs started in the same second on one machine; runs started on two
machines sharing a folder are kept apart by the run lock (utils/runs/run_guard.py).
"""
import hashlib
import json
import os
import time

from utils.runs.train_flags import tag_values


def config_tag(flags):
    """8 hex digits over the flags (a namespace) that define the configuration: those train.py's
    flag table tags (utils/runs/train_flags.py tag_values), so runs differing only in how they run
    (--amp, --workers, --device, ...) share it and tags of runs named before stay as they were."""
    key = tag_values({k: v for k, v in vars(flags).items() if not k.startswith("_")})
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_name(flags, now=None, pid=None):
    """The run name when --name is not given (see the module docstring).

    flags: train.py's namespace (arch, images, fold and the configuration); now: seconds
    since the epoch (default: the current time); pid: default this process's.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return (f"{flags.arch.replace(':', '_')}-{flags.images}-{config_tag(flags)}-f{flags.fold}-{stamp}-"
            f"{os.getpid() if pid is None else pid}")
