"""Ctrl-C or SIGTERM during training: the first one stops cleanly, a second one aborts.

The first SIGINT or SIGTERM (a cluster's scheduler ending the job) only sets
`StopRequest.requested`; the trainer finishes the current step (or accumulation group),
writes checkpoints/last.pt, logs the --resume command and exits with status 130 after
Ctrl-C, 143 after SIGTERM. A second signal raises KeyboardInterrupt (SIGINT) or
utils.common.termination.Terminated (SIGTERM) at once, which the script turns into one
line and the same status after its temp files are removed. Under torchrun (or off the
main thread) the handlers are not installed: the ranks could not agree on where to stop,
so a signal there is the default abort.
"""
import logging
import os
import signal
import threading

from utils.common import distributed as dist
from utils.common.termination import Terminated

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised inside the epoch loop once the Ctrl-C checkpoint is written."""


class StopRequest:
    """Context manager that turns the first Ctrl-C into a request to stop (see module docstring)."""

    def __init__(self):
        self.requested = False
        self.exit_status = None  # 130 after Ctrl-C, 143 after SIGTERM
        self._old = {}
        self._pid = os.getpid()

    def __enter__(self):
        if dist.world_size() == 1 and threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in EXIT_STATUS}
        return self

    def _handle(self, signum, frame):
        if os.getpid() != self._pid:  # a forked loader worker: Ctrl-C is the parent's; SIGTERM ends it
            if signum == signal.SIGTERM:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if self.requested:
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()
        self.requested, self.exit_status = True, EXIT_STATUS[signum]
        what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        log.warning("%s: finishing this step and writing a checkpoint (%s again to abort)", what, what)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
