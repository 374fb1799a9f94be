"""The out-of-fold (OOF) table of a set of runs: their validation predictions as one table.

Each run predicts its own validation fold (preds/val.<tta>.csv, or the probabilities predict.py
holds in memory); together the runs of a model cover the training images. `assemble_oof` is the
one place those pieces become a table: one row per image, the probabilities averaged over the
runs that predicted it (repeats of a fold, other seeds), so a model's OOF is that of its
seed-bagged predictions. predict.py's submission thresholds, stack.py's library, the leaderboard,
tools/thresholds.py, tools/correlation.py and tools/linear_probe.py all assemble theirs here.
"""
import numpy as np

from utils.common.errors import DataError, preview


def assemble_oof(parts, names=None):
    """One OOF table from the validation predictions of several runs.

    parts: (image names, probs (n, L)) per run, the same L label columns in each (a run's names
    unique, as utils.runs.pred_files.read_preds guarantees); names: the table's rows in order
    (e.g. train.csv's), rows that no run predicts NaN; None: every predicted image, in order of
    first appearance. Returns (names: list, probs (N, L) float64), each row the mean over the
    parts that predict the image. DataError for a part whose label count differs or, with
    `names`, for images not among them.
    """
    parts = [(list(n), np.asarray(p, np.float64)) for n, p in parts]
    if not parts:
        raise DataError("no validation predictions to make an out-of-fold table of")
    widths = {p.shape[1] for _, p in parts}
    if len(widths) > 1:
        raise DataError(f"validation predictions with different numbers of labels ({sorted(widths)}) "
                        f"cannot make one out-of-fold table")
    order = list(dict.fromkeys(n for ns, _ in parts for n in ns)) if names is None else list(names)
    index = {n: i for i, n in enumerate(order)}
    unknown = [n for ns, _ in parts for n in ns if n not in index]
    if unknown:
        raise DataError(f"{len(unknown)} out-of-fold image(s) are not among the {len(order)} expected: "
                        f"{preview(unknown)}")
    sums = np.zeros((len(order), widths.pop()))
    counts = np.zeros(len(order))
    for ns, p in parts:
        rows = np.fromiter((index[n] for n in ns), np.intp, len(ns))
        np.add.at(sums, rows, p)
        np.add.at(counts, rows, 1)
    with np.errstate(invalid="ignore", divide="ignore"):  # rows no run predicts: 0/0 = NaN
        return order, sums / counts[:, None]
