"""Fitting per-label ensembles: scoring candidate members fast, and searching over them.

A label's ensemble is a multiset of members whose probabilities are averaged. Searches
(`forward_select`: Caruana ensemble selection with sorted initialisation, replacement and
patience; `select_label`: the same, optionally bagged; `beam_label`: beam search over member
multisets) add one member at a time and keep the best prefix.

Objective: a label's F2 at its best threshold ("f2"), or the soft F2 of the
probabilities ("soft"). Candidate scoring is vectorised: one histogram pass over all
candidates' running sums per step (``label_f2_candidates``), no metric call per
candidate; the soft objective is O(1) per candidate from precomputed sums. `LabelScorer`
holds one label's truth and member probabilities and scores running sums.
"""
import sys

import numpy as np

from utils.metrics.fbeta import ZERO_DIVISION, fbeta_from_counts

# Candidate scores bin each running sum by the top 16 bits of its float32 pattern:
# 8 exponent + 7 mantissa bits = 128 log-spaced bins per octave (0.54% relative width),
# as fine for a rare label's 0.01s as for a common label's 0.9s. Sums below 2**-17 share
# the lowest bin.
_FLOOR_KEY = int(np.float32(2.0 ** -17).view(np.uint32) >> 16)
TOL = 1e-12  # a score gain below this is no gain (ties keep the earlier choice)


# ----------------------------------------------------------------------------- candidate scores

def _key(value):
    """Bin key of a float32 value: the top 16 bits of its pattern (monotone for value >= 0)."""
    return int(np.float32(max(float(value), 2.0 ** -17)).view(np.uint32) >> 16)


def _key_floor(key):
    """Smallest float32 value with bin key ``key``."""
    return float(np.uint32(key << 16).view(np.float32))


_HIGH = slice(1, None, 2) if sys.byteorder == "little" else slice(0, None, 2)


def label_f2_candidates(y, P, base=None, rows=None, top=None, beta=2.0, zero_division=ZERO_DIVISION,
                        cols=None, min_value=0.0, npos=None, chunk=16):
    """Best F-beta of one label for each candidate column added to a running sum.

    y: (N,) 0/1 truth of the label; P: (C, N) float32 candidate probabilities; base:
    (N,) float32 running sum of the members chosen so far (None = zeros); rows: which
    rows of P to score (default all); top: an upper bound of base + P (default
    base.max() + 1). Returns float64 (len(rows),): for each candidate c the F-beta of
    ``base + P[c] >= t`` at its best threshold t (equal to thresholding the average).
    Thresholds are searched between 128 log-spaced bins per octave, so the score is
    exact up to ~0.5% changes in the threshold (a lower bound of the exact optimum,
    ``utils.metrics.threshold_search.best_label_fbeta``, within a few 1e-3).

    Pruned scoring (``LabelScorer.best``): cols restricts the images to those that can
    reach ``min_value``; only thresholds >= min_value are searched and ``npos`` (the
    label's positives over all images) counts the others as missed.
    """
    y = np.asarray(y).astype(np.uint16).ravel()
    rows = np.arange(len(P)) if rows is None else np.asarray(rows)
    npos = float(y.sum()) if npos is None else float(npos)
    if npos == 0:  # nothing to find: predicting nothing scores zero_division for everyone
        return np.full(rows.size, float(zero_division))
    if cols is not None:
        y = y[cols]
    N = y.size
    if base is None:
        base = np.zeros(N, np.float32)
        top = 1.0 if top is None else top
    elif cols is not None:
        base = base[cols]
    top = float(base.max()) + 1.0 if top is None else top
    lo = max(_FLOOR_KEY, _key(min_value) if min_value > 0 else _FLOOR_KEY)
    nb = _key(top) - lo + 1
    b2 = beta * beta
    out = np.empty(rows.size)
    buf = np.empty((chunk, N), np.float32)
    key = np.empty((chunk, N), np.uint16)
    for s in range(0, rows.size, chunk):
        r = rows[s:s + chunk]
        c = r.size
        p = P[r] if cols is None else P[r][:, cols]
        v = np.add(p, base, out=buf[:c])
        k = np.maximum(v.view(np.uint16)[:, _HIGH], lo, out=key[:c])   # top 16 bits of each float32
        k -= lo
        k <<= 1
        k |= y                                    # bin * 2 + truth: one histogram for both counts
        # One small bincount per candidate stays in cache; a single one over the chunk does not.
        counts = np.stack([np.bincount(row, minlength=2 * nb) for row in k]).reshape(c, nb, 2)
        above = np.cumsum(counts[:, ::-1], axis=1)  # images at or above each bin, from the top
        if min_value > 0:                          # the lowest bin also holds everything below it
            above = above[:, :-1]
        tp = above[..., 1]
        npred = above[..., 0] + tp
        f = (1.0 + b2) * tp / (b2 * npos + npred)
        out[s:s + c] = f.max(1) if f.shape[1] else 0.0
    return out


def constant_f2(y, beta=2.0, zero_division=ZERO_DIVISION):
    """Label F-beta of the best constant decision (all or nothing) for truth y (N,)."""
    y = np.asarray(y, dtype=np.float64)
    npos = y.sum()
    f_all = fbeta_from_counts(npos, y.size - npos, 0.0, beta, zero_division)
    f_none = fbeta_from_counts(0.0, 0.0, npos, beta, zero_division)
    return float(max(f_all, f_none))


class LabelScorer:
    """Scores candidates for one label: ``score(S, n, rows)`` -> objective of (S + P[rows]) / (n + 1).

    P: (C, N) float32 candidates; objective: 'f2' (label F-beta at the best
    threshold) or 'soft' (soft F-beta: tp = sum y p, predicted = sum p).
    """

    def __init__(self, y, P, objective="f2", beta=2.0, zero_division=ZERO_DIVISION):
        if objective not in ("f2", "soft"):
            raise ValueError(f"Invalid objective {objective!r}. Only f2 and soft are supported.")
        self.y = np.asarray(y, np.uint8)
        self.P = np.ascontiguousarray(P, dtype=np.float32)
        self.objective, self.beta, self.zd = objective, beta, zero_division
        self.npos = float(self.y.sum())
        if objective == "soft":
            self.sum_p = self.P.sum(1, dtype=np.float64)
            self.sum_yp = self.P[:, self.y == 1].sum(1, dtype=np.float64)

    def score(self, S, n, rows):
        """Objective of (S + P[r]) / (n + 1) for each r in rows. S: (N,) float32 sum of n members."""
        rows = np.asarray(rows)
        if self.objective == "f2":
            return label_f2_candidates(self.y, self.P, S if n else None, rows, top=n + 1.0,
                                       beta=self.beta, zero_division=self.zd)
        s_tot = float(S.sum(dtype=np.float64)) if n else 0.0
        s_y = float(S[self.y == 1].sum(dtype=np.float64)) if n else 0.0
        tp = (s_y + self.sum_yp[rows]) / (n + 1)
        npred = (s_tot + self.sum_p[rows]) / (n + 1)
        return fbeta_from_counts(tp, npred - tp, self.npos - tp, self.beta, self.zd)

    def individual(self):
        """(C,) objective of each candidate alone."""
        return self.score(None, 0, np.arange(len(self.P)))

    def best(self, S, n, rows, hint=None, chunk=16):
        """(index into rows, objective) of the best candidate, as ``argmax(score(S, n, rows))``.

        Faster for the 'f2' objective: the ``chunk`` candidates ranked highest by
        ``hint`` (e.g. the last step's scores) are scored first; their best F_lb bounds
        the number of predicted images any better candidate can have, K = ((1 + b^2)
        npos / F_lb) - b^2 npos, so only images that can reach the K-th largest
        ensemble value (with the smallest candidate) are histogrammed for the others,
        and only thresholds above that value are searched. Exact up to the binning.
        Returns (j, f, scores): scores are exact for the first chunk and for every
        candidate that beats F_lb, lower bounds for the others (enough for the argmax,
        not for a ranking: beam search uses ``score``).
        """
        rows = np.asarray(rows)
        if self.objective != "f2" or not n or rows.size <= 2 * chunk:
            f = self.score(S, n, rows)
            return int(np.argmax(f)), float(f.max()), f
        if not hasattr(self, "pmin"):
            self.pmin, self.pmax = self.P.min(0), self.P.max(0)
        order = np.argsort(-hint, kind="stable") if hint is not None else np.arange(rows.size)
        first, rest = order[:chunk], order[chunk:]
        f = np.empty(rows.size)
        f[first] = self.score(S, n, rows[first])
        f_lb = f[first].max()
        b2 = self.beta * self.beta
        N = self.y.size
        k = (1.0 + b2) * self.npos / max(f_lb, 1e-12) - b2 * self.npos
        cols = None
        if k < 0.5 * N:
            tau = np.partition(S + self.pmin, N - int(k) - 1)[N - int(k) - 1]
            edge = _key_floor(_key(tau))
            cols = np.flatnonzero(S + self.pmax >= edge)
        if cols is None or cols.size > 0.6 * N:
            f[rest] = self.score(S, n, rows[rest])
        else:
            f[rest] = label_f2_candidates(self.y, self.P, S, rows[rest], top=n + 1.0, beta=self.beta,
                                          zero_division=self.zd, cols=cols, min_value=tau, npos=self.npos)
        j = int(np.argmax(f))
        return j, float(f[j]), f


# ----------------------------------------------------------------------------- searches for one label

def forward_select(scorer, indiv, cands, init=3, size=25, replace=True, patience=10, start=None):
    """Caruana forward selection for one label among rows ``cands`` of scorer.P.

    indiv: (C,) individual objectives; init: start from the ``init`` best candidates
    (sorted initialisation) unless ``start`` (list of rows) is given; size: largest
    ensemble (with repeats); replace: a member may be added again; patience: stop
    after that many additions without a new best (0 = never). Returns (counts (C,)
    int of the best prefix, its objective).
    """
    P = scorer.P
    cands = np.asarray(cands)
    if start is None:
        order = cands[np.argsort(-indiv[cands], kind="stable")]
        start = list(order[:max(1, min(init, cands.size))])
    counts = np.bincount(start, minlength=len(P))
    S = P[start].sum(0, dtype=np.float32)
    n = len(start)
    best = float(scorer.score(S - P[start[-1]], n - 1, [start[-1]])[0]) if n > 1 else float(indiv[start[0]])
    best_counts, stale = counts.copy(), 0
    last = indiv.astype(np.float64).copy()       # ranks candidates so the likely best are scored first
    while n < size:
        rows = cands if replace else cands[counts[cands] == 0]
        if rows.size == 0:
            break
        j, fj, f = scorer.best(S, n, rows, hint=last[rows])
        last[rows] = f
        m = rows[j]
        S += P[m]
        n += 1
        counts[m] += 1
        if fj > best + TOL:
            best, best_counts, stale = fj, counts.copy(), 0
        else:
            stale += 1
            if patience and stale >= patience:
                break
    return best_counts, best


def select_label(scorer, indiv, init=3, size=25, replace=True, patience=10, bags=0, frac=0.5,
                 restarts=0, pool=0, rng=None):
    """Ensemble selection for one label; returns (weights (C,) summing to 1, objective).

    pool: keep only the ``pool`` best candidates by individual objective (0 = all;
    library pruning, Caruana et al. 2006); bags: > 0 runs the selection on that many
    random subsets of a fraction ``frac`` of the candidates and averages the weights;
    restarts: extra runs that each start from one random candidate (greedy search
    from random starts), the run with the best objective kept.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    C = len(indiv)
    cands = np.arange(C)
    if 0 < pool < C:
        cands = np.sort(np.argsort(-indiv, kind="stable")[:pool])
    opts = dict(init=init, size=size, replace=replace, patience=patience)

    def one(sub):
        counts, obj = forward_select(scorer, indiv, sub, **opts)
        for _ in range(restarts):
            c2, o2 = forward_select(scorer, indiv, sub, start=[int(rng.choice(sub))], **opts)
            if o2 > obj + TOL:
                counts, obj = c2, o2
        return counts / counts.sum(), obj

    if bags <= 0:
        return one(cands)
    k = max(1, int(np.ceil(frac * cands.size)))
    runs = [one(np.sort(rng.choice(cands, k, replace=False))) for _ in range(bags)]
    return np.mean([w for w, _ in runs], axis=0), float(np.mean([o for _, o in runs]))


def beam_label(scorer, indiv, width=5, size=10, replace=True, patience=3):
    """Beam search over member multisets (sets when replace=False) for one label.

    Keeps the ``width`` best distinct combinations of each size, grows them by one
    member at a time up to ``size``, and stops after ``patience`` sizes without a new
    best. Returns (weights (C,) of the best combination seen, its objective).
    """
    C = len(indiv)
    P = scorer.P
    order = np.argsort(-indiv, kind="stable")[:width]
    beams = [(float(indiv[m]), (int(m),)) for m in order]
    best_f, best_set = beams[0]
    stale = 0
    for n in range(1, size):
        pool = {}
        for _, members in beams:
            counts = np.bincount(members, minlength=C)
            rows = np.arange(C) if replace else np.flatnonzero(counts == 0)
            if rows.size == 0:
                continue
            f = scorer.score(P[list(members)].sum(0, dtype=np.float32), n, rows)
            top = np.argsort(-f, kind="stable")[:width]
            for j in top:
                key = tuple(sorted(members + (int(rows[j]),)))
                pool[key] = max(pool.get(key, -np.inf), float(f[j]))
        if not pool:
            break
        beams = sorted(((f, k) for k, f in pool.items()), key=lambda t: (-t[0], t[1]))[:width]
        if beams[0][0] > best_f + TOL:
            best_f, best_set, stale = beams[0][0], beams[0][1], 0
        else:
            stale += 1
            if patience and stale >= patience:
                break
    w = np.bincount(best_set, minlength=C).astype(np.float64)
    return w / w.sum(), best_f
