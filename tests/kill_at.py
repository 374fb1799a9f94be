"""Run a script with a test hook in the trainer that kills the process at a chosen point.

    python tests/kill_at.py WHAT:N SCRIPT [ARGS...]

WHAT:N names a Trainer event and its count (utils/train/trainer.py, Trainer.hooks):
step:N (the N-th step of the run), ckpt:N (the N-th write of last.pt), epoch_end:N (the
N-th epoch of the run), stage_end:N / stage_start:N (stage N, 0-based). There the process
dies by SIGKILL, as a power cut would kill it: under torchrun every rank reaches the point
and waits at a barrier first, so rank 0 is not cut in the middle of its checkpoint. At
ckpt:N the write is torn instead: the temp file is written, and the process dies before it
replaces last.pt. sigint:N sends Ctrl-C at step N, sigterm:N SIGTERM. rmrun:N deletes the
run folder after the N-th epoch of the run (as a user cleaning up might) and goes on.
SCRIPT then runs as `python SCRIPT ARGS` would run it; the hook is set as soon as SCRIPT
imports the trainer.
"""
import importlib.abc
import importlib.util
import os
import runpy
import shutil
import signal
import sys
from pathlib import Path

TRAINER = "utils.train.trainer"


class KillAt:
    """The hook: its event(name, n, **detail) acts at one event."""

    def __init__(self, spec):
        what, _, n = spec.partition(":")
        self.what, self.n = what, int(n)

    def event(self, name, n, **detail):
        if self.what in ("sigint", "sigterm"):
            if name == "step" and n == self.n:
                os.kill(os.getpid(), signal.SIGINT if self.what == "sigint" else signal.SIGTERM)
            return
        if self.what == "rmrun":
            if name == "epoch_end" and n == self.n:
                shutil.rmtree(detail["run_dir"])
            return
        if name != self.what or n != self.n:
            return
        if name == "ckpt":
            self._torn_write(detail["path"], detail["ckpt"])
        from utils.common import distributed

        distributed.barrier()
        os.kill(os.getpid(), signal.SIGKILL)

    @staticmethod
    def _torn_write(path, ckpt):
        import torch

        from utils.common.atomic import atomic_write

        def half_write(f):
            torch.save(ckpt, f)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write(path, half_write)


class SetHookOnImport(importlib.abc.MetaPathFinder):
    """Sets Trainer.hooks when the script imports the trainer (not earlier: the script's own
    settings made before it imports torch stay as they are)."""

    def __init__(self, hook):
        self.hook = hook

    def find_spec(self, name, path=None, target=None):
        if name != TRAINER:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_and_hook(module):
            exec_module(module)
            module.Trainer.hooks = self.hook
        spec.loader.exec_module = exec_and_hook
        return spec


def main():
    spec, script, *args = sys.argv[1:]
    sys.meta_path.insert(0, SetHookOnImport(KillAt(spec)))
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)  # as `python SCRIPT` sets it
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
