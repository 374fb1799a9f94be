"""utils.metrics.thresholds and tools/thresholds.py against brute force on small problems."""
import importlib.util
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from utils.common.errors import DataError  # noqa: E402
from utils.runs.pred_files import write_preds  # noqa: E402
from utils.metrics.fbeta import fbeta_per_label, fbeta_samples  # noqa: E402
from utils.metrics.threshold_search import (_cut_thresholds, best_label_fbeta, global_threshold, greedy_thresholds,  # noqa: E402
                                            random_folds, smooth_thresholds)
from utils.metrics.thresholds import (STRATEGIES, binarize, compare_strategies, cross_fit, expected_fbeta_decisions,  # noqa: E402
                                      expected_fbeta_topk, fit_thresholds)

_spec = importlib.util.spec_from_file_location("tools_thresholds", ROOT / "tools" / "thresholds.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def problem(seed, n=60, L=4, decimals=2, signal=1.5):
    """Imbalanced labels, informative probabilities, ties from rounding, some empty rows."""
    rng = np.random.default_rng(seed)
    prev = np.linspace(0.6, 0.1, L)
    y = (rng.random((n, L)) < prev).astype(np.uint8)
    z = rng.normal(size=(n, L)) + signal * (2.0 * y - 1) + logit(prev)
    return y, np.round(expit(z), decimals)


def candidates(col):
    """Every distinct decision of `p >= t` on one column: its values plus 'none'."""
    return np.append(np.unique(col), np.nextafter(col.max(), 2.0))


# ----------------------------------------------------------------------------- cut points

def test_cut_thresholds_select_exactly_c_values():
    # Adjacent floats: a naive midpoint rounds onto the lower value for half of them.
    x = np.random.default_rng(0).random(10) * 0.9 + 0.05
    u = np.sort(np.concatenate([[1.0, np.nextafter(1.0, 0), 0.0], x, np.nextafter(x, 0)]))[::-1]
    t = _cut_thresholds(u)
    for c in range(len(u) + 1):
        assert (u >= t[c]).sum() == c


# ----------------------------------------------------------------------------- greedy / global

@pytest.mark.parametrize("seed", [0, 11, 27])  # 11 and 27 need more than one pass
def test_greedy_is_coordinatewise_optimum(seed):
    y, P = problem(seed, n=100, L=6, signal=0.7)
    thr, f = greedy_thresholds(y, P, max_passes=100)
    assert f == fbeta_samples(y, binarize(P, thr))
    for j in range(P.shape[1]):
        for t in candidates(P[:, j]):
            trial = thr.copy()
            trial[j] = t
            assert fbeta_samples(y, P >= trial) <= f + 1e-12


def test_greedy_first_step_beats_fixed_grid():
    y, P = problem(11, n=200, L=5, decimals=4)
    _, f = greedy_thresholds(y, P)
    assert f >= fbeta_samples(y, binarize(P, strategy="fixed"))


def exhaustive(y, P):
    """Best sample F2 over every combination of per-label cut points."""
    best = -1.0
    for combo in itertools.product(*(candidates(P[:, j]) for j in range(P.shape[1]))):
        best = max(best, fbeta_samples(y, P >= np.array(combo)))
    return best


def test_greedy_and_global_vs_exhaustive_search():
    for seed in range(8):
        y, P = problem(seed, n=12, L=3, decimals=3, signal=0.5)
        best = exhaustive(y, P)
        t_glob, f_glob = global_threshold(y, P)
        f_glob_brute = max(fbeta_samples(y, P >= t) for t in candidates(P.ravel()))
        assert f_glob == pytest.approx(f_glob_brute, abs=1e-12)
        assert f_glob == fbeta_samples(y, P >= t_glob)
        # Coordinate ascent may stop at a local optimum (about half of these seeds),
        # never above the global one, never below where it started.
        thr, f = greedy_thresholds(y, P, max_passes=100)
        assert fbeta_samples(y, P >= 0.2) <= f <= best + 1e-12
        assert f == fbeta_samples(y, binarize(P, thr))


def test_exhaustive_optimum_is_a_greedy_fixed_point():
    y, P = problem(3, n=12, L=3, decimals=3, signal=0.5)
    grids = [candidates(P[:, j]) for j in range(3)]
    best = max(itertools.product(*grids), key=lambda c: fbeta_samples(y, P >= np.array(c)))
    thr, f = greedy_thresholds(y, P, init=np.array(best))
    assert f == pytest.approx(fbeta_samples(y, P >= np.array(best)), abs=1e-12)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_greedy_with_saturated_probabilities(zero_division):
    """Probabilities of exactly 0 and 1; a label nobody has; rows with no tags."""
    y, P = problem(5, n=40, L=4, decimals=1)
    y[:, 3] = 0
    P[:4] = 1.0
    thr, f = greedy_thresholds(y, P, zero_division=zero_division, max_passes=100)
    assert f == fbeta_samples(y, binarize(P, thr), zero_division=zero_division)
    for j in range(4):
        for t in candidates(P[:, j]):
            trial = thr.copy()
            trial[j] = t
            assert fbeta_samples(y, P >= trial, zero_division=zero_division) <= f + 1e-12


# ----------------------------------------------------------------------------- best_label_fbeta

@pytest.mark.parametrize("positives", ["some", "none", "all"])
def test_best_label_fbeta_vs_brute_force(positives):
    rng = np.random.default_rng(0)
    n, M = 30, 6
    y = (rng.random(n) < 0.3).astype(np.uint8)
    y = {"some": y, "none": 0 * y, "all": 0 * y + 1}[positives]
    P = np.round(rng.random((n, M)) * 0.6 + 0.4 * y[:, None] * rng.random((n, M)), 1)
    P[:, 0] = 0.5        # a constant column
    P[:3, 1] = 1.0       # saturated values
    P[:, 2] = 0.0
    f, thr = best_label_fbeta(y, P)
    for m in range(M):
        brute = max(fbeta_per_label(y[:, None], (P[:, m] >= t)[:, None])[0] for t in candidates(P[:, m]))
        assert f[m] == pytest.approx(brute, abs=1e-12)
        assert fbeta_per_label(y[:, None], (P[:, m] >= thr[m])[:, None])[0] == pytest.approx(f[m], abs=1e-12)


def test_best_label_fbeta_chunks_agree():
    rng = np.random.default_rng(1)
    y = (rng.random(50) < 0.2).astype(np.uint8)
    P = rng.random((50, 9))
    f1, t1 = best_label_fbeta(y, P, chunk=2)
    f2, t2 = best_label_fbeta(y, P, chunk=64)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(t1, t2)


# ----------------------------------------------------------------------------- expected F2

def brute_expected(p, S, beta=2.0, zero_division=1.0):
    """E[F(S, Y)] for independent Y_j ~ Bernoulli(p_j), enumerating all 2^L outcomes."""
    b2 = beta * beta
    total = 0.0
    for Y in itertools.product((0, 1), repeat=len(p)):
        Y = np.array(Y)
        prob = np.prod(np.where(Y == 1, p, 1 - p))
        tp, fp, fn = (Y * S).sum(), ((1 - Y) * S).sum(), (Y * (1 - S)).sum()
        den = (1 + b2) * tp + b2 * fn + fp
        total += prob * ((1 + b2) * tp / den if den else zero_division)
    return total


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_expected_decisions_vs_all_tag_sets(zero_division):
    rng = np.random.default_rng(0)
    L = 5
    P = rng.random((15, L)) ** rng.uniform(0.3, 3, (15, 1))
    P[0] = [0.02, 0.01, 0.05, 0.0, 0.03]            # "no tag" should win with zero_division=1
    D = expected_fbeta_decisions(P, zero_division=zero_division)
    table = expected_fbeta_topk(P, zero_division=zero_division)
    sets = [np.array(S) for S in itertools.product((0, 1), repeat=L)]
    for p, d, row in zip(P, D, table):
        values = [brute_expected(p, S, zero_division=zero_division) for S in sets]
        assert brute_expected(p, d, zero_division=zero_division) == pytest.approx(max(values), abs=1e-12)
        order = np.argsort(-p)
        for k in range(L + 1):
            S = np.zeros(L, int)
            S[order[:k]] = 1
            assert row[k] == pytest.approx(brute_expected(p, S, zero_division=zero_division), abs=1e-12)
    if zero_division == 1.0:
        assert D[0].sum() == 0


def test_binarize_expected_strategy_uses_decisions():
    rng = np.random.default_rng(2)
    P = rng.random((10, 4))
    np.testing.assert_array_equal(binarize(P, strategy="expected"), expected_fbeta_decisions(P))
    assert fit_thresholds((P > 0.5).astype(int), P, "expected") is None


# ----------------------------------------------------------------------------- smooth / cross-fit

def test_smooth_is_logit_mean_of_per_fold_greedy():
    y, P = problem(4, n=120, L=3, decimals=4)
    folds = np.arange(120) % 3
    want = expit(np.mean([logit(greedy_thresholds(y[folds == k], P[folds == k])[0]) for k in range(3)], axis=0))
    np.testing.assert_allclose(smooth_thresholds(y, P, folds), want, rtol=1e-12)
    np.testing.assert_allclose(fit_thresholds(y, P, "smooth", folds), want, rtol=1e-12)


@pytest.mark.parametrize("strategy", ["global", "greedy", "smooth"])
def test_cross_fit_never_looks_at_held_out_labels(strategy):
    y, P = problem(6, n=150, L=4, decimals=3)
    folds = random_folds(150, 3, seed=1)
    base = cross_fit(y, P, folds, strategy)
    rng = np.random.default_rng(0)
    for k, fid in enumerate(base["folds_ids"]):
        y2 = y.copy()
        held = folds == fid
        y2[held] = rng.permutation(y2[held], axis=0)[:, ::-1]  # scramble the held-out labels
        other = cross_fit(y2, P, folds, strategy)
        np.testing.assert_array_equal(other["thresholds_per_fold"][k], base["thresholds_per_fold"][k])
        manual = fit_thresholds(y[~held], P[~held], strategy, folds[~held])
        np.testing.assert_array_equal(manual, base["thresholds_per_fold"][k])
        assert base["f2_per_fold"][k] == fbeta_samples(y[held], binarize(P[held], manual))
    assert base["mean"] == pytest.approx(np.mean(base["f2_per_fold"]))
    assert base["f2_in_sample"] == fbeta_samples(y, binarize(P, fit_thresholds(y, P, strategy, folds)))


def test_compare_strategies_json_structure():
    y, P = problem(8, n=80, L=3)
    labels = ["a", "b", "c"]
    out = compare_strategies(y, P, random_folds(80, 4), labels=labels)
    assert json.loads(json.dumps(out)) == out
    assert out["labels"] == labels and list(out["strategies"]) == list(STRATEGIES)
    for name, r in out["strategies"].items():
        assert set(r) >= {"thresholds", "f2_in_sample", "f2_cross_fitted", "f2_cross_fitted_std", "seconds"}
        assert (r["thresholds"] is None) == (name == "expected")
        if r["thresholds"] is not None:
            assert list(r["thresholds"]) == labels
            t = np.array(list(r["thresholds"].values()))
            assert r["f2_in_sample"] == fbeta_samples(y, binarize(P, t))
    assert out["strategies"]["fixed"]["thresholds"] == {lab: 0.2 for lab in labels}
    no_folds = compare_strategies(y, P, strategies=("greedy",))
    assert no_folds["strategies"]["greedy"]["f2_cross_fitted"] is None


def test_bad_strategy_and_option_are_refused():
    y, P = problem(0, n=20, L=2)
    with pytest.raises(ValueError, match="Only fixed, global, greedy, smooth, expected"):
        fit_thresholds(y, P, "annealing")
    with pytest.raises(ValueError, match="no option"):
        fit_thresholds(y, P, "global", max_passes=3)
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit(y, P, np.zeros(20, int), "greedy")


# ----------------------------------------------------------------------------- the tool

def write_case(tmp_path, n=90, extension=".jpg"):
    y, P = problem(9, n=n, L=3, decimals=5)
    labels = ["clear", "haze", "road"]
    names = [f"img_{i}" for i in range(n)]
    write_preds(tmp_path / "val.csv", names, labels, P)
    tags = [" ".join(lab for lab, v in zip(labels, row) if v) for row in y]
    pd.DataFrame({"image_name": [s + extension for s in names][::-1], "tags": tags[::-1]}).to_csv(
        tmp_path / "train.csv", index=False)
    return y, P, labels, names


def test_tool_json_matches_library(tmp_path, capsys):
    y, P, labels, names = write_case(tmp_path)
    pd.DataFrame({"image_name": names, "fold": np.arange(len(names)) % 3}).to_csv(tmp_path / "folds.csv", index=False)
    args = tool.get_args_parser().parse_args(
        ["--probs", str(tmp_path / "val.csv"), "--truth", str(tmp_path / "train.csv"), "--json",
         "--strategy", "greedy", "--strategy", "expected"])
    tool.main(args)
    out = json.loads(capsys.readouterr().out)
    want = compare_strategies(y, P, np.arange(len(names)) % 3, ("greedy", "expected"), labels)
    for s in ("greedy", "expected"):
        for key in ("thresholds", "f2_in_sample", "f2_cross_fitted", "f2_cross_fitted_std"):
            assert out["strategies"][s][key] == want["strategies"][s][key]


def test_tool_run_shortcut_and_table(tmp_path, capsys):
    y, P, labels, names = write_case(tmp_path / "data", extension="")
    run = tmp_path / "runs" / "r1"
    (run / "preds").mkdir(parents=True)
    (tmp_path / "data" / "val.csv").rename(run / "preds" / "val.hflip.csv")
    (run / "config.json").write_text(json.dumps({"arch": "x", "fold": 0, "labels": labels,
                                                 "data_root": "../../data"}))
    tool.main(tool.get_args_parser().parse_args(["--run", str(run), "--kfold", "3"]))
    text = capsys.readouterr().out
    assert "greedy" in text and "random 3-way" in text and "90 images" in text


def test_tool_errors_exit_2(tmp_path):
    write_case(tmp_path)
    df = pd.read_csv(tmp_path / "train.csv")
    df.iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "thresholds.py"), "--probs",
                        str(tmp_path / "val.csv"), "--truth", str(tmp_path / "short.csv")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "short.csv" in r.stderr and "img_89" in r.stderr
    run = tmp_path / "run"
    (run / "preds").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"arch": "x", "fold": 0, "labels": ["a"],
                                                 "data_root_abs": "D:\\elsewhere\\data"}))
    (tmp_path / "val.csv").rename(run / "preds" / "val.none.csv")
    with pytest.raises(DataError, match="not found here"):
        tool.main(tool.get_args_parser().parse_args(["--run", str(run)]))


@pytest.mark.slow
def test_tool_run_that_is_not_a_run_folder_says_so(tmp_path):
    for run, message in [(tmp_path / "nonexistent", "no such file or folder"),
                         (tmp_path, "not a run folder (no config.json)")]:
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "thresholds.py"), "--run", str(run)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and f"--runs {run}: {message}" in r.stderr and "Traceback" not in r.stderr
        assert "preds/val" not in r.stderr


def test_tool_refuses_unknown_tags(tmp_path):
    write_case(tmp_path)
    df = pd.read_csv(tmp_path / "train.csv", keep_default_na=False)
    df.loc[0, "tags"] = "clear cirrus"
    df.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match="cirrus"):
        tool.main(tool.get_args_parser().parse_args(["--probs", str(tmp_path / "val.csv"),
                                                     "--truth", str(tmp_path / "train.csv")]))
