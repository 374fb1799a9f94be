"""The budget planner's data-dependent rates, measured on this dataset and this machine.

Every term of the cost model (utils/grid/budget_costs.py) that grows with the data is a rate
times a size. The speed probe (utils/grid/budget_probe.py) measures the networks' images/s;
this module measures the rest, each in a few seconds:

- `decode_rate`: images/s decoding this dataset's own files into the uint8 cache at a size
  (a sample of the real files, times the cache's decoding workers);
- `probe_fit_rate`: one fold of the linear probe's logistic regressions (utils.analysis.probe.
  fit_predict, every label in one solve), timed once with the real label count and feature
  width on up to the fold's rows, scaled to them;
- `stack_rate`: stack.py's cross-fitting per member x label, a cost of its own plus a rate per
  image (utils.stack.evaluation.evaluate on libraries of two members at two sizes).

Nothing here is tuned to any dataset: a rate measured on a subsample is scaled by the
sizes of the work it stands for, and the planner corrects it per kind of job once jobs of
that kind have finished (utils.grid.budget.corrections).
"""
import time

import numpy as np

from utils.data.cache import decode_image, default_workers

FIT_ROWS_PER_FEATURE = 2   # the probe's fit is timed on up to 2 x features rows: fewer rows than features
                           # are separable, where lbfgs takes many times the steps real data needs
STACK_ROWS = (150, 1200)  # stack.py's methods are timed at these numbers of images (at most n_train) ...
STACK_LABELS = 3     # ... and this many labels (every method works label by label, so it scales by L)
DECODE_FILES = 16    # real files decoded to time the cache


def decode_rate(files, size, channels=3, n=DECODE_FILES, workers=None):
    """Images/s of decoding `files` into the cache at `size` px: `n` of them (evenly spaced
    through the list, so every folder and format is sampled) decoded in this process, times
    the decoding workers the cache uses (utils.data.cache.default_workers). Returns inf for
    an empty list. A file that fails to decode raises what decode_image raises."""
    if not len(files):
        return float("inf")
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(n, len(files))).round().astype(int)]
    decode_image(pick[0], size, channels)  # the decoder's own first-call set-up is not a per-image cost
    t0 = time.perf_counter()
    for f in pick:
        decode_image(f, size, channels)
    per_image = (time.perf_counter() - t0) / len(pick)
    return (workers or default_workers()) / max(per_image, 1e-6)


def synthetic_problem(n, n_features, n_labels, seed=0):
    """A logistic problem of the probe's shape: X (n, n_features) float32 standard normal,
    Y (n, n_labels) uint8 from a sparse linear model whose label prevalences spread from
    about 3% to 50% (imbalanced, as competition tags are)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    W = rng.standard_normal((n_features, n_labels)) * (rng.random((n_features, n_labels)) < 0.05)
    score = X @ W / np.sqrt(max(1.0, (W != 0).sum(0).mean())) + 0.7 * rng.standard_normal((n, n_labels))
    prevalence = np.linspace(0.03, 0.5, n_labels)
    cut = np.array([np.quantile(score[:, j], 1 - prevalence[j]) for j in range(n_labels)])
    Y = (score > cut).astype(np.uint8)
    return X, Y


def probe_fit_rate(n_fold_train, n_features, n_labels, C=1.0):
    """One fold of the linear probe's logistic regressions (its `fit_predict`: every label in one
    solve, prediction of the fold's training rows included) as (seconds per fold, seconds per
    training image x label): timed once on min(n_fold_train, FIT_ROWS_PER_FEATURE x n_features)
    rows x all n_labels labels of a synthetic problem with the real feature width, the labels'
    count as it is (the solve is joint, so its cost is not a sum over labels), scaled to the
    fold's rows."""
    from utils.analysis.probe import fit_predict

    n = max(50, min(n_fold_train, FIT_ROWS_PER_FEATURE * n_features))
    X, Y = synthetic_problem(n, n_features, n_labels)
    t0 = time.perf_counter()
    fit_predict(X, Y, [X, X[: n // 4]], C)
    return 0.0, (time.perf_counter() - t0) / (n * n_labels)


def stack_rate(n_train, n_labels, folds_k, methods, seed=0):
    """stack.py's cost per member x label as (seconds, seconds per image): the methods
    (stack.py --method names, cross-fitted over folds_k folds) and each member's own score,
    timed on libraries of two members with STACK_LABELS labels at two numbers of images (the
    per-label fits have a cost of their own besides the one that grows with the images, so one
    size cannot tell the two apart). OOF probabilities carry the truth plus noise, as a
    trained model's do."""
    from utils.stack.evaluation import evaluate, member_scores
    from utils.stack.library import Library

    rng = np.random.default_rng(seed)
    labels = max(1, min(n_labels, STACK_LABELS))
    sizes = sorted({max(6 * folds_k, min(n_train, n)) for n in STACK_ROWS})
    times = []
    for n in sizes:
        y = (rng.random((n, labels)) < np.linspace(0.05, 0.5, labels)).astype(np.uint8)
        y[: 2 * folds_k] = 1  # every label has positives in every fold
        oof = np.clip(y.T[:, None, :] * 0.5 + rng.random((labels, 2, n)) * 0.6, 0, 1)
        lib = Library.from_arrays(oof, y, np.arange(n) % folds_k)
        t0 = time.perf_counter()
        member_scores(lib)
        evaluate(lib, list(methods), seed=seed)
        times.append((time.perf_counter() - t0) / (2 * labels))
    if len(sizes) == 1:
        return 0.0, times[0] / sizes[0]
    per_image = max(0.0, (times[1] - times[0]) / (sizes[1] - sizes[0]))
    return max(0.0, times[0] - per_image * sizes[0]), per_image
