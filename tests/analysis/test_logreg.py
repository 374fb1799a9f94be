"""Every label's logistic regression in one solve, against scikit-learn's per-label fits."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from utils.analysis import logreg as LR


def problem(n=150, labels=4, dims=10, seed=0):
    """Standardised correlated features and tags of different prevalences (not separable)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    X = latent @ rng.normal(size=(3, dims)) + rng.normal(size=(n, dims))
    score = latent @ rng.normal(size=(3, labels)) + rng.normal(size=(n, labels))
    y = (score > np.quantile(score, np.linspace(0.5, 0.85, labels), axis=0).diagonal()).astype(np.uint8)
    return StandardScaler().fit_transform(X), y


def exact(X, y, C, rows=None):
    """sklearn's LogisticRegression on `rows`, converged far past its default stop."""
    rows = np.arange(len(y)) if rows is None else rows
    return LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X[rows], y[rows])


def test_joint_fit_matches_sklearn_per_label_with_per_label_C():
    X, y = problem()
    C = np.array([0.01, 0.3, 1.0, 10.0])
    p = LR.fit_logreg(X, y, C).predict_proba(X)
    ref = np.stack([exact(X, y[:, j], C[j]).predict_proba(X)[:, 1] for j in range(y.shape[1])], 1)
    assert np.abs(p - ref).max() < 1e-3


def test_masked_rows_are_each_labels_own_training_set():
    X, y = problem(seed=1)
    rng = np.random.default_rng(2)
    mask = rng.random(y.shape) < 0.7
    p = LR.fit_logreg(X, y, 0.5, mask=mask).predict_proba(X)
    for j in range(y.shape[1]):
        ref = exact(X, y[:, j], 0.5, np.flatnonzero(mask[:, j])).predict_proba(X)[:, 1]
        assert np.abs(p[:, j] - ref).max() < 1e-3


def test_start_and_basis_do_not_change_the_minimum():
    X, y = problem(seed=3)
    plain = LR.fit_logreg(X, y, 1.0).predict_proba(X)
    other_basis = np.linalg.qr(np.random.default_rng(0).normal(size=(X.shape[1],) * 2))[0]
    start = LR.Logreg(np.ones((X.shape[1], y.shape[1])), np.zeros(y.shape[1]))
    assert np.abs(LR.fit_logreg(X, y, 1.0, basis=other_basis, init=start).predict_proba(X) - plain).max() < 1e-3


def test_a_label_of_one_class_is_refused():
    X, y = problem()
    y[:, 2] = 1
    with pytest.raises(ValueError, match="positive and negative"):
        LR.fit_logreg(X, y)


def test_inner_splits_are_logistic_regression_cvs():
    y = np.array([0] * 20 + [1] * 7)
    assert [len(v) for _, v in LR.inner_splits(y, 3)] == [9, 9, 9]
    assert len(LR.inner_splits(np.array([0] * 20 + [1] * 2), 3)) == 2   # min(inner_k, minority)
    assert LR.inner_splits(np.array([0] * 20 + [1])) == []


def test_select_C_chooses_what_logistic_regression_cv_chooses():
    X, y = problem(n=240, labels=3, seed=4)
    y[:2, 2], y[2:, 2] = 1, 0                     # a minority of 2: two inner splits
    Cs = list(np.logspace(-3, 1, 5))
    chosen, init = LR.select_C(X, y, Cs, inner_k=3, seed=0)
    for j in range(y.shape[1]):
        ref = LogisticRegressionCV(Cs=Cs, cv=LR.StratifiedKFold(min(3, int(y[:, j].sum())), shuffle=True,
                                                                random_state=0),
                                   scoring="neg_log_loss", l1_ratios=(0.0,), tol=1e-10, max_iter=10000,
                                   use_legacy_attributes=False).fit(X, y[:, j])
        assert chosen[j] == pytest.approx(ref.C_)
    assert init.coef.shape == (X.shape[1], 3) and np.isfinite(init.coef).all()


def test_select_C_leaves_a_label_too_rare_for_inner_cv_undecided():
    X, y = problem(labels=2)
    y[:, 1] = 0
    y[7, 1] = 1
    chosen, _ = LR.select_C(X, y, [0.1, 1.0])
    assert np.isnan(chosen[1]) and chosen[0] in (0.1, 1.0)
