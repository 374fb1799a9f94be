"""Turning probabilities into tags: threshold strategies for the sample-averaged F-beta.

Decision rule, everywhere in the project: label j is predicted for an image when
``probs[:, j] >= thresholds[j]`` (float64 comparison). Searches are exact over every
distinct cut point of the data; a found cut is stored as the midpoint between the
lowest included and the highest excluded probability (or the included value itself
where the two are adjacent floats), so ``binarize`` reproduces the searched score
exactly while the threshold sits as far as possible from both neighbours. "Predict
nothing" is a threshold above the largest probability (above 1.0 only when a
probability equals 1.0).

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
from scipy.special import expit, logit

from utils.metrics.fbeta import ZERO_DIVISION, fbeta_from_counts, fbeta_samples

log = logging.getLogger(__name__)

STRATEGIES = ("fixed", "global", "greedy", "smooth", "expected", "prevalence")
FIXED_THRESHOLD = 0.2
LOGIT_CLIP = 20.0  # |logit| bound for averaging thresholds that mean "never" / "always"

# Options each strategy understands (besides beta and zero_division).
_OPTIONS = {
    "fixed": {"threshold"},
    "global": set(),
    "greedy": {"init", "max_passes"},
    "smooth": {"init", "max_passes", "n_splits", "seed"},
    "expected": set(),
    "prevalence": set(),
}


# ----------------------------------------------------------------------------- helpers

def _check_inputs(y_true, probs):
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


def _check_strategy(strategy):
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid strategy {strategy!r}. Only {', '.join(STRATEGIES)} are supported.")


def _check_zero_division(zero_division):
    """Searches need a number to score an image with no true and no predicted tag."""
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
    _check_zero_division(zero_division)
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
    y, P = _check_inputs(y_true, probs)
    _check_zero_division(zero_division)
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
    y, P = _check_inputs(y_true, probs)
    _check_zero_division(zero_division)
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
    y, P = _check_inputs(y_true, probs)
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
    _check_zero_division(zero_division)
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
    y, P = _check_inputs(y_true, probs)
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
    y, P = _check_inputs(y_true, probs)
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
    y, P = _check_inputs(y_true, probs)
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
