"""Runs and checkpoints written before utils/ became packages still resume and predict."""
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "legacy"


def _copy(tmp_path):
    dest = tmp_path / "legacy"
    shutil.copytree(FIXTURE, dest)
    return dest


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-W", "ignore", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.slow
def test_a_killed_run_of_the_old_layout_resumes_to_the_end(tmp_path):
    d = _copy(tmp_path)
    # how-to-run flags (the flag table's role=HOW) may differ from the run's
    r = _run(ROOT / "train.py", "--resume", "--name", "killed", "--out", "runs", "--workers", "0", "--device", "cpu",
             "--amp", "off", "--no-channels-last", cwd=d)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(pd.read_csv(d / "runs" / "killed" / "history.csv")) == 2
    assert (d / "runs" / "killed" / "result.json").is_file()


@pytest.mark.slow
def test_a_finished_run_of_the_old_layout_predicts_its_test_images(tmp_path):
    d = _copy(tmp_path)
    r = _run(ROOT / "predict.py", "--run", "runs/done", "--tta", "hflip", "--split", "both", cwd=d)
    assert r.returncode == 0, r.stderr[-2000:]
    test = pd.read_csv(d / "runs" / "done" / "preds" / "test.hflip.csv")
    assert len(test) == 4 and list(test.columns[-3:]) == ["a", "b", "c"]
    assert test[["a", "b", "c"]].to_numpy().min() >= 0


@pytest.mark.slow
def test_a_run_of_the_old_layout_refuses_another_configuration_on_resume(tmp_path):
    d = _copy(tmp_path)
    r = _run(ROOT / "train.py", "--resume", "--name", "killed", "--out", "runs", "--seed", "1", "--opt", "sgd", cwd=d)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--seed: the run was started with --seed 0, the command line gives 1" in r.stderr
    assert "--opt: the run was started with --opt at its default" in r.stderr  # a flag newer than the run
    assert "Traceback" not in r.stderr and len(pd.read_csv(d / "runs" / "killed" / "history.csv")) == 1
