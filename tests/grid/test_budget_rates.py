"""utils/grid/budget_rates.py: the planner's data-dependent rates are measured on real work."""
import math

import numpy as np

from utils.grid.budget_rates import decode_rate, probe_fit_rate, stack_rate, synthetic_problem

from conftest import write_dataset


def test_synthetic_problem_is_imbalanced_and_learnable():
    X, Y = synthetic_problem(600, 40, 6)
    assert X.shape == (600, 40) and X.dtype == np.float32 and Y.shape == (600, 6) and Y.dtype == np.uint8
    prevalence = Y.mean(0)
    assert prevalence[0] < 0.06 and prevalence[-1] > 0.45          # from rare to common, as tags are
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    j = Y.shape[1] - 1                                               # the features carry the labels
    p = LogisticRegression(max_iter=500).fit(X[:400], Y[:400, j]).predict_proba(X[400:])[:, 1]
    assert roc_auc_score(Y[400:, j], p) > 0.7


def test_rates_are_measured_and_finite(tmp_path):
    data = write_dataset(tmp_path / "d", n=12, size=32)
    files = sorted((data / "train").iterdir())
    assert 0 < decode_rate(files, 24) < math.inf
    assert decode_rate([], 24) == math.inf
    per_fold, per_row_label = probe_fit_rate(300, 32, 8)
    assert per_fold >= 0 and per_row_label >= 0 and 0 < per_fold + 240 * 8 * per_row_label < math.inf
    per_label, per_image = stack_rate(500, 4, 3, ["best", "mean", "lr"])
    assert per_label >= 0 and per_image >= 0 and 0 < per_label + 300 * per_image < math.inf
