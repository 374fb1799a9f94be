"""predict.py and stack.py --thresholds FILE: the submission applies the file's thresholds (the format
tools/explore.py saves, utils/metrics/threshold_file.py) to the test probabilities they write."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, write_dataset
from utils.runs.pred_files import read_preds, write_preds

LABELS = ["a", "b", "c"]


def run(script, *args):
    return subprocess.run([sys.executable, "-W", "ignore", str(ROOT / script), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def tags_at(path, thresholds):
    """{image: tags} of a preds file's probabilities at `thresholds` (p >= t)."""
    names, labels, probs = read_preds(path)
    return {n: " ".join(l for l, v in zip(labels, row) if v) for n, row in zip(names, probs >= thresholds)}


def submission(path):
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(df["image_name"], df["tags"]))


def write_thresholds(path, values, labels=LABELS):
    path.write_text(json.dumps({"thresholds": dict(zip(labels, values)), "model": "m0"}))
    return path


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """Finished runs of two models over 3 folds with val and test predictions (preds/*.none.csv)."""
    root = tmp_path_factory.mktemp("thr")
    rng = np.random.default_rng(0)
    n, k, names, tests = 90, 3, [f"i{i:03d}" for i in range(90)], [f"t{i:02d}" for i in range(12)]
    y = (rng.random((n, 3)) < 0.4).astype(int)
    data = root / "data"
    data.mkdir()
    pd.DataFrame({"image_name": names, "tags": [" ".join(l for l, v in zip(LABELS, r) if v) for r in y]}
                 ).to_csv(data / "train.csv", index=False)
    folds = np.arange(n) % k
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(data / "folds.csv", index=False)
    pd.DataFrame({"image_name": tests, "tags": ""}).to_csv(data / "sample_submission.csv", index=False)
    for arch in ("m0", "m1"):
        p = 1 / (1 + np.exp(-(rng.normal(0, 1, y.shape) + 1.5 * (2 * y - 1))))
        for f in range(k):
            run_dir = root / "runs" / f"{arch}-f{f}"
            (run_dir / "preds").mkdir(parents=True)
            cfg = {"name": run_dir.name, "arch": arch, "fold": f, "seed": 0, "labels": LABELS, "all_labels": LABELS,
                   "label_group": None, "images": "train", "data_root": os.path.relpath(data, run_dir),
                   "data_root_abs": str(data), "folds_file": "folds.csv", "folds_k": k}
            (run_dir / "config.json").write_text(json.dumps(cfg))
            (run_dir / "result.json").write_text(json.dumps({"finished": True}))
            rows = np.flatnonzero(folds == f)
            write_preds(run_dir / "preds" / "val.none.csv", [names[i] for i in rows], LABELS, p[rows])
            write_preds(run_dir / "preds" / "test.none.csv", tests, LABELS, rng.random((len(tests), 3)))
    return root


def test_stack_applies_the_file_to_its_submission(library, tmp_path):
    thr = write_thresholds(tmp_path / "thresholds.json", [0.3, 0.55, 0.8])
    r = run("stack.py", "--runs", library / "runs" / "*", "--method", "mean", "--thresholds", thr,
            "--out", tmp_path / "sub.csv", "--report-dir", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert submission(tmp_path / "sub.csv") == tags_at(tmp_path / "stack_test.csv", [0.3, 0.55, 0.8])
    report = json.loads((tmp_path / "stack_report.json").read_text())
    assert report["thresholds"] == {"a": 0.3, "b": 0.55, "c": 0.8}
    assert report["settings"]["thresholds_file"] == str(thr)
    # the report of a stack is itself a thresholds file: the same submission again
    r = run("stack.py", "--runs", library / "runs" / "*", "--method", "mean", "--thresholds", tmp_path / "stack_report.json",
            "--out", tmp_path / "sub2.csv", "--report-dir", tmp_path / "again")
    assert r.returncode == 0 and submission(tmp_path / "sub2.csv") == submission(tmp_path / "sub.csv")


@pytest.mark.parametrize("extra, labels, message", [
    (["--report-dir", "OUT"], LABELS, "--thresholds decides the submission's tags: give --out"),
    (["--out", "OUT/s.csv", "--threshold", "expected"], LABELS, "--threshold expected decides without them"),
    (["--out", "OUT/s.csv"], ["a", "b"], "no threshold for 1 label(s): c"),
])
def test_stack_refuses_a_file_that_cannot_apply(library, tmp_path, extra, labels, message):
    thr = write_thresholds(tmp_path / "t.json", [0.5] * len(labels), labels)
    r = run("stack.py", "--runs", library / "runs" / "*", "--method", "mean", "--thresholds", thr,
            *[a.replace("OUT", str(tmp_path)) for a in extra])
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.csv").exists() and not (tmp_path / "stack_report.json").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (fold 0 of 3)."""
    base = tmp_path_factory.mktemp("pt")
    data = write_dataset(base / "data", n=18, size=16, n_test=5)
    r = run("train.py", "--data", data, "--out", base / "runs", "--arch", "tiny_cnn", "--no-pretrained",
            "--stages", "epochs=1,size=16,bs=8", "--folds-k", 3, "--fold", 0, "--name", "r", "--plots", "none",
            "--device", "cpu", "--workers", 0, "--cache-dir", base / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    return base


def test_predict_applies_the_file_without_out_of_fold_predictions(trained, tmp_path):
    run_dir = trained / "runs" / "r"
    (run_dir / "preds" / "val.none.csv").unlink()  # the file's thresholds need none
    thr = write_thresholds(tmp_path / "thresholds.json", [0.45, 0.5, 0.55])
    r = run("predict.py", "--runs", run_dir, "--split", "test", "--submission", tmp_path / "sub.csv",
            "--thresholds", thr, "--cache-dir", trained / "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    assert submission(tmp_path / "sub.csv") == tags_at(run_dir / "preds" / "test.none.csv", [0.45, 0.5, 0.55])
    assert "the thresholds of" in r.stdout
    # a file for other labels is refused before anything is predicted
    bad = write_thresholds(tmp_path / "bad.json", [0.5, 0.5], ["a", "x"])
    r = run("predict.py", "--runs", run_dir, "--split", "test", "--submission", tmp_path / "sub2.csv",
            "--thresholds", bad, "--cache-dir", trained / "cache")
    assert r.returncode == 2 and "--thresholds" in r.stderr and "x" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "sub2.csv").exists()
