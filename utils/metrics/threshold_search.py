"""Exact threshold searches for the sample-averaged F-beta, at the data's cut points.

Decision rule: label j is predicted for an image when ``probs[:, j] >= thresholds[j]``
(float64). Every search is exact over the distinct cut points of the data; a found cut is
stored as the midpoint between the lowest included and the highest excluded probability
(or the included value itself where the two are adjacent floats), so the searched score is
reproduced exactly while the threshold sits as far as possible from both neighbours.
"Predict nothing" is a threshold above the largest probability (above 1.0 only when a
probability equals 1.0).

`best_label_fbeta` scores every cut of one label; `greedy_thresholds` (per-label coordinate
ascent), `global_threshold` (one value for all labels), `smooth_thresholds` (greedy per CV
fold, averaged on the logit scale) and `prevalence_thresholds` (each label's target share of
the rows) give the thresholds behind the strategies of utils.metrics.thresholds.
"""
import logging

import numpy as np
from scipy.special import expit, logit

from utils.metrics.fbeta import ZERO_DIVISION, fbeta_from_counts, fbeta_samples

log = logging.getLogger(__name__)

FIXED_THRESHOLD = 0.2
LOGIT_CLIP = 20.0  # |logit| bound for averaging thresholds that mean "never" / "always"


def check_inputs(y_true, probs):
    """Return (y uint8 (N, L), probs float64 (N, L)) or raise ValueError."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true)
    if probs.ndim != 2 or y.shape != probs.shape:
        raise ValueError(f"y_true {y.shape} and probs {probs.shape} must be the same (N, L) shape")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(probs).all():
        raise ValueError("probs must be finite")
    return y.astype(np.uint8), probs


def check_zero_division(zero_division):
    """ValueError for a NaN zero_division: searches need a number to score an image with no true and no predicted tag."""
    if np.isnan(zero_division):
        raise ValueError("threshold searches need a numeric zero_division (0.0 or 1.0 as a rule), not NaN")


def _midpoints(hi, lo):
    """Thresholds t with lo < t <= hi (elementwise, hi > lo): halfway where floats allow."""
    mid = 0.5 * (hi + lo)
    return np.where(mid > lo, mid, hi)


def _above(u):
    """Thresholds strictly above u that select nothing: halfway to 1.0, or the next float."""
    u = np.asarray(u, dtype=np.float64)
    return np.where(u < 1.0, _midpoints(1.0, np.minimum(u, 1.0)), np.nextafter(u, np.inf))


def _below(u):
    """Thresholds t <= u that select everything at or above u: halfway to 0.0 if u > 0."""
    u = np.asarray(u, dtype=np.float64)
    return np.where(u > 0, 0.5 * u, u)


def _cut_thresholds(u):
    """Thresholds for every cut of the distinct values ``u`` (sorted descending, k of them).

    Returns (k + 1,) float64: entry c selects exactly the c largest values under
    ``p >= t``; entry 0 selects none, entry k selects all.
    """
    u = np.asarray(u, dtype=np.float64)
    return np.concatenate([[_above(u[0])], _midpoints(u[:-1], u[1:]), [_below(u[-1])]])


def _group_ends(sorted_desc):
    """Indices of the last element of each run of equal values in a sorted 1-D array."""
    return np.flatnonzero(np.append(sorted_desc[1:] != sorted_desc[:-1], True))


def random_folds(n, n_splits=5, seed=0):
    """Fold id (0..n_splits-1) for each of n rows: a seeded random, near-equal split."""
    if not 2 <= n_splits <= n:
        raise ValueError(f"n_splits must be between 2 and the number of rows ({n}); got {n_splits}")
    return np.random.default_rng(seed).permutation(n) % n_splits


# ----------------------------------------------------------------------------- searches

def best_label_fbeta(y_col, P, beta=2.0, zero_division=ZERO_DIVISION, chunk=64):
    """Best binary F-beta of one label over all cut points, for M candidate columns.

    y_col: (N,) 0/1 truth of one label; P: (N, M) candidate probabilities for it
    (e.g. M models). Returns (f (M,), thr (M,)): for each column the highest F-beta of
    ``P[:, m] >= thr[m]`` against ``y_col`` (the label's own F-beta over images, as
    ``fbeta_per_label``) and the threshold reaching it. Each column is sorted once;
    F at every cut comes from cumulative sums. Columns are processed ``chunk`` at a
    time to bound memory.
    """
    y = np.asarray(y_col, dtype=np.float64).ravel()
    P = np.asarray(P, dtype=np.float64)
    if P.ndim == 1:
        P = P[:, None]
    if P.shape[0] != y.size:
        raise ValueError(f"y_col has {y.size} rows but P has {P.shape[0]}")
    check_zero_division(zero_division)
    b2 = beta * beta
    npos = y.sum()
    f_none = float(zero_division) if npos == 0 else 0.0
    N, M = P.shape
    f_out = np.empty(M)
    thr_out = np.empty(M)
    count = np.arange(1, N + 1, dtype=np.float64)
    y32 = y.astype(np.int32)
    for start in range(0, M, chunk):
        cols = np.ascontiguousarray(P[:, start:start + chunk].T)        # (m, N)
        # Order within ties does not matter (only cuts between distinct values are
        # scored), so the fast unstable sort will do.
        order = np.argsort(-cols, axis=1, kind="quicksort")
        ps = np.take_along_axis(cols, order, axis=1)
        tp = np.cumsum(y32[order], axis=1, dtype=np.int32)
        f = (1.0 + b2) * tp / (b2 * npos + count)                     # cut after position i
        f[:, :-1][ps[:, 1:] == ps[:, :-1]] = -np.inf                   # cuts only between distinct values
        best = np.argmax(f, axis=1)
        rows = np.arange(cols.shape[0])
        fb = f[rows, best]
        hi = ps[rows, best]
        lo = ps[rows, np.minimum(best + 1, N - 1)]
        thr = np.where(best + 1 < N, _midpoints(hi, lo), _below(hi))
        # Predicting nothing wins only for a label with no positives (zero_division).
        none = f_none > fb
        f_out[start:start + chunk] = np.where(none, f_none, fb)
        thr_out[start:start + chunk] = np.where(none, _above(ps[:, 0]), thr)
    return f_out, thr_out


def greedy_thresholds(y_true, probs, beta=2.0, init=FIXED_THRESHOLD, max_passes=10,
                      zero_division=ZERO_DIVISION):
    """Per-label coordinate ascent on the sample-averaged F-beta, exact over all cut points.

    y_true: (N, L) 0/1; probs: (N, L). Starts from ``init`` (scalar or (L,)); each pass
    visits labels in order and moves a label's threshold to its best cut given the
    others, only on a strict gain. Stops after a pass with no change or ``max_passes``.
    Returns (thresholds float64 (L,), F-beta of ``binarize(probs, thresholds)``).
    """
    y, P = check_inputs(y_true, probs)
    check_zero_division(zero_division)
    N, L = P.shape
    thr = np.broadcast_to(np.asarray(init, dtype=np.float64), (L,)).copy()
    order = np.argsort(-P.T, axis=1, kind="quicksort").T      # each column sorted once; ties need no order
    pred = P >= thr
    tp = (y & pred).sum(1).astype(np.int64)
    fp = pred.sum(1) - tp
    fn = y.sum(1).astype(np.int64) - tp
    tol = 1e-9 * max(N, 1)
    for npass in range(max_passes):
        changed = 0
        for j in range(L):
            yj, pj = y[:, j].astype(np.int64), pred[:, j].astype(np.int64)
            tp0, fp0, fn0 = tp - yj * pj, fp - (1 - yj) * pj, fn - yj * (1 - pj)
            f_out = fbeta_from_counts(tp0, fp0, fn0 + yj, beta, zero_division)
            f_in = fbeta_from_counts(tp0 + yj, fp0 + 1 - yj, fn0, beta, zero_division)
            o = order[:, j]
            ps = P[o, j]
            ends = _group_ends(ps)
            totals = np.concatenate([[0.0], np.cumsum((f_in - f_out)[o])[ends]])
            cuts = _cut_thresholds(ps[ends])
            current = np.searchsorted(-ps[ends], -thr[j], side="right")   # distinct values >= thr
            best = int(np.argmax(totals))
            if totals[best] > totals[current] + tol:
                thr[j] = cuts[best]
                new = P[:, j] >= thr[j]
                pred[:, j] = new
                nj = new.astype(np.int64)
                tp, fp, fn = tp0 + yj * nj, fp0 + (1 - yj) * nj, fn0 + yj * (1 - nj)
                changed += 1
        log.debug("greedy pass %d: %d label(s) moved", npass + 1, changed)
        if not changed:
            break
    else:
        log.warning("greedy threshold search stopped after max_passes=%d before converging", max_passes)
    return thr, fbeta_samples(y, pred, beta, zero_division)


def global_threshold(y_true, probs, beta=2.0, zero_division=ZERO_DIVISION):
    """Best single threshold for all labels, exact over every distinct probability.

    Sorts all N*L probabilities once; lowering the threshold past one cell changes one
    image's TP or FP, so the F-beta sum at every cut is a cumulative sum of per-cell
    changes. Returns (threshold float, F-beta of ``probs >= threshold``).
    """
    y, P = check_inputs(y_true, probs)
    check_zero_division(zero_division)
    N, L = P.shape
    flat = P.ravel()
    order = np.argsort(-flat, kind="quicksort")   # order inside ties is irrelevant
    rows = order // L
    yv = y.ravel()[order].astype(np.int64)
    # Group cells by image (stable: keeps the global order inside an image) to get the
    # image's TP and predicted count right after each of its cells is included.
    by_row = np.argsort(rows, kind="stable")
    r, ys = rows[by_row], yv[by_row]
    first = np.searchsorted(r, r, side="left")
    cs = np.cumsum(ys)
    tp_after = cs - (cs[first] - ys[first])
    n_after = np.arange(r.size) - first + 1
    T = y.sum(1).astype(np.int64)[r]
    f_after = fbeta_from_counts(tp_after, n_after - tp_after, T - tp_after, beta, zero_division)
    f_before = fbeta_from_counts(tp_after - ys, n_after - 1 - (tp_after - ys), T - tp_after + ys,
                                 beta, zero_division)
    delta = np.empty(r.size)
    delta[by_row] = f_after - f_before
    ps = flat[order]
    ends = _group_ends(ps)
    totals = np.concatenate([[0.0], np.cumsum(delta)[ends]])
    t = float(_cut_thresholds(ps[ends])[int(np.argmax(totals))])
    return t, fbeta_samples(y, P >= t, beta, zero_division)


def smooth_thresholds(y_true, probs, folds=None, beta=2.0, n_splits=5, seed=0,
                      zero_division=ZERO_DIVISION, **greedy_opts):
    """Greedy thresholds fitted on each fold separately, averaged on the logit scale.

    folds: (N,) fold id per row, or None for a seeded random ``n_splits``-way split
    (min(n_splits, N)-way when there are fewer rows than splits; plain greedy thresholds
    for a single row). A fold's "never"/"always" thresholds are clipped to
    |logit| <= LOGIT_CLIP before averaging. Returns thresholds float64 (L,).
    """
    y, P = check_inputs(y_true, probs)
    if folds is None and len(P) < 2:
        return greedy_thresholds(y, P, beta, zero_division=zero_division, **greedy_opts)[0]
    folds = random_folds(len(P), min(n_splits, len(P)), seed) if folds is None else np.asarray(folds)
    logits = []
    for k in np.unique(folds):
        m = folds == k
        t, _ = greedy_thresholds(y[m], P[m], beta, zero_division=zero_division, **greedy_opts)
        with np.errstate(divide="ignore", invalid="ignore"):
            logits.append(np.clip(logit(np.clip(t, 0.0, 1.0)), -LOGIT_CLIP, LOGIT_CLIP))
    mean = np.mean(logits, axis=0)
    # Where every fold says "never" (or "always") keep that exactly: probabilities of
    # 1.0 (or 0.0) occur, and expit(+-LOGIT_CLIP) would misclassify them.
    return np.select([mean >= LOGIT_CLIP, mean <= -LOGIT_CLIP], [np.nextafter(1.0, 2.0), 0.0], expit(mean))


# ----------------------------------------------------------------------------- prevalence

def prevalence_thresholds(probs, shares):
    """Per-label thresholds that predict each label on its target share of the rows.

    probs: (N, L); shares: (L,) fractions in [0, 1]. Label j gets the threshold that
    selects its round(shares[j] * N) largest probabilities under ``probs >= t`` (more
    only where probabilities tie at the cut). Returns float64 (L,).
    """
    P = np.asarray(probs, dtype=np.float64)
    shares = np.asarray(shares, dtype=np.float64)
    N, L = P.shape
    if shares.shape != (L,) or ((shares < 0) | (shares > 1)).any():
        raise ValueError(f"shares must be (L,) = ({L},) fractions in [0, 1]; got {shares}")
    if N == 0:
        return np.full(L, 0.5)
    k = np.rint(shares * N).astype(int)
    ps = -np.sort(-P, axis=0)                                  # (N, L) descending per label
    cols = np.arange(L)
    hi = ps[np.maximum(k - 1, 0), cols]                        # lowest value kept
    lo = ps[np.minimum(k, N - 1), cols]                        # highest value dropped
    between = np.where(hi > lo, _midpoints(hi, np.minimum(lo, hi)), hi)
    return np.select([k == 0, k >= N], [_above(ps[0]), _below(ps[-1])], between)
