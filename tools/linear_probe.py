"""Linear probe baseline: frozen ImageNet features + logistic regression per label, every fold.

    python tools/linear_probe.py --data data/planet --arch tf_efficientnet_lite0 --size 224
    python tools/linear_probe.py --data data/planet --arch resnet50 --C auto --tta hflip --out runs

Pooled features of the train and test images are computed once (cached next to the
uint8 image cache) and standardised per fold; one logistic regression per label is
fitted on K-1 folds and predicts the held-out fold (out-of-fold) and the test set.
Each fold becomes a run directory OUT/<name>-f<k>/ (config.json, preds/val.<tta>.csv,
preds/test.<tta>.csv, history.csv, result.json), so the leaderboard and stack.py read
the probe like any trained model. Rerunning overwrites those runs.
"""
import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(REPO))

from utils.common.errors import DataError  # noqa: E402
from utils.common.cli import add_cache_argument, pick_device, run_script  # noqa: E402

log = logging.getLogger("linear_probe")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="dataset directory in the Planet layout")
    g.add_argument("--images", default="train", help="image folder (variant) inside --data (default: train)")
    g.add_argument("--test-images", default="test", help="test image folder inside --data (default: test)")
    g.add_argument("--folds-k", type=int, default=None,
                   help="number of folds when folds.csv is created; an existing folds file's own K is used "
                   "unless this is given, and must then agree with it (default: 5)")
    g.add_argument("--folds-seed", type=int, default=42, help="seed of the fold split (default: 42)")
    g.add_argument("--folds-file", default=None, help="folds file (default: DATA/folds.csv)")
    add_cache_argument(g, "image and feature cache")
    g.add_argument("--channels", type=int, default=3, help="image bands the network sees (first N; 16-bit data "
                   "scaled by its 1st-99th percentiles on the training images, see train.py) (default: 3)")
    g = p.add_argument_group("features")
    g.add_argument("--arch", default="tf_efficientnet_lite0", help="torchvision or timm model name "
                                                                   "(default: tf_efficientnet_lite0)")
    g.add_argument("--size", type=int, default=224, help="image side in px (default: 224)")
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="ImageNet weights from local files (default: on; --no-pretrained for random weights)")
    g.add_argument("--tta", default="none", choices=["none", "hflip"],
                   help="none, or hflip: average the features of each image and its mirror (default: none)")
    g.add_argument("--bs", type=int, default=64, help="feature extraction batch size (default: 64)")
    g.add_argument("--workers", type=int, default=1, help="data loader workers (default: 1)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    g.add_argument("--amp", default="auto", choices=["auto", "off", "bf16"],
                   help="precision of the feature extraction: auto = on CPU fp32 or bf16 autocast, whichever is "
                   "faster on this machine (bf16 only where the CPU computes it natively; measured once, cached), "
                   "on CUDA fp32; off = fp32 (default: auto)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format; --no-channels-last: contiguous (default: auto = measured "
                   "with --amp on CPU, off on CUDA)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    g = p.add_argument_group("logistic regression")
    g.add_argument("--C", default="1.0", help="inverse regularisation strength, a positive number, or 'auto': "
                                              "chosen per label by inner CV on the training folds (default: 1.0)")
    g.add_argument("--inner-k", type=int, default=3, help="inner CV folds for --C auto (default: 3)")
    g.add_argument("--seed", type=int, default=0, help="seed of the inner CV split (default: 0)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=str(REPO / "runs"), help="folder of runs (default: runs/ in the repository)")
    g.add_argument("--name", default=None, help="run name prefix; runs are NAME-f<k> "
                                                "(default: <arch>[-<images>]-linear[-<tta>])")
    return p


def parse_c(text):
    """--C value: 'auto' or a positive float; DataError otherwise."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        c = float(text)
    except ValueError:
        c = -1.0
    if not c > 0 or not np.isfinite(c):
        raise DataError(f"--C {text!r}: expected a positive number or 'auto'")
    return c


def run_prefix(args):
    """Run name prefix: --name, else <arch>[-<images>]-linear[-<tta>]."""
    if args.name:
        return args.name
    parts = [args.arch.replace(":", "_")] + ([args.images] if args.images != "train" else []) + ["linear"]
    return "-".join(parts + ([args.tta] if args.tta != "none" else []))


def build_config(args, spec, C, run_dir, root, folds_file, fold, meta):
    """The config.json of one fold's run (the keys train.py writes, with the probe as its stage).

    meta: the feature info of utils.analysis.probe.cached_features (weights, mean, std)."""
    import sklearn
    import torch

    from utils.common.paths import portable
    from utils.runs.directory import model_key
    from utils.runs.fingerprint import dataset_fingerprint

    rel, absolute = portable(root, run_dir)
    cfg = {"name": run_dir.name, "arch": args.arch, "fold": fold, "seed": args.seed,
           "labels": list(spec.labels), "all_labels": list(spec.labels), "label_group": None,
           "images": args.images, "test_images": args.test_images, "data_root": rel, "data_root_abs": absolute,
           "folds_file": portable(folds_file, root)[0] or str(Path(folds_file).resolve()),
           "folds_k": args.folds_k, "folds_seed": args.folds_seed, "pretrained": args.pretrained,
           "size": args.size, "tta": args.tta,
           "stages": [{"probe": "logreg", "C": C, "inner_k": args.inner_k if C == "auto" else None,
                       "size": args.size, "tta": args.tta, "features": "pooled"}],
           "loss_spec": "logreg", "sampler": "none", "aug": "none",
           "channels": args.channels, "band_scaling": meta.get("band_scaling"),
           "mean": list(meta["mean"]), "std": list(meta["std"]), "weights": meta["weights"],
           "fast_path": meta.get("fast_path", "fp32 contiguous"),
           "dataset": dataset_fingerprint(root, folds_file=folds_file),  # what the run is trained on
           "argv": sys.argv[1:], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "versions": {"python": platform.python_version(), "torch": torch.__version__,
                        "sklearn": sklearn.__version__}}
    cfg["model_key"] = model_key(cfg)
    return cfg


def main(args):
    import torch

    from utils.data.bands import fit_band_scaling
    from utils.data.cache import default_cache_dir
    from utils.data.dataset import load_dataset
    from utils.data.folds import folds_k_for, load_or_make_folds
    from utils.analysis.probe import (cached_features, f2_scores, feature_setting, prior_probs, probe_folds,
                                      write_probe_run)
    from utils.metrics.thresholds import cross_fit
    from utils.runs.oof import assemble_oof

    t0 = time.perf_counter()
    C = parse_c(args.C)
    if args.inner_k < 2:
        raise DataError(f"--inner-k {args.inner_k}: need at least 2")
    if args.size < 8:
        raise DataError(f"--size {args.size}: too small (at least 8 px)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    root = Path(args.data)
    if args.channels < 1:
        raise DataError(f"--channels {args.channels}: must be at least 1")
    spec = load_dataset(root, args.images, args.test_images, channels=args.channels)
    folds_file = Path(args.folds_file) if args.folds_file else root / "folds.csv"
    args.folds_k = folds_k_for(folds_file, args.folds_k or 5, args.folds_k is not None)
    folds = load_or_make_folds(spec, args.folds_k, args.folds_seed, folds_file)
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(root)
    scaling = fit_band_scaling(spec.files, args.channels)
    setting, how = feature_setting(args.arch, args.size, args.amp, args.channels_last, args.pretrained, args.tta,
                                   args.bs, device, args.channels)
    log.info("features in %s (%s)", setting.name, how)
    kw = dict(size=args.size, cache_dir=cache_dir, arch=args.arch, pretrained=args.pretrained, tta=args.tta,
              bs=args.bs, device=device, workers=args.workers, channels=args.channels, scaling=scaling,
              setting=setting)
    X, info = cached_features(spec.files, desc=args.images, **kw)
    info["band_scaling"] = scaling
    X_test, info_test = (cached_features(spec.test_files, desc=args.test_images, **kw) if spec.test_files
                         else (None, {"seconds": 0.0}))
    feature_s = info["seconds"] + info_test["seconds"]
    log.info("features: train %s, test %s (%s, %.0f s to extract)", X.shape,
             None if X_test is None else X_test.shape, "cached" if info["cached"] else "new", feature_s)

    results = probe_folds(X, spec.y, folds, X_test, C, args.inner_k, args.seed)
    out, prefix = Path(args.out), run_prefix(args)
    parts = []  # each fold's validation probabilities, one table below (utils.runs.oof)
    print(f"{'fold':>4}  {'n_val':>5}  {'F2@0.2':>7}  {'F2 greedy':>9}  {'prior F2':>8}  seconds")
    for res in results:
        run_dir = out / f"{prefix}-f{res.fold}"
        cfg = build_config(args, spec, C, run_dir, root, folds_file, res.fold, info)
        result = write_probe_run(run_dir, cfg, res, spec.names, spec.y, spec.labels, spec.test_names, args.tta,
                                 extra_seconds=feature_s / len(results))
        parts.append(([spec.names[i] for i in res.val_rows], res.val_probs))
        train = folds != res.fold
        prior = f2_scores(spec.y[res.val_rows], prior_probs(spec.y[train], len(res.val_rows)))[1]
        print(f"{res.fold:>4}  {len(res.val_rows):>5}  {result['val_f2_at_0.2']:7.4f}  {result['best_val_f2']:9.4f}"
              f"  {prior:8.4f}  {result['train_seconds']:.1f}")
    oof = assemble_oof(parts, spec.names)[1]
    f2_fixed, f2_best, _ = f2_scores(spec.y, oof)
    honest = cross_fit(spec.y, oof, folds, "greedy")
    print(f"OOF   {len(oof):>5}  {f2_fixed:7.4f}  {f2_best:9.4f}  (greedy thresholds fitted on all OOF rows)")
    print(f"OOF F2 with greedy thresholds cross-fitted (fitted on the other folds): "
          f"{honest['mean']:.4f} +- {honest['std']:.4f} over folds, pooled {honest['f2_pooled']:.4f}")
    print(f"features {X.shape[1]}-d from {args.arch} at {args.size}px ({info.get('fast_path', 'fp32 contiguous')}), "
          f"tta {args.tta}, C {C}; "
          f"wall {time.perf_counter() - t0:.0f} s (feature extraction {feature_s:.0f} s"
          f"{', cached' if info['cached'] else ''})")
    print(f"runs: {out / (prefix + '-f*')}")
    return {"oof_f2_at_0.2": f2_fixed, "oof_f2": f2_best, "oof_f2_cross_fitted": honest["f2_pooled"],
            "folds": [r.fold for r in results]}


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
