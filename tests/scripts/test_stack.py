"""stack.py and utils/stack/library.py on synthetic libraries written as run directories in tmp_path."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from helpers import FAST_METHODS, LIBRARY_LABELS, LIBRARY_MODELS, run_stack, write_runs
from utils.common.errors import DataError
from utils.runs.pred_files import read_preds, write_preds
from utils.stack.library import load_library


@pytest.fixture
def library(tmp_path):
    return write_runs(tmp_path, LIBRARY_MODELS)


# ----------------------------------------------------------------------------- the library

def test_library_assembles_oof_test_and_masks(library):
    root, y, folds, probs = library
    lib = load_library([root / "runs" / "*"])
    assert lib.labels == list(LIBRARY_LABELS)
    np.testing.assert_array_equal(lib.y, y)
    np.testing.assert_array_equal(lib.folds, folds)
    assert lib.test_names == [f"t{i:03d}" for i in range(30)]        # sample_submission order
    by_name = {(m.config["arch"], m.seed): i for i, m in enumerate(lib.members)}
    assert len(lib.members) == 5                                      # net0 has two seeds
    assert lib.members[by_name[("net0", 0)]].model == lib.members[by_name[("net0", 1)]].model
    for (arch, seed), (p, tests) in probs.items():
        i = by_name[(arch, seed)]
        cols = [LIBRARY_LABELS.index(t) for t in lib.members[i].labels]
        np.testing.assert_allclose(lib.oof[cols, i].T, p, rtol=1e-6)
        np.testing.assert_allclose(lib.test[cols, i].T, np.mean(tests, axis=0), rtol=1e-6)
    g = by_name[("net2", 0)]
    np.testing.assert_array_equal(lib.mask[g], [True, False, True, False])
    assert np.isnan(lib.oof[[1, 3], g]).all() and np.isnan(lib.test[[1, 3], g]).all()
    assert np.isfinite(lib.oof[lib.mask.T]).all()
    bagged = lib.bagged()
    assert len(bagged.members) == 4
    j = [m.config["arch"] for m in bagged.members].index("net0")
    np.testing.assert_allclose(bagged.oof[:, j], (lib.oof[:, by_name[("net0", 0)]] + lib.oof[:, by_name[("net0", 1)]]) / 2,
                               rtol=1e-6)


def test_incomplete_models_are_left_out_and_reported(tmp_path):
    root, *_ = write_runs(tmp_path, LIBRARY_MODELS + [dict(arch="gap", signal=1, skip_folds=[1]),
                                              dict(arch="crashed", signal=1, unfinished_folds=[2])])
    lib = load_library([root / "runs"])
    assert {m.config["arch"] for m in lib.members} == {"net0", "net1", "net2", "net3"}
    left = {lo["model"].split("-")[0]: lo for lo in lib.left_out}
    assert left["gap"]["missing_folds"] == [1]
    assert left["crashed"]["missing_folds"] == [2] and "unfinished" in left["crashed"]["reasons"][0]
    r = run_stack("--runs", root / "runs" / "*", "--method", "mean", "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert "left out 1 model(s) with runs of some folds only" in r.stderr and ": gap-s0-" in r.stderr
    assert "left out crashed" in r.stderr
    assert "missing fold(s) [1]" in (tmp_path / "rep" / "stack_report.md").read_text()


def test_missing_tta_is_reported(library):
    root, *_ = library
    with pytest.raises(DataError) as e:
        load_library([root / "runs" / "*"], tta="10crop")
    msg = str(e.value)
    assert msg.startswith("empty library") and "net0-s0-f0 (fold 0), net0-s0-f1 (fold 1), net0-s0-f2 (fold 2): lacks " \
        "preds/val.10crop.csv and preds/test.10crop.csv (has val.none.csv, test.none.csv)" in msg
    runs = " ".join(str(root / "runs" / f"net0-s0-f{f}") for f in range(3))
    assert f"make them with: python predict.py --runs {runs} --tta 10crop --split both" in msg


def test_label_order_mismatch(library):
    root, *_ = library
    cfg_path = root / "runs" / "net1-s0-f0" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["all_labels"] = ["b", "a", "c", "d"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="net1-s0-f0.*config.json.*label order"):
        load_library([root / "runs" / "*"])


def test_prediction_columns_mismatch(library):
    root, *_ = library
    path = root / "runs" / "net1-s0-f1" / "preds" / "val.none.csv"
    names, labels, p = read_preds(path)
    write_preds(path, names, ["a", "b", "d", "c"], p)
    with pytest.raises(DataError, match="net1-s0-f1.*val.none.csv: label columns"):
        load_library([root / "runs" / "*"])


def test_fold_mismatch_names_the_file(library):
    root, _, folds, _ = library
    path = root / "runs" / "net1-s0-f2" / "preds" / "val.none.csv"
    names, labels, p = read_preds(path)
    names[0] = "img9999"
    write_preds(path, names, labels, p)
    with pytest.raises(DataError, match="net1-s0-f2.*val.none.csv: image names do not match"):
        load_library([root / "runs" / "*"])


def test_other_folds_file_is_refused(library):
    root, *_ = library
    folds = pd.read_csv(root / "data" / "folds.csv")
    folds["fold"] = (folds["fold"] + 1) % 3
    folds.to_csv(root / "data" / "folds_other.csv", index=False)
    cfg_path = root / "runs" / "net3-s0-f0" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["folds_file"] = "folds_other.csv"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(DataError, match="the data folder .* and run net3-s0-f0 use different folds files"):
        load_library([root / "runs" / "*"])


def test_bad_values_exit_2_and_write_nothing(library, tmp_path):
    root, *_ = library
    path = root / "runs" / "net0-s1-f1" / "preds" / "val.none.csv"
    df = pd.read_csv(path)
    df.loc[3, "b"] = np.nan
    df.to_csv(path, index=False)
    out = tmp_path / "out"
    r = run_stack("--runs", root / "runs" / "*", "--method", "mean", "--out", out / "sub.csv")
    assert r.returncode == 2
    assert "net0-s1-f1" in r.stderr and "val.none.csv" in r.stderr and "NaN" in r.stderr
    assert not out.exists()


def test_empty_library_exits_2(tmp_path):
    r = run_stack("--runs", tmp_path / "nothing" / "*", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "no runs match" in r.stderr
    assert not (tmp_path / "sub.csv").exists()


def test_unknown_method_is_refused(library, tmp_path):
    root, *_ = library
    r = run_stack("--runs", root / "runs" / "*", "--method", "caruana", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "valid: prior, best, mean" in r.stderr


def test_empty_library_says_which_run_lacks_which_file_and_how_to_make_it(tmp_path):
    root, *_ = write_runs(tmp_path, [dict(arch="one", signal=1, skip_folds=[1, 2])])
    run = root / "runs" / "one-s0-f0"
    (run / "preds" / "test.none.csv").unlink()
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    r = run_stack("--runs", root / "runs" / "*", "--tta", "10crop", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = r.stderr
    assert "missing fold(s) [0, 1, 2]" not in err and "fold(s) none of 0..2" in err
    assert "one-s0-f0 (fold 0): lacks preds/val.10crop.csv and preds/test.10crop.csv (it has val.none.csv)" in err
    assert f"python predict.py --runs {run} --tta 10crop --split both" in err
    assert "fold(s) [1, 2] have no run" in err and "every fold" in err and "scripts/cv.sh" in err
    r = run_stack("--runs", root / "runs" / "*", "--tta", "none", "--out", tmp_path / "sub.csv")  # only test lacks
    assert r.returncode == 2 and "lacks preds/test.none.csv (it has val.none.csv)" in r.stderr
    assert f"--runs {run} --tta none --split test" in r.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before and not (tmp_path / "sub.csv").exists()


def test_a_linear_probe_lacking_predictions_is_remade_by_the_probe_tool(tmp_path):
    root, *_ = write_runs(tmp_path, [dict(arch="one", signal=1, skip_folds=[1, 2])])
    run = root / "runs" / "one-s0-f0"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "loss_spec": "logreg", "size": 64}))
    r = run_stack("--runs", root / "runs" / "*", "--tta", "hflip", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "python tools/linear_probe.py --data " in r.stderr and "--size 64 --tta hflip" in r.stderr
    assert "predict.py" not in r.stderr


def test_tta_auto_tells_a_linear_probe_to_be_remade_by_the_probe_tool(tmp_path):
    root, *_ = write_runs(tmp_path, [dict(arch="net", signal=1), dict(arch="probe", signal=1)])
    for f in range(3):
        net = root / "runs" / f"net-s0-f{f}"
        for split in ("val", "test"):  # the trained model predicted with 10crop, the probe with none
            (net / "preds" / f"{split}.none.csv").rename(net / "preds" / f"{split}.10crop.csv")
        probe = root / "runs" / f"probe-s0-f{f}"
        config = json.loads((probe / "config.json").read_text())
        stages = [{"probe": "logreg", "C": 1.0, "size": 64, "tta": "none"}]
        (probe / "config.json").write_text(json.dumps({**config, "loss_spec": "logreg", "size": 64, "stages": stages}))
    r = run_stack("--runs", root / "runs" / "*", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no TTA has preds/val.<tta>.csv and preds/test.<tta>.csv in every run" in r.stderr
    assert f"python tools/linear_probe.py --data {root / 'data'} --arch probe --size 64 --tta hflip" in r.stderr
    assert "a linear probe has no checkpoint" in r.stderr and "predict.py" not in r.stderr
    assert not (tmp_path / "sub.csv").exists()
    r = run_stack("--runs", root / "runs" / "*", "--tta", "10crop", "--method", "mean", "--out", tmp_path / "sub.csv")
    assert r.returncode == 0, r.stderr  # the probe left out, with the command that remakes it
    assert "left out" in r.stderr and "--arch probe --size 64 --tta hflip" in r.stderr
    assert "predict.py" not in r.stderr


def test_left_out_runs_name_the_command_that_completes_them(tmp_path):
    root, *_ = write_runs(tmp_path, LIBRARY_MODELS[:2] + [dict(arch="crashed", signal=1, unfinished_folds=[2])])
    r = run_stack("--runs", root / "runs" / "*", "--method", "mean", "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    assert f"python train.py --resume --out {root / 'runs'} --name crashed-s0-f2" in r.stderr


# ----------------------------------------------------------------------------- the command

def test_submission_and_report(library, tmp_path):
    root, y, *_ = library
    out = tmp_path / "out" / "sub.csv"
    r = run_stack("--runs", root / "runs" / "*", "--method", *FAST_METHODS, "--out", out)
    assert r.returncode == 0, r.stderr
    rep_dir = root / "runs"  # the report and probabilities go next to the runs, not beside --out
    assert sorted(p.name for p in out.parent.iterdir()) == ["sub.csv"]
    said = r.stdout.split("wrote")[-1]
    assert str(rep_dir) in said and str(out) in said and all(f in said for f in
                                                              ("stack_report.md", "stack_oof.csv", "stack_test.csv"))
    sub = pd.read_csv(out, keep_default_na=False)
    assert list(sub.columns) == ["image_name", "tags"]
    assert sub["image_name"].tolist() == [f"t{i:03d}" for i in range(30)]
    assert all(set(t.split()) <= set(LIBRARY_LABELS) for t in sub["tags"])
    rep = json.loads((rep_dir / "stack_report.json").read_text())
    assert set(rep["methods"]) == {"prior", *FAST_METHODS}
    assert rep["chosen"] == max(FAST_METHODS, key=lambda m: rep["methods"][m]["f2_cross_fitted"])
    for m in rep["methods"].values():
        assert len(m["f2_per_fold"]) == 3 and set(m["per_label"]) == set(LIBRARY_LABELS)
    assert rep["best_single"]["name"].startswith("net1")
    assert rep["methods"]["select"]["f2_cross_fitted"] > rep["methods"]["prior"]["f2_cross_fitted"] + 0.2
    assert set(rep["methods"]["select"]["weights"]) == set(LIBRARY_LABELS)
    md = (rep_dir / "stack_report.md").read_text()
    assert "cross-fitted F2" in md and "best single model" in md
    _, _, test_probs = read_preds(rep_dir / "stack_test.csv")
    assert test_probs.shape == (30, 4)
    oof_names, _, _ = read_preds(rep_dir / "stack_oof.csv")
    assert len(oof_names) == len(y)


def test_one_method_is_used_as_asked(library, tmp_path):
    root, *_ = library
    r = run_stack("--runs", root / "runs" / "*", "--method", "topk:k=2", "--threshold", "smooth",
                  "--out", tmp_path / "sub.csv", "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "rep" / "stack_report.json").read_text())
    assert rep["chosen"] == "topk:k=2" and rep["chosen_by"] == "--method"
    assert rep["settings"]["threshold"] == "smooth"


@pytest.mark.parametrize("groups", ["images", "orig=*net0*,*net1*,*net2*;seg=*net3*"])
def test_groups_stack_in_layers(library, tmp_path, groups):
    root, *_ = library
    r = run_stack("--runs", root / "runs" / "*", "--groups", groups, "--method", "select", "--top", "mean",
                  "--bag", "--out", tmp_path / "sub.csv")
    assert r.returncode == 0, r.stderr
    rep = json.loads((root / "runs" / "stack_report.json").read_text())
    assert rep["settings"]["groups"] == groups
    weights = rep["methods"]["select"]["weights"]["a"]
    assert any("train_seg" in k for k in weights) and any("train_seg" not in k for k in weights)
    assert rep["library"]["members"] == 4                               # --bag merged net0's two seeds


def test_groups_spec_must_cover_every_run(library, tmp_path):
    root, *_ = library
    r = run_stack("--runs", root / "runs" / "*", "--groups", "orig=*net0*", "--out", tmp_path / "sub.csv")
    assert r.returncode == 2 and "match 0 groups" in r.stderr


def test_stack_does_not_import_torch():
    code = "import sys; sys.argv = ['stack.py']; import stack; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "False", r.stderr


def test_models_of_some_folds_only_share_one_warning_with_a_command_that_completes_them(tmp_path):
    gaps = [dict(arch=f"one{i}", signal=1, skip_folds=[1, 2]) for i in range(4)]
    root, *_ = write_runs(tmp_path, LIBRARY_MODELS[:2] + gaps)
    cfg_path = root / "runs" / "one0-s0-f0" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["argv"] = ["--data", "d", "--arch", "one0", "--fold", "0", "--name=x", "--lr", "0.01"]
    cfg_path.write_text(json.dumps(cfg))
    r = run_stack("--runs", root / "runs" / "*", "--method", "mean", "--report-dir", tmp_path / "rep")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "left out 4 model(s) with runs of some folds only" in warnings[0]
    assert all(f"one{i}-s0" in warnings[0] for i in range(4))
    assert "python train.py --data d --arch one0 --lr 0.01 --fold 1 ; python train.py --data d --arch one0 " \
           "--lr 0.01 --fold 2" in warnings[0]
    assert "scripts/cv.sh" not in r.stderr
