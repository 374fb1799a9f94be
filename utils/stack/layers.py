"""Stacking in layers: groups of members combined separately, then the groups' outputs
combined (--groups, --top)."""
import numpy as np

from utils.metrics.fbeta import ZERO_DIVISION
from utils.stack.crossfit import cross_predict
from utils.stack.library import Inputs
from utils.stack.methods import method_factory


class Layered:
    """Stack groups of members separately, then stack the groups' outputs.

    inner, top: factories of the combiners inside each group and across groups;
    groups: {name: member indices}. The top is fitted on the groups' cross-fitted
    predictions over the training rows, so it never sees in-fold outputs.
    """

    def __init__(self, inner, top, groups):
        self.inner_factory, self.top_factory = inner, top
        self.groups = {g: np.asarray(idx) for g, idx in groups.items()}
        self.in_sample_thresholds = top().in_sample_thresholds

    def _top_inputs(self, outs, masks, y=None, folds=None):
        P = np.stack(outs, 1).astype(np.float32)          # (L, G, N)
        mask = np.stack(masks)                              # (G, L)
        P[~mask.T] = np.nan
        names = list(self.groups)
        return Inputs(P, mask, names, names, y, folds)

    def fit(self, inputs):
        self.inner, outs, masks = {}, [], []
        for g, idx in self.groups.items():
            sub = inputs.columns(idx)
            outs.append(cross_predict(self.inner_factory, sub).T)
            masks.append(sub.mask.any(0))
            self.inner[g] = self.inner_factory().fit(sub)
        self.top_in = self._top_inputs(outs, masks, inputs.y, inputs.folds)
        self.top = self.top_factory().fit(self.top_in)
        return self

    def predict(self, P):
        outs, masks = [], []
        for g, idx in self.groups.items():
            m = self.inner[g]
            outs.append(m.predict(P[:, idx]).T)
            masks.append(self.top_in.mask[list(self.groups).index(g)])
        return self.top.predict(self._top_inputs(outs, masks).P)

    def threshold_probs(self):
        """Predictions for fitting thresholds: the top's, on the groups' cross-fitted outputs."""
        if self.top.in_sample_thresholds:
            return self.top.predict(self.top_in.P)
        return cross_predict(self.top_factory, self.top_in)

    def describe(self, members, labels, limit=10):
        """{label: {member: effective weight}} when every layer is a weighted average, else
        {'top': ..., group: ...} with each layer's own description."""
        if hasattr(self.top, "W") and all(hasattr(m, "W") for m in self.inner.values()):
            out = {}
            for j, lab in enumerate(labels):
                ws = {}
                for gi, (g, idx) in enumerate(self.groups.items()):
                    for k, mi in enumerate(idx):
                        w = self.top.W[j, gi] * self.inner[g].W[j, k]
                        if w > 0:
                            ws[members[mi]] = w
                top = sorted(ws.items(), key=lambda t: -t[1])[:limit]
                out[lab] = {k: round(float(v), 4) for k, v in top}
            return out
        out = {"top": describe_combiner(self.top, list(self.groups), labels, limit)}
        for g, idx in self.groups.items():
            out[g] = describe_combiner(self.inner[g], [members[i] for i in idx], labels, limit)
        return out


def describe_combiner(model, members, labels, limit=10):
    """A fitted combiner's own description ({label: {member: weight}} for the weighted
    averages; see each class's ``describe``), or None when it has none."""
    fn = getattr(model, "describe", None)
    return fn(members, labels, limit) if fn else None


def build_factory(spec, seed=0, logits=False, groups=None, top=None, beta=2.0, zero_division=ZERO_DIVISION):
    """Factory for ``spec``, wrapped in ``Layered`` when groups ({name: member indices}) are given.

    top: method spec across groups (default: the same as ``spec``).
    """
    inner = method_factory(spec, seed, logits, beta, zero_division)
    if not groups:
        return inner
    across = method_factory(top or spec, seed, logits, beta, zero_division)
    return lambda: Layered(inner, across, groups)
