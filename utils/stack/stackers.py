"""Level-2 stackers, layers of groups, and the cross-fitted (honest) evaluation of every method.

Stackers learn from the members' out-of-fold probabilities (optionally their logits),
never from in-fold ones:

- ``lr``         logistic regression per label on the members' probabilities of that label.
- ``ridge``      ridge regression per label (alpha by generalised CV), output clipped to [0, 1].
- ``ridge-corr`` one ridge from every member's every label to each label (label
                 correlations, as the Planet winner did), clipped to [0, 1].
- ``xgb``, ``lgbm`` small gradient-boosted trees per label; the number of trees is
                 chosen by early stopping on one inner fold, then refitted on all rows.
- ``nn``         a small MLP (scikit-learn) from every member's every label to all
                 labels jointly.

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

from utils.metrics.constraints import constrained_decisions
from utils.stack.ensemble import LEVEL1, Prior
from utils.common.errors import DataError
from utils.common.options import as_bool, as_float, as_int, parse_item, split_items
from utils.stack.library import Inputs
from utils.metrics.fbeta import ZERO_DIVISION, fbeta_per_label, fbeta_samples
from utils.metrics.threshold_search import random_folds
from utils.metrics.thresholds import fit_thresholds

log = logging.getLogger(__name__)

LOGIT_EPS = 1e-6


# ----------------------------------------------------------------------------- features

def _transform(x, logits):
    x = np.asarray(x, dtype=np.float64)
    if not logits:
        return x
    x = np.clip(x, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(x) - np.log1p(-x)


def label_features(P, mask, j, logits=False):
    """(N, M_j) inputs for label j: the probabilities of the members with an opinion on it."""
    return _transform(P[j, mask[:, j]].T, logits)


def all_features(P, mask, logits=False):
    """(N, sum(mask)) inputs: every member's every label it has an opinion on."""
    return np.concatenate([label_features(P, mask, j, logits) for j in range(P.shape[0])], axis=1)


def inner_split(folds, seed=0):
    """Boolean mask of validation rows for early stopping: the last fold id, or a random fifth
    (one row in min(5, N) with fewer rows; none with one row: no early stopping)."""
    ids = np.unique(folds)
    if ids.size >= 2:
        return folds == ids[-1]
    if len(folds) < 2:
        return np.zeros(len(folds), bool)
    return random_folds(len(folds), min(5, len(folds)), seed) == 0


# ----------------------------------------------------------------------------- stackers

class Stacker:
    """Base of the level-2 methods: ``fit(inputs)`` then ``predict(P) -> (N, L)``.

    params: method options (see ``METHODS``); logits: feed logits instead of probabilities.
    """
    in_sample_thresholds = False

    def __init__(self, seed=0, logits=False, beta=2.0, zero_division=ZERO_DIVISION, **params):
        self.seed, self.logits, self.params = seed, bool(logits), params

    def describe(self, members, labels, limit=10):
        return None


class PerLabel(Stacker):
    """A stacker with one model per label; labels constant in training predict that constant."""

    def fit(self, inputs):
        self.mask = inputs.mask
        self.models = []
        for j in range(inputs.P.shape[0]):
            X = label_features(inputs.P, self.mask, j, self.logits)
            yj = inputs.y[:, j]
            if yj.min() == yj.max():
                self.models.append(float(yj[0]))
            else:
                self.models.append(self.fit_one(X, yj, inputs.folds))
        return self

    def predict(self, P):
        out = np.empty((P.shape[2], P.shape[0]))
        for j, m in enumerate(self.models):
            out[:, j] = m if isinstance(m, float) else self.predict_one(m, label_features(P, self.mask, j, self.logits))
        return out

    def describe(self, members, labels, limit=10):
        """Linear stackers: {label: {member: coefficient}}, largest magnitude first."""
        if not hasattr(self, "coefs"):
            return None
        names = np.array(members)
        out = {}
        for j, lab in enumerate(labels):
            m = self.models[j]
            if isinstance(m, float):
                out[lab] = {"constant": m}
                continue
            c = np.ravel(self.coefs(m))
            who = names[self.mask[:, j]]
            order = np.argsort(-np.abs(c), kind="stable")[:limit]
            out[lab] = {str(who[i]): round(float(c[i]), 4) for i in order}
        return out


class LogReg(PerLabel):
    """Logistic regression per label (params: C)."""

    def fit_one(self, X, y, folds):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=float(self.params.get("C", 1.0)), max_iter=1000).fit(X, y)

    def predict_one(self, m, X):
        return m.predict_proba(X)[:, 1]

    @staticmethod
    def coefs(m):
        return m.coef_


class RidgeLabel(PerLabel):
    """Ridge regression per label (params: alpha; 0 = chosen by generalised CV), clipped to [0, 1]."""

    def fit_one(self, X, y, folds):
        return _ridge(self.params.get("alpha", 0.0)).fit(X, y.astype(np.float64))

    def predict_one(self, m, X):
        return np.clip(m.predict(X), 0.0, 1.0)

    @staticmethod
    def coefs(m):
        return m.coef_


def _ridge(alpha):
    from sklearn.linear_model import Ridge, RidgeCV

    return RidgeCV(alphas=(0.01, 0.1, 1.0, 10.0, 100.0)) if not alpha else Ridge(alpha=float(alpha))


class RidgeCorr(Stacker):
    """One ridge from every member's every label to all labels (params: alpha, 0 = by CV)."""

    def fit(self, inputs):
        self.mask = inputs.mask
        X = all_features(inputs.P, self.mask, self.logits)
        self.model = _ridge(self.params.get("alpha", 0.0)).fit(X, inputs.y.astype(np.float64))
        return self

    def predict(self, P):
        return np.clip(self.model.predict(all_features(P, self.mask, self.logits)), 0.0, 1.0)


class XGB(PerLabel):
    """Gradient-boosted trees per label with xgboost (params: trees, depth, lr, patience)."""

    def _make(self, n):
        from xgboost import XGBClassifier

        return XGBClassifier(n_estimators=n, max_depth=int(self.params.get("depth", 2)),
                             learning_rate=float(self.params.get("lr", 0.1)), subsample=0.8,
                             colsample_bytree=0.8, tree_method="hist", max_bin=64, n_jobs=1,
                             random_state=self.seed, eval_metric="logloss")

    def fit_one(self, X, y, folds):
        n = int(self.params.get("trees", 100))
        val = inner_split(folds, self.seed)
        if np.unique(y[~val]).size == 2 and np.unique(y[val]).size == 2:
            m = self._make(n)
            m.set_params(early_stopping_rounds=int(self.params.get("patience", 10)))
            m.fit(X[~val], y[~val], eval_set=[(X[val], y[val])], verbose=False)
            n = int(m.best_iteration) + 1
        return self._make(n).fit(X, y)

    def predict_one(self, m, X):
        return m.predict_proba(X)[:, 1]


class LGBM(PerLabel):
    """Gradient-boosted trees per label with LightGBM (params: trees, leaves, lr, patience)."""

    def _make(self, n):
        from lightgbm import LGBMClassifier

        return LGBMClassifier(n_estimators=n, num_leaves=int(self.params.get("leaves", 7)), max_depth=3,
                              learning_rate=float(self.params.get("lr", 0.1)), subsample=0.8,
                              subsample_freq=1, colsample_bytree=0.8, min_child_samples=10, max_bin=63,
                              n_jobs=1, random_state=self.seed, verbose=-1)

    def fit_one(self, X, y, folds):
        import lightgbm

        n = int(self.params.get("trees", 100))
        val = inner_split(folds, self.seed)
        if np.unique(y[~val]).size == 2 and np.unique(y[val]).size == 2:
            stop = [lightgbm.early_stopping(int(self.params.get("patience", 10)), verbose=False)]
            m = self._make(n).fit(X[~val], y[~val], callbacks=stop, **_lgbm_eval(X[val], y[val]))
            n = max(1, int(m.best_iteration_ or n))
        return self._make(n).fit(X, y)

    def predict_one(self, m, X):
        return m.predict_proba(X)[:, 1]


def _lgbm_eval(X, y):
    """Validation-set keywords for LGBMClassifier.fit (eval_X/eval_y since 4.6, eval_set before)."""
    import inspect

    from lightgbm import LGBMClassifier

    if "eval_X" in inspect.signature(LGBMClassifier.fit).parameters:
        return {"eval_X": (X,), "eval_y": (y,)}
    return {"eval_set": [(X, y)]}


class NN(Stacker):
    """A small MLP from every member's every label to all labels jointly (params: hidden, alpha, iters)."""

    def fit(self, inputs):
        from sklearn.neural_network import MLPClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.mask = inputs.mask
        X = all_features(inputs.P, self.mask, self.logits)
        self.const = np.flatnonzero(inputs.y.min(0) == inputs.y.max(0))
        self.const_values = inputs.y[0, self.const].astype(np.float64)
        self.varying = np.setdiff1d(np.arange(inputs.y.shape[1]), self.const)
        self.model = None
        if self.varying.size:
            mlp = MLPClassifier(hidden_layer_sizes=(int(self.params.get("hidden", 32)),),
                                alpha=float(self.params.get("alpha", 1e-3)),
                                max_iter=int(self.params.get("iters", 100)), early_stopping=len(X) >= 50,
                                n_iter_no_change=10, random_state=self.seed)
            self.model = make_pipeline(StandardScaler(), mlp).fit(X, inputs.y[:, self.varying])
        return self

    def predict(self, P):
        out = np.empty((P.shape[2], P.shape[0]))
        out[:, self.const] = self.const_values
        if self.model is not None:
            p = self.model.predict_proba(all_features(P, self.mask, self.logits))
            out[:, self.varying] = p.reshape(len(out), -1)
        return out


# ----------------------------------------------------------------------------- registry

_SELECT = dict(init=3, size=25, replace=True, patience=10, bags=0, frac=0.5, restarts=0, pool=0, objective="f2")
_BEAM = dict(width=5, size=10, replace=True, patience=3, objective="f2")
_TREES = dict(trees=100, lr=0.1, patience=10, logits=False)

# name -> (class, default params). Level-1 first, then level-2; `prior` is the baseline.
METHODS = {
    "prior": (LEVEL1["prior"], {}),
    "best": (LEVEL1["best"], {}),
    "mean": (LEVEL1["mean"], {}),
    "bag": (LEVEL1["bag"], {}),
    "topk": (LEVEL1["topk"], dict(k=5)),
    "select": (LEVEL1["select"], _SELECT),
    "select-bag": (LEVEL1["select"], {**_SELECT, "bags": 10}),
    "select-soft": (LEVEL1["select"], {**_SELECT, "objective": "soft"}),
    "select-restarts": (LEVEL1["select"], {**_SELECT, "restarts": 10, "replace": False}),
    "select-model": (LEVEL1["select-model"], dict(init=3, size=25, replace=True, patience=10, objective="f2")),
    "beam": (LEVEL1["beam"], _BEAM),
    "beam-norep": (LEVEL1["beam"], {**_BEAM, "replace": False}),
    "lr": (LogReg, dict(C=1.0, logits=False)),
    "ridge": (RidgeLabel, dict(alpha=0.0, logits=False)),
    "ridge-corr": (RidgeCorr, dict(alpha=0.0, logits=False)),
    "xgb": (XGB, {**_TREES, "depth": 2}),
    "lgbm": (LGBM, {**_TREES, "leaves": 7}),
    "nn": (NN, dict(hidden=32, alpha=1e-3, iters=100, logits=False)),
}
LEVEL2 = ("lr", "ridge", "ridge-corr", "xgb", "lgbm", "nn")


def _typed(name, key, value, default):
    """An option value (parse_value's) checked against its default's type; DataError otherwise."""
    what = f"--method {name}: {key}={value!r}"
    if isinstance(default, bool):
        return as_bool(value, what)
    if isinstance(default, int):
        return as_int(value, what)
    if isinstance(default, float):
        return as_float(value, what)
    return str(value)


def parse_method(spec, logits=False):
    """'NAME[:key=value,...]' -> (name, class, params). Raises DataError naming the valid choices.

    logits: default of the stackers' ``logits`` option (--logits).
    """
    name, opts = parse_item(spec, "--method")
    if name not in METHODS:
        raise DataError(f"--method {name!r}: unknown method; valid: {', '.join(METHODS)}")
    cls, defaults = METHODS[name]
    params = dict(defaults)
    if "logits" in params:
        params["logits"] = bool(logits)
    for key, value in opts.items():
        if key not in defaults:
            raise DataError(f"--method {name}: invalid option {key!r}; it takes "
                            f"{', '.join(f'{k}={v}' for k, v in defaults.items()) or 'no options'}")
        params[key] = _typed(name, key, value, defaults[key])
    if params.get("objective", "f2") not in ("f2", "soft"):
        raise DataError(f"--method {name}: objective must be f2 or soft")
    return name, cls, params


def split_methods(specs):
    """--method values -> one method spec per item: each value may hold several, `;`-separated."""
    return [item for spec in specs for item in split_items(spec)]


def method_factory(spec, seed=0, logits=False, beta=2.0, zero_division=ZERO_DIVISION):
    """A zero-argument callable making a fresh, unfitted combiner for ``spec``.

    beta, zero_division: of the F-beta that selection methods maximise.
    """
    _, cls, params = parse_method(spec, logits)
    return lambda: cls(seed=seed, beta=beta, zero_division=zero_division, **params)


# ----------------------------------------------------------------------------- layers

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
        out = {"top": _describe(self.top, list(self.groups), labels, limit)}
        for g, idx in self.groups.items():
            out[g] = _describe(self.inner[g], [members[i] for i in idx], labels, limit)
        return out


def _describe(model, members, labels, limit=10):
    fn = getattr(model, "describe", None)
    return fn(members, labels, limit) if fn else None


# ----------------------------------------------------------------------------- cross-fitting

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


def member_scores(lib, strategy="greedy", beta=2.0, zero_division=ZERO_DIVISION, top=10):
    """Each member alone: its label F2 at each label's best threshold (in-sample), and for
    the ``top`` members covering every label (ranked by mean label F2) the cross-fitted
    and in-sample F2 of thresholds fitted the same way as for the methods.

    Returns a list of dicts (name, model, seed, group, labels, runs, label_f2 {label: f},
    and f2_cross_fitted, std, f2_in_sample where computed), in library order.
    """
    from utils.stack.selection import LabelScorer
    from utils.metrics.thresholds import cross_fit as thr_cross_fit

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


def build_factory(spec, seed=0, logits=False, groups=None, top=None, beta=2.0, zero_division=ZERO_DIVISION):
    """Factory for ``spec``, wrapped in ``Layered`` when groups ({name: member indices}) are given.

    top: method spec across groups (default: the same as ``spec``).
    """
    inner = method_factory(spec, seed, logits, beta, zero_division)
    if not groups:
        return inner
    across = method_factory(top or spec, seed, logits, beta, zero_division)
    return lambda: Layered(inner, across, groups)


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


# ----------------------------------------------------------------------------- report

def build_report(lib, results, members, chosen, chosen_by, settings):
    """The JSON-ready report: library, baselines, every method's scores and weights, the choice.

    lib: Library; results: {spec: Scored}; members: ``member_scores`` rows; chosen:
    the spec used for the submission and chosen_by: why; settings: dict of the options
    used (threshold, tta, groups, ...), stored as is.
    """
    full = [m for m in members if "f2_cross_fitted" in m]
    best_single = max(full, key=lambda m: m["f2_cross_fitted"]) if full else None
    methods = {}
    for spec, r in results.items():
        methods[spec] = {
            "f2_cross_fitted": r.mean, "std": r.std, "f2_per_fold": r.f2_per_fold, "f2_pooled": r.f2_pooled,
            "f2_in_sample": r.f2_in_sample, "optimism": r.f2_in_sample - r.mean,
            "per_label": {lab: float(f) for lab, f in zip(lib.labels, r.per_label)},
            "seconds": r.seconds,
            "weights": _describe(r.model, [m.name for m in lib.members], lib.labels),
        }
    return {
        "settings": settings,
        "library": {"images": len(lib.names), "labels": list(lib.labels), "folds": int(np.unique(lib.folds).size),
                    "label_frequency": {lab: float(f) for lab, f in zip(lib.labels, lib.y.mean(0))},
                    "members": len(lib.members), "configurations": len({m.model for m in lib.members}),
                    "test_images": len(lib.test_names), "left_out": lib.left_out, "notes": lib.notes},
        "best_single": None if best_single is None else {k: best_single[k] for k in
                                                          ("name", "f2_cross_fitted", "std", "f2_in_sample")},
        "methods": methods,
        "ranking": sorted(results, key=lambda s: -results[s].mean),
        "chosen": chosen,
        "chosen_by": chosen_by,
        "thresholds": None if results[chosen].thresholds is None else
        {lab: float(t) for lab, t in zip(lib.labels, results[chosen].thresholds)},
        "members": members,
    }


def _f(x, digits=4):
    return "" if x is None else f"{round(x, digits) + 0.0:.{digits}f}"     # + 0.0: no "-0.0000"


def render_report(rep, max_methods=10):
    """Markdown text of a report made by ``build_report``."""
    lib, s = rep["library"], rep["settings"]
    lines = ["# Stacking report", ""]
    if s.get("command"):
        lines += [f"Command: `{s['command']}`", ""]
    lines += [f"Library: {lib['members']} members ({lib['configurations']} configurations), "
              f"{lib['images']} training images, {len(lib['labels'])} labels, {lib['folds']} folds, "
              f"{lib['test_images']} test images. TTA `{s.get('tta')}`, thresholds `{s.get('threshold')}`, "
              f"F{s.get('beta', 2):g} averaged over images."]
    if s.get("groups"):
        lines.append(f"Layers: groups by `{s['groups']}`, then `{s.get('top') or 'the same method'}` across groups.")
    for lo in lib["left_out"]:
        lines.append(f"- left out {lo['model']} seed {lo['seed']}: missing fold(s) {lo['missing_folds']}"
                     f"{' (' + '; '.join(lo['reasons']) + ')' if lo['reasons'] else ''}")
    lines += [f"- {n}" for n in lib["notes"]]
    lines += ["", "## Methods", "",
              "Cross-fitted: the combiner and its thresholds are fitted on the other folds' out-of-fold "
              "predictions and scored on the held-out fold (mean and spread over folds). In-sample: fitted "
              "and scored on the same rows, shown for contrast only.", "",
              "| method | cross-fitted F2 | ± std | in-sample F2 | optimism | seconds |",
              "|---|---|---|---|---|---|"]
    bs = rep["best_single"]
    rows = [(spec, m) for spec, m in rep["methods"].items()]
    if bs:
        rows.append((f"best single model ({bs['name']})",
                     {"f2_cross_fitted": bs["f2_cross_fitted"], "std": bs["std"], "f2_in_sample": bs["f2_in_sample"],
                      "optimism": bs["f2_in_sample"] - bs["f2_cross_fitted"], "seconds": None}))
    for spec, m in sorted(rows, key=lambda t: -t[1]["f2_cross_fitted"]):
        tag = " **(chosen)**" if spec == rep["chosen"] else (" (label frequencies)" if spec == "prior" else "")
        lines.append(f"| {spec}{tag} | {_f(m['f2_cross_fitted'])} | {_f(m['std'])} | {_f(m['f2_in_sample'])} | "
                     f"{_f(m['optimism'], 4)} | {_f(m['seconds'], 1)} |")
    lines += ["", f"Submission method: `{rep['chosen']}` ({rep['chosen_by']}), refitted on all out-of-fold data."]
    if rep["thresholds"]:
        what = "Target shares (prevalence)" if s.get("threshold") == "prevalence" else "Thresholds"
        lines.append(f"{what}: " + ", ".join(f"{k} {v:.4g}" for k, v in rep["thresholds"].items()))
    shown = [s for s in rep["ranking"] if s != "prior"][:max_methods] + ["prior"]
    lines += ["", "## Per-label F2 of the held-out decisions", "",
              "| label | frequency | " + " | ".join(shown) + " |", "|---" * (len(shown) + 2) + "|"]
    for lab in lib["labels"]:
        lines.append(f"| {lab} | {lib['label_frequency'][lab]:.3f} | " +
                     " | ".join(_f(rep["methods"][s]["per_label"][lab], 3) for s in shown) + " |")
    lines += _weights_section(rep)
    lines += ["", "## Members", "", "Each member alone. Mean label F2: each label's F2 at its best threshold "
              "(in-sample), averaged over the member's labels. Cross-fitted F2 (thresholds fitted on the other "
              "folds) for the members with every label that rank highest by mean label F2.", "",
              "| member | group | runs | cross-fitted F2 | in-sample F2 | mean label F2 |", "|---|---|---|---|---|---|"]

    def mean_label_f2(m):
        lf = list(m["label_f2"].values())
        return float(np.mean(lf)) if lf else None

    for m in sorted(rep["members"], key=lambda m: (-(m.get("f2_cross_fitted") or -1), -(mean_label_f2(m) or 0))):
        lf = list(m["label_f2"].values())
        lines.append(f"| {m['name']} | {m['group'] or ''} | {len(m['runs'])} | {_f(m.get('f2_cross_fitted'))} | "
                     f"{_f(m.get('f2_in_sample'))} | {_f(float(np.mean(lf)) if lf else None)} |")
    return "\n".join(lines) + "\n"


def _weights_section(rep):
    """Markdown lines listing the chosen members and weights per label of the weighting methods."""
    lines = []
    for spec, m in rep["methods"].items():
        w = m["weights"]
        if not w or spec in ("prior", "mean") or list(w) != rep["library"]["labels"]:
            continue
        what = "coefficient" if spec.partition(":")[0] in LEVEL2 else "weight"
        lines += ["", f"### {spec} (fitted on all out-of-fold data)", "", f"| label | members ({what}) |",
                  "|---|---|"]
        for lab, ws in w.items():
            lines.append(f"| {lab} | " + ", ".join(f"{k} ({v:g})" for k, v in ws.items()) + " |")
    if lines:
        lines = ["", "## Chosen members per label"] + lines
    return lines


__all__ = ["METHODS", "LEVEL2", "Prior", "parse_method", "split_methods", "method_factory", "build_factory", "Layered",
           "cross_predict", "cross_fit", "evaluate", "choose", "member_scores", "Scored",
           "build_report", "render_report"]
