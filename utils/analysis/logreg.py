"""Every label's logistic regression in one L-BFGS solve (the linear probe's fits).

L independent binary logistic regressions on the same standardised features, each with the
objective of scikit-learn's LogisticRegression(penalty="l2", C, fit_intercept=True, no class
weights) for its label j:

    mean over its n_j rows of log_loss(y_ij, x_i . w_j + b_j)  +  ||w_j||^2 / (2 C_j n_j)

(the intercept is not penalised), summed over the labels and minimised at once by
torch.optim.LBFGS with a strong Wolfe line search. The labels share only the solver, so the
minimiser is every label's own. The solve runs in the eigenbasis of the features' Gram matrix,
each label's coordinates scaled by its curvature there (prevalence x eigenvalue + penalty): a
change of variables that leaves the minimum where it is and brings L-BFGS to it in a fraction of
the steps. `select_C` picks each label's C from a grid by inner cross-validation, as
LogisticRegressionCV(scoring="neg_log_loss") does, with a warm-started path over the grid.
"""
import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

log = logging.getLogger(__name__)

TOL = 1e-4            # L-BFGS stops at this max |gradient| in the scaled coordinates: on real features
                      # (6,000 x 1,280 Lite0) 7x nearer the exact minimum's probabilities than sklearn's own
                      # lbfgs stop (gtol 1e-4 on the raw weights); tighter costs 60% more steps for no F2
MAX_ITER = 2000       # L-BFGS iterations per solve
HISTORY = 20          # L-BFGS memory
DTYPE = torch.float32  # float32 matrix products: twice float64's speed, far below TOL's error
LOG_EPS = np.finfo(np.float64).eps  # sklearn's log_loss clip for float64 probabilities


@dataclass
class Logreg:
    """L fitted logistic regressions: coef (F, L) and intercept (L,) float64, on standardised features."""
    coef: np.ndarray
    intercept: np.ndarray

    def decision(self, X):
        """Logits (M, L) float64 of features X (M, F), standardised as the training features were."""
        return np.asarray(X, np.float64) @ self.coef + self.intercept

    def predict_proba(self, X):
        """Probabilities (M, L) float64 in [0, 1] of the positive class of each label."""
        return 1.0 / (1.0 + np.exp(-self.decision(X)))


def feature_basis(X):
    """Orthonormal eigenvectors (F, F) float64 of the Gram matrix X^T X / N of features X (N, F).

    The coordinates the solver works in; any X's basis gives the same minimum, so one basis of
    all the rows serves every fold's fit.
    """
    Xt = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    return torch.linalg.eigh(Xt.T @ Xt / max(len(Xt), 1))[1].numpy()


def _as_c(C, n_labels):
    c = np.broadcast_to(np.asarray(C, np.float64), (n_labels,)).copy()
    if not (np.isfinite(c) & (c > 0)).all():
        raise ValueError(f"C must be positive and finite, got {C!r}")
    return c


def fit_logreg(X, Y, C=1.0, mask=None, basis=None, init=None, tol=TOL, max_iter=MAX_ITER, dtype=DTYPE):
    """Fit one L2 logistic regression per label, all labels in one solve.

    X: (N, F) standardised features (float32 or float64); Y: (N, L) 0/1 targets; C: inverse
    regularisation, a float or (L,) per label; mask: (N, L) 0/1, the rows each label trains on
    (default all); basis: feature_basis of these or similar features (default: computed from
    X); init: a Logreg to start from (default: zero weights, intercepts at the labels' priors).
    Every label needs both classes among its rows (ValueError otherwise). Returns a Logreg.
    """
    Y = np.asarray(Y, np.float64)
    M = np.ones_like(Y) if mask is None else np.asarray(mask, np.float64)
    n_j = M.sum(0)
    pos = (Y * M).sum(0)
    if ((pos == 0) | (pos == n_j)).any():
        raise ValueError("every label needs positive and negative rows; constant labels are the caller's")
    V = torch.as_tensor(feature_basis(X) if basis is None else basis, dtype=dtype)
    Z = torch.as_tensor(np.asarray(X), dtype=dtype) @ V          # features in the eigenbasis
    lam = (Z ** 2).mean(0)                                         # their variances (eigenvalues)
    t = {k: torch.as_tensor(v, dtype=dtype) for k, v in
         dict(Y=Y, M=M, n=n_j, reg=1.0 / (_as_c(C, Y.shape[1]) * n_j), prior=pos / n_j).items()}
    var = t["prior"] * (1 - t["prior"])
    scale = torch.rsqrt(lam[:, None] * var + t["reg"])            # (F, L) coordinates -> weights
    scale_b = torch.rsqrt(var)
    if init is None:
        a0, b0 = torch.zeros_like(scale), torch.log(t["prior"] / (1 - t["prior"]))
    else:
        a0 = V.T @ torch.as_tensor(init.coef, dtype=dtype)
        b0 = torch.as_tensor(init.intercept, dtype=dtype)
    u = (a0 / scale).requires_grad_(True)
    ub = (b0 / scale_b).requires_grad_(True)
    opt = torch.optim.LBFGS([u, ub], lr=1, max_iter=max_iter, history_size=HISTORY, tolerance_grad=tol,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        a = u * scale
        logits = Z @ a + ub * scale_b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t["Y"], reduction="none")
        total = ((loss * t["M"]).sum(0) / t["n"]).sum() + 0.5 * (t["reg"] * (a ** 2).sum(0)).sum()
        total.backward()
        return total

    opt.step(objective)
    if opt.state[u]["n_iter"] >= max_iter:
        log.warning("logistic regression: L-BFGS stopped at %d iterations before converging", max_iter)
    coef = (V.double() @ (u * scale).detach().double()).numpy()
    return Logreg(coef, (ub * scale_b).detach().double().numpy())


def inner_splits(y, inner_k=3, seed=0):
    """The inner CV of one label with 0/1 targets y (N,): [(train rows, val rows), ...].

    StratifiedKFold(min(inner_k, minority count), shuffle, seed), as the probe's
    LogisticRegressionCV used; [] when the minority class has fewer than 2 rows.
    """
    y = np.asarray(y)
    minority = int(min(y.sum(), len(y) - y.sum()))
    if minority < 2:
        return []
    cv = StratifiedKFold(n_splits=min(inner_k, minority), shuffle=True, random_state=seed)
    return list(cv.split(np.zeros((len(y), 1)), y))


def _val_log_loss(Y, P, rows):
    """Per label: mean log loss of probabilities P over its rows (N, L) 0/1, clipped as sklearn's."""
    P = np.clip(P, LOG_EPS, 1 - LOG_EPS)
    loss = -(Y * np.log(P) + (1 - Y) * np.log1p(-P))
    return (loss * rows).sum(0) / rows.sum(0)


def select_C(X, Y, Cs, inner_k=3, seed=0, basis=None, tol=TOL):
    """Each label's C from the grid Cs by inner cross-validation on (X, Y).

    X: (N, F) standardised features; Y: (N, L) 0/1, every label with both classes; Cs:
    increasing positive values. Per label, the splits of inner_splits; for each split one
    warm-started joint path over Cs; the C whose summed validation log loss over the splits is
    least wins (the first on ties), as LogisticRegressionCV(scoring="neg_log_loss") chooses.
    Returns (choices (L,) float64, NaN where the minority class has fewer than 2 rows;
    init: a Logreg with, per label, the mean of its split fits at its choice, to start the refit).
    """
    Y = np.asarray(Y, np.float64)
    n, L = Y.shape
    splits = [inner_splits(Y[:, j], inner_k, seed) for j in range(L)]
    basis = feature_basis(X) if basis is None else basis
    losses = np.zeros((len(Cs), L))
    coefs = np.zeros((len(Cs), X.shape[1], L))
    inter = np.zeros((len(Cs), L))
    for s in range(max((len(sp) for sp in splits), default=0)):
        active = [j for j in range(L) if s < len(splits[j])]
        train = np.zeros((n, len(active)))
        for col, j in enumerate(active):
            train[splits[j][s][0], col] = 1
        fit = None
        for c, C in enumerate(Cs):
            fit = fit_logreg(X, Y[:, active], C, mask=train, basis=basis, init=fit, tol=tol)
            losses[c, active] += _val_log_loss(Y[:, active], fit.predict_proba(X), 1 - train)
            coefs[c][:, active] += fit.coef
            inter[c, active] += fit.intercept
    best = np.argmin(losses, axis=0)            # argmin of the summed loss: sklearn's argmax of the score sum
    n_splits = np.maximum([len(sp) for sp in splits], 1)
    init = Logreg(coefs[best, :, np.arange(L)].T / n_splits, inter[best, np.arange(L)] / n_splits)
    chosen = np.where([len(sp) > 0 for sp in splits], np.asarray(Cs, np.float64)[best], np.nan)
    return chosen, init
