"""TensorBoard event files of a run (runs/<run>/tb/), written with torch.utils.tensorboard.

Per epoch (step = the run's global epoch, 1-based, as in history.csv): every numeric
column of the history row as a scalar (loss, lr, F2, images/s, and whatever else a
row carries, e.g. val_f2_ema next to val_f2), the per-label F2 columns f2_<label> under
f2_per_label/<label>, and histograms of the validation probabilities per label, of the
images with the tag and without it. At the end of the run the hyper-parameters and the
final scores go to tb/hparams/ (SummaryWriter.add_hparams), so `tensorboard --logdir runs`
compares runs in its HPARAMS tab.

A resumed run opens the writer with purge_step = the first epoch it writes: events of
epochs a killed process wrote after its last checkpoint are dropped by TensorBoard, so
every step appears once.
"""
import importlib.util
import math
from numbers import Number

import numpy as np

from utils.common.errors import DataError

LABEL_PREFIX = "f2_"
HIST_BINS = np.linspace(0.0, 1.0, 41)
# config.json keys that are not hyper-parameters (where, when, who)
NOT_HPARAMS = {"name", "data_root", "data_root_abs", "folds_file", "created", "git_commit", "model_key",
               "argv", "test_images"}


def available():
    """True when the tensorboard package (needed by torch.utils.tensorboard) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def resolve_flag(flag):
    """--tensorboard/--no-tensorboard (None = on when installed) -> bool; DataError when asked
    for explicitly but not installed."""
    if flag is None:
        return available()
    if flag and not available():
        raise DataError("--tensorboard: the tensorboard package is not installed; "
                        "pip install tensorboard, or pass --no-tensorboard")
    return bool(flag)


def scalar_tag(column, labels):
    """TensorBoard tag of a history column: f2_<label> -> f2_per_label/<label>, else the column."""
    if column.startswith(LABEL_PREFIX) and column[len(LABEL_PREFIX):] in labels:
        return "f2_per_label/" + column[len(LABEL_PREFIX):]
    return column


def hparams_of(config):
    """Flat hyper-parameters of a run config: scalar entries (str, int, float, bool) except
    NOT_HPARAMS, and the stage plan as text ('key=value,...;...')."""
    out = {k: v for k, v in config.items()
           if k not in NOT_HPARAMS and isinstance(v, (str, bool, Number)) and not isinstance(v, complex)}
    stages = config.get("stages") or []
    out["stages"] = ";".join(",".join(f"{k}={v}" for k, v in s.items() if v is not None) for s in stages)
    out["n_labels"] = len(config.get("labels") or [])
    return out


class TensorBoardLog:
    """Writer of one run's tb/ folder; open on the first epoch it logs (see module docstring).

    run_dir: the run directory; labels: L label names; config: the run config (hparams).
    """

    def __init__(self, run_dir, labels, config):
        self.dir = run_dir / "tb"
        self.labels = list(labels)
        self.config = config
        self.writer = None

    def _open(self, first_step):
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard loads only for --tensorboard runs

        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=first_step)
        # raw and EMA (or any val_f2* variants) on one chart
        self.writer.add_custom_scalars({"scores": {"validation F2": ["Multiline", [r"^val_f2"]],
                                                   "loss": ["Multiline", [r"_loss$"]]}})

    def log_epoch(self, row, probs, y):
        """One history row (dict; row['epoch'] is the step), validation probabilities
        (N, L) float and truth y (N, L) 0/1. Flushed at once, so a kill loses nothing."""
        step = int(row["epoch"])
        if self.writer is None:
            self._open(step)
        for col, v in row.items():
            if isinstance(v, (Number, np.number)) and not isinstance(v, bool) and math.isfinite(float(v)) \
                    and col != "epoch":
                self.writer.add_scalar(scalar_tag(col, self.labels), float(v), step)
        y = np.asarray(y) > 0.5
        for j, lab in enumerate(self.labels):
            for mask, part in ((y[:, j], "with_tag"), (~y[:, j], "without_tag")):
                if mask.any():
                    self.writer.add_histogram(f"probs_{part}/{lab}", probs[mask, j], step, bins=HIST_BINS)
        self.writer.flush()

    def close(self, result):
        """Write the hyper-parameters with the run's final scores (result.json's numbers), close."""
        metrics = {f"hparam/{k}": float(v) for k, v in result.items()
                   if isinstance(v, Number) and not isinstance(v, bool)}
        if self.writer is None:
            self._open(int(result.get("epochs", 0)) + 1)
        self.writer.add_hparams(hparams_of(self.config), metrics, run_name="hparams")
        self.writer.close()
