"""train.py end to end: stage plans, the run directory, exact resume after SIGKILL, torchrun."""
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, script_argv, write_dataset
from helpers import same_run, torchrun, train

PLAN = "epochs=2,size=32,bs=8,lr=2e-2,train=head;epochs=1,size=24,train=1,lr_mult=0.5;epochs=2,size=32,train=all,sched=cosine"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n=48, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted deterministic run of the three-stage plan."""
    out = tmp_path_factory.mktemp("ref")
    train(data, out, "--stages", PLAN, "--deterministic", "--ckpt-every", "2")
    return out / "r"


def test_three_stage_run_writes_the_run_directory(reference):
    cfg = json.loads((reference / "config.json").read_text())
    assert [s["size"] for s in cfg["stages"]] == [32, 24, 32]
    assert [s["train"] for s in cfg["stages"]] == ["head", "1", "all"]
    assert cfg["labels"] == ["a", "b", "c"] and cfg["fold"] == 0 and not os.path.isabs(cfg["data_root"])
    hist = pd.read_csv(reference / "history.csv")
    assert list(hist["stage"]) == [1, 1, 2, 3, 3] and list(hist["size"]) == [32, 32, 24, 32, 32]
    assert {"train_loss", "val_loss", "val_f2", "f2_a", "f2_b", "f2_c", "lr", "img_per_s"} <= set(hist.columns)
    best = torch.load(reference / "checkpoints" / "best.pt", weights_only=False)
    assert best["meta"]["labels"] == ["a", "b", "c"] and best["meta"]["arch"] == "tiny_cnn"
    assert abs(best["val_f2"] - hist["val_f2"].max()) < 1e-12
    preds = pd.read_csv(reference / "preds" / "val.none.csv")
    folds = pd.read_csv(os.path.join(cfg["data_root_abs"], "folds.csv"))
    assert set(preds["image_name"]) == set(folds.loc[folds["fold"] == 0, "image_name"])
    assert ((preds.iloc[:, 1:] >= 0) & (preds.iloc[:, 1:] <= 1)).all().all()
    assert json.loads((reference / "result.json").read_text())["finished"]


@pytest.mark.parametrize("kills", [
    # after epoch 1 of a first stage longer than one epoch: the resumed run must load the weights
    ["epoch_end:1"],
    # mid-epoch (resumes from the step-2 checkpoint), at a stage boundary where image size and
    # trainable layers change, at the start of a stage, while writing checkpoints (the last one too)
    ["step:3", "stage_end:0", "stage_start:1", "ckpt:7", "step:17", "ckpt:10"],
], ids=["epoch1-of-first-stage", "six-kills"])
def test_killed_and_resumed_equals_uninterrupted(data, reference, tmp_path, kills):
    out = tmp_path / "runs"
    args = ["--stages", PLAN, "--deterministic", "--ckpt-every", "2"]
    r = train(data, out, *args, kill=kills[0], check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    for k in kills[1:]:
        r = train(data, out, *args, "--resume", kill=k, check=False)
        assert r.returncode == -signal.SIGKILL, (k, r.stderr[-2000:])
    train(data, out, *args, "--resume")
    same_run(reference, out / "r")
    assert sorted(p.name for p in (out / "r" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_ctrl_c_leaves_a_resumable_checkpoint(data, reference, tmp_path):
    out = tmp_path / "runs"
    args = ["--stages", PLAN, "--deterministic", "--ckpt-every", "2"]
    r = train(data, out, *args, kill="sigint:5", check=False)
    assert r.returncode == 130, r.stderr[-2000:]
    assert "--resume" in r.stderr and (out / "r" / "checkpoints" / "last.pt").is_file()
    train(data, out, *args, "--resume")
    same_run(reference, out / "r")
    # resuming it once more: nothing to train, nothing rewritten
    stamps = {p: p.stat().st_mtime_ns for p in (out / "r").rglob("*") if p.is_file() and p.name != "run.lock"}
    r = train(data, out, *args, "--resume")
    assert "had already finished (result.json): nothing to resume" in r.stdout and "resuming" not in r.stderr
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_resume_without_a_name_takes_the_newest_unfinished_matching_run(data, tmp_path):
    out = tmp_path / "runs"
    flags = ["--data", str(data), "--out", str(out), "--arch", "tiny_cnn", "--no-pretrained", "--plots", "none",
             "--stages", "epochs=2,size=32,bs=8"]
    cmd = [sys.executable, "-W", "ignore", str(ROOT / "train.py"), *flags]
    r = subprocess.run([sys.executable, "-W", "ignore", *script_argv("train.py", "epoch_end:1"), *flags],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    (killed,) = list(out.iterdir())
    # the default name: <arch>-<variant>-<configuration tag>-f<fold>-<time>-<pid>
    assert re.fullmatch(r"tiny_cnn-train-[0-9a-f]{8}-f0-\d{8}-\d{6}-\d+", killed.name)
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(out.iterdir()) == [killed] and (killed / "result.json").is_file()
    assert len(pd.read_csv(killed / "history.csv")) == 2
    r = subprocess.run(cmd + ["--resume", "--fold", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "no unfinished run" in r.stderr


def test_resume_refuses_a_changed_plan(data, tmp_path):
    out = tmp_path / "runs"
    r = train(data, out, "--stages", "epochs=2,size=32,bs=8", kill="epoch_end:1", check=False)
    assert r.returncode == -signal.SIGKILL
    r = train(data, out, "--stages", "epochs=3,size=32,bs=8", "--resume", check=False)
    assert r.returncode == 2 and "stages" in r.stderr and "Traceback" not in r.stderr


def test_bad_flags_exit_2(data, tmp_path):
    r = train(data, tmp_path, "--stages", "epochs=1,size=32;epochs=x", check=False)
    assert r.returncode == 2 and "stage 2" in r.stderr
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--out", str(tmp_path),
                        "--arch", "resnt18", "--no-pretrained"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "resnet18" in r.stderr
    assert not any(tmp_path.iterdir())


def test_torchrun_two_processes_and_exact_resume(data, tmp_path):
    out = tmp_path / "runs"
    r = torchrun(data, out, "--name", "ddp")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["ddp"]  # rank 0 alone writes: one run directory
    run = out / "ddp"
    assert (run / "result.json").is_file() and len(pd.read_csv(run / "history.csv")) == 3
    preds = pd.read_csv(run / "preds" / "val.none.csv")
    folds = pd.read_csv(data / "folds.csv")
    assert sorted(preds["image_name"]) == sorted(folds.loc[folds["fold"] == 0, "image_name"])
    # killed after its first epoch, then resumed by a new torchrun: the same result
    out2 = tmp_path / "runs2"
    r = torchrun(data, out2, "--name", "ddp", kill="epoch_end:1")
    assert r.returncode != 0 and not (out2 / "ddp" / "result.json").exists()
    r = torchrun(data, out2, "--name", "ddp", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    same_run(run, out2 / "ddp")


def test_an_existing_folds_file_fixes_k_unless_folds_k_is_typed(tmp_path):
    data = write_dataset(tmp_path / "data", n=24, size=16)
    folds = np.arange(24) % 3
    pd.DataFrame({"image_name": [f"img{i:03d}" for i in range(24)], "fold": folds}).to_csv(data / "folds.csv",
                                                                                          index=False)
    out = tmp_path / "runs"
    train(data, out, "--stages", "epochs=1,size=16,bs=8", "--fold", "2")  # K=3 taken from the file
    assert json.loads((out / "r" / "config.json").read_text())["folds_k"] == 3
    val = pd.read_csv(out / "r" / "preds" / "val.none.csv")["image_name"]
    assert sorted(val) == [f"img{i:03d}" for i in range(24) if folds[i] == 2]
    r = train(data, out, "--stages", "epochs=1,size=16,bs=8", "--folds-k", "5", "--name", "k5", check=False)
    assert r.returncode == 2 and "K=3" in r.stderr and "leave --folds-k out" in r.stderr
    assert "Traceback" not in r.stderr and not (out / "k5").exists()
