"""Level-2 stackers: models that learn from the members' out-of-fold probabilities
(optionally their logits), never from in-fold ones.

- ``lr``         logistic regression per label on the members' probabilities of that label.
- ``ridge``      ridge regression per label (alpha by generalised CV), output clipped to [0, 1].
- ``ridge-corr`` one ridge from every member's every label to each label (label
                 correlations, as the Planet winner did), clipped to [0, 1].
- ``xgb``, ``lgbm`` small gradient-boosted trees per label; the number of trees is
                 chosen by early stopping on one inner fold, then refitted on all rows.
- ``nn``         a small MLP (scikit-learn) from every member's every label to all
                 labels jointly.

Their names and options: utils/stack/methods.py. Their thresholds are fitted on inner
cross-fitted predictions, since they can overfit their training rows (utils/stack/crossfit.py).
"""
import inspect

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge, RidgeCV
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from utils.metrics.fbeta import ZERO_DIVISION
from utils.metrics.threshold_search import random_folds

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
        from xgboost import XGBClassifier  # lazy: xgboost is imported only when this stacker is used

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
        from lightgbm import LGBMClassifier  # lazy: lightgbm is imported only when this stacker is used

        return LGBMClassifier(n_estimators=n, num_leaves=int(self.params.get("leaves", 7)), max_depth=3,
                              learning_rate=float(self.params.get("lr", 0.1)), subsample=0.8,
                              subsample_freq=1, colsample_bytree=0.8, min_child_samples=10, max_bin=63,
                              n_jobs=1, random_state=self.seed, verbose=-1)

    def fit_one(self, X, y, folds):
        import lightgbm  # lazy: as in _make

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
    from lightgbm import LGBMClassifier  # lazy: as in LGBM._make

    if "eval_X" in inspect.signature(LGBMClassifier.fit).parameters:
        return {"eval_X": (X,), "eval_y": (y,)}
    return {"eval_set": [(X, y)]}


class NN(Stacker):
    """A small MLP from every member's every label to all labels jointly (params: hidden, alpha, iters)."""

    def fit(self, inputs):
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
