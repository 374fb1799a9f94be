"""tools/thresholds.py --runs: each model's val files of every fold together (its out-of-fold
predictions), cross-fitted over the runs' folds, the models named and grouped as stack.py does."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from utils.metrics.thresholds import compare_strategies
from utils.runs.pred_files import write_preds
from utils.stack.library import load_library

LABELS = ["a", "b", "c"]


def make_data(root, n=48, k=3, seed=0):
    """DATA/train.csv and folds.csv (image i in fold i % k). Returns (names, y (n, 3), folds (n,))."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.5, 0.4, 0.3]).astype(np.uint8)
    folds = np.arange(n) % k
    names = [f"img{i:03d}" for i in range(n)]
    root.mkdir(parents=True)
    tags = [" ".join(lab for lab, v in zip(LABELS, row) if v) for row in y]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(root / "folds.csv", index=False)
    return names, y, folds


def write_run(runs, name, data, fold, names, probs, arch="m0", seed=0, tta="none", k=3):
    """A finished run folder as train.py leaves it, with preds/val.<tta>.csv."""
    d = runs / name
    d.mkdir(parents=True)
    cfg = {"name": name, "arch": arch, "fold": fold, "seed": seed, "labels": LABELS, "all_labels": LABELS,
           "label_group": None, "images": "train", "data_root": os.path.relpath(data, d),
           "data_root_abs": str(data), "folds_file": "folds.csv", "folds_k": k}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "result.json").write_text(json.dumps({"finished": True}))
    write_preds(d / "preds" / f"val.{tta}.csv", names, LABELS, probs)
    return d


def noisy(y, seed, signal=1.5):
    z = np.random.default_rng(seed).normal(size=y.shape) + signal * (2.0 * y - 1)
    return np.round(1 / (1 + np.exp(-z)), 4)


@pytest.fixture
def two_models(tmp_path):
    """Models 'net' (seeds 0 and 1) and 'big' (seed 0), a run per fold of 3, all with val.10crop.csv;
    'big' also has train.py's val.none.csv. Returns (data, runs, y, folds, {member: (N, 3) probs})."""
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    oof = {}
    for arch, seed, tag in (("net", 0, "net-s0"), ("net", 1, "net-s1"), ("big", 0, "big-s0")):
        oof[tag] = noisy(y, len(oof))
        for f in range(3):
            m = folds == f
            d = write_run(runs, f"{tag}-f{f}", data, f, [n for n, v in zip(names, m) if v], oof[tag][m],
                          arch=arch, seed=seed, tta="10crop")
            if arch == "big":
                write_preds(d / "preds" / "val.none.csv", [n for n, v in zip(names, m) if v], LABELS,
                            np.full((m.sum(), 3), 0.5))
    return data, runs, y, folds, oof


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "thresholds.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_each_model_is_cross_fitted_over_its_folds(two_models):
    data, runs, y, folds, oof = two_models
    r = run_tool("--runs", runs / "*", "--strategy", "fixed", "greedy", "--json")
    assert r.returncode == 0, r.stderr
    assert "--tta auto: 10crop (10 views)" in r.stderr and "9 runs" in r.stderr
    got = json.loads(r.stdout)["models"]
    lib = load_library([runs / "*"], "10crop", need_test=False)
    assert [g["model"] for g in got] == [m.name for m in lib.members]  # stack.py's members and names
    models = sorted(g["model"] for g in got)  # a second seed of a model adds -s<seed>, as in stack.py
    base = models[1][:-len("-s0")]  # the model's name: its runs' shared start (net), then the hash's start
    assert models[0].startswith("big-s0-") and models[0].count("-s") == 1
    assert base.startswith("net-") and models[1:] == [f"{base}-s0", f"{base}-s1"]
    assert models[1].endswith("-s0") and models[2].endswith("-s1")
    for g, member in zip(got, lib.members):
        tag = member.runs[0].rsplit("-f", 1)[0]
        want = compare_strategies(y, oof[tag], folds, ("fixed", "greedy"), LABELS)
        assert g["folds"] == f"{data / 'folds.csv'} (the out-of-fold predictions of folds 0, 1, 2)"
        for s in ("fixed", "greedy"):
            assert g["strategies"][s]["f2_per_fold"] == pytest.approx(want["strategies"][s]["f2_per_fold"])
            assert g["strategies"][s]["f2_in_sample"] == pytest.approx(want["strategies"][s]["f2_in_sample"])
        assert g["strategies"]["greedy"]["thresholds"] == pytest.approx(want["strategies"]["greedy"]["thresholds"])
    r = run_tool("--runs", runs / "*", "--strategy", "greedy")
    assert r.returncode == 0, r.stderr
    for member in lib.members:
        assert f"model {member.name}\n48 images, 3 labels, folds: {data / 'folds.csv'} (the out-of-fold " \
               f"predictions of folds 0, 1, 2)" in r.stdout


def test_one_models_runs_give_the_same_table_as_its_val_files(two_models):
    data, runs, y, folds, oof = two_models
    r = run_tool("--runs", *[runs / f"big-s0-f{f}" for f in range(3)], "--tta", "none", "--strategy", "greedy",
                 "--json")
    assert r.returncode == 0, r.stderr
    assert "--tta auto" not in r.stderr
    got = json.loads(r.stdout)
    want = compare_strategies(y, np.full((48, 3), 0.5), folds, ("greedy",), LABELS)
    assert got["strategies"]["greedy"]["f2_per_fold"] == pytest.approx(want["strategies"]["greedy"]["f2_per_fold"])
    assert got["model"].startswith("big-s0-")


def test_a_single_fold_falls_back_to_a_random_split_and_says_so(two_models):
    data, runs, *_ = two_models
    r = run_tool("--runs", runs / "net-s0-f1", "--strategy", "greedy", "--kfold", "4")
    assert r.returncode == 0, r.stderr
    assert f"folds: random 4-way split (seed 0), as the rows cover fold 1 only in {data / 'folds.csv'}" in r.stdout
    assert "16 images" in r.stdout and "single fold" in r.stderr


def test_several_runs_of_one_fold_keep_the_one_stack_uses(two_models):
    data, runs, y, folds, oof = two_models
    names = pd.read_csv(data / "folds.csv")["image_name"].tolist()
    m = folds == 0
    write_run(runs, "net-s0-f0-again", data, 0, [n for n, v in zip(names, m) if v], np.full((m.sum(), 3), 0.9),
              arch="net", tta="10crop")
    r = run_tool("--runs", runs / "net-s0-*", "--strategy", "greedy", "--json")
    assert r.returncode == 0, r.stderr
    assert "several runs of one fold; using net-s0-f0-again, net-s0-f1, net-s0-f2, not net-s0-f0" in r.stderr
    lib = load_library([runs / "net-s0-*"], "10crop", need_test=False)
    assert lib.members[0].runs == ["net-s0-f0-again", "net-s0-f1", "net-s0-f2"]
    p = oof["net-s0"].copy()
    p[m] = 0.9
    want = compare_strategies(y, p, folds, ("greedy",), LABELS)
    got = json.loads(r.stdout)
    assert got["strategies"]["greedy"]["f2_per_fold"] == pytest.approx(want["strategies"]["greedy"]["f2_per_fold"])


def test_bad_runs_exit_2(two_models, tmp_path):
    data, runs, *_ = two_models
    r = run_tool("--runs", tmp_path / "nothing" / "*")
    assert r.returncode == 2 and "no run (a folder with config.json) matches" in r.stderr
    r = run_tool("--runs", runs / "*", "--tta", "none")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "6 run(s) lack preds/val.none.csv" in r.stderr and f"{runs / 'net-s0-f0'}: has val.10crop.csv" in r.stderr
    r = run_tool("--runs", runs / "*", "--probs", tmp_path / "p.csv")
    assert r.returncode == 2 and "either --runs" in r.stderr
