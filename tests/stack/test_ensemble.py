"""Level-1 and level-2 methods on synthetic libraries given as matrices (no files).

Scores are checked against brute force (utils.metrics.threshold_search.best_label_fbeta, plain
loops) and methods against each other by their cross-fitted F2.
"""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from utils.common.errors import DataError
from scipy.special import expit, logit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from utils.stack.selection import LabelScorer, beam_label, forward_select, label_f2_candidates, select_label  # noqa: E402
from utils.stack.library import Inputs, Library  # noqa: E402
from utils.metrics.fbeta import fbeta_from_counts  # noqa: E402
from utils.stack.crossfit import cross_fit, cross_predict  # noqa: E402
from utils.stack.methods import method_factory, parse_method  # noqa: E402
from utils.metrics.threshold_search import best_label_fbeta  # noqa: E402

FAST = {"xgb": "xgb:trees=20", "lgbm": "lgbm:trees=20", "nn": "nn:iters=60"}


def truth(rng, n, prev):
    return (rng.random((n, len(prev))) < np.asarray(prev)).astype(np.uint8)


def members(rng, y, signal, shared=0.0, prev=None):
    """(L, M, N) float32 probabilities: signal[m, l] * (2y - 1) + shared noise + own noise."""
    signal = np.asarray(signal, dtype=np.float64)
    M, L = signal.shape
    N = len(y)
    base = logit(np.clip(y.mean(0), 0.02, 0.98)) if prev is None else logit(np.asarray(prev))
    common = rng.normal(size=(L, 1, N)) * shared
    z = signal.T[:, :, None] * (2.0 * y.T[:, None, :] - 1) + common + rng.normal(size=(L, M, N)) + base[:, None, None]
    return expit(z).astype(np.float32)


def inputs_of(P, y, folds, models=None):
    M = P.shape[1]
    mask = np.isfinite(P).all(2).T
    names = [f"m{i}" for i in range(M)]
    return Inputs(P, mask, names, models or names, y, folds)


def score(spec, inp, **kw):
    return cross_fit(spec, method_factory(FAST.get(spec, spec), seed=0), inp, "greedy", **kw)


# ----------------------------------------------------------------------------- candidate scoring

@pytest.mark.parametrize("seed,prev", [(0, 0.3), (1, 0.05), (2, 0.8)])
def test_candidate_scores_match_exact_search(seed, prev):
    rng = np.random.default_rng(seed)
    N, C = 1500, 12
    y = (rng.random(N) < prev).astype(np.uint8)
    P = expit(rng.normal(size=(C, N)) + rng.uniform(0.3, 2, (C, 1)) * (2 * y - 1) + logit(prev)).astype(np.float32)
    for n in (0, 1, 4):
        S = P[:n].sum(0) if n else None
        fast = label_f2_candidates(y, P, S, top=n + 1.0)
        avg = (P if not n else (S[None] + P) / (n + 1)).astype(np.float64)
        exact, _ = best_label_fbeta(y, avg.T)
        assert np.all(fast <= exact + 1e-12)          # a threshold between bins is a real threshold
        assert np.max(exact - fast) < 0.006           # and the bins are fine enough to find the best one


def test_pruned_best_equals_plain_argmax():
    rng = np.random.default_rng(3)
    N, C = 4000, 60
    y = (rng.random(N) < 0.03).astype(np.uint8)
    P = expit(rng.normal(size=(C, N)) + rng.uniform(1.5, 3.5, (C, 1)) * (2 * y - 1) - 3).astype(np.float32)
    sc = LabelScorer(y, P)
    for n in (2, 5, 9):
        S = P[rng.choice(C, n)].sum(0)
        plain = sc.score(S, n, np.arange(C))
        j, f, scores = sc.best(S, n, np.arange(C), hint=rng.random(C))
        assert f == pytest.approx(plain.max(), abs=1e-12)
        assert plain[j] == pytest.approx(plain.max(), abs=1e-12)
        assert np.all(scores <= plain + 1e-12)


def test_soft_objective_matches_formula():
    rng = np.random.default_rng(4)
    y = (rng.random(300) < 0.2).astype(np.uint8)
    P = rng.random((5, 300)).astype(np.float32)
    sc = LabelScorer(y, P, "soft")
    S = P[:2].sum(0)
    got = sc.score(S, 2, np.arange(5))
    for c in range(5):
        v = (S + P[c]).astype(np.float64) / 3
        tp = (y * v).sum()
        assert got[c] == pytest.approx(fbeta_from_counts(tp, ((1 - y) * v).sum(), (y * (1 - v)).sum()))


# ----------------------------------------------------------------------------- searches

def naive_forward(scorer, init, size, replace):
    """Caruana forward selection with one score call per candidate (the reference)."""
    C = len(scorer.P)
    ind = np.array([scorer.score(None, 0, [c])[0] for c in range(C)])
    chosen = list(np.argsort(-ind, kind="stable")[:init])
    S = scorer.P[chosen].sum(0)
    best = scorer.score(S - scorer.P[chosen[-1]], len(chosen) - 1, [chosen[-1]])[0] if init > 1 else ind[chosen[0]]
    best_set = list(chosen)
    while len(chosen) < size:
        cands = [c for c in range(C) if replace or c not in chosen]
        if not cands:
            break
        f = [scorer.score(S, len(chosen), [c])[0] for c in cands]
        c = cands[int(np.argmax(f))]
        S = S + scorer.P[c]
        chosen.append(c)
        if max(f) > best + 1e-12:
            best, best_set = max(f), list(chosen)
    return np.bincount(best_set, minlength=C), best


@pytest.mark.parametrize("replace", [True, False])
def test_forward_select_matches_naive_loop(replace):
    rng = np.random.default_rng(5)
    y = truth(rng, 800, [0.1])[:, 0]
    P = members(rng, y[:, None], rng.uniform(0.3, 1.5, (40, 1)), shared=0.5)[0]
    sc = LabelScorer(y, P)
    counts, obj = forward_select(sc, sc.individual(), np.arange(40), init=3, size=12, replace=replace, patience=0)
    ref_counts, ref_obj = naive_forward(sc, 3, 12, replace)
    np.testing.assert_array_equal(counts, ref_counts)
    assert obj == pytest.approx(ref_obj, abs=1e-12)
    if not replace:
        assert counts.max() == 1


def test_beam_width_one_is_greedy_and_wide_beam_is_exhaustive():
    rng = np.random.default_rng(6)
    y = truth(rng, 500, [0.15])[:, 0]
    P = members(rng, y[:, None], rng.uniform(0.2, 1.2, (5, 1)), shared=0.8)[0]
    sc = LabelScorer(y, P)
    ind = sc.individual()
    w, f = beam_label(sc, ind, width=1, size=6, patience=0)
    counts, obj = forward_select(sc, ind, np.arange(5), init=1, size=6, patience=0)
    np.testing.assert_allclose(w, counts / counts.sum())
    assert f == pytest.approx(obj)
    # Every multiset of at most 3 members, scored exactly the same way.
    best = max(sc.score(P[list(c[:-1])].sum(0), len(c) - 1, [c[-1]])[0] if len(c) > 1 else ind[c[0]]
               for k in (1, 2, 3) for c in itertools.combinations_with_replacement(range(5), k))
    _, f_wide = beam_label(sc, ind, width=100, size=3, patience=0)
    assert f_wide == pytest.approx(best)
    _, f_set = beam_label(sc, ind, width=100, size=3, replace=False, patience=0)
    best_set = max(sc.score(P[list(c[:-1])].sum(0), len(c) - 1, [c[-1]])[0] if len(c) > 1 else ind[c[0]]
                   for k in (1, 2, 3) for c in itertools.combinations(range(5), k))
    assert f_set == pytest.approx(best_set)


def test_bagged_selection_and_restarts_give_valid_weights():
    rng = np.random.default_rng(7)
    y = truth(rng, 600, [0.2])[:, 0]
    P = members(rng, y[:, None], rng.uniform(0.2, 1.5, (20, 1)))[0]
    sc = LabelScorer(y, P)
    ind = sc.individual()
    for kw in (dict(bags=5, frac=0.5), dict(restarts=4, replace=False), dict(pool=5)):
        w, _ = select_label(sc, ind, rng=np.random.default_rng(0), **kw)
        assert w.min() >= 0 and w.sum() == pytest.approx(1.0)
    w, _ = select_label(sc, ind, pool=5, rng=np.random.default_rng(0))
    assert set(np.flatnonzero(w)) <= set(np.argsort(-ind)[:5])


# ----------------------------------------------------------------------------- simple combiners

def test_mean_topk_bag_weights_and_no_opinion():
    rng = np.random.default_rng(8)
    y = truth(rng, 400, [0.3, 0.2])
    P = members(rng, y, [[2.0, 2.0], [1.0, 1.0], [0.3, 0.3], [1.5, 1.5]])
    P[1, 3] = np.nan                                   # member 3 has no opinion on label 1
    inp = inputs_of(P, y, np.arange(400) % 4, models=["a", "b", "b", "c"])
    mean = method_factory("mean")().fit(inp)
    np.testing.assert_allclose(mean.predict(P), np.nanmean(P.astype(np.float64), axis=1).T, rtol=1e-6)
    assert not np.isnan(mean.predict(P)).any()
    top = method_factory("topk:k=2")().fit(inp)
    ind = [best_label_fbeta(y[:, j], P[j, inp.mask[:, j]].T.astype(np.float64))[0] for j in range(2)]
    for j in range(2):
        who = np.flatnonzero(inp.mask[:, j])[np.argsort(-ind[j])[:2]]
        np.testing.assert_allclose(top.W[j, who], 0.5)
    bag = method_factory("bag")().fit(inp)
    assert bag.W[0, 1] == bag.W[0, 2]                  # seeds of one configuration share the bag weight
    assert bag.W[1, 3] == 0                            # never a member without an opinion


def test_ridge_corr_uses_label_correlations():
    rng = np.random.default_rng(9)
    n = 900
    a = (rng.random(n) < 0.3).astype(np.uint8)
    y = np.stack([a, a], 1)                            # label b is label a
    P = members(rng, y, [[2.0, 0.0]] * 4)              # members see a, and only noise for b
    inp = inputs_of(P, y, np.arange(n) % 3)
    corr = score("ridge-corr", inp)
    per_label = score("ridge", inp)
    assert corr.per_label[1] > per_label.per_label[1] + 0.1


def test_parse_method():
    name, _, params = parse_method("select:bags=4,frac=0.25,replace=false")
    assert (name, params["bags"], params["frac"], params["replace"]) == ("select", 4, 0.25, False)
    with pytest.raises(DataError, match="valid: prior"):
        parse_method("caruana")
    with pytest.raises(DataError, match="it takes"):
        parse_method("select:depth=3")


# ----------------------------------------------------------------------------- honest scores

def test_cross_fit_never_predicts_rows_it_was_fitted_on():
    class Spy:
        in_sample_thresholds = False
        calls = []

        def fit(self, inputs):
            self.seen = set(inputs.P[0, 0].astype(int))
            return self

        def predict(self, P):
            rows = set(P[0, 0].astype(int))
            Spy.calls.append((self.seen, rows))
            return np.full((P.shape[2], P.shape[0]), 0.5)

    n = 60
    rng = np.random.default_rng(10)
    P = np.arange(n, dtype=np.float32)[None, None].repeat(2, 0)
    inp = Inputs(P, np.ones((1, 2), bool), ["m"], ["m"], truth(rng, n, [0.5, 0.5]), np.arange(n) % 3)
    cross_fit("spy", Spy, inp)
    honest = [(seen, rows) for seen, rows in Spy.calls if len(seen) < n]
    assert len(honest) == 3 * 2 + 3                    # 3 folds x (2 inner + 1 outer predictions)
    assert all(not (seen & rows) for seen, rows in honest)


def test_per_label_selection_beats_best_single_and_mean():
    rng = np.random.default_rng(11)
    prev = [0.4, 0.2, 0.08]
    y = truth(rng, 1200, prev)
    good = [[1.6] * 3] * 4                             # four good members sharing correlated noise ...
    weak = [[0.15] * 3] * 8                            # ... and eight nearly useless ones
    P = np.concatenate([members(rng, y, good, shared=0.6, prev=prev), members(rng, y, weak, prev=prev)], 1)
    inp = inputs_of(P, y, np.arange(1200) % 4)
    sel, best, mean = score("select", inp), score("best", inp), score("mean", inp)
    assert sel.mean > best.mean + 0.01
    assert sel.mean > mean.mean + 0.01
    assert np.all(sel.model.W[:, :4].sum(1) > 0.6)    # most weight on the good members


def test_per_label_selection_beats_per_model_selection():
    rng = np.random.default_rng(12)
    prev = [0.3, 0.25, 0.2, 0.15]
    y = truth(rng, 1200, prev)
    signal = np.full((4, 4), 0.1) + np.eye(4) * 2.2    # member m is good at label m only
    P = members(rng, y, signal, prev=prev)
    inp = inputs_of(P, y, np.arange(1200) % 4)
    per_label, per_model = score("select", inp), score("select-model", inp)
    assert per_label.mean > per_model.mean + 0.03
    np.testing.assert_array_equal(np.argmax(per_label.model.W, 1), np.arange(4))
    assert np.ptp(per_model.model.W, axis=0).max() == 0     # one weight vector for all labels


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.slow
def test_no_leakage_on_pure_noise():
    rng = np.random.default_rng(13)
    n, prev = 600, [0.5, 0.25, 0.1]
    y = truth(rng, n, prev)
    P = rng.random((3, 12, n)).astype(np.float32)      # independent of the labels
    inp = inputs_of(P, y, np.arange(n) % 4)
    prior = score("prior", inp)
    names = ["best", "mean", "bag", "topk", "select", "select-bag", "select-soft", "select-restarts",
             "select-model", "beam", "beam-norep", "lr", "ridge", "ridge-corr", "xgb", "lgbm", "nn"]
    results = {m: score(m, inp) for m in names}
    for m, r in results.items():
        assert r.mean < prior.mean + 0.02, (m, r.mean, prior.mean)
    # Fitted and scored on the same rows, selection looks better than it is.
    assert results["select"].f2_in_sample > results["select"].mean + 0.01
    assert results["lgbm"].f2_in_sample > results["lgbm"].mean + 0.01


def test_layered_groups_match_manual_two_stage():
    rng = np.random.default_rng(14)
    y = truth(rng, 600, [0.3, 0.15])
    P = members(rng, y, [[1.2, 1.2]] * 6, shared=0.3)
    inp = inputs_of(P, y, np.arange(600) % 3)
    from utils.stack.layers import build_factory
    layered = build_factory("mean", groups={"g0": [0, 1, 2], "g1": [3, 4, 5]})().fit(inp)
    # mean inside each group, then the mean of the two groups = the mean of all six.
    np.testing.assert_allclose(layered.predict(P), P.astype(np.float64).mean(1).T, rtol=1e-5)
    top_in = layered.top_in.P
    manual = cross_predict(method_factory("mean"), inp.columns([0, 1, 2]))
    np.testing.assert_allclose(top_in[:, 0].T, manual, rtol=1e-6)


def test_library_from_arrays_bagged():
    rng = np.random.default_rng(15)
    P = rng.random((2, 3, 10)).astype(np.float32)
    lib = Library.from_arrays(P, truth(rng, 10, [0.5, 0.5]), np.arange(10) % 2, models=["a", "a", "b"])
    bagged = lib.bagged()
    assert [m.name for m in bagged.members] == ["a", "m2"]
    np.testing.assert_allclose(bagged.oof[:, 0], P[:, :2].mean(1))
