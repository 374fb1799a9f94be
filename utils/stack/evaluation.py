"""Evaluating every requested method (and each member alone) by cross-fitting, and
choosing the method for the submission."""
import numpy as np

from utils.metrics.fbeta import ZERO_DIVISION
from utils.metrics.thresholds import cross_fit as thr_cross_fit
from utils.stack.crossfit import cross_fit
from utils.stack.layers import build_factory
from utils.stack.methods import method_factory
from utils.stack.selection import LabelScorer


def member_scores(lib, strategy="greedy", beta=2.0, zero_division=ZERO_DIVISION, top=10):
    """Each member alone: its label F2 at each label's best threshold (in-sample), and for
    the ``top`` members covering every label (ranked by mean label F2) the cross-fitted
    and in-sample F2 of thresholds fitted the same way as for the methods.

    Returns a list of dicts (name, model, seed, group, labels, runs, label_f2 {label: f},
    and f2_cross_fitted, std, f2_in_sample where computed), in library order.
    """
    L, M, _ = lib.oof.shape
    label_f2 = np.full((L, M), np.nan)
    for j in range(L):
        rows = np.flatnonzero(lib.mask[:, j])
        label_f2[j, rows] = LabelScorer(lib.y[:, j], lib.oof[j, rows], "f2", beta, zero_division).individual()
    out = []
    for m, mem in enumerate(lib.members):
        out.append({"name": mem.name, "model": mem.model, "seed": mem.seed, "group": mem.group,
                    "labels": list(mem.labels), "runs": list(mem.runs),
                    "label_f2": {lib.labels[j]: float(label_f2[j, m]) for j in np.flatnonzero(lib.mask[m])}})
    full = np.flatnonzero(lib.mask.all(1))
    for m in full[np.argsort(-label_f2[:, full].mean(0), kind="stable")][:top]:
        cf = thr_cross_fit(lib.y, lib.oof[:, m].T.astype(np.float64), lib.folds, strategy, beta, zero_division)
        out[m].update(f2_cross_fitted=cf["mean"], std=cf["std"], f2_in_sample=cf["f2_in_sample"])
    return out


def evaluate(lib, specs, strategy="greedy", seed=0, logits=False, groups=None, top=None,
             beta=2.0, zero_division=ZERO_DIVISION, constraints=None):
    """Cross-fit every method in ``specs`` (plus the ``prior`` baseline) on ``lib``.

    groups: {name: member indices} to stack in layers; top: method across groups;
    constraints: utils.metrics.constraints.Constraints on every decision (default none).
    Returns {spec: Scored} in the order given, 'prior' first.
    """
    inputs = lib.inputs()
    results = {}
    specs = ["prior"] + [s for s in specs if s != "prior"]
    for spec in specs:
        factory = method_factory(spec, seed, logits, beta, zero_division) if spec == "prior" else \
            build_factory(spec, seed, logits, groups, top, beta, zero_division)
        results[spec] = cross_fit(spec, factory, inputs, strategy, beta, zero_division, constraints)
    return results


def choose(results, requested):
    """Name of the requested method with the best cross-fitted F2 (the baseline only if asked for)."""
    pool = [s for s in results if s != "prior" or "prior" in requested] or list(results)
    return max(pool, key=lambda s: results[s].mean)
