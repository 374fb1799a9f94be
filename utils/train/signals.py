"""Ctrl-C during training: the first one stops cleanly, a second one aborts.

The first SIGINT only sets `StopRequest.requested`; the trainer finishes the current
step (or accumulation group), writes checkpoints/last.pt, logs the --resume command
and exits with status 130. A second SIGINT raises KeyboardInterrupt at once. Under
torchrun (or off the main thread) the handler is not installed: the ranks could not
agree on where to stop, so Ctrl-C there is the default abort.
"""
import logging
import signal
import threading

from utils.common import distributed as dist

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Raised inside the epoch loop once the Ctrl-C checkpoint is written."""


class StopRequest:
    """Context manager that turns the first Ctrl-C into a request to stop (see module docstring)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if dist.world_size() == 1 and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
