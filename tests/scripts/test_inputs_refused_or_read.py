"""Inputs people really produce, through the scripts: hand-edited folds files, tags in several
cases, a diverged training, a runs folder reused for another dataset, phone photos. Each gives a
clean refusal (exit code 2, or 1 for a diverged run; the file, row or run named; nothing
written) or a clean success, never a traceback."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, script_argv, write_dataset

FAST = "epochs=1,size=16,bs=8"


def run(script, *args, env=None):
    cmd = [sys.executable, "-W", "ignore", *script_argv(script), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def train(data, out, *extra, name="r"):
    return run("train.py", "--data", data, "--out", out, "--arch", "tiny_cnn", "--no-pretrained", "--plots", "none",
               "--no-tensorboard", "--name", name, *extra)


def tree(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


def clean(r, code):
    """The script exited with `code`, with an error line and no traceback; returns stderr."""
    assert r.returncode == code and "Traceback" not in r.stderr and "error:" in r.stderr, r.stderr[-3000:]
    return r.stderr


def edit_folds(path, how):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if how == "drop":
        df = df.iloc[1:]
    elif how == "stranger":
        df.loc[2, "image_name"] = "stranger"
    else:
        df.loc[2, "fold"] = how
    df.to_csv(path, index=False)


# ----------------------------------------------------------------------------- hand-edited inputs

@pytest.mark.parametrize("how,needle", [("7", "row 4: fold 7 is out of range"), ("-1", "row 4: fold -1 is negative"),
                                        ("1.5", "row 4: fold '1.5' is not an integer"),
                                        ("", "row 4: fold '' is not an integer"),
                                        ("drop", "'img000'"), ("stranger", "'stranger'"),
                                        ("case", "'Red' in row 3; 'red' in row 2")])
def test_hand_edited_inputs_are_refused_before_anything_is_written(tmp_path, how, needle):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=2)
    names = [f"img{i:03d}" for i in range(12)]
    if how == "case":
        (data / "train.csv").write_text("image_name,tags\n" + "".join(
            f"{n},{'red' if i == 0 else 'Red' if i == 1 else 'a'}\n" for i, n in enumerate(names)))
    else:
        (data / "folds.csv").write_text("image_name,fold\n" + "".join(f"{n},{i % 3}\n" for i, n in enumerate(names)))
        edit_folds(data / "folds.csv", how)
    before = tree(data)
    err = clean(train(data, tmp_path / "runs", "--stages", FAST), 2)
    assert needle in err and ("folds.csv" in err or how == "case"), err
    assert tree(data) == before and not (tmp_path / "runs").exists()  # no run folder, no cache


def test_a_fold_outside_the_file_is_refused_before_a_run_folder(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=2)
    (data / "folds.csv").write_text("image_name,fold\n" + "".join(f"img{i:03d},{i % 3}\n" for i in range(12)))
    err = clean(train(data, tmp_path / "runs", "--stages", FAST, "--fold", "3"), 2)
    assert "--fold 3: must be in 0..2" in err and not (tmp_path / "runs").exists()


def fake_runs(tmp_path, data, folds, k, fingerprint=None):
    """Finished runs of one model (fold 0..k-1) with prediction files, as stack.py reads them."""
    names = pd.read_csv(data / "train.csv")["image_name"].tolist()
    test = pd.read_csv(data / "sample_submission.csv")["image_name"].tolist()
    rng = np.random.default_rng(0)
    runs = []
    for f in range(k):
        r = tmp_path / "runs" / f"m-f{f}"
        (r / "preds").mkdir(parents=True)
        cfg = {"name": r.name, "arch": "m", "fold": f, "seed": 0, "labels": ["a", "b", "c"], "folds_k": k,
               "data_root_abs": str(data.resolve()), "folds_file": "folds.csv",
               **({"dataset": fingerprint} if fingerprint else {})}
        (r / "config.json").write_text(json.dumps(cfg))
        (r / "result.json").write_text(json.dumps({"finished": True, "best_val_f2": 0.5, "best_epoch": 1}))
        val = [n for n, g in zip(names, folds) if g == f]
        for split, rows in (("val", val), ("test", test)):
            pd.DataFrame(rng.random((len(rows), 3)), columns=["a", "b", "c"]).assign(image_name=rows)[
                ["image_name", "a", "b", "c"]].to_csv(r / "preds" / f"{split}.none.csv", index=False)
        runs.append(r)
    return runs


def test_stack_names_a_bad_fold_row_and_a_diverged_run(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=2)
    folds = [i % 2 for i in range(12)]
    (data / "folds.csv").write_text("image_name,fold\n" + "".join(f"img{i:03d},{f}\n" for i, f in enumerate(folds)))
    runs = fake_runs(tmp_path, data, folds, 2)
    edit_folds(data / "folds.csv", "-1")
    err = clean(run("stack.py", "--runs", tmp_path / "runs", "--method", "mean", "--out", tmp_path / "s.csv"), 2)
    assert "folds.csv" in err and "row 4: fold -1 is negative" in err
    edit_folds(data / "folds.csv", "0")
    (runs[1] / "diverged.json").write_text(json.dumps({"what": "the training loss is nan",
                                                       "where": "stage 1, epoch 2, step 3"}))
    err = clean(run("stack.py", "--runs", tmp_path / "runs", "--method", "mean", "--out", tmp_path / "s.csv"), 2)
    assert "m-f1 (fold 1): diverged at stage 1, epoch 2, step 3 (the training loss is nan)" in err
    assert not (tmp_path / "s.csv").exists()


# ----------------------------------------------------------------------------- divergence

def test_a_diverged_run_stops_in_one_line_keeps_its_finite_weights_and_is_refused(tmp_path):
    import torch

    data = write_dataset(tmp_path / "data", n=16, size=16, n_test=2)
    out = tmp_path / "runs"
    r = train(data, out, "--stages", "epochs=1,size=16,bs=8,lr=1e-3;epochs=2,lr=1e12")
    err = clean(r, 1)
    line = [x for x in err.splitlines() if "error:" in x][0]
    assert "training diverged at stage 2, epoch 2, step" in line and "lr 1e+12" in line and "--lr 1e+11" in line
    run_dir = out / "r"
    assert json.loads((run_dir / "diverged.json").read_text())["where"].startswith("stage 2, epoch 2")
    assert not (run_dir / "result.json").exists()
    for name in ("best", "last"):  # stage 1's finite weights, never replaced by the diverged ones
        ckpt = torch.load(run_dir / "checkpoints" / f"{name}.pt", weights_only=False)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    err = clean(run("predict.py", "--runs", run_dir, "--split", "test"), 2)
    assert f"{run_dir}: the run diverged at stage 2, epoch 2" in err
    assert not (run_dir / "preds" / "test.none.csv").exists()
    err = clean(run("train.py", "--out", out, "--resume", "--name", "r"), 1)  # the same line, not a traceback
    assert "training diverged at stage 2, epoch 2" in err
    status = run("tools/run_status.py", "--runs", run_dir)
    assert status.returncode == 0 and status.stdout.startswith("diverged ") and "diverged at stage 2" in status.stderr


# ----------------------------------------------------------------------------- a runs folder of another dataset

def test_cv_sh_and_predict_refuse_runs_of_another_dataset_and_accept_a_copy(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    a = write_dataset(tmp_path / "a", n=16, size=16, n_test=2, seed=0)
    b = write_dataset(tmp_path / "b", n=16, size=16, n_test=2, seed=1)
    out = tmp_path / "runs"
    assert train(a, out, "--stages", FAST, "--folds-k", "2", name="tiny_cnn-t-f0").returncode == 0
    for split in ("val", "test"):  # cv.sh finds the run predicted: it has nothing left to do with it
        preds = out / "tiny_cnn-t-f0" / "preds"
        shutil.copy(preds / "val.none.csv", preds / f"{split}.x.csv")
    env = dict(os.environ, RUNS=str(out), FOLDS="1", TTA="x", TAG="t", PYTHON=sys.executable, PYTHONWARNINGS="ignore")
    cmd = ["bash", str(ROOT / "scripts" / "cv.sh"), "tiny_cnn", "8", "--no-pretrained"]
    before = tree(out)
    r = subprocess.run(cmd, env=dict(env, DATA=str(b)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "trained" not in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "was trained on another dataset" in r.stderr
    assert str(a.resolve()) in r.stderr and str(b.resolve()) in r.stderr
    assert "give each dataset its own RUNS folder" in r.stderr and tree(out) == before
    copy = shutil.copytree(a, tmp_path / "copy")  # the same files elsewhere: the same dataset
    r = subprocess.run(cmd, env=dict(env, DATA=str(copy)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "tiny_cnn-t-f0: trained" in r.stdout, r.stdout + r.stderr
    err = clean(run("predict.py", "--runs", out / "tiny_cnn-t-f0", "--data", b, "--split", "test"), 2)
    assert "was trained on another dataset" in err and "leave --data out" in err
    assert run("predict.py", "--runs", out / "tiny_cnn-t-f0", "--data", copy, "--split", "test").returncode == 0


# ----------------------------------------------------------------------------- photos from phones

def test_motion_photos_and_heic_train_and_predict(tmp_path):
    pytest.importorskip("pillow_heif")
    from utils.data import heif  # noqa: F401  (PIL writes HEIF once the opener is registered)

    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=2)
    video = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20
    for path in (data / "train" / "img001.jpg", data / "test" / "t001.jpg"):
        path.write_bytes(path.read_bytes() + video)
    (data / "train" / "img002.jpg").unlink()
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(data / "train" / "img002.heic", format="HEIF")
    r = train(data, tmp_path / "runs", "--stages", FAST)
    assert r.returncode == 0 and "damaged" not in r.stderr and "truncated" not in r.stderr, r.stderr[-3000:]
    r = run("predict.py", "--runs", tmp_path / "runs" / "r", "--split", "test")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "runs" / "r" / "preds" / "test.none.csv")) == 2


def test_submit_grid_refuses_runs_of_another_dataset_before_submitting(tmp_path):
    from utils.grid.cluster import make_cells
    from utils.runs.fingerprint import dataset_fingerprint

    a = write_dataset(tmp_path / "a", n=16, size=16, n_test=2, seed=0)
    b = write_dataset(tmp_path / "b", n=16, size=16, n_test=2, seed=1)
    for data in (a, b):
        (data / "folds.csv").write_text("image_name,fold\n" + "".join(f"img{i:03d},{i % 2}\n" for i in range(16)))
    flags = ["--no-pretrained", "--stages", FAST, "--plots", "none"]
    out = tmp_path / "runs"
    for cell in make_cells({"tiny_cnn": []}, [0, 1], [0], flags):  # the grid's runs, finished on dataset a
        (out / cell.name).mkdir(parents=True)
        (out / cell.name / "config.json").write_text(json.dumps(
            {"name": cell.name, "arch": "tiny_cnn", "fold": cell.fold, "labels": ["a", "b", "c"],
             "folds_file": "folds.csv", "dataset": dataset_fingerprint(a, folds_file=a / "folds.csv")}))
        (out / cell.name / "result.json").write_text(json.dumps({"finished": True}))
    before = tree(out)
    r = run("tools/submit.py", "--cluster", "debug", "--data", b, "--out", out, "--arch", "tiny_cnn", "--folds", "0",
            "1", "--", *flags)
    err = clean(r, 2)
    assert "the grid cannot run; nothing was submitted: 2 problem(s)" in err and err.count("another dataset") == 2
    assert str(a.resolve()) in err and str(b.resolve()) in err and "its own --out folder" in err
    assert tree(out) == before and "skipped" not in r.stdout
