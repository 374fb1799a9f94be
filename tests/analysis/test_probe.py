"""Linear probe: pooled features, per-label logistic regression against sklearn, run directories."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import ROOT, write_dataset
from utils.analysis import probe as P
from utils.data.dataset import load_dataset
from utils.common.errors import DataError
from utils.runs.pred_files import read_preds
from utils.metrics.fbeta import fbeta_samples
from utils.runs.directory import find_runs, group_models
from utils.metrics.threshold_search import greedy_thresholds

sys.path.insert(0, str(ROOT / "tools"))
import linear_probe  # noqa: E402


def separable(n=120, labels=4, dims=12, seed=0, noise=0.5):
    """Features whose first `labels` dimensions encode the tags, plus noise dimensions."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < rng.uniform(0.1, 0.6, labels)).astype(np.uint8)
    X = rng.normal(0, noise, (n, dims))
    X[:, :labels] += 2.0 * y
    return X, y


def run_cli(tmp_path, *extra, k=5):
    data = write_dataset(tmp_path / "data")
    argv = ["--data", str(data), "--arch", "tiny_cnn", "--no-pretrained", "--size", "24", "--folds-k", str(k),
            "--out", str(tmp_path / "runs"), "--workers", "0", *extra]
    return data, linear_probe.main(linear_probe.get_args_parser().parse_args(argv))


# ---------------------------------------------------------------------------- fitting

def test_fit_predict_matches_sklearn_per_label():
    X, y = separable(noise=1.5)
    Xe = np.random.default_rng(1).normal(size=(9, X.shape[1]))
    (p_tr, p_e), chosen = P.fit_predict(X.astype(np.float32), y, [X, Xe], C=0.3)
    for j in range(y.shape[1]):  # sklearn converged past its default stop: the exact minimum
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, tol=1e-10, max_iter=10000)).fit(X, y[:, j])
        assert np.abs(p_tr[:, j] - ref.predict_proba(X)[:, 1]).max() < 1e-3
        assert np.abs(p_e[:, j] - ref.predict_proba(Xe)[:, 1]).max() < 1e-3
    assert chosen == [0.3] * y.shape[1]


def test_single_class_label_predicts_its_training_prior():
    X, y = separable()
    y[:, 1], y[:, 2] = 0, 1
    for C in (1.0, "auto"):
        (p,), chosen = P.fit_predict(X, y, [X[:7]], C=C)
        assert (p[:, 1] == 0).all() and (p[:, 2] == 1).all()
        assert chosen[1] is None and chosen[2] is None
        ref = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, tol=1e-10, max_iter=10000)).fit(X, y[:, 0])
        if C == 1.0:  # the other labels are fitted as without the constant ones
            assert np.abs(p[:, 0] - ref.predict_proba(X[:7])[:, 1]).max() < 1e-3
    assert chosen[0] in P.C_GRID and chosen[3] in P.C_GRID


def test_every_label_constant_predicts_priors_only():
    X, y = separable()
    y[:] = 0
    y[:, 1] = 1
    (p,), chosen = P.fit_predict(X, y, [X[:5]])
    assert (p[:, 1] == 1).all() and (p[:, [0, 2, 3]] == 0).all() and chosen == [None] * 4


def test_auto_C_falls_back_when_a_class_has_one_image():
    X, y = separable()
    y[:, 0] = 0
    y[5, 0] = 1
    (p,), chosen = P.fit_predict(X, y, [X], C="auto")
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=P.FALLBACK_C, tol=1e-10, max_iter=10000))
    assert chosen[0] == P.FALLBACK_C and np.abs(p[:, 0] - ref.fit(X, y[:, 0]).predict_proba(X)[:, 1]).max() < 1e-3


def test_probe_folds_cover_every_row_and_beat_the_prior():
    X, y = separable(n=150)
    folds = np.arange(len(y)) % 5
    res = P.probe_folds(X, y, folds, X[:4], C="auto")
    rows = np.concatenate([r.val_rows for r in res])
    assert sorted(rows) == list(range(len(y)))
    oof = np.zeros(y.shape)
    prior = np.zeros(y.shape)
    for r in res:
        assert (folds[r.val_rows] == r.fold).all()
        assert r.test_probs.shape == (4, y.shape[1])
        oof[r.val_rows] = r.val_probs
        prior[r.val_rows] = P.prior_probs(y[folds != r.fold], len(r.val_rows))
    f2_probe = greedy_thresholds(y, oof)[1]
    f2_prior = greedy_thresholds(y, prior)[1]
    assert f2_probe > f2_prior + 0.2 and f2_probe > 0.9
    assert P.mean_log_loss(y, oof) < P.mean_log_loss(y, prior)


def test_f2_scores_agree_with_metrics():
    X, y = separable()
    p = 1 / (1 + np.exp(-X[:, :y.shape[1]] + 1))
    fixed, best, thr = P.f2_scores(y, p)
    assert fixed == pytest.approx(fbeta_samples(y, p >= 0.2))
    assert best == pytest.approx(fbeta_samples(y, p >= thr))


# ---------------------------------------------------------------------------- features

@pytest.mark.parametrize("arch, dim", [("tiny_cnn", 32), ("resnet18", 512), ("timm:test_efficientnet", None)])
def test_feature_model_returns_pooled_features(arch, dim):
    model = P.feature_model(arch, pretrained=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f = model(x)
    if dim is None:  # timm: its own pooled width
        dim = model.num_features
    assert f.shape == (2, dim)
    assert model.meta["arch"].endswith(arch.split(":")[-1])


def test_hflip_features_are_the_mean_over_the_mirror():
    base = P.feature_model("tiny_cnn", pretrained=False)
    flip = P.feature_model("tiny_cnn", pretrained=False, tta="hflip")
    x = torch.randn(3, 3, 24, 24)
    with torch.no_grad():
        want = (base(x) + base(x.flip(3))) / 2
        torch.testing.assert_close(flip(x), want)
    assert flip.meta == base.meta


def test_features_are_cached_and_reused(tmp_path, monkeypatch):
    data = write_dataset(tmp_path / "data", n=10)
    spec = load_dataset(data)
    kw = dict(size=24, cache_dir=tmp_path / "cache", arch="tiny_cnn", pretrained=False, desc="train")
    a, info = P.cached_features(spec.files, **kw)
    assert not info["cached"] and a.shape == (10, 32)
    images = np.load(next((tmp_path / "cache").glob("train-*.npy")))
    ref = P.extract_features(P.feature_model("tiny_cnn", False), images)
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(P, "extract_features", lambda *a, **k: pytest.fail("features recomputed"))
    b, info = P.cached_features(spec.files, **kw)
    assert info["cached"] and np.array_equal(a, b)
    assert len(list((tmp_path / "cache").glob("feat-*.npy"))) == 1


# ---------------------------------------------------------------------------- the tool

def test_tool_writes_one_finished_run_per_fold(tmp_path):
    data, summary = run_cli(tmp_path)
    folds = pd.read_csv(data / "folds.csv", dtype={"image_name": str}).set_index("image_name")["fold"]
    truth = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    labels = sorted({t for ts in truth["tags"] for t in ts.split()})
    y = pd.Series({n: [int(l in ts.split()) for l in labels] for n, ts in zip(truth["image_name"], truth["tags"])})
    test_order = pd.read_csv(data / "sample_submission.csv", dtype=str)["image_name"].tolist()
    seen = []
    for k in range(5):
        run = tmp_path / "runs" / f"tiny_cnn-linear-f{k}"
        cfg = json.loads((run / "config.json").read_text())
        assert cfg["fold"] == k and cfg["arch"] == "tiny_cnn" and cfg["labels"] == labels
        assert cfg["folds_k"] == 5 and cfg["loss_spec"] == "logreg" and cfg["stages"][0]["probe"] == "logreg"
        names, cols, probs = read_preds(run / "preds" / "val.none.csv")
        assert cols == labels and ((probs >= 0) & (probs <= 1)).all()
        assert all(folds[n] == k for n in names)
        seen += names
        result = json.loads((run / "result.json").read_text())
        truth_k = np.array([y[n] for n in names])
        assert result["finished"] and result["best_val_f2"] == pytest.approx(greedy_thresholds(truth_k, probs)[1])
        t_names, _, t_probs = read_preds(run / "preds" / "test.none.csv")
        assert t_names == test_order and ((t_probs >= 0) & (t_probs <= 1)).all()
        assert len(pd.read_csv(run / "history.csv")) == 1
    assert sorted(seen) == sorted(truth["image_name"])  # every training image exactly once
    runs, skipped = find_runs(str(tmp_path / "runs"))
    assert not skipped and len(runs) == 5
    models = group_models(runs)
    assert len(models) == 1 and sorted(r.fold for r in next(iter(models.values()))) == list(range(5))
    assert all(r.data_root.resolve() == data.resolve() for r in runs)
    assert 0 <= summary["oof_f2"] <= 1


def test_tool_without_a_test_set_writes_val_only(tmp_path):
    data = write_dataset(tmp_path / "data", n=20)
    (data / "sample_submission.csv").unlink()
    for f in (data / "test").iterdir():
        f.unlink()
    (data / "test").rmdir()
    argv = ["--data", str(data), "--arch", "tiny_cnn", "--no-pretrained", "--size", "24", "--folds-k", "2",
            "--out", str(tmp_path / "runs"), "--workers", "0"]
    linear_probe.main(linear_probe.get_args_parser().parse_args(argv))
    for k in range(2):
        preds = tmp_path / "runs" / f"tiny_cnn-linear-f{k}" / "preds"
        assert sorted(p.name for p in preds.iterdir()) == ["val.none.csv"]


@pytest.mark.slow
def test_tool_reuses_folds_and_names_variants(tmp_path):
    data = write_dataset(tmp_path / "data")
    pd.DataFrame({"image_name": [f"img{i:03d}" for i in range(40)], "fold": np.arange(40) % 4}).to_csv(
        data / "folds.csv", index=False)
    argv = ["--data", str(data), "--arch", "tiny_cnn", "--no-pretrained", "--size", "24",  # K=4 from the file
            "--out", str(tmp_path / "runs"), "--workers", "0", "--tta", "hflip", "--C", "auto"]
    linear_probe.main(linear_probe.get_args_parser().parse_args(argv))
    for k in range(4):
        names, _, _ = read_preds(tmp_path / "runs" / f"tiny_cnn-linear-hflip-f{k}" / "preds" / "val.hflip.csv")
        assert all(int(n[3:]) % 4 == k for n in names)
    with pytest.raises(DataError, match="--folds-k 4"):
        linear_probe.main(linear_probe.get_args_parser().parse_args(argv[:-6] + ["--folds-k", "5"]))


@pytest.mark.slow
def test_bad_input_exits_with_code_2(tmp_path):
    data = write_dataset(tmp_path / "data", n=8)
    with pytest.raises(DataError, match="positive number"):
        linear_probe.parse_c("-1")
    assert linear_probe.parse_c("auto") == "auto" and linear_probe.parse_c("0.5") == 0.5
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "linear_probe.py"), "--data", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "runs")], capture_output=True, text=True)
    assert r.returncode == 2 and "data directory not found" in r.stderr
    assert not (tmp_path / "runs").exists() and data.is_dir()


def test_probe_runs_record_the_dataset_and_a_changed_train_csv_is_refused(tmp_path):
    from utils.runs.fingerprint import dataset_problem
    data, _ = run_cli(tmp_path, k=3)
    cfg = json.loads((tmp_path / "runs" / next(p.name for p in (tmp_path / "runs").iterdir()
                                               if (p / "config.json").is_file()) / "config.json").read_text())
    assert cfg["dataset"]["train_csv"] and cfg["dataset"]["folds"]          # train.csv's rows and the folds
    run = next(p for p in (tmp_path / "runs").iterdir() if (p / "config.json").is_file())
    assert dataset_problem(cfg, run, data) is None                           # the same data: accepted
    lines = (data / "train.csv").read_text().splitlines()
    name, tags = lines[1].split(",")
    changed = f"{name},{'a' if tags.split() == ['a', 'b', 'c'] else 'a b c'}"
    (data / "train.csv").write_text("\n".join(lines[:1] + [changed] + lines[2:]) + "\n")
    assert dataset_problem(cfg, run, data)                                    # one row's tags changed: named
