"""utils.metrics.fbeta against scikit-learn's fbeta_score, including rows/columns with no tags."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import fbeta_score

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from utils.metrics.fbeta import fbeta_per_label, fbeta_per_sample, fbeta_samples  # noqa: E402


def sk(y, p, average, beta=2.0, zero_division=1.0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fbeta_score(y, p, beta=beta, average=average, zero_division=zero_division)


def random_case(seed, n=40, L=7):
    """Random 0/1 truth and predictions with empty truth rows, empty prediction rows,
    rows empty on both sides, and a label column nobody has or predicts."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, L)) < rng.uniform(0.05, 0.6, L)).astype(np.uint8)
    p = (rng.random((n, L)) < rng.uniform(0.05, 0.6, L)).astype(np.uint8)
    y[:5] = 0
    p[3:8] = 0
    y[:, -1] = 0
    p[:, -1] = 0
    return y, p


EDGE_CASES = {
    "all_zero_pred": lambda y: (y, np.zeros_like(y)),
    "all_one_pred": lambda y: (y, np.ones_like(y)),
    "all_zero_both": lambda y: (np.zeros_like(y), np.zeros_like(y)),
    "all_zero_truth": lambda y: (np.zeros_like(y), y),
    "perfect": lambda y: (y, y.copy()),
}


@pytest.mark.parametrize("zero_division", [0.0, 1.0, np.nan])
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("seed", range(4))
def test_matches_sklearn_random(seed, beta, zero_division):
    y, p = random_case(seed)
    kw = dict(beta=beta, zero_division=zero_division)
    np.testing.assert_allclose(fbeta_samples(y, p, **kw), sk(y, p, "samples", **kw), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fbeta_per_label(y, p, **kw), sk(y, p, None, **kw), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_matches_sklearn_edge_cases(case, zero_division):
    y, p = EDGE_CASES[case](random_case(7)[0])
    kw = dict(beta=2.0, zero_division=zero_division)
    assert fbeta_samples(y, p, **kw) == pytest.approx(sk(y, p, "samples", **kw), abs=1e-12)
    np.testing.assert_allclose(fbeta_per_label(y, p, **kw), sk(y, p, None, **kw), atol=1e-12)


def test_zero_division_convention():
    """An image with no true and no predicted tag scores zero_division (default 1)."""
    y = np.array([[0, 0], [1, 0], [0, 0]])
    p = np.array([[0, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(fbeta_per_sample(y, p), [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(fbeta_per_sample(y, p, zero_division=0.0), [0.0, 1.0, 0.0])
    assert fbeta_samples(y, p) == pytest.approx(2 / 3)
    assert fbeta_samples(y, p, zero_division=np.nan) == pytest.approx(0.5)  # row left out


def test_per_sample_matches_binary_fbeta_per_row():
    y, p = random_case(3)
    rows = [sk(y[i], p[i], "binary", zero_division=1.0) for i in range(len(y))]
    np.testing.assert_allclose(fbeta_per_sample(y, p), rows, atol=1e-12)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same"):
        fbeta_samples(np.zeros((3, 2)), np.zeros((3, 3)))
