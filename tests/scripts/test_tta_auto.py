"""--tta auto in stack.py, tools/label_issues.py, tools/thresholds.py and tools/pseudo_label.py on runs
scripts/cv.sh trained and predicted: they read its 10crop files (not train.py's val.none.csv), say so in
one line, and refuse runs that share no TTA naming each run and its files."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, write_dataset
from utils.data.dataset import align_names, read_truth
from utils.metrics.thresholds import compare_strategies
from utils.runs.pred_files import read_preds

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def cv_sh(data, runs, tta, tag, *train_args):
    """scripts/cv.sh tiny_cnn over 2 folds, predicting `tta` on val and test."""
    env = dict(os.environ, DATA=str(data), RUNS=str(runs), FOLDS="2", TTA=tta, TAG=tag, PYTHON=sys.executable,
               PYTHONWARNINGS="ignore")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "cv.sh"), "tiny_cnn", "8", "--no-pretrained",
                        "--stages", "epochs=1,size=24", "--plots", "none", "--workers", "0", *train_args],
                       env=env, capture_output=True, text=True, cwd=runs.parent, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dataset, the runs of cv.sh with its default TTA (10crop) in cv/, and runs of another seed
    predicted with hflip only in flip/. Returns (data, cv folder, flip folder)."""
    base = tmp_path_factory.mktemp("tta_auto")
    data = write_dataset(base / "data", n=24)
    cv_sh(data, base / "cv", "10crop", "t")
    cv_sh(data, base / "flip", "hflip", "h", "--seed", "1")
    return data, base / "cv", base / "flip"


def copy_runs(src, tmp_path):
    """The runs of `src` in a folder of their own under tmp_path (scripts write beside the runs)."""
    return shutil.copytree(src, tmp_path / src.name)


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_cv_sh_leaves_both_ttas(trained):
    _, cv, flip = trained
    assert sorted(p.name for p in (cv / "tiny_cnn-t-f0" / "preds").iterdir()) == \
        ["test.10crop.csv", "val.10crop.csv", "val.none.csv"]
    assert sorted(p.name for p in (flip / "tiny_cnn-h-f1" / "preds").iterdir()) == \
        ["test.hflip.csv", "val.hflip.csv", "val.none.csv"]
    for f in range(2):  # the TTA changes the probabilities, so reading the wrong file would show
        val = cv / f"tiny_cnn-t-f{f}" / "preds"
        assert not np.allclose(read_preds(val / "val.none.csv")[2], read_preds(val / "val.10crop.csv")[2])


def test_stack_reads_what_cv_sh_predicted(trained, tmp_path):
    runs = copy_runs(trained[1], tmp_path)
    r = run("stack.py", "--runs", runs / "*", "--method", "mean", "--out", tmp_path / "sub.csv")
    assert r.returncode == 0, r.stderr
    line = [s for s in r.stderr.splitlines() if s.startswith("--tta auto")]
    assert line == ["--tta auto: 10crop (10 views): of the TTAs with preds/val.<tta>.csv and preds/test.<tta>.csv "
                    "in every one of the 2 runs, the one with the most views"]
    rep = json.loads((runs / "stack_report.json").read_text())
    assert rep["settings"]["tta"] == "10crop" and "TTA `10crop`" in (runs / "stack_report.md").read_text()
    oof_names, _, oof = read_preds(runs / "stack_oof.csv")
    by_name = dict(zip(oof_names, oof))
    for f in range(2):
        names, _, p = read_preds(runs / f"tiny_cnn-t-f{f}" / "preds" / "val.10crop.csv")
        np.testing.assert_allclose([by_name[n] for n in names], p, atol=1e-6)
    # without --out only the validation files count; --tta none keeps its meaning
    r = run("stack.py", "--runs", runs / "*", "--method", "mean", "--tta", "none", "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "--tta auto" not in r.stderr
    assert json.loads((tmp_path / "rep" / "stack_report.json").read_text())["settings"]["tta"] == "none"
    oof_names, _, oof = read_preds(tmp_path / "rep" / "stack_oof.csv")
    names, _, p = read_preds(runs / "tiny_cnn-t-f0" / "preds" / "val.none.csv")
    np.testing.assert_allclose(oof[[oof_names.index(n) for n in names]], p, atol=1e-6)


def test_stack_refuses_runs_that_share_no_tta_naming_each(trained, tmp_path):
    cv, flip = copy_runs(trained[1], tmp_path), copy_runs(trained[2], tmp_path)
    before = sorted(tmp_path.rglob("*"))
    r = run("stack.py", "--runs", cv / "*", flip / "*", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no TTA has preds/val.<tta>.csv and preds/test.<tta>.csv in every run" in r.stderr
    assert f"{cv / 'tiny_cnn-t-f0'}, {cv / 'tiny_cnn-t-f1'}: val: 10crop, none; test: 10crop" in r.stderr
    assert f"{flip / 'tiny_cnn-h-f0'}, {flip / 'tiny_cnn-h-f1'}: val: hflip, none; test: hflip" in r.stderr
    assert "--tta NAME" in r.stderr and "python predict.py --runs " in r.stderr
    assert sorted(tmp_path.rglob("*")) == before
    r = run("stack.py", "--runs", cv / "*", flip / "*", "--tta", "hflip", "--method", "mean",
            "--out", tmp_path / "sub.csv")
    assert r.returncode == 0, r.stderr
    assert "left out tiny_cnn" in r.stderr and "lacks preds/val.hflip.csv" in r.stderr  # a TTA named: as before
    # validation files only: every run has train.py's val.none.csv
    r = run("stack.py", "--runs", cv / "*", flip / "*", "--method", "mean", "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "--tta auto: none (1 view): of the TTAs with preds/val.<tta>.csv in every one of the 4 runs" in r.stderr


@pytest.mark.parametrize("tta, source", [(None, "10crop"), ("none", "none")])
def test_label_issues_reads_the_shared_tta(trained, tmp_path, tta, source):
    runs = trained[1]
    r = run("tools/label_issues.py", "--runs", runs / "*", "--top", "3", "--out", tmp_path / "li",
            *(["--tta", tta] if tta else []))
    assert r.returncode == 0, r.stderr
    assert ("--tta auto: 10crop (10 views)" in r.stderr) == (tta is None)
    table = pd.read_csv(tmp_path / "li" / "label_issues.csv", dtype={"image_name": str})
    probs = {}
    for f in range(2):
        names, labels, p = read_preds(runs / f"tiny_cnn-t-f{f}" / "preds" / f"val.{source}.csv")
        probs.update(zip(names, p))
    assert len(table) == 24
    for row in table.itertuples():
        assert row.probability == pytest.approx(probs[row.image_name][labels.index(row.tag)], abs=1e-5)


def test_pseudo_label_reads_the_shared_test_tta(trained, tmp_path):
    runs = trained[1]
    r = run("tools/pseudo_label.py", "--runs", runs / "*", "--quantile", "0", "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    assert "--tta auto: 10crop (10 views): of the TTAs with preds/test.<tta>.csv" in r.stderr
    want = np.mean([read_preds(runs / f"tiny_cnn-t-f{f}" / "preds" / "test.10crop.csv")[2] for f in range(2)], 0)
    np.testing.assert_allclose(read_preds(tmp_path / "p.csv")[2], want, atol=1e-6)
    r = run("tools/pseudo_label.py", "--runs", runs / "*", "--tta", "none", "--out", tmp_path / "q.csv")
    assert r.returncode == 2 and "test.none.csv: missing" in r.stderr and not (tmp_path / "q.csv").exists()
    r = run("tools/pseudo_label.py", "--runs", runs / "*", trained[2] / "*", "--out", tmp_path / "q.csv")
    assert r.returncode == 2 and "no TTA has preds/test.<tta>.csv in every run" in r.stderr
    assert not (tmp_path / "q.csv").exists()


def test_thresholds_reads_the_runs_tta_with_the_most_views(trained):
    data, runs, _ = trained
    run_dir = runs / "tiny_cnn-t-f0"
    r = run("tools/thresholds.py", "--runs", run_dir, "--strategy", "fixed", "greedy", "--json")
    assert r.returncode == 0, r.stderr
    assert "--tta auto: 10crop (10 views): of the TTAs with preds/val.<tta>.csv in the run" in r.stderr
    names, labels, p = read_preds(run_dir / "preds" / "val.10crop.csv")
    truth_names, y = read_truth(data / "train.csv", labels)
    want = compare_strategies(y[align_names(names, truth_names, "val vs truth")], p, None, ("fixed", "greedy"), labels)
    got = json.loads(r.stdout)
    for s in ("fixed", "greedy"):
        assert got["strategies"][s]["f2_in_sample"] == pytest.approx(want["strategies"][s]["f2_in_sample"])
        assert got["strategies"][s]["thresholds"] == pytest.approx(want["strategies"][s]["thresholds"])
    r = run("tools/thresholds.py", "--runs", run_dir, "--tta", "hflip")
    assert r.returncode == 2 and f"{run_dir}: has val.10crop.csv, val.none.csv" in r.stderr
    assert f"python predict.py --runs {run_dir} --tta hflip --split val" in r.stderr
