"""Linear probe fits: scikit-learn per label vs every label in one L-BFGS solve.

The probe's logistic regressions on frozen features, every fold of a K-fold split, fitted
two ways side by side (alternating which goes first per fold):
- sklearn per label: one LogisticRegression(C, lbfgs, max_iter 2000) per label, or
  LogisticRegressionCV over the probe's C grid with --C auto (what the probe did before);
- joint: utils.analysis.probe.fit_predict (every label in one torch L-BFGS solve).
Each row reports the seconds of the fits of every fold, the speed-up, the cross-fitted F2 of the
out-of-fold probabilities (greedy thresholds fitted on the other folds) of both, and the
largest difference of an out-of-fold probability.

Cases: a synthetic one with structure (non-negative features driven by latent factors whose
variances fall as a power law, as pooled CNN features are; tags from those factors with
prevalences from 1% to 90%), and optionally a dataset's real features (--data: the probe's
feature cache of --arch at --size, computed when missing).

    python bench/probe_fit.py                                   # synthetic 6,000 x 1,280 x 25, 5 folds
    python bench/probe_fit.py --data data/mosaic24 --size 128   # + that dataset's Lite0 features
    python bench/probe_fit.py --synthetic 2000,256,10 --C auto
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.analysis.probe import C_GRID, FALLBACK_C, fit_predict  # noqa: E402
from utils.metrics.thresholds import cross_fit  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description="Linear probe fits: sklearn per label vs one joint solve.")
    p.add_argument("--synthetic", default="6000,1280,25", help="N,F,L of the synthetic case; 'none' to skip "
                                                                "(default 6000,1280,25)")
    p.add_argument("--data", nargs="*", default=[], help="datasets whose probe features are a case (default none)")
    p.add_argument("--arch", default="tf_efficientnet_lite0", help="feature network (default tf_efficientnet_lite0)")
    p.add_argument("--size", type=int, default=224, help="feature image side in px (default 224)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: the dataset's image cache)")
    p.add_argument("--folds", type=int, default=5, help="folds K (default 5)")
    p.add_argument("--C", default="1.0", help="a positive number or auto (default 1.0)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default 0 = torch's choice)")
    return p


def synthetic(n, f, labels, seed=0, rank=128):
    """(X float32 (n, f) >= 0, Y uint8 (n, labels)): features of power-law latent factors, tags from them."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, rank)) * np.arange(1, rank + 1) ** -0.7
    X = np.maximum(latent @ rng.normal(size=(rank, f)) + 0.3 * rng.normal(size=(n, f)) - 0.5, 0)
    score = latent[:, :32] @ rng.normal(size=(32, labels)) + 0.3 * rng.normal(size=(n, labels))
    prevalence = np.geomspace(0.9, 0.01, labels)
    cut = np.array([np.quantile(score[:, j], 1 - prevalence[j]) for j in range(labels)])
    return X.astype(np.float32), (score > cut).astype(np.uint8)


def dataset_case(root, args):
    """(X, Y, folds) of a dataset: the probe's cached features, train.csv's tags, its folds.csv."""
    from utils.analysis.probe import cached_features
    from utils.data.cache import default_cache_dir
    from utils.data.dataset import load_dataset
    from utils.data.folds import load_or_make_folds

    spec = load_dataset(Path(root), "train", "test")
    folds = load_or_make_folds(spec, args.folds, 42, Path(root) / "folds.csv")
    X, _ = cached_features(spec.files, args.size, args.cache_dir or default_cache_dir(Path(root)), args.arch,
                           desc="train")
    return X, spec.y, folds


def sklearn_fit_predict(X_train, Y_train, X_eval, C):
    """The per-label scikit-learn fits the probe made before (standardised, one model per label)."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X_train)
    Xs, Xe = scaler.transform(X_train), scaler.transform(X_eval)
    out = np.empty((len(X_eval), Y_train.shape[1]))
    for j in range(Y_train.shape[1]):
        y = Y_train[:, j].astype(np.int64)
        minority = int(min(y.sum(), len(y) - y.sum()))
        if minority == 0:
            out[:, j] = float(y[0])
            continue
        if C != "auto" or minority < 2:
            clf = LogisticRegression(C=FALLBACK_C if C == "auto" else C, max_iter=2000)
        else:
            cv = StratifiedKFold(n_splits=min(3, minority), shuffle=True, random_state=0)
            clf = LogisticRegressionCV(Cs=list(C_GRID), cv=cv, scoring="neg_log_loss", l1_ratios=(0.0,),
                                       max_iter=2000, use_legacy_attributes=False)
        out[:, j] = clf.fit(Xs, y).predict_proba(Xe)[:, 1]
    return out


def compare(name, X, Y, folds, C):
    """One row: both methods over every fold, side by side."""
    oof = {"sklearn": np.zeros(Y.shape), "joint": np.zeros(Y.shape)}
    seconds = {"sklearn": 0.0, "joint": 0.0}
    fits = {"sklearn": lambda tr, va: sklearn_fit_predict(X[tr], Y[tr], X[va], C),
            "joint": lambda tr, va: fit_predict(X[tr], Y[tr], [X[va]], C)[0][0]}
    for k in np.unique(folds):
        tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        for method in (("sklearn", "joint") if k % 2 == 0 else ("joint", "sklearn")):
            t0 = time.perf_counter()
            oof[method][va] = fits[method](tr, va)
            seconds[method] += time.perf_counter() - t0
    f2 = {m: cross_fit(Y, p, folds, "greedy")["f2_pooled"] for m, p in oof.items()}
    n, f = X.shape
    print(f"| {name} | {n} x {f} x {Y.shape[1]} x {len(np.unique(folds))} | {seconds['sklearn']:.1f} | "
          f"{seconds['joint']:.1f} | {seconds['sklearn'] / seconds['joint']:.1f}x | {f2['sklearn']:.4f} | "
          f"{f2['joint']:.4f} | {f2['joint'] - f2['sklearn']:+.4f} | {np.abs(oof['joint'] - oof['sklearn']).max():.3f} |",
          flush=True)


def main(args):
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    C = "auto" if args.C == "auto" else float(args.C)
    warnings.filterwarnings("ignore", message=".*(lbfgs failed to converge|max_iter).*")
    print(f"C {C}; torch threads {torch.get_num_threads()}; seconds: every fold's fits (standardising included)")
    print("| case | N x F x L x K | sklearn per label s | joint s | speed-up | F2 sklearn | F2 joint | F2 diff "
          "| max prob diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    if args.synthetic != "none":
        n, f, labels = (int(v) for v in args.synthetic.split(","))
        X, Y = synthetic(n, f, labels)
        compare("synthetic", X, Y, np.arange(n) % args.folds, C)
    for root in args.data:
        X, Y, folds = dataset_case(root, args)
        compare(f"{Path(root).name} {args.arch} {args.size}px", X, Y, folds, C)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
