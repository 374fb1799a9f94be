"""tools/submit.py stopped by SIGTERM: the training job it started on this machine stops too,
after writing its checkpoint, and the same command then resumes it; no train.py is left
running without a parent."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, write_dataset

SUBMIT = ROOT / "tools" / "submit.py"


def train_pids(run_dir):
    """Pids of train.py processes working on run_dir (from /proc)."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"train.py") for a in args) and str(run_dir.name).encode() in b" ".join(args):
            out.append(int(cmdline.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
def test_sigterm_stops_the_training_job_it_started_which_checkpoints_and_resumes(tmp_path):
    data = write_dataset(tmp_path / "data", n=40, size=24)
    out = tmp_path / "runs"
    cmd = [sys.executable, str(SUBMIT), "--data", str(data), "--out", str(out), "--arch", "tiny_cnn",
           "--folds", "0", "--folds-k", "2", "--cluster", "local", "--", "--no-pretrained",
           "--stages", "epochs=400,size=24,bs=4", "--plots", "none", "--no-tensorboard"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 240
    run = None
    while time.monotonic() < deadline and proc.poll() is None:   # until training has run an epoch
        runs = [p.parent for p in out.glob("*/history.csv")]
        if runs and len(runs[0].joinpath("history.csv").read_text().splitlines()) >= 2:
            run = runs[0]
            break
        time.sleep(0.5)
    assert run is not None and train_pids(run), proc.communicate()[0][-3000:] if proc.poll() is not None else ""
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=180)[0]
    assert proc.returncode == 143, output[-3000:]
    assert "stopping training of" in output and "Traceback" not in output
    assert train_pids(run) == []                                  # nothing left running
    assert (run / "checkpoints" / "last.pt").is_file()
    epochs_before = len((run / "history.csv").read_text().splitlines())
    again = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and again.poll() is None:   # the same command resumes the run
        if len((run / "history.csv").read_text().splitlines()) > epochs_before:
            break
        time.sleep(0.5)
    again.send_signal(signal.SIGTERM)
    output = again.communicate(timeout=180)[0]
    assert "1 run(s) unfinished (resumed)" in output, output[-3000:]
    assert len((run / "history.csv").read_text().splitlines()) > epochs_before
    assert train_pids(run) == []
