"""Pseudo-labels and distillation: more training rows and softer targets for one fold.

Pseudo-labelling (as the iMet 2019 winner did): the test images a set of models is
most sure about are added to every fold's *training* set, with the models'
probabilities (soft) or thresholded tags (hard) as targets. Confidence is the mean
over labels of |p - 0.5|; the rows above a quantile of it are kept. Validation rows
stay the fold's training images only, so out-of-fold predictions remain honest: a
test image is never a training image of another fold.

Distillation: the targets of the training rows become
``(1 - alpha) * tags + alpha * teacher probability``. Which teacher files keep the
out-of-fold estimate honest is the subtle part (README, "Pseudo-labels and
distillation"): a teacher's probability for a training image must come from a model
that never saw the student's validation fold. A K-fold teacher's out-of-fold file
does not qualify: its probability for an image of fold j came from the model trained
on every other fold, the student's validation fold included, so the validation
labels leak into the student's targets. ``check_teacher`` refuses such files when
they say where they come from (a run's preds/, a stack's output); a teacher *run*
trained with the student's fold (``--soft-targets runs/teacher-f{fold}``) is honest
by construction and is predicted here on the student's training rows.

Both change only what one training row looks like: ``CombinedImages`` puts the test
cache after the training cache in one index space, so the loader's per-index
randomness (seed, epoch, index) and exact resume are untouched; ``WeightedLoss``
reads a per-row weight carried as one extra target column.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from utils.common.errors import DataError, report_problems
from utils.common.text import read_json
from utils.runs.prob_file import read_probs
from utils.common.checksum import file_sha256
from utils.data.bands import image_options
from utils.data.cache import load_images
from utils.models.checkpoint import load_for_inference
from utils.data.folds_file import read_folds_file
from utils.runs.directory import load_run
from utils.predict.logits import predict_logits
from utils.train.loop import sigmoid

log = logging.getLogger(__name__)

MODES = ("soft", "hard")


# ----------------------------------------------------------------------------- making pseudo-labels

def confidence(probs):
    """Mean over labels of |p - 0.5|: (N, L) -> float64 (N,), 0 (unsure) .. 0.5 (certain)."""
    return np.abs(np.asarray(probs, dtype=np.float64) - 0.5).mean(1)


def pseudo_labels(probs, mode="soft", quantile=0.5, thresholds=0.5):
    """Select confident rows and their targets.

    probs: (N, L) test probabilities; mode: 'soft' (targets = probs) or 'hard'
    (targets = probs >= thresholds, scalar or (L,)); quantile in [0, 1): rows whose
    ``confidence`` is at or above this quantile of it are kept (0 keeps every row).
    Returns (kept row indices int64 (K,), targets float64 (K, L)).
    """
    if mode not in MODES:
        raise ValueError(f"Invalid mode {mode!r}. Only {', '.join(MODES)} are supported.")
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1); got {quantile}")
    P = np.asarray(probs, dtype=np.float64)
    conf = confidence(P)
    keep = np.flatnonzero(conf >= np.quantile(conf, quantile)) if len(P) else np.zeros(0, np.int64)
    targets = P[keep] if mode == "soft" else (P[keep] >= np.asarray(thresholds, dtype=np.float64)).astype(np.float64)
    return keep, targets


# ----------------------------------------------------------------------------- reading them for training

@dataclass
class Extras:
    """What --pseudo and --soft-targets add to a fold's training set.

    test_rows: (P,) indices into spec.test_files; test_targets: (P, L) float32;
    weight: loss weight of the pseudo rows; teacher: (N, L) float32 teacher
    probabilities aligned to spec.names (NaN where the file has no row) or None;
    alpha: distillation mix; record: what config.json stores.
    """
    test_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    test_targets: np.ndarray = None
    weight: float = 1.0
    teacher: np.ndarray = None
    alpha: float = 0.0
    record: dict = field(default_factory=dict)

    def __bool__(self):
        return len(self.test_rows) > 0 or self.teacher is not None


def _columns(path, file_labels, labels):
    """Column indices of ``labels`` in a preds file; DataError naming the missing ones."""
    missing = [l for l in labels if l not in file_labels]
    if missing:
        raise DataError(f"{path}: no column for label(s) {missing}; the file must have image_name and one "
                        f"column per label ({' '.join(labels)})")
    return [file_labels.index(l) for l in labels]


def load_pseudo(path, spec, labels, weight=1.0):
    """Pseudo-labelled test images from a preds-format file (image_name + one column per label).

    spec: DataSpec (its test_names); labels: the run's labels. Returns
    (test rows int64 (P,), targets float32 (P, L), record dict). Raises DataError naming
    the file and rows for names not in the test set, values outside [0, 1], missing
    label columns, a non-positive weight.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--pseudo {path}: file not found (make one with tools/pseudo_label.py)")
    if not weight > 0:
        raise DataError(f"--pseudo-weight {weight}: must be > 0")
    names, file_labels, probs = read_probs(path, "--pseudo", hard_ok=True, test_only=True)
    index = {n: i for i, n in enumerate(spec.test_names)}
    unknown = [f"row {i + 2}: {n!r}" for i, n in enumerate(names) if n not in index]
    report_problems(f"{path}: images not in the test set ({spec.test_images}/, sample_submission.csv); "
                    f"pseudo-labels are for test images only", unknown)
    cols = _columns(path, file_labels, labels)
    rows = np.array([index[n] for n in names], dtype=np.int64)
    record = {"file": str(path.resolve()), "sha256": file_sha256(path), "rows": len(rows), "weight": float(weight)}
    return rows, probs[:, cols].astype(np.float32), record


def _is_run(folder):
    return (folder / "config.json").is_file()


def check_teacher(path, fold):
    """Refuse a teacher file whose probabilities would leak the student's validation fold.

    path: the soft-target file; fold: the student's validation fold. Returns the
    provenance recorded in config.json ('unknown': nothing in or next to the file says
    where it comes from); raises DataError with the reason for a run's prediction file
    or a stack's output.
    """
    run = path.parent.parent if path.parent.name == "preds" else None
    if run is not None and _is_run(run):
        cfg = read_json(run / "config.json")
        if cfg.get("fold") != fold:
            raise DataError(f"--soft-targets {path}: predictions of run {run.name}, trained with validation fold "
                            f"{cfg.get('fold')}, i.e. on fold {fold}, the validation fold of this run: its "
                            f"probabilities would carry fold {fold}'s labels into training and make the "
                            f"out-of-fold score optimistic. Use a teacher trained with --fold {fold} "
                            f"(--soft-targets RUN_DIR)")
        raise DataError(f"--soft-targets {path}: a run's prediction file covers its validation fold or the test "
                        f"set, not this run's training images; give the teacher run directory instead")
    report = path.parent / "stack_report.json"
    if report.is_file():
        folds = read_json(report).get("library", {}).get("folds", 0)
        if folds > 1:
            raise DataError(f"--soft-targets {path}: a stack's output over {folds} folds: each image's probability "
                            f"comes from models trained on the other folds, fold {fold} (this run's validation "
                            f"fold) among them, so it leaks the validation labels into training. Use per-fold "
                            f"teachers trained with --fold {fold} (--soft-targets RUN_DIR)")
    log.warning("--soft-targets %s: its origin is unknown; the out-of-fold score stays honest only if every "
                "probability for a training image came from a model that never saw fold %d", path, fold)
    return "unknown"


def check_teacher_run(run, fold, fold_ids, names):
    """The teacher Run, checked: trained with validation fold ``fold`` on the same fold split.

    fold_ids: (N,) the student's folds of ``names``. Raises DataError for another fold,
    a folds file that puts any image in or out of ``fold`` differently, or no best.pt.
    """
    r = load_run(run)
    if r.config.get("fold") != fold:
        raise DataError(f"--soft-targets {run}: the teacher was trained with validation fold "
                        f"{r.config.get('fold')}, so it saw fold {fold}, this run's validation fold; "
                        f"use the teacher run of fold {fold}")
    folds_file = None if r.data_root is None else r.data_root / r.config.get("folds_file", "folds.csv")
    if folds_file is None or not folds_file.is_file():
        raise DataError(f"--soft-targets {run}: its folds file is not found here, so it cannot be checked "
                        f"against this run's folds")
    theirs = read_folds_file(folds_file)
    differ = [n for n, k in zip(names, fold_ids) if (theirs.get(n) == fold) != (k == fold)]
    if differ:
        raise DataError(f"--soft-targets {run}: its folds file {folds_file} puts {len(differ)} image(s) in or out "
                        f"of fold {fold} differently from this run (e.g. {differ[:3]}); it may have seen "
                        f"this run's validation images")
    if not (run / "checkpoints" / "best.pt").is_file():
        raise DataError(f"--soft-targets {run}: no checkpoints/best.pt (unfinished or pruned teacher)")
    return r


def teacher_predictions(run, spec, rows, cache_dir, device, labels):
    """Probabilities (len(rows), L) float32 of a teacher run's best.pt on training images ``rows``."""
    model, meta = load_for_inference(Path(run) / "checkpoints" / "best.pt", device)
    cols = _columns(run, list(meta["labels"]), labels)
    images = load_images(spec.files, int(meta["size"]), cache_dir, desc="teacher", **image_options(meta))
    logits = predict_logits(model, images, 64, device, meta["mean"], meta["std"], rows=rows, desc="teacher")
    return sigmoid(logits)[:, cols].astype(np.float32)


def load_soft_targets(source, spec, fold_ids, fold, labels, alpha, cache_dir="", device="cpu"):
    """Teacher probabilities (N, L) float32 aligned to spec.names (NaN off the training rows).

    source: a preds-format file, or a teacher run directory ('{fold}' in it becomes the
    fold). Every training image of the fold must be covered. Returns (teacher, record).
    Raises DataError for leaking or unknown-fold teachers (``check_teacher``), values
    outside [0, 1] (naming row and column), missing images or labels, alpha outside [0, 1].
    """
    if not 0 <= alpha <= 1:
        raise DataError(f"--distill {alpha}: must be in [0, 1]")
    path = Path(str(source).replace("{fold}", str(fold)))
    train_rows = np.flatnonzero(fold_ids != fold)
    teacher = np.full((len(spec.names), len(labels)), np.nan, dtype=np.float32)
    if path.is_dir():
        check_teacher_run(path, fold, fold_ids, spec.names)
        teacher[train_rows] = teacher_predictions(path, spec, train_rows, cache_dir, torch.device(device), labels)
        return teacher, {"source": str(path.resolve()), "kind": "teacher run", "alpha": float(alpha),
                         "sha256": file_sha256(path / "checkpoints" / "best.pt")}
    if not path.is_file():
        raise DataError(f"--soft-targets {path}: no such file or run directory")
    names, file_labels, probs = read_probs(path, "--soft-targets")  # what the file is, before where it is from
    provenance = check_teacher(path, fold)
    cols = _columns(path, file_labels, labels)
    index = {n: i for i, n in enumerate(names)}
    missing = [spec.names[i] for i in train_rows if spec.names[i] not in index]
    report_problems(f"--soft-targets {path}: training images of fold {fold} without a teacher probability",
                    [repr(n) for n in missing])
    teacher[train_rows] = probs[[index[spec.names[i]] for i in train_rows]][:, cols]
    return teacher, {"source": str(path.resolve()), "kind": provenance, "alpha": float(alpha),
                     "sha256": file_sha256(path)}


def load_extras(spec, fold_ids, fold, labels, pseudo=None, pseudo_weight=1.0, soft_targets=None, alpha=0.5,
                cache_dir="", device="cpu"):
    """Extras for train.py's --pseudo/--pseudo-weight/--soft-targets/--distill (None when neither is given).

    The record (config.json keys 'pseudo' and 'soft_targets') holds the files' sha256, the
    number of pseudo rows, the weight and alpha: what --resume compares.
    Raises DataError for --pseudo-weight <= 0 or --distill outside [0, 1], given or not
    with their file flag (train.py refuses either flag without its file: utils.common.cli.refuse_idle_flags).
    """
    # checked even when their file flag is absent, so a wrong value never passes silently
    if not pseudo_weight > 0:
        raise DataError(f"--pseudo-weight {pseudo_weight}: must be > 0")
    if not 0 <= alpha <= 1:
        raise DataError(f"--distill {alpha}: must be in [0, 1]")
    if not pseudo and not soft_targets:
        return None
    ex = Extras()
    if pseudo:
        ex.test_rows, ex.test_targets, rec = load_pseudo(pseudo, spec, labels, pseudo_weight)
        ex.weight = float(pseudo_weight)
        ex.record["pseudo"] = {k: rec[k] for k in ("sha256", "rows", "weight")}
        ex.record["pseudo_file"] = rec["file"]
    if soft_targets:
        ex.teacher, rec = load_soft_targets(soft_targets, spec, fold_ids, fold, labels, alpha, cache_dir, device)
        ex.alpha = float(alpha)
        ex.record["soft_targets"] = {k: rec[k] for k in ("sha256", "kind", "alpha")}
        ex.record["soft_targets_source"] = rec["source"]
    return ex


# ----------------------------------------------------------------------------- training with them

def training_targets(y_train, train_idx, extras):
    """Targets of the training rows then the pseudo rows, float32 (n + P, L + 1).

    y_train: (n, L) 0/1 tags of the fold's training images train_idx (n,); the last
    column is each row's loss weight (1 for training images, extras.weight for pseudo
    rows). With a teacher, training rows get (1 - alpha) * tags + alpha * teacher.
    """
    y = np.asarray(y_train, dtype=np.float32)
    if extras.teacher is not None:
        y = (1 - extras.alpha) * y + extras.alpha * extras.teacher[train_idx]
    parts = [np.hstack([y, np.ones((len(y), 1), np.float32)])]
    if len(extras.test_rows):
        t = np.asarray(extras.test_targets, np.float32)
        parts.append(np.hstack([t, np.full((len(t), 1), extras.weight, np.float32)]))
    return np.concatenate(parts)


def sampler_labels(y_train, extras=None):
    """0/1 labels (n [+ P], L) of the training items, pseudo rows' targets cut at 0.5: what samplers count."""
    y = np.asarray(y_train, dtype=np.uint8)
    if extras is None or not len(extras.test_rows):
        return y
    return np.concatenate([y, (np.asarray(extras.test_targets) >= 0.5).astype(np.uint8)])


class CombinedImages:
    """Two uint8 image arrays (training cache, test cache) as one: rows past len(first) read second."""

    def __init__(self, first, second):
        self.first, self.second, self.n = first, second, len(first)

    def __len__(self):
        return self.n + len(self.second)

    def __getitem__(self, i):
        i = int(i)
        return self.first[i] if i < self.n else self.second[i - self.n]


class WeightedLoss(nn.Module):
    """A mean loss with a per-row weight carried as the targets' extra last column.

    loss(logits (B, L), targets (B, L + 1)) = (1/B) * sum over the rows' weight values w
    of w * n_w * base(rows with weight w): each row's loss scaled by its weight,
    divided by the batch size. Targets of L columns pass straight to ``base``. Batch
    mixing (--mix) mixes the weight column like the targets: a mixed row is weighted
    in proportion.
    """

    def __init__(self, base):
        super().__init__()
        self.base = base

    def forward(self, logits, targets):
        if targets.shape[1] == logits.shape[1]:
            return self.base(logits, targets)
        y, w = targets[:, :-1], targets[:, -1]
        total = logits.new_zeros((), dtype=torch.float32)
        for value in torch.unique(w).tolist():
            m = w == value
            total = total + value * m.sum() * self.base(logits[m], y[m])
        return total / len(w)


__all__ = ["MODES", "confidence", "pseudo_labels", "Extras", "load_extras", "load_pseudo", "check_teacher",
           "check_teacher_run", "teacher_predictions", "load_soft_targets", "training_targets", "sampler_labels",
           "CombinedImages", "WeightedLoss"]
