"""scripts/cv.sh: every fold trained and predicted exactly once, also after a kill."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, write_dataset

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_cv_sh_resumes_after_a_kill_and_runs_each_fold_once(tmp_path):
    data = write_dataset(tmp_path / "data", n=36, size=24)
    runs = tmp_path / "runs"
    env = dict(os.environ, DATA=str(data), RUNS=str(runs), FOLDS="2", TTA="hflip", TAG="t",
               PYTHON=sys.executable, PYTHONWARNINGS="ignore")
    cmd = ["bash", str(ROOT / "scripts" / "cv.sh"), "tiny_cnn", "8", "--no-pretrained",
           "--stages", "epochs=2,size=24", "--plots", "none", "--workers", "0"]
    # the first fold is killed in its second epoch: cv.sh stops (set -e) with the fold half done
    killing = tmp_path / "python-killed-at-epoch-end-1"  # an interpreter for cv.sh's PYTHON
    killing.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "kill_at.py"}" epoch_end:1 "$@"\n')
    killing.chmod(0o755)
    r = subprocess.run(cmd, env=dict(env, PYTHON=str(killing)), capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode != 0
    assert (runs / "tiny_cnn-t-f0" / "checkpoints" / "last.pt").is_file()
    assert not (runs / "tiny_cnn-t-f0" / "result.json").exists()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "tiny_cnn-t-f0: resuming" in r.stdout and "tiny_cnn-t-f1: training" in r.stdout
    assert sorted(p.name for p in runs.iterdir()) == ["tiny_cnn-t-f0", "tiny_cnn-t-f1"]
    folds = pd.read_csv(data / "folds.csv")
    seen = []
    for f in (0, 1):
        run = runs / f"tiny_cnn-t-f{f}"
        hist = pd.read_csv(run / "history.csv")
        assert list(hist["epoch"]) == [1, 2]  # each epoch exactly once, also in the resumed fold
        val = pd.read_csv(run / "preds" / "val.hflip.csv")
        assert set(val["image_name"]) == set(folds.loc[folds["fold"] == f, "image_name"])
        seen += list(val["image_name"])
        assert len(pd.read_csv(run / "preds" / "test.hflip.csv")) == 6
    assert sorted(seen) == sorted(folds["image_name"])  # out-of-fold covers the training set once
    # a third run has nothing left to do, also without FOLDS: K=2 comes from the folds file
    env.pop("FOLDS")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and r.stdout.count(": trained") == 2 and "predicted with hflip" in r.stdout
    assert sorted(p.name for p in runs.iterdir()) == ["tiny_cnn-t-f0", "tiny_cnn-t-f1"]


def test_zoo_sh_writes_the_submission_under_its_runs_folder_and_says_where(tmp_path):
    """zoo.sh's stack goes to RUNS/stack/ (submission and report together), not the repository's root."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"  # an interpreter for PYTHON that records each command: every run is finished
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\ncase "$1" in *run_status.py) echo finished;; esac\n')
    fake.chmod(0o755)
    runs = tmp_path / "runs"
    env = dict(os.environ, DATA=str(tmp_path / "data"), RUNS=str(runs), FOLDS="2", ARCHS="tiny_cnn",
               PYTHON=str(fake))
    r = subprocess.run(["bash", str(ROOT / "scripts" / "zoo.sh")], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    stack = [line.split() for line in calls.read_text().splitlines() if line.split()[0].endswith("stack.py")]
    assert len(stack) == 1
    args = stack[0]
    assert args[args.index("--out") + 1] == str(runs / "stack" / "submission.csv")
    assert args[args.index("--report-dir") + 1] == str(runs / "stack")
    assert f"submission: {runs / 'stack' / 'submission.csv'}" in r.stdout
    r = subprocess.run(["bash", str(ROOT / "scripts" / "zoo.sh")], env=dict(env, OUT=str(tmp_path / "subs")),
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    args = [line.split() for line in calls.read_text().splitlines() if line.split()[0].endswith("stack.py")][-1]
    assert r.returncode == 0 and args[args.index("--out") + 1] == str(tmp_path / "subs" / "submission.csv")


def test_cv_sh_names_runs_by_their_configuration_and_keeps_those_named_before(tmp_path):
    """How-to-run flags (--amp, --workers, ...) leave cv.sh's run names as they were; a run named
    by the former tag (a hash of every argument) is still found. Nothing is trained: cv.sh's PYTHON
    says every run is finished and predicted."""
    stub = tmp_path / "python-stub"
    stub.write_text(f'#!/bin/sh\ncase "$1" in\n  -c) exec "{sys.executable}" "$@" ;;\n'
                    f'  *run_status.py) echo finished ;;\n  *) echo "ran $*" ;;\nesac\n')
    stub.chmod(0o755)
    runs = tmp_path / "runs"
    env = dict(os.environ, DATA=str(tmp_path / "data"), RUNS=str(runs), FOLDS="1", TTA="hflip", PYTHON=str(stub))

    def name(*args):
        r = subprocess.run(["bash", str(ROOT / "scripts" / "cv.sh"), "tiny_cnn", "8", *args], env=env,
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        return r.stdout.split("== ")[1].split(":")[0]

    plain = name("--aug", "hflip")
    assert name("--aug", "hflip", "--amp", "bf16", "--workers", "2", "--no-channels-last") == plain
    assert name("--aug", "hflip", "--seed", "1") != plain
    former = subprocess.run(["sha1sum"], input="8 --aug hflip --amp off ", capture_output=True,
                            text=True).stdout[:8]  # the tag before how-to-run flags were left out
    (runs / f"tiny_cnn-{former}-f0" / "preds").mkdir(parents=True)
    assert name("--aug", "hflip", "--amp", "off") == f"tiny_cnn-{former}-f0"
