"""Linear probe: frozen ImageNet features + one logistic regression per label.

The strong simple baseline to beat by fine-tuning. A network from utils/models/factory.py with
its classifier removed turns each cached uint8 image into a pooled feature vector
(computed once, cached as .npy next to the image cache). For each cross-validation
fold the features are standardised on the training folds and every label's logistic
regression (sklearn LogisticRegression's objective: L2, C fixed or chosen per label by an
inner stratified CV as LogisticRegressionCV chose it) is fitted in one L-BFGS solve
(utils/analysis/logreg.py); the held-out fold and the test set are predicted. A label without positives (or without negatives) in a training split gets
its training prior as a constant probability.

`write_probe_run` writes the fold's results as a run directory (ARCHITECTURE.md, "Run directory"),
so the leaderboard and stack.py treat the probe like any trained model.
"""
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

from utils.analysis.logreg import feature_basis, fit_logreg, select_C
from utils.data.cache import cache_key, load_images
from utils.predict.logits import predict_logits
from utils.common.atomic import atomic_write, atomic_write_csv, atomic_write_json
from utils.common.text import read_json
from utils.runs.pred_files import write_preds
from utils.metrics.fbeta import fbeta_per_label, fbeta_samples
from utils.models.factory import create_model
from utils.models.fast_path import FP32, network_name, resolve, time_candidates
from utils.metrics.threshold_search import FIXED_THRESHOLD, greedy_thresholds

log = logging.getLogger(__name__)

FEATURE_VERSION = 1   # bump when feature extraction changes
TTAS = ("none", "hflip")
C_GRID = tuple(np.logspace(-4, 1, 6))  # --C auto searches these decades (inverse regularisation)
FALLBACK_C = 1.0      # --C auto on a label too rare for an inner CV (fewer than 2 of a class)
PROB_EPS = 1e-7       # log loss clip


# ---------------------------------------------------------------------------- features

class FlipMean(nn.Module):
    """Wraps a feature network: the mean of its outputs on x and on x flipped left-right."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return 0.5 * (self.model(x) + self.model(torch.flip(x, dims=[3])))


def feature_model(arch, pretrained=True, tta="none", channels=3):
    """Network `arch` (utils.models.factory names) returning pooled features (B, D) instead of logits.

    timm models: reset_classifier(0) (pooled pre-logits); torchvision and builtin models:
    the final 1000-way layer becomes Identity. Random weights (pretrained False) are
    seeded, so features are reproducible. tta 'hflip' averages the features of each
    image and its mirror. channels: input bands (first conv adapted, utils/models/channels.py).
    Returns the module, in eval mode, with `.meta` from create_model.
    """
    if tta not in TTAS:
        raise ValueError(f"tta {tta!r}: choose one of {', '.join(TTAS)}")
    with torch.random.fork_rng():
        torch.manual_seed(0)  # random weights (--no-pretrained) are the same every time
        model = create_model(arch, None, pretrained=pretrained, channels=channels)
    meta = dict(model.meta)
    if meta["source"] == "timm":
        model.reset_classifier(0)
    else:
        parent, _, attr = meta["head"][0].rpartition(".")
        setattr(model.get_submodule(parent), attr, nn.Identity())
    if tta == "hflip":
        model = FlipMean(model)
    model.meta = meta
    return model.eval()


def extract_features(model, images, bs=64, device="cpu", workers=0, desc="features", setting=FP32):
    """Pooled features float32 (N, D) of uint8 images (N, S, S, C) with a feature_model.

    Normalisation (mean, std) comes from the model's meta; batches of `bs` images; setting: the
    precision and memory format (utils.models.fast_path.Setting; default fp32 contiguous).
    """
    meta = model.meta
    device = torch.device(device)
    fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
    return predict_logits(model.to(device, memory_format=fmt), images, bs, device, meta["mean"], meta["std"],
                          channels_last=setting.channels_last, amp_dtype=setting.dtype, workers=workers, desc=desc)


def feature_cache_path(cache_dir, files, size, arch, pretrained=True, tta="none", desc="images",
                       channels=3, scaling=None, setting=FP32):
    """Where the features of `files` at `size` px by `arch` are cached (a .npy in cache_dir).

    The name carries the image folder, arch, size and TTA; the hash covers the image
    cache key (every file's path, byte size and mtime), the weights choice, the precision and
    memory format when not fp32 contiguous, and versions.
    """
    parts = [FEATURE_VERSION, cache_key(files, size, channels, scaling), arch, bool(pretrained), tta]
    key = hashlib.sha1(json.dumps(parts + ([setting.record()] if setting != FP32 else [])).encode()).hexdigest()[:16]
    tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{desc}-{arch}")
    return Path(cache_dir) / f"feat-{tag}-{size}px-{tta}-{key}.npy"


def feature_setting(arch, size, amp="off", channels_last=False, pretrained=True, tta="none", bs=64, device="cpu",
                    channels=3):
    """The precision and memory format features are extracted in: (Setting, how it was reached).

    amp 'auto' | 'off' | 'bf16' and channels_last True | False | None (auto) as predict.py's flags
    (utils.models.fast_path.resolve); on CPU auto is measured once per machine, building the
    network only when it is measured; on CUDA auto is fp32 contiguous, as the probe always was.
    """
    device = torch.device(device)
    if device.type == "cuda":
        amp = "off" if amp == "auto" else amp
        channels_last = bool(channels_last)

    def measure(settings):
        return time_candidates(feature_model(arch, pretrained, tta, channels), settings, size, "infer", bs, channels)
    return resolve(device, amp, channels_last, None, network_name(f"{arch}-features", channels=channels),
                   size, "infer", bs, channels, measure=measure)


def cached_features(files, size, cache_dir, arch, pretrained=True, tta="none", desc="images",
                    bs=64, device="cpu", workers=0, channels=3, scaling=None, setting=FP32):
    """Features (N, D) float32 of image files at `size` px, computed once and then read back.

    Images come from the uint8 cache (utils.data.cache.load_images, desc = image folder; the
    first `channels` bands, 16-bit data scaled by `scaling`, see utils/data/bands.py); setting:
    extract_features'. Returns (features, info): info has 'path', 'seconds' (time decoding and
    extraction took when it was made), 'cached' (True when read back), the network's 'weights',
    'mean', 'std' and the 'fast_path' setting's name. Stale feature files of the same images,
    arch, size and TTA are removed.
    """
    path = feature_cache_path(cache_dir, files, size, arch, pretrained, tta, desc, channels, scaling, setting)
    side = path.with_suffix(".json")
    if path.is_file() and side.is_file():
        feats = np.load(path)
        if feats.shape[0] == len(files):
            return feats, {**read_json(side), "path": str(path), "cached": True}
    t0 = time.perf_counter()
    images = load_images(files, size, cache_dir, desc=desc, channels=channels, scaling=scaling)
    model = feature_model(arch, pretrained, tta, channels)
    feats = extract_features(model, images, bs, device, workers, desc=f"features {desc}", setting=setting)
    info = {"seconds": time.perf_counter() - t0, "arch": arch, "size": size, "tta": tta,
            "pretrained": bool(pretrained), "weights": model.meta["weights"], "mean": list(model.meta["mean"]),
            "std": list(model.meta["std"]), "shape": list(feats.shape), "fast_path": setting.name}
    stem = path.name.rsplit("-", 1)[0]
    for old in path.parent.glob(f"{stem}-*.npy"):
        if old != path:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    atomic_write(path, lambda f: np.save(f, feats))
    atomic_write_json(side, info)
    log.info("features %s: %s in %.1f s (%s) -> %s", desc, feats.shape, info["seconds"], setting.name, path)
    return feats, {**info, "path": str(path), "cached": False}


# ---------------------------------------------------------------------------- fitting

def fit_predict(X_train, Y_train, X_eval, C=1.0, inner_k=3, seed=0, basis=None):
    """Fit every label's logistic regression on standardised X_train at once; predict each of X_eval.

    X_train: (N, F) float32 features; Y_train: (N, L) 0/1 (uint8); X_eval: list of (M_i, F)
    arrays (an empty one for no test set); C: a positive float, or 'auto' (each label's C from
    C_GRID by inner CV, see utils.analysis.logreg.select_C; FALLBACK_C for a label whose minority
    class has fewer than 2 images); basis: utils.analysis.logreg.feature_basis of the features
    (default: computed here). Features are standardised on X_train (StandardScaler), the fits are
    sklearn's LogisticRegression(C) per label (L2, unpenalised intercept, no class weights) solved
    jointly (utils.analysis.logreg.fit_logreg). A label with a single class in Y_train predicts
    its training prior (a constant 0 or 1). Returns (list of (M_i, L) float64 probabilities,
    list of L chosen C values, None where the label was constant).
    """
    scaler = StandardScaler().fit(X_train)
    Xs = scaler.transform(X_train)
    Y_train = np.asarray(Y_train).astype(np.int64)
    out = [np.empty((len(x), Y_train.shape[1])) for x in X_eval]
    fit = np.flatnonzero(Y_train.min(0) != Y_train.max(0))
    for j in np.setdiff1d(np.arange(Y_train.shape[1]), fit):
        for o in out:
            o[:, j] = float(Y_train[0, j])
    chosen = [None] * Y_train.shape[1]
    if not len(fit):
        return out, chosen
    basis = feature_basis(Xs) if basis is None else basis
    if C == "auto":
        Cs, init = select_C(Xs, Y_train[:, fit], C_GRID, inner_k, seed, basis)
        Cs = np.where(np.isnan(Cs), FALLBACK_C, Cs)
    else:
        Cs, init = float(C), None
    model = fit_logreg(Xs, Y_train[:, fit], Cs, basis=basis, init=init)
    for o, x in zip(out, X_eval):
        if len(x):
            o[:, fit] = model.predict_proba(scaler.transform(x))
    for j, c in zip(fit, np.broadcast_to(Cs, (len(fit),))):
        chosen[j] = float(c)
    return out, chosen


def mean_log_loss(y, p):
    """Binary cross-entropy averaged over all (image, label) entries; probs clipped at 1e-7."""
    p = np.clip(np.asarray(p, np.float64), PROB_EPS, 1 - PROB_EPS)
    y = np.asarray(y, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


@dataclass
class FoldResult:
    """One fold of the probe: validation rows and their OOF probabilities, test probabilities,
    the C chosen per label, log losses, fit seconds."""
    fold: int
    val_rows: np.ndarray
    val_probs: np.ndarray
    test_probs: np.ndarray
    C: list
    train_loss: float
    val_loss: float
    seconds: float


def probe_folds(X, Y, folds, X_test=None, C=1.0, inner_k=3, seed=0, only=None):
    """Cross-validated linear probe: for each fold k, fit on the others, predict k and the test set.

    X: (N, D) features; Y: (N, L) 0/1; folds: (N,) fold ids 0..K-1; X_test: (T, D) or
    None; only: fold ids to run (default all). Returns a list of FoldResult.
    """
    X_test = np.zeros((0, X.shape[1]), X.dtype) if X_test is None else X_test
    t0 = time.perf_counter()
    basis = feature_basis(StandardScaler().fit_transform(X))  # the solver's coordinates, shared by the folds
    ks = sorted(set(int(f) for f in folds)) if only is None else only
    share = (time.perf_counter() - t0) / max(len(ks), 1)     # each fold's part of finding them
    results = []
    for k in ks:
        t0 = time.perf_counter() - share
        tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        (p_tr, p_va, p_te), chosen = fit_predict(X[tr], Y[tr], [X[tr], X[va], X_test], C, inner_k, seed,
                                                   basis)
        results.append(FoldResult(k, va, p_va, p_te, chosen, mean_log_loss(Y[tr], p_tr),
                                  mean_log_loss(Y[va], p_va), time.perf_counter() - t0))
        log.info("fold %d: %d train / %d val, val log loss %.4f, %.1f s", k, len(tr), len(va),
                 results[-1].val_loss, results[-1].seconds)
    return results


def f2_scores(y, probs):
    """(F2 at the fixed 0.2 threshold, F2 at greedy per-label thresholds, thresholds) of (N, L) probs."""
    thr, f2 = greedy_thresholds(y, probs)
    return fbeta_samples(y, probs >= FIXED_THRESHOLD), f2, thr


def prior_probs(Y_train, n):
    """The label-prior baseline: each label's training frequency, repeated for n images."""
    return np.tile(np.asarray(Y_train, np.float64).mean(0), (n, 1))


# ---------------------------------------------------------------------------- run directory

def write_probe_run(run_dir, config, res, names, y, labels, test_names=None, tta="none", extra_seconds=0.0):
    """Write one fold of the probe as a run directory: config.json, preds/val.<tta>.csv,
    preds/test.<tta>.csv (when there is a test set), history.csv (one row), result.json.

    config: the run's config dict; res: FoldResult; names: all training image names;
    y: (N, L) truth; labels: L names; extra_seconds: this fold's share of the feature
    extraction, added to train_seconds. Returns the result dict (also result.json).
    Files are written atomically; result.json last, so a run is finished only when complete.
    """
    run_dir = Path(run_dir)
    y_val = np.asarray(y)[res.val_rows]
    f2_fixed, f2_best, thr = f2_scores(y_val, res.val_probs)
    atomic_write_json(run_dir / "config.json", config)
    write_preds(run_dir / "preds" / f"val.{tta}.csv", [names[i] for i in res.val_rows], labels, res.val_probs)
    if test_names:
        write_preds(run_dir / "preds" / f"test.{tta}.csv", test_names, labels, res.test_probs)
    seconds = res.seconds + float(extra_seconds)
    per_label = fbeta_per_label(y_val, res.val_probs >= thr)
    row = {"stage": 1, "epoch": 1, "stage_epoch": 1, "lr": None, "size": config.get("size"), "bs": None,
           "train_loss": res.train_loss, "val_loss": res.val_loss, "val_f2": f2_best, "val_f2_at_0.2": f2_fixed,
           **{f"f2_{l}": float(v) for l, v in zip(labels, per_label)}, "seconds": seconds}
    atomic_write_csv(run_dir / "history.csv", pd.DataFrame([row]))
    result = {"finished": True, "best_val_f2": f2_best, "val_f2_at_0.2": f2_fixed, "best_epoch": 1,
              "epochs": 1, "train_seconds": seconds, "fit_seconds": res.seconds,
              "thresholds": [float(t) for t in thr], "C": res.C, "val_loss": res.val_loss,
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(run_dir / "result.json", result)
    return result
