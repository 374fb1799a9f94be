"""SIGTERM as an exception, so a terminated script cleans up as it does after Ctrl-C.

By default SIGTERM ends a process at once: no `finally`, no `except` runs, and temp files
stay behind. `raise_on_sigterm` makes it raise Terminated instead (a BaseException, like
KeyboardInterrupt, so no `except Exception` swallows it); utils/common/cli.py run_script
turns it into one line and exit status 143 (128 + SIGTERM), Ctrl-C into 130.
"""
import os
import signal
import threading


class Terminated(BaseException):
    """SIGTERM arrived in the process that called raise_on_sigterm."""


def raise_on_sigterm():
    """From now on SIGTERM raises Terminated in this process (main thread only; no-op elsewhere).

    Child processes forked later keep the default: the handler ends them as SIGTERM would.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    owner = os.getpid()

    def handle(signum, frame):
        if os.getpid() != owner:  # a forked worker: die as SIGTERM means
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, handle)
