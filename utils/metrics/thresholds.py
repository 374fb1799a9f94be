"""Turning probabilities into tags: threshold strategies for the sample-averaged F-beta.

Decision rule, everywhere in the project: label j is predicted for an image when
``probs[:, j] >= thresholds[j]`` (float64 comparison). The exact searches at the data's
cut points that fit the thresholds are in utils.metrics.threshold_search.

Strategies (``STRATEGIES``), each fitted by ``fit_thresholds`` and applied by ``binarize``:

- ``fixed``    0.2 for every label: the usual baseline.
- ``global``   one threshold for all labels, exact best over all distinct values.
- ``greedy``   per-label coordinate ascent on the sample-averaged F-beta, passes
               until no label improves, exact over all cut points (sorted scans,
               incremental per-image TP/FP/FN: no metric call per candidate).
- ``smooth``   greedy thresholds fitted separately on each CV fold, averaged on the
               logit scale (less tuned to the noise of one sample).
- ``expected`` no threshold: per image, the tag set with the highest expected F-beta
               under the predicted probabilities, assuming independent labels.
- ``prevalence`` each label's threshold is set on the probabilities being decided so
               that the label's predicted share matches its share in the fitting rows
               (the HPA 2018 winner's guard against a shifted test distribution). Its
               fitted values are the target shares (L,), not thresholds; ``binarize``
               and ``decision_thresholds`` turn them into thresholds for the rows at hand.

``cross_fit`` and ``compare_strategies`` score a strategy honestly: thresholds are
fitted on K-1 folds and scored on the held-out fold.
"""
import logging
import time

import numpy as np

from utils.metrics.fbeta import ZERO_DIVISION, fbeta_samples
from utils.metrics.threshold_search import (FIXED_THRESHOLD, check_inputs, check_zero_division, global_threshold,
                                            greedy_thresholds, prevalence_thresholds, smooth_thresholds)

log = logging.getLogger(__name__)

STRATEGIES = ("fixed", "global", "greedy", "smooth", "expected", "prevalence")

# Options each strategy understands (besides beta and zero_division).
_OPTIONS = {
    "fixed": {"threshold"},
    "global": set(),
    "greedy": {"init", "max_passes"},
    "smooth": {"init", "max_passes", "n_splits", "seed"},
    "expected": set(),
    "prevalence": set(),
}


def _check_strategy(strategy):
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid strategy {strategy!r}. Only {', '.join(STRATEGIES)} are supported.")


# ----------------------------------------------------------------------------- expected F-beta

def _poisson_binomial(p):
    """Distributions of partial sums of independent Bernoulli(p[:, :k]) for k = 0..m.

    p: (n, m). Returns (m + 1, n, m + 1): out[k, i, a] = P(sum of row i's first k = a)
    (k first, so that each k is one contiguous block).
    """
    n, m = p.shape
    d = np.zeros((m + 1, n, m + 1))
    d[0, :, 0] = 1.0
    for k in range(m):
        q = p[:, k:k + 1]
        d[k + 1] = d[k] * (1 - q)
        d[k + 1, :, 1:] += d[k, :, :-1] * q
    return d


def expected_fbeta_topk(probs, beta=2.0, zero_division=ZERO_DIVISION):
    """Expected F-beta of predicting each image's k most probable labels, k = 0..L.

    probs: (N, L), labels assumed independent given the image. Exact: TP is a sum of
    Bernoullis over the chosen labels, the missed positives over the others, and F
    depends only on the two counts. Returns float64 (N, L + 1).
    """
    check_zero_division(zero_division)
    P = np.asarray(probs, dtype=np.float64)
    N, L = P.shape
    b2 = beta * beta
    zd = float(zero_division)
    ps = -np.sort(-P, axis=1)
    pre = _poisson_binomial(ps)                 # first k labels (chosen)
    suf = _poisson_binomial(ps[:, ::-1])        # last labels (not chosen)
    a = np.arange(L + 1)[:, None]
    c = np.arange(L + 1)[None, :]
    out = np.empty((N, L + 1))
    for k in range(L + 1):
        if k == 0:
            w = np.zeros((L + 1, L + 1))
            w[0, 0] = zd                          # no tag predicted, none true
        else:
            w = (1 + b2) * a / (b2 * (a + c) + k)
        # Only a <= k and c <= L - k can be non-zero. einsum, not BLAS: these (n, k) x
        # (k, L - k) products are too small for threaded matmul to pay off.
        a_k, c_k = slice(0, k + 1), slice(0, L - k + 1)
        out[:, k] = np.einsum("na,ac,nc->n", pre[k][:, a_k], w[a_k, c_k], suf[L - k][:, c_k])
    return out


def expected_fbeta_decisions(probs, beta=2.0, zero_division=ZERO_DIVISION, chunk=8192):
    """Per image, the tag set maximising expected F-beta under independent labels.

    Under independence the best set is the k most probable labels for some k (the
    probability ranking principle for F-measures), so only L + 1 sets are scored.
    probs: (N, L). Returns uint8 (N, L).
    """
    P = np.asarray(probs, dtype=np.float64)
    k = np.concatenate([np.argmax(expected_fbeta_topk(P[s:s + chunk], beta, zero_division), axis=1)
                        for s in range(0, len(P), chunk)]) if len(P) else np.zeros(0, int)
    rank = np.argsort(np.argsort(-P, axis=1, kind="stable"), axis=1)
    return (rank < k[:, None]).astype(np.uint8)


def decision_thresholds(probs, fitted, strategy=None):
    """The (L,) thresholds ``binarize`` applies to ``probs`` (N, L), or None for 'expected'.

    fitted: what ``fit_thresholds`` returned (target shares for 'prevalence').
    """
    if strategy == "prevalence":
        return prevalence_thresholds(probs, fitted)
    if fitted is None:
        return np.full(np.shape(probs)[1], FIXED_THRESHOLD) if strategy == "fixed" else None
    return np.broadcast_to(np.asarray(fitted, dtype=np.float64), (np.shape(probs)[1],))


# ----------------------------------------------------------------------------- public entry points

def binarize(probs, thresholds=None, strategy=None, beta=2.0, zero_division=ZERO_DIVISION):
    """0/1 decisions from probabilities. probs: (N, L). Returns uint8 (N, L).

    With ``thresholds`` (scalar or (L,)): ``probs >= thresholds``. Without: strategy
    'expected' picks each image's expected-F-beta-maximising tag set, and 'fixed'
    uses 0.2 for every label; other strategies need fitted thresholds. For 'prevalence'
    ``thresholds`` are the fitted target shares (L,), matched on ``probs`` themselves.
    """
    P = np.asarray(probs, dtype=np.float64)
    if strategy == "prevalence":
        if thresholds is None:
            raise ValueError("strategy 'prevalence' needs the target shares: call fit_thresholds first")
        thresholds = prevalence_thresholds(P, thresholds)
    if thresholds is not None:
        return (P >= np.asarray(thresholds, dtype=np.float64)).astype(np.uint8)
    if strategy == "expected":
        return expected_fbeta_decisions(P, beta, zero_division)
    if strategy == "fixed":
        return (P >= FIXED_THRESHOLD).astype(np.uint8)
    _check_strategy(strategy)
    raise ValueError(f"strategy {strategy!r} needs thresholds: call fit_thresholds first")


def _split_opts(strategy, opts):
    unknown = set(opts) - _OPTIONS[strategy]
    if unknown:
        raise ValueError(f"strategy {strategy!r} has no option(s) {sorted(unknown)}; "
                         f"it takes {sorted(_OPTIONS[strategy]) or 'none'}")
    return opts


def fit_thresholds(y_true, probs, strategy="greedy", folds=None, beta=2.0,
                   zero_division=ZERO_DIVISION, **opts):
    """Fit one strategy's thresholds on (y_true (N, L) 0/1, probs (N, L)).

    folds: (N,) fold ids, used by 'smooth' (else it makes ``n_splits`` random folds).
    opts by strategy: fixed: threshold; greedy: init, max_passes; smooth: init,
    max_passes, n_splits, seed. Returns float64 (L,), or None for 'expected'; for
    'prevalence' the (L,) label shares of ``y_true``.
    """
    _check_strategy(strategy)
    opts = _split_opts(strategy, opts)
    y, P = check_inputs(y_true, probs)
    L = P.shape[1]
    if strategy == "fixed":
        return np.full(L, float(opts.get("threshold", FIXED_THRESHOLD)))
    if strategy == "global":
        return np.full(L, global_threshold(y, P, beta, zero_division)[0])
    if strategy == "greedy":
        return greedy_thresholds(y, P, beta, zero_division=zero_division, **opts)[0]
    if strategy == "smooth":
        return smooth_thresholds(y, P, folds, beta, zero_division=zero_division, **opts)
    if strategy == "prevalence":
        return y.mean(0).astype(np.float64)
    return None


def _fit_and_score(y_fit, p_fit, y_eval, p_eval, strategy, folds, beta, zero_division, opts):
    thr = fit_thresholds(y_fit, p_fit, strategy, folds, beta, zero_division, **opts)
    pred = binarize(p_eval, thr, strategy, beta, zero_division)
    return thr, pred, fbeta_samples(y_eval, pred, beta, zero_division)


def _held_out(y, P, folds, strategy, beta, zero_division, opts):
    """Fit on all folds but k, score on fold k, for every k. Returns the summary dict."""
    folds = np.asarray(folds)
    if folds.shape != (len(P),):
        raise ValueError(f"folds must have one id per row ({len(P)}); got shape {folds.shape}")
    ids = np.unique(folds)
    if ids.size < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds; got {ids.size}")
    scores, per_fold_thr = [], []
    pooled = np.zeros_like(y)
    for k in ids:
        tr, te = folds != k, folds == k
        thr, pred, f = _fit_and_score(y[tr], P[tr], y[te], P[te], strategy, folds[tr],
                                      beta, zero_division, opts)
        pooled[te] = pred
        scores.append(float(f))
        per_fold_thr.append(thr)
    return dict(f2_per_fold=scores, folds_ids=ids.tolist(), mean=float(np.mean(scores)),
                std=float(np.std(scores, ddof=1)),
                f2_pooled=fbeta_samples(y, pooled, beta, zero_division),
                thresholds_per_fold=per_fold_thr)


def cross_fit(y_true, probs, folds, strategy, beta=2.0, zero_division=ZERO_DIVISION, **opts):
    """In-sample and cross-fitted F-beta of one strategy.

    folds: (N,) fold id per row, at least two distinct. For each fold k the strategy
    is fitted on the other folds only (their fold ids go to 'smooth') and scored on
    fold k. Returns dict: f2_per_fold (list, in the order of folds_ids), folds_ids,
    mean and std (ddof=1) of the per-fold scores, f2_pooled (one score over all
    held-out decisions together), thresholds_per_fold (None entries for 'expected'),
    and thresholds / f2_in_sample from one fit on all rows scored on the same rows
    (optimistic).
    """
    _check_strategy(strategy)
    y, P = check_inputs(y_true, probs)
    out = _held_out(y, P, folds, strategy, beta, zero_division, opts)
    thr, _, f_in = _fit_and_score(y, P, y, P, strategy, np.asarray(folds), beta, zero_division, opts)
    out.update(thresholds=thr, f2_in_sample=float(f_in))
    return out


def compare_strategies(y_true, probs, folds=None, strategies=STRATEGIES, labels=None,
                       beta=2.0, zero_division=ZERO_DIVISION, **opts):
    """Score several strategies in-sample and (with ``folds``) cross-fitted.

    y_true (N, L) 0/1, probs (N, L), folds (N,) fold ids or None, labels: L names
    (default "0".."L-1"). ``opts`` go to the strategies that take them. Returns the
    JSON-ready dict ``{"labels": [...], "strategies": {name: {"thresholds": {label: t}
    or None, "f2_in_sample": x, "f2_cross_fitted": mean over folds or None,
    "f2_cross_fitted_std": std over folds (ddof=1) or None, "f2_per_fold": [...] or
    None, "seconds": s}}}`` where seconds is the time to fit on all rows and binarize
    them once (cross-fitting not included).
    """
    y, P = check_inputs(y_true, probs)
    labels = [str(i) for i in range(P.shape[1])] if labels is None else [str(s) for s in labels]
    if len(labels) != P.shape[1]:
        raise ValueError(f"{len(labels)} label names for {P.shape[1]} columns")
    for s in strategies:
        _check_strategy(s)
    unused = set(opts) - set().union(*(_OPTIONS[s] for s in strategies))
    if unused:
        raise ValueError(f"no chosen strategy takes option(s) {sorted(unused)}")
    out = {"labels": labels, "strategies": {}}
    for s in strategies:
        so = {k: v for k, v in opts.items() if k in _OPTIONS[s]}
        t0 = time.perf_counter()
        thr, _, f_in = _fit_and_score(y, P, y, P, s, folds, beta, zero_division, so)
        seconds = time.perf_counter() - t0
        if s == "prevalence":       # report the thresholds the shares come to on these rows
            thr = decision_thresholds(P, thr, s)
        cf = None if folds is None else _held_out(y, P, folds, s, beta, zero_division, so)
        out["strategies"][s] = {
            "thresholds": None if thr is None else {lab: float(t) for lab, t in zip(labels, thr)},
            "f2_in_sample": float(f_in),
            "f2_cross_fitted": cf["mean"] if cf else None,
            "f2_cross_fitted_std": cf["std"] if cf else None,
            "f2_per_fold": cf["f2_per_fold"] if cf else None,
            "seconds": seconds,
        }
        log.info("%s: in-sample %.5f, cross-fitted %s (%.2fs)", s, f_in,
                 "n/a" if cf is None else f"{cf['mean']:.5f} +- {cf['std']:.5f}", seconds)
    return out
