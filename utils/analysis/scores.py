"""Out-of-fold predictions of runs and models, aligned with their truth, and their scores.

A run's out-of-fold (OOF) predictions are preds/val.<tta>.csv; the truth is
train.csv in the run's data root, found on this machine by utils/runs.load_run
(relative path, path map or re-rooting). A *model*'s OOF joins its runs: one row
per image, probabilities averaged over the runs that predicted the image (its
seeds), so the model score is that of the seed-bagged model.

Used by the leaderboard (utils/analysis/leaderboard.py), pruning, model correlation, the
probability plots and the HTML report.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utils.data.dataset import align_names, read_tags_csv, split_tags
from utils.common.errors import DataError
from utils.runs.oof import assemble_oof
from utils.runs.pred_files import read_preds
from utils.metrics.fbeta import fbeta_samples
from utils.metrics.threshold_search import FIXED_THRESHOLD, best_label_fbeta, greedy_thresholds

F2_FIXED = "f2@0.2"
F2_BEST = "f2_best"
LABEL_COL = "f2:"     # per-label column prefix: f2:<label>


@dataclass
class OOF:
    """Out-of-fold predictions aligned with the truth.

    names: N image names; labels: L names; probs: (N, L) float64; y: (N, L) uint8;
    tta: TTA name(s) the probabilities come from.
    """
    names: list
    labels: list
    probs: np.ndarray
    y: np.ndarray
    tta: str


class Truth:
    """Truth (train.csv) for runs, each file read once.

    data: a data folder whose train.csv serves every run (None: each run's own data root).
    """

    def __init__(self, data=None):
        self.data = Path(data) if data else None
        self._tables = {}

    def path_for(self, run):
        """train.csv for `run`, or DataError saying how to make its data root findable."""
        root = self.data or run.data_root
        if root is None:
            stored = run.config.get("data_root_abs") or run.config.get("data_root")
            raise DataError(f"data root not found here (stored {stored}); pass --path-map or --data, "
                            f"or rewrite the record with tools/convert_paths.py")
        return Path(root) / "train.csv"

    def _table(self, path):
        if path not in self._tables:
            df = read_tags_csv(path)
            self._tables[path] = (df["image_name"].tolist(), [split_tags(t) for t in df["tags"]])
        return self._tables[path]

    def matrix(self, path, names, labels, what=None):
        """(N, L) uint8 truth of `names` from the image_name,tags file `path`, in
        `labels` order (tags outside `labels` ignored)."""
        ref, tags = self._table(Path(path))
        idx = align_names(names, ref, what or f"predictions vs {path}")
        col = {lab: j for j, lab in enumerate(labels)}
        y = np.zeros((len(names), len(labels)), dtype=np.uint8)
        for r, i in enumerate(idx):
            for t in tags[i]:
                if t in col:
                    y[r, col[t]] = 1
        return y

    def labels_for(self, run, names, labels):
        """`matrix` from the run's truth file (see path_for)."""
        path = self.path_for(run)
        return self.matrix(path, names, labels, f"{run.dir} predictions vs {path}")


def load_oof(run, truth, tta=None):
    """The run's validation predictions with their truth, as an OOF.

    tta: a TTA name, or None for the best of the TTA predictions predict.py made (highest
    F2 at greedy thresholds); 'none' (train.py's own file) only when there is no other.
    Raises DataError for a run without such predictions or truth.
    """
    available = run.tta_available("val")
    if not available:
        raise DataError("no predictions (preds/val.*.csv); run predict.py --split val")
    if tta is not None and tta not in available:
        raise DataError(f"no preds/val.{tta}.csv (available: {', '.join(available)})")
    oofs = []
    for name in [tta] if tta else [t for t in available if t != "none"] or available:
        names, labels, probs = read_preds(run.preds_path("val", name))
        oofs.append(OOF(names, labels, probs, truth.labels_for(run, names, labels), name))
    if len(oofs) == 1:
        return oofs[0]
    return max(oofs, key=lambda o: greedy_thresholds(o.y, o.probs)[1])


def merge_oofs(oofs):
    """One OOF from several runs' OOFs of one model: union of images, probabilities
    averaged over the runs that predicted each image (utils.runs.oof.assemble_oof). Labels must agree."""
    labels = oofs[0].labels
    for o in oofs[1:]:
        if o.labels != labels:
            raise DataError(f"runs of one model predict different labels: {labels} vs {o.labels}")
    names, probs = assemble_oof([(o.names, o.probs) for o in oofs])
    first = {}  # the truth of each image, from the first run that predicted it
    for o in oofs:
        for n, row in zip(o.names, o.y):
            first.setdefault(n, row)
    y = np.array([first[n] for n in names], np.uint8).reshape(len(names), len(labels))
    ttas = ",".join(sorted({o.tta for o in oofs}))
    return OOF(names, labels, probs, y, ttas)


def score_oof(oof, threshold=FIXED_THRESHOLD):
    """Scores of one OOF: dict with F2_FIXED (every label at `threshold`), F2_BEST
    (greedy per-label thresholds), 'thresholds' (L,) and 'per_label' {label: the
    label's own F2 at its best threshold (utils.metrics.threshold_search.best_label_fbeta)}."""
    thr, f_best = greedy_thresholds(oof.y, oof.probs)
    per_label = {lab: float(best_label_fbeta(oof.y[:, j], oof.probs[:, j:j + 1])[0][0])
                 for j, lab in enumerate(oof.labels)}
    return {F2_FIXED: fbeta_samples(oof.y, oof.probs >= threshold), F2_BEST: float(f_best),
            "thresholds": thr, "per_label": per_label}
