"""Level-1 ensembles: per-label weighted averages of the library's members.

Every method here fits a weight matrix W (L, M): label l's prediction is the
W[l]-weighted average of the members that have an opinion on l (rows sum to 1), or
the training prevalence of l when its row is empty. Methods:

- ``prior``  no member: each label's training frequency (the floor any method must beat).
- ``best``   the single member with the best mean label F2 (one model for all labels).
- ``mean``   every member, equal weights.
- ``bag``    the repeats (seeds) of each configuration averaged; per label the best bag.
- ``topk``   per label, the k members with the best label F2, equal weights.
- ``select`` Caruana ensemble selection per label: sorted initialisation with the best
             ``init`` members, forward selection with replacement (or without), the best
             prefix kept; optional bagged selection (``bags`` random subsets of a
             fraction ``frac`` of the members, weights averaged) and random restarts.
- ``select-model`` the same selection with one weight vector for all labels (as
             AutoGluon and auto-sklearn do), objective = mean label F2.
- ``beam``   per-label beam search over member multisets (or sets: ``replace=False``).

Objective: a label's F2 at its best threshold ("f2"), or the soft F2 of the
probabilities ("soft"). The per-label scoring of candidates and the searches over
members (forward selection, beam search) are in utils.stack.selection.
"""
import logging

import numpy as np

from utils.metrics.fbeta import ZERO_DIVISION
from utils.stack.selection import TOL, LabelScorer, beam_label, constant_f2, select_label

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- combiners

def average(P, W, prior):
    """Weighted average per label. P: (L, M, N); W: (L, M) rows summing to 1 (or all 0);
    prior: (L,) used for labels with no weight. Returns float64 (N, L)."""
    L, M, N = P.shape
    out = np.empty((N, L))
    for j in range(L):
        nz = np.flatnonzero(W[j] > 0)
        out[:, j] = W[j, nz] @ P[j, nz].astype(np.float64) if nz.size else prior[j]
    return out


class WeightedAverage:
    """Base of the level-1 methods: ``fit`` sets W (L, M) and prior (L,), ``predict`` averages.

    Subclasses implement ``weights(inputs) -> W``. Level-1 predictions on the rows the
    weights were fitted on are fair inputs for fitting thresholds
    (``in_sample_thresholds``): a weighted average has too little capacity to overfit them.
    """
    in_sample_thresholds = True

    def __init__(self, seed=0, beta=2.0, zero_division=ZERO_DIVISION, **params):
        self.params, self.seed = params, seed
        self.beta, self.zero_division = beta, zero_division

    def _per_label(self, inputs, search):
        """(L, M) weights: search(scorer, label index) -> weights over that label's members."""
        objective = self.params.get("objective", "f2")
        L, M, _ = inputs.P.shape
        W = np.zeros((L, M))
        for j in range(L):
            rows, P, y = self._label(inputs, j)
            W[j, rows] = search(LabelScorer(y, P, objective, self.beta, self.zero_division), j)
        return W

    def fit(self, inputs):
        """Fit on Inputs with y; returns self."""
        self.prior = inputs.y.mean(0).astype(np.float64)
        W = np.asarray(self.weights(inputs), dtype=np.float64)
        W[~inputs.mask.T] = 0.0
        s = W.sum(1, keepdims=True)
        self.W = np.divide(W, s, out=np.zeros_like(W), where=s > 0)
        return self

    def predict(self, P):
        """(N, L) probabilities from P (L, M, N)."""
        return average(P, self.W, self.prior)

    def describe(self, members, labels, limit=10):
        """{label: {member: weight}} of the fitted weights, largest first (at most ``limit``)."""
        out = {}
        for j, lab in enumerate(labels):
            nz = np.argsort(-self.W[j], kind="stable")
            out[lab] = {members[m]: round(float(self.W[j, m]), 4) for m in nz[:limit] if self.W[j, m] > 0}
        return out

    def _label(self, inputs, j):
        """(member rows with an opinion on label j, their (M_j, N) probabilities, truth)."""
        rows = np.flatnonzero(inputs.mask[:, j])
        return rows, inputs.P[j, rows], inputs.y[:, j]

    def _indiv(self, inputs, objective="f2"):
        """(L, M) individual objective of each member per label (NaN without an opinion)."""
        L, M, _ = inputs.P.shape
        out = np.full((L, M), np.nan)
        for j in range(L):
            rows, P, y = self._label(inputs, j)
            out[j, rows] = LabelScorer(y, P, objective, self.beta, self.zero_division).individual()
        return out


class Prior(WeightedAverage):
    """No member: every label's training frequency (the label-frequency baseline)."""

    def weights(self, inputs):
        return np.zeros(inputs.mask.T.shape)


class Mean(WeightedAverage):
    """All members with an opinion, equal weights."""

    def weights(self, inputs):
        return inputs.mask.T.astype(np.float64)


class Best(WeightedAverage):
    """The single member with the best mean label F2 over all labels.

    Members without an opinion on a label count that label at the constant
    decision's F2 (they would predict the prior there).
    """

    def weights(self, inputs):
        ind = self._indiv(inputs)
        const = np.array([constant_f2(inputs.y[:, j], self.beta, self.zero_division)
                          for j in range(ind.shape[0])])
        score = np.where(np.isnan(ind), const[:, None], ind).mean(0)
        W = np.zeros_like(ind)
        W[:, int(np.argmax(score))] = 1.0
        return W


class TopK(WeightedAverage):
    """Per label, the ``k`` members with the best label F2, equal weights."""

    def weights(self, inputs):
        k = int(self.params.get("k", 5))
        ind = self._indiv(inputs)
        W = np.zeros_like(ind)
        for j in range(ind.shape[0]):
            ok = np.flatnonzero(~np.isnan(ind[j]))
            W[j, ok[np.argsort(-ind[j, ok], kind="stable")[:k]]] = 1.0
        return W


class Bag(WeightedAverage):
    """Repeats of each configuration averaged (bagging); per label the best bag.

    A configuration's bag weighs its seeds equally; the bag with the best label F2 is
    chosen for each label.
    """

    def weights(self, inputs):
        models = np.array(inputs.models)
        uniq = list(dict.fromkeys(inputs.models))
        L, M, _ = inputs.P.shape
        W = np.zeros((L, M))
        for j in range(L):
            rows = [np.flatnonzero((models == u) & inputs.mask[:, j]) for u in uniq]
            rows = [r for r in rows if r.size]
            bags = np.stack([inputs.P[j, r].mean(0) for r in rows]).astype(np.float32)
            f = LabelScorer(inputs.y[:, j], bags, "f2", self.beta, self.zero_division).individual()
            W[j, rows[int(np.argmax(f))]] = 1.0
        return W


class Select(WeightedAverage):
    """Caruana ensemble selection per label (see ``select_label`` for the parameters).

    params: init, size, replace, patience, bags, frac, restarts, pool, objective.
    """

    def weights(self, inputs):
        p = dict(init=3, size=25, replace=True, patience=10, bags=0, frac=0.5, restarts=0, pool=0)
        p.update({k: v for k, v in self.params.items() if k in p})

        def search(scorer, j):
            rng = np.random.default_rng([self.seed, j])        # a label's draws do not depend on the others
            return select_label(scorer, scorer.individual(), rng=rng, **p)[0]
        return self._per_label(inputs, search)


class Beam(WeightedAverage):
    """Per-label beam search (params: width, size, replace, patience, objective)."""

    def weights(self, inputs):
        p = dict(width=5, size=10, replace=True, patience=3)
        p.update({k: v for k, v in self.params.items() if k in p})
        return self._per_label(inputs, lambda scorer, j: beam_label(scorer, scorer.individual(), **p)[0])


class SelectModel(WeightedAverage):
    """Caruana selection of whole members: one weight vector for every label.

    Objective: mean over labels of the label objective; a label no chosen member
    covers scores the constant decision. params: init, size, replace, patience, objective.
    """

    def weights(self, inputs):
        init, size = int(self.params.get("init", 3)), int(self.params.get("size", 25))
        replace_, patience = bool(self.params.get("replace", True)), int(self.params.get("patience", 10))
        objective = self.params.get("objective", "f2")
        L, M, N = inputs.P.shape
        mask = inputs.mask
        pos = np.cumsum(mask, axis=0) - 1                                    # member -> row in its label's block
        scorers = [LabelScorer(inputs.y[:, j], inputs.P[j, mask[:, j]], objective, self.beta, self.zero_division)
                   for j in range(L)]
        const = np.array([constant_f2(inputs.y[:, j], self.beta, self.zero_division) for j in range(L)])
        ind = np.repeat(const[:, None], M, axis=1)
        for j in range(L):
            ind[j, mask[:, j]] = scorers[j].individual()
        chosen = list(np.argsort(-ind.mean(0), kind="stable")[:max(1, min(init, M))])
        S = np.zeros((L, N), np.float32)
        n = np.zeros(L, int)
        cur = const.copy()
        for m in chosen:
            f = cur.copy()
            for j in np.flatnonzero(mask[m]):
                f[j] = scorers[j].score(S[j], n[j], [pos[m, j]])[0]
            cur = self._add(scorers, mask, pos, S, n, m, f)
        counts = np.bincount(chosen, minlength=M)
        best, best_counts, stale = cur.mean(), counts.copy(), 0
        while counts.sum() < size:
            rows = np.arange(M) if replace_ else np.flatnonzero(counts == 0)
            if rows.size == 0:
                break
            f = np.repeat(cur[:, None], rows.size, axis=1)
            for j in range(L):
                ok = mask[rows, j]
                f[j, ok] = scorers[j].score(S[j], n[j], pos[rows[ok], j])
            k = int(np.argmax(f.mean(0)))
            cur = self._add(scorers, mask, pos, S, n, int(rows[k]), f[:, k])
            counts[rows[k]] += 1
            if cur.mean() > best + TOL:
                best, best_counts, stale = cur.mean(), counts.copy(), 0
            else:
                stale += 1
                if patience and stale >= patience:
                    break
        return np.repeat(best_counts[None].astype(np.float64), L, axis=0)

    @staticmethod
    def _add(scorers, mask, pos, S, n, m, scores):
        """Add member m to every label it covers (in place on S, n); returns the new objectives."""
        for j in np.flatnonzero(mask[m]):
            S[j] += scorers[j].P[pos[m, j]]
            n[j] += 1
        return np.asarray(scores, dtype=np.float64).copy()


LEVEL1 = {"prior": Prior, "best": Best, "mean": Mean, "bag": Bag, "topk": TopK, "select": Select,
          "beam": Beam, "select-model": SelectModel}
