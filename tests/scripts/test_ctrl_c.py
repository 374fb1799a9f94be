"""Ctrl-C while a script still imports its libraries: the one line "stopped by Ctrl-C" and exit code
130, no traceback (utils/common/cli.py stop_on_ctrl_c, the first thing each script does)."""
import signal
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = ["train.py", "predict.py", "stack.py"] + [f"tools/{name}.py" for name in (
    "average_checkpoints", "convert_paths", "correlation", "explore", "label_issues", "make_demo", "make_mosaic",
    "near_duplicates", "plot_probs", "prune", "pseudo_label", "report", "run_status", "statistics", "thresholds")]
HEAVY = ("numpy", "pandas", "torch", "PIL")  # a line of -X importtime naming one: the script is importing it


def interrupt_while_importing(script):
    """(exit code, stderr without -X importtime's lines, whether SIGINT was sent): `script --help`
    run with -X importtime, SIGINT sent once a heavy library's import is reported, or never when the
    script finishes without one."""
    proc = subprocess.Popen([sys.executable, "-X", "importtime", str(ROOT / script), "--help"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    seen, sent = [], False
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("import time:") and any(f" {m}" in line for m in HEAVY):
            proc.send_signal(signal.SIGINT)
            sent = True
            break
    seen.append(proc.stderr.read())
    proc.wait(timeout=120)
    text = "".join(seen)
    return proc.returncode, "\n".join(ln for ln in text.splitlines() if not ln.startswith("import time:")), sent


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_during_the_imports_is_one_line_and_exit_130(script):
    rc, err, sent = interrupt_while_importing(script)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    if rc == 0:  # it finished before the signal could land (--help printed)
        return
    assert sent and rc == 130 and err.strip().splitlines()[-1] == "stopped by Ctrl-C"


def test_the_guard_stops_at_once_and_leaves_imported_modules_alone():
    """Run as a program, a script's Ctrl-C is one line and 130 until exit_cleanly starts; imported by
    another program (a test), it leaves that program's Ctrl-C as it was."""
    code = ("import signal, os, time, sys; sys.path.insert(0, %r); from utils.common.cli import stop_on_ctrl_c; "
            "stop_on_ctrl_c('some.module'); assert signal.getsignal(signal.SIGINT) is signal.default_int_handler; "
            "stop_on_ctrl_c('__main__'); os.kill(os.getpid(), signal.SIGINT); time.sleep(30)" % str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (130, "stopped by Ctrl-C\n")
    code = ("import signal, sys; sys.path.insert(0, %r); from utils.common.cli import exit_cleanly, stop_on_ctrl_c; "
            "stop_on_ctrl_c('__main__'); import os; exit_cleanly(lambda: os.kill(os.getpid(), signal.SIGINT) or "
            "__import__('time').sleep(30))" % str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (130, "stopped by Ctrl-C\n")  # exit_cleanly's KeyboardInterrupt path
