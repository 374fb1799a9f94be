"""train.py's default run name: what the run is, which configuration, which fold, and when.

    <arch>-<images>-<tag>-f<fold>-<YYYYmmdd-HHMMSS>-<pid>

The tag is a short hash of the run's flags (those that change what is learnt), as
scripts/cv.sh tags its runs, so runs of one configuration share it. The process id
keeps apart two runs started in the same second on one machine; runs started on two
machines sharing a folder are kept apart by the run lock (utils/runs/run_guard.py).
"""
import hashlib
import json
import os
import time

# flags that say how or where to run, not what is learnt: left out of the tag
NOT_CONFIGURATION = {"fold", "name", "out", "resume", "workers", "device", "cache_dir", "plots", "tensorboard",
                     "ckpt_every", "ckpt_minutes", "eval_bs", "compile", "channels_last", "aug_device"}


# how-to-run flags the tag once hashed: hashed at their default whatever their value, so a run's
# name does not depend on them and the tags of runs named before stay as they were
HASHED_AT_DEFAULT = {"amp": "auto"}


def config_tag(flags):
    """8 hex digits over the flags (a namespace) that define the configuration."""
    key = {k: v for k, v in sorted(vars(flags).items()) if not k.startswith("_") and k not in NOT_CONFIGURATION}
    key.update({k: v for k, v in HASHED_AT_DEFAULT.items() if k in key})
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_name(flags, now=None, pid=None):
    """The run name when --name is not given (see the module docstring).

    flags: train.py's namespace (arch, images, fold and the configuration); now: seconds
    since the epoch (default: the current time); pid: default this process's.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return (f"{flags.arch.replace(':', '_')}-{flags.images}-{config_tag(flags)}-f{flags.fold}-{stamp}-"
            f"{os.getpid() if pid is None else pid}")
