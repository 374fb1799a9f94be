"""history.csv and history.png follow the report's rule: a label without a validation positive has
no F2 (NaN, drawn as n/a), never the metric's 0/0 convention of 1.0."""
import numpy as np
import pandas as pd

from utils.train.best_weights import Candidate
from utils.train.epoch_plots import EpochPlots
from utils.train.run_state import new_epoch_stats, new_state
from utils.train.stage import Stage
from utils.train.trainer import history_row


def test_a_label_without_validation_positives_has_no_f2(tmp_path):
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], np.uint8)  # label 'c': no positive
    probs = np.array([[0.9, 0.1, 0.1], [0.2, 0.8, 0.1], [0.7, 0.6, 0.2], [0.1, 0.1, 0.1]])
    state = {**new_state(), "stats": {**new_epoch_stats(4, 0.1), "n": 4, "loss_sum": 2.0}}
    raw = Candidate.scored("raw", None, y, probs)
    row = history_row(state, 0, Stage(), 0.1, ["a", "b", "c"], y, probs, 0.5, raw)
    assert row["f2_a"] == 1.0 and row["f2_b"] == 1.0 and np.isnan(row["f2_c"])
    plots = EpochPlots(tmp_path, ["a", "b", "c"], y, "r", "every", 2)
    assert plots.no_positives == ["c"]
    plots.draw(1, [row], probs, raw.thr)
    plots.wait()
    plots.close()
    assert (tmp_path / "plots" / "history.png").is_file()
    pd.DataFrame([row]).to_csv(tmp_path / "history.csv", index=False)
    assert pd.read_csv(tmp_path / "history.csv")["f2_c"].isna().all()  # n/a, as the report reads it
