"""Benchmark: per-label ensemble selection speed, and how it grows with models, labels and images.

A synthetic library (members = truth signal + noise shared by all members + their
own noise; 17 Planet-like labels with frequencies from 0.9 down to 0.005), measured
side by side in one run:

1. One selection step for one label (every candidate added to an ensemble of the 10 best,
   each scored by its label F2 at the best threshold):
     exact      utils.metrics.threshold_search.best_label_fbeta on the candidates' averaged columns
                (a sort per candidate: the vectorised exact search)
     histogram  utils.stack.selection.label_f2_candidates (one log-binned histogram per candidate)
     pruned     LabelScorer.best (histogram restricted to images that can matter)
2. Whole per-label selection (``select``: sorted init 3, up to 25 additions with
   replacement, patience 10; and with all 25 additions) for a grid of library sizes,
   with CPU seconds and the ratio to the smallest size.

    python bench/stack.py [--models 25 50 100 200] [--labels 4 8 17] [--images 5000 10000 20000 40000]
                          [--signal 0.5 2.0] [--quick]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from scipy.special import expit  # noqa: E402

from utils.stack.ensemble import Select  # noqa: E402
from utils.stack.selection import LabelScorer, label_f2_candidates  # noqa: E402
from utils.stack.library import Inputs  # noqa: E402
from utils.metrics.threshold_search import best_label_fbeta  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, nargs="+", default=[25, 50, 100, 200], help="library sizes (default %(default)s)")
    p.add_argument("--labels", type=int, nargs="+", default=[4, 8, 17], help="label counts (default %(default)s)")
    p.add_argument("--images", type=int, nargs="+", default=[5000, 10000, 20000, 40000],
                   help="image counts (default %(default)s)")
    p.add_argument("--signal", type=float, nargs=2, default=[0.5, 2.0],
                   help="range of the members' per-label signal strength (default %(default)s)")
    p.add_argument("--noise", type=float, nargs=2, default=[1.0, 0.6], metavar=("SHARED", "OWN"),
                   help="sd of the noise all members share and of each member's own (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic library (default 0)")
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    return p


def make_library(L, M, N, signal, shared=1.0, own=0.6, seed=0):
    """(P (L, M, N) float32, y (N, L) uint8): correlated noisy members of a Planet-like label set.

    Member m's logit for label j: s_mj (2y - 1) + shared * e_j + own * e_mj + logit(frequency),
    s_mj uniform in ``signal``, e standard normal: noise correlation shared^2 / (shared^2 + own^2).
    """
    rng = np.random.default_rng(seed)
    prev = np.geomspace(0.9, 0.005, L)
    y = (rng.random((N, L)) < prev).astype(np.uint8)
    P = np.empty((L, M, N), np.float32)
    for j in range(L):
        strength = rng.uniform(*signal, (M, 1)).astype(np.float32)
        z = (strength * (2.0 * y[:, j] - 1) + shared * rng.standard_normal(N, dtype=np.float32)
             + own * rng.standard_normal((M, N), dtype=np.float32) + np.log(prev[j] / (1 - prev[j])))
        P[j] = expit(z)
    return P, y


def timed(fn, repeats=1):
    """(result, best wall seconds, CPU seconds of that run)."""
    best = (None, np.inf, np.inf)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best[1]:
            best = (out, wall, cpu)
    return best


def step_table(P, y, label):
    """Part 1: one selection step of one label, three ways."""
    Pj, yj = P[label], y[:, label]
    M, N = Pj.shape
    sc = LabelScorer(yj, Pj)
    ind = sc.individual()
    S = Pj[np.argsort(-ind)[:10]].sum(0)
    exact, t_exact, _ = timed(lambda: best_label_fbeta(yj, ((S[None] + Pj) / 11).T.astype(np.float64))[0])
    hist, t_hist, _ = timed(lambda: label_f2_candidates(yj, Pj, S, top=11.0), 3)
    (j, f, _), t_pruned, _ = timed(lambda: sc.best(S, 10, np.arange(M), hint=ind), 3)
    print(f"\n## One selection step: {M} candidates added to the 10 best x {N} images, "
          f"label frequency {yj.mean():.3f}\n")
    print("| method | ms | ratio to exact | best F2 | max deficit vs exact |")
    print("|---|---|---|---|---|")
    print(f"| exact (best_label_fbeta) | {t_exact * 1e3:.0f} | 1.0 | {exact.max():.4f} | 0 |")
    print(f"| histogram | {t_hist * 1e3:.0f} | {t_exact / t_hist:.1f} | {hist.max():.4f} | {np.max(exact - hist):.4f} |")
    print(f"| pruned (LabelScorer.best) | {t_pruned * 1e3:.0f} | {t_exact / t_pruned:.1f} | {f:.4f} | "
          f"{exact.max() - f:.4f} |")


def select_row(P, y, L, M, N):
    """Part 2: seconds of `select` (patience 10, and all 25 additions) on the first sizes of the library."""
    labels = np.unique(np.linspace(0, P.shape[0] - 1, L).round().astype(int))
    Ps = np.ascontiguousarray(P[labels][:, :M, :N])
    inp = Inputs(Ps, np.ones((M, len(labels)), bool), [str(i) for i in range(M)], [str(i) for i in range(M)],
                 y[:N, labels], np.arange(N) % 5)
    _, wall, cpu = timed(lambda: Select().fit(inp))
    _, wall_all, cpu_all = timed(lambda: Select(patience=0).fit(inp))
    return wall, cpu, wall_all, cpu_all


def main(args):
    if args.quick:
        args.models, args.labels, args.images = [10, 20], [2, 4], [1000, 2000]
    Lmax, Mmax, Nmax = max(args.labels), max(args.models), max(args.images)
    t0 = time.perf_counter()
    P, y = make_library(max(Lmax, 17), Mmax, Nmax, args.signal, *args.noise, args.seed)
    print(f"synthetic library {P.shape[0]} labels x {Mmax} members x {Nmax} images "
          f"(signal {args.signal[0]}..{args.signal[1]}, noise shared {args.noise[0]}, own {args.noise[1]}) made in {time.perf_counter() - t0:.1f}s")
    step_table(P, y, label=min(12, P.shape[0] - 1))
    print("\n## select: one fit on all images (sorted init 3, up to 25 additions with replacement)")
    for what, sizes in (("models", [(Lmax, m, Nmax) for m in sorted(args.models)]),
                        ("labels", [(l, Mmax, Nmax) for l in sorted(args.labels)]),
                        ("images", [(Lmax, Mmax, n) for n in sorted(args.images)])):
        print(f"\nGrowing {what}:\n")
        print("| labels | models | images | seconds (patience 10) | CPU s | seconds (all 25 additions) | CPU s | "
              "CPU ratio to the first row |")
        print("|---|---|---|---|---|---|---|---|")
        base = None
        for L, M, N in sizes:
            wall, cpu, wall_all, cpu_all = select_row(P, y, L, M, N)
            base = base or cpu_all
            print(f"| {L} | {M} | {N} | {wall:.1f} | {cpu:.1f} | {wall_all:.1f} | {cpu_all:.1f} | "
                  f"{cpu_all / base:.1f} |", flush=True)

if __name__ == "__main__":
    main(get_args_parser().parse_args())
