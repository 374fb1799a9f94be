"""train.py --exclude: fewer training rows, the whole validation fold still predicted, recorded and resumable."""
import hashlib
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, write_dataset
from utils.data.dataset import load_dataset
from utils.data.folds import load_or_make_folds
from utils.runs.directory import model_key

PLAN = "epochs=1,size=24,bs=8,lr=1e-2,train=all"


def train(data, out, *extra, name="r"):
    cmd = [sys.executable, "-W", "ignore", str(ROOT / "train.py"), "--data", str(data), "--out", str(out),
           "--arch", "tiny_cnn", "--no-pretrained", "--name", name, "--plots", "none", "--stages", PLAN, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def excluded_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ex")
    data = write_dataset(tmp / "data", n=40, size=24)
    load_or_make_folds(load_dataset(data), k=5, seed=42)  # folds.csv as train.py makes it
    folds = pd.read_csv(data / "folds.csv", dtype={"image_name": str})
    val = folds[folds["fold"] == 0]["image_name"].tolist()
    rest = folds[folds["fold"] != 0]["image_name"].tolist()
    listed = rest[:4] + val[:2]
    exclude = tmp / "drop.csv"
    pd.DataFrame({"image_name": listed, "score": 0.1}).to_csv(exclude, index=False)
    r = train(data, tmp / "runs", "--exclude", exclude)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, data, tmp / "runs" / "r", exclude, listed, val, rest


@pytest.mark.slow
def test_exclude_shrinks_training_by_the_listed_rows(excluded_run):
    _, _, run, exclude, listed, val, rest = excluded_run
    history = pd.read_csv(run / "history.csv")
    assert history["seen"].tolist() == [len(rest) - 4]  # 4 listed images were in the training folds
    preds = pd.read_csv(run / "preds" / "val.none.csv", dtype={"image_name": str})
    assert sorted(preds["image_name"]) == sorted(val)  # the listed validation images are still predicted
    result = json.loads((run / "result.json").read_text())
    assert sorted(result["excluded_val"]) == sorted(listed[4:])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["exclude"] == hashlib.sha1(exclude.read_bytes()).hexdigest() and cfg["exclude_n"] == len(listed)
    assert pd.read_csv(run / cfg["exclude_file"], dtype=str)["image_name"].tolist() == sorted(listed, key=lambda n: int(n[3:]))
    assert cfg["model_key"] == model_key(cfg) != model_key({**cfg, "exclude": None})


@pytest.mark.slow
def test_resume_needs_the_same_list(excluded_run):
    tmp, data, run, exclude, listed, _, _ = excluded_run
    other = tmp / "other.csv"
    pd.DataFrame({"image_name": listed[:3]}).to_csv(other, index=False)
    r = train(data, tmp / "runs", "--resume", "--exclude", other)
    assert r.returncode == 2 and "--exclude" in r.stderr and str(other) in r.stderr
    r = train(data, tmp / "runs", "--resume")  # without the flag: the run's own list, stored in config.json
    assert r.returncode == 0, r.stderr[-3000:]
    before = exclude.read_bytes()
    try:
        exclude.write_bytes(before + b"img005,0.2\n")  # the list changed since the run started
        r = train(data, tmp / "runs", "--resume")
        assert r.returncode == 2 and "exclude" in r.stderr
    finally:
        exclude.write_bytes(before)


@pytest.mark.slow
def test_unknown_names_exit_2_naming_file_and_rows(excluded_run):
    tmp, data, _, _, _, _, _ = excluded_run
    bad = tmp / "bad.csv"
    bad.write_text("image_name\nimg000\nnope\nimg001\nalso_nope\n")
    r = train(data, tmp / "runs2", "--exclude", bad)
    assert r.returncode == 2
    assert str(bad) in r.stderr and "row 3: 'nope'" in r.stderr and "row 5: 'also_nope'" in r.stderr
    (tmp / "nocol.csv").write_text("name\nimg000\n")
    r = train(data, tmp / "runs2", "--exclude", tmp / "nocol.csv")
    assert r.returncode == 2 and "no image_name column" in r.stderr
    assert not (tmp / "runs2").exists()
