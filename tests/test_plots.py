import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import fbeta_score

from utils.analysis.plots import (label_thresholds, plot_correlation, plot_history,
                         plot_prob_distributions)

LABELS = ["haze", "primary", "blow_down", "water", "clear"]


@pytest.fixture
def preds():
    rng = np.random.default_rng(0)
    y = rng.random((120, len(LABELS))) < np.array([0.1, 0.9, 0.02, 0.3, 0.0])
    probs = 1 / (1 + np.exp(-(rng.normal(0, 1.5, y.shape) + 3 * y - 2)))
    return y.astype(int), probs


def check_png(path, width, height):
    assert path.exists() and path.stat().st_size > 5000
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (height, width)
    assert img[..., :3].std() > 0.05  # something was drawn
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, temp file gone


def test_label_thresholds_match_brute_force(preds):
    y, probs = preds
    thr, f2 = label_thresholds(y, probs)
    for j in range(4):
        brute = max(fbeta_score(y[:, j], probs[:, j] >= c, beta=2, zero_division=0)
                    for c in np.unique(probs[:, j]))
        assert f2[j] == pytest.approx(brute)
        assert fbeta_score(y[:, j], probs[:, j] >= thr[j], beta=2) == pytest.approx(f2[j])
    assert np.isnan(thr[4]) and np.isnan(f2[4])  # no positive at all
    thr, f2 = label_thresholds(y, probs, thresholds=0.5)
    assert np.all(thr[:4] == 0.5)
    assert f2[0] == pytest.approx(fbeta_score(y[:, 0], probs[:, 0] >= 0.5, beta=2))


def test_prob_distributions_png(tmp_path, preds):
    y, probs = preds
    out = plot_prob_distributions(y, probs, LABELS, tmp_path / "plots" / "probs_e001.png",
                                  title="epoch 1", dpi=50)
    check_png(out, width=round(2.4 * 3 * 50), height=round((1.9 * 2 + 0.35) * 50))
    out2 = plot_prob_distributions(y, probs, LABELS, tmp_path / "fixed.png",
                                   thresholds=[0.5] * len(LABELS))
    assert out2.stat().st_size > 5000
    with pytest.raises(ValueError):
        plot_prob_distributions(y, probs, LABELS[:2], tmp_path / "bad.png")


def test_history_png_with_stage_restarts_and_missing_columns(tmp_path):
    rng = np.random.default_rng(0)
    hist = pd.DataFrame({"stage": [0, 0, 1, 1, 1], "epoch": [1, 2, 1, 2, 3],
                         "train_loss": np.linspace(0.6, 0.2, 5), "val_f2": np.linspace(0.5, 0.7, 5),
                         **{f"f2_{name}": rng.random(5) for name in LABELS}})
    out = plot_history(hist, tmp_path / "history.png", dpi=50)
    check_png(out, width=14 * 50, height=round(3.6 * 50))


def test_correlation_png(tmp_path):
    names = [f"run{i}" for i in range(6)]
    m = np.corrcoef(np.random.default_rng(0).random((6, 30)))
    out = plot_correlation(m, names, tmp_path / "corr.png", title="agreement", dpi=50)
    check_png(out, width=round((2.5 + 0.45 * 6 + 1.0) * 50), height=round((2.5 + 0.45 * 6) * 50))
