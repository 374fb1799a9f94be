"""Cross-fitting: scoring a combiner honestly.

``cross_fit`` scores any method (level-1 or level-2, or a ``Layered`` stack of groups)
the same way: for each fold k the combiner *and its thresholds* are fitted on the
other folds only, and fold k is scored. Thresholds of level-1 methods are fitted on
their predictions for the training folds; those of level-2 stackers, which can
overfit their training rows, on inner cross-fitted predictions.
"""
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from utils.common.errors import DataError
from utils.metrics.constraints import constrained_decisions
from utils.metrics.fbeta import ZERO_DIVISION, fbeta_per_label, fbeta_samples
from utils.metrics.threshold_search import random_folds
from utils.metrics.thresholds import fit_thresholds

log = logging.getLogger(__name__)


def _fold_ids(inputs, seed=0):
    """The inputs' fold ids, or a random 3-way split when they hold fewer than two folds."""
    if inputs.folds is not None and np.unique(inputs.folds).size >= 2:
        return inputs.folds
    if len(inputs.y) < 2:
        raise DataError(f"{len(inputs.y)} out-of-fold row(s): too few to cross-fit a stacker (need at least 2)")
    return random_folds(len(inputs.y), min(3, len(inputs.y)), seed)


def cross_predict(factory, inputs):
    """(N, L) held-out predictions: each fold predicted by a combiner fitted on the other folds."""
    folds = _fold_ids(inputs)
    out = np.empty((inputs.P.shape[2], inputs.P.shape[0]))
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        out[te] = factory().fit(inputs.rows(tr)).predict(inputs.P[:, :, te])
    return out


def threshold_probs(factory, model, inputs):
    """Predictions on the fitting rows to fit thresholds on: in-sample for level-1, else inner cross-fitted."""
    if hasattr(model, "threshold_probs"):
        return model.threshold_probs()
    if model.in_sample_thresholds:
        return model.predict(inputs.P)
    return cross_predict(factory, inputs)


@dataclass
class Scored:
    """One method's honest and in-sample scores and its final fit.

    f2_per_fold: held-out F2 of each fold (combiner and thresholds fitted on the
    others); mean/std over folds; f2_pooled: F2 of all held-out decisions together;
    per_label: (L,) per-label F2 of the held-out decisions; f2_in_sample: fitted and
    scored on all rows (optimistic); oof: (N, L) held-out probabilities; model: fitted
    on all rows; thresholds: (L,) for the submission (None for 'expected').
    """
    name: str
    f2_per_fold: list
    mean: float
    std: float
    f2_pooled: float
    per_label: np.ndarray
    f2_in_sample: float
    oof: np.ndarray
    model: object
    thresholds: np.ndarray
    seconds: float
    extra: dict = field(default_factory=dict)


def cross_fit(name, factory, inputs, strategy="greedy", beta=2.0, zero_division=ZERO_DIVISION,
              constraints=None):
    """Score one method by cross-fitting over ``inputs.folds``; returns Scored.

    For each fold k: fit the combiner on the other folds, fit thresholds (``strategy``)
    on its predictions for those folds (inner cross-fitted for level-2), score fold k.
    Then refit on all rows for the in-sample contrast and the submission.
    constraints: utils.metrics.constraints.Constraints applied to every decision (default none).
    """
    t0 = time.perf_counter()
    y, folds = inputs.y, inputs.folds
    ids = np.unique(folds)
    if ids.size < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds; got {ids.size}")
    held = np.empty(y.shape)
    decided = np.zeros_like(y)
    scores, fold_fitted = [], {}
    for k in ids:
        tr, te = folds != k, folds == k
        sub = inputs.rows(tr)
        model = factory().fit(sub)
        thr = fit_thresholds(y[tr], threshold_probs(factory, model, sub), strategy, folds[tr], beta, zero_division)
        held[te] = model.predict(inputs.P[:, :, te])
        decided[te] = constrained_decisions(held[te], thr, strategy, constraints, beta, zero_division)
        fold_fitted[k] = thr
        scores.append(fbeta_samples(y[te], decided[te], beta, zero_division))
    model = factory().fit(inputs)
    p_all = model.predict(inputs.P)
    thr_in = fit_thresholds(y, p_all, strategy, folds, beta, zero_division)
    f_in = fbeta_samples(y, constrained_decisions(p_all, thr_in, strategy, constraints, beta, zero_division),
                         beta, zero_division)
    # Submission thresholds: level-1 on its in-sample predictions (as inside the folds),
    # level-2 on its cross-fitted predictions, which are its out-of-fold outputs.
    if hasattr(model, "threshold_probs"):
        fit_on = model.threshold_probs()
    else:
        fit_on = p_all if model.in_sample_thresholds else held
    thr = fit_thresholds(y, fit_on, strategy, folds, beta, zero_division)
    seconds = time.perf_counter() - t0
    res = Scored(name, [float(s) for s in scores], float(np.mean(scores)),
                 float(np.std(scores, ddof=1)), fbeta_samples(y, decided, beta, zero_division),
                 fbeta_per_label(y, decided, beta, zero_division), float(f_in), held, model, thr, seconds,
                 {"fold_thresholds": fold_fitted})
    log.info("%-16s cross-fitted F2 %.4f +- %.4f (in-sample %.4f)  %.1fs", name, res.mean, res.std, f_in, seconds)
    return res
