"""Threshold search speed: the public-kernel grid search vs the exact greedy search.

Synthetic out-of-fold probabilities shaped like Planet's: 40,000 images x 17 tags with
Planet's tag frequencies (every image has a tag), calibrated and informative
probabilities (a Gaussian score per tag, turned into its exact posterior).

Methods, side by side on the same data:
- kernel grid: the public Planet kernels' search: one pass over the labels, 100 grid
  points each (0.00, 0.01, ... 0.99), ``probs > x``, one sklearn ``fbeta_score(average=
  'samples')`` call per point (1,700 calls). It takes minutes, so by default it runs
  on the first --kernel-labels labels and its time is extrapolated to all labels;
  --full runs it all.
- grid, fast metric: the same search with the vectorised metric of utils.metrics.fbeta;
  gives the kernel's thresholds and F2 for all labels (checked against the sklearn
  run on the labels that run covered).
- exact greedy: utils.metrics.threshold_search.greedy_thresholds (all cut points, passes until no gain).
- for reference, the exact global threshold and the expected-F2 decisions.
Also: best_label_fbeta for N x M candidate columns vs a per-column loop over
sklearn's precision_recall_curve.

    python bench/thresholds.py [--n 40000] [--kernel-labels 2] [--full]
"""
import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import expit, logit
from sklearn.metrics import fbeta_score, precision_recall_curve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.metrics.fbeta import fbeta_samples  # noqa: E402
from utils.metrics.threshold_search import best_label_fbeta, global_threshold, greedy_thresholds  # noqa: E402
from utils.metrics.thresholds import binarize  # noqa: E402

# Tag frequencies of Planet's train set (primary, clear, agriculture, ...).
PLANET_PREVALENCE = np.array([0.93, 0.70, 0.31, 0.20, 0.18, 0.18, 0.11, 0.09, 0.07, 0.05,
                              0.021, 0.0084, 0.0083, 0.0082, 0.0052, 0.0025, 0.0024])


def get_args_parser():
    p = argparse.ArgumentParser(description="Kernel grid threshold search vs exact greedy search.")
    p.add_argument("--n", type=int, default=40000, help="images (default 40000)")
    p.add_argument("--kernel-labels", type=int, default=2,
                   help="labels the sklearn kernel search runs on before extrapolating (default 2)")
    p.add_argument("--full", action="store_true", help="run the sklearn kernel search on all 17 labels")
    p.add_argument("--m", type=int, default=200, help="candidate columns for best_label_fbeta (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="timing repeats of the fast methods, best kept (default 3)")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    return p


def synthetic(n, seed):
    """(y uint8 (n, 17), probs float64 (n, 17)): imbalanced, calibrated, informative."""
    rng = np.random.default_rng(seed)
    prev = PLANET_PREVALENCE
    y = (rng.random((n, prev.size)) < prev).astype(np.uint8)
    y[y.sum(1) == 0, 0] = 1                               # every image has a tag
    d = np.linspace(3.0, 1.5, prev.size)                  # common tags are easier
    x = rng.normal(size=y.shape) + d * y                  # score ~ N(d * y, 1)
    return y, expit(logit(prev) + d * x - d * d / 2)       # exact posterior P(y=1 | x)


def kernel_search(y, p, labels, scorer, resolution=100):
    """The public kernels' loop: per label, the first best of a 100-point grid, others fixed."""
    x = np.full(p.shape[1], 0.2)
    for i in labels:
        best_g, best_score = 0.0, 0.0
        for g in np.arange(resolution) / resolution:
            x[i] = g
            score = scorer(y, (p > x).astype(int))
            if score > best_score:
                best_g, best_score = g, score
        x[i] = best_g
    return x


def sklearn_f2(y, pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fbeta_score(y, pred, beta=2, average="samples")


def timed(fn, repeat=1):
    """(result of the last call, best wall time of `repeat` calls in seconds)."""
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def best_label_sklearn(y, P):
    """Per-column reference: precision_recall_curve, then F2 at each of its thresholds."""
    f = np.empty(P.shape[1])
    for m in range(P.shape[1]):
        prec, rec, _ = precision_recall_curve(y, P[:, m])
        with np.errstate(invalid="ignore", divide="ignore"):
            f[m] = np.nanmax(5 * prec * rec / (4 * prec + rec))
    return f


def main(args):
    y, p = synthetic(args.n, args.seed)
    L = p.shape[1]
    k = L if args.full else min(args.kernel_labels, L)
    print(f"data: {args.n} images x {L} labels, {y.sum(1).mean():.2f} tags per image")

    thr_kernel_part, t_part = timed(lambda: kernel_search(y, p, range(k), sklearn_f2))
    t_kernel = t_part * L / k
    thr_grid, t_grid = timed(lambda: kernel_search(y, p, range(L), fbeta_samples))
    same = np.array_equal(thr_kernel_part[:k], thr_grid[:k])
    f_grid = fbeta_samples(y, p > thr_grid)
    (thr_greedy, f_greedy), t_greedy = timed(lambda: greedy_thresholds(y, p), args.repeat)
    f_fixed = fbeta_samples(y, p > 0.2)

    (t_glob, f_glob), s_glob = timed(lambda: global_threshold(y, p), args.repeat)
    f_exp, s_exp = timed(lambda: fbeta_samples(y, binarize(p, strategy="expected")), args.repeat)

    note = "measured" if k == L else f"extrapolated from {k} of {L} labels, {t_part:.1f} s"
    rows = [("kernel grid, sklearn calls *", t_kernel, f_grid),
            ("kernel grid, vectorised metric", t_grid, f_grid),
            ("exact greedy (utils.metrics.thresholds)", t_greedy, f_greedy),
            ("exact global, one threshold", s_glob, f_glob),
            ("expected F2 per image, no threshold", s_exp, f_exp)]
    print(f"fixed 0.2 thresholds: F2 {f_fixed:.5f}")
    print(f"sklearn kernel and vectorised grid chose the same thresholds on the first {k} labels: {same}")
    print(f"\n{'method':<38} {'seconds':>9} {'F2':>8} {'speed-up':>9}")
    for name, t, f in rows:
        print(f"{name:<38} {t:>9.3f} {f:>8.5f} {t_kernel / t:>8.0f}x")
    print(f"* {note}")
    print(f"exact greedy F2 - kernel grid F2 = {f_greedy - f_grid:+.5f} (in-sample)")

    rng = np.random.default_rng(args.seed + 1)
    yc = y[:, 3]
    P = np.clip(p[:, [3]] + rng.normal(0, 0.15, (args.n, args.m)), 0, 1)   # M noisy variants
    (f_fast, _), t_fast = timed(lambda: best_label_fbeta(yc, P), args.repeat)
    f_ref, t_ref = timed(lambda: best_label_sklearn(yc, P))
    print(f"\nbest_label_fbeta, N={args.n}, M={args.m}")
    print(f"{'method':<46} {'seconds':>9} {'speed-up':>9}")
    print(f"{'per column precision_recall_curve (sklearn)':<46} {t_ref:>9.3f} {1:>8.0f}x")
    print(f"{'best_label_fbeta (vectorised)':<46} {t_fast:>9.3f} {t_ref / t_fast:>8.0f}x")
    print(f"max |F2 difference| vs sklearn: {np.abs(f_fast - f_ref).max():.2e}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
