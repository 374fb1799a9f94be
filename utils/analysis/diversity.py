"""Diversity of models: pairwise agreement of their decisions and correlation of their
probabilities on a common (image, label) grid, and a clustering order for heatmaps
(tools/correlation.py, the report).
"""
import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform


def stack_matrix(oofs, thresholds, label=None):
    """Decisions and probabilities of several OOFs on a common grid.

    oofs: {name: OOF}; thresholds: {name: (L,) thresholds}; label: one label or None.
    Rows are models, columns the (image, label) cells of the union of images and labels
    (only `label` if given). Returns (D, P): float64 (M, K) with 0/1 decisions and
    probabilities, NaN where a model has no prediction for the cell.
    """
    names = list(dict.fromkeys(n for o in oofs.values() for n in o.names))
    labels = [label] if label else list(dict.fromkeys(lab for o in oofs.values() for lab in o.labels))
    row = {n: i for i, n in enumerate(names)}
    M, N, L = len(oofs), len(names), len(labels)
    D = np.full((M, N, L), np.nan)
    P = np.full((M, N, L), np.nan)
    for m, (key, o) in enumerate(oofs.items()):
        rows = np.array([row[n] for n in o.names])
        for j, lab in enumerate(labels):
            if lab in o.labels:
                c = o.labels.index(lab)
                P[m, rows, j] = o.probs[:, c]
                D[m, rows, j] = o.probs[:, c] >= thresholds[key][c]
    return D.reshape(M, -1), P.reshape(M, -1)


def pairwise_agreement(D):
    """(M, M) fraction of equal decisions between rows of D (M, K) 0/1 with NaN gaps,
    over the cells both rows have; NaN for pairs with no common cell."""
    V = (~np.isnan(D)).astype(np.float64)
    X = np.nan_to_num(D)
    equal = (X * V) @ (X * V).T + ((1 - X) * V) @ ((1 - X) * V).T
    n = V @ V.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, equal / n, np.nan)


def pairwise_pearson(P):
    """(M, M) Pearson correlation between rows of P (M, K) over the cells both rows have
    (NaN = missing); NaN for pairs with fewer than two common cells or a constant row."""
    V = (~np.isnan(P)).astype(np.float64)
    X = np.nan_to_num(P)
    n = V @ V.T
    sx = X @ V.T                       # sum of x over cells the other row also has
    sxx = (X * X) @ V.T
    sxy = X @ X.T
    cov = n * sxy - sx * sx.T
    var_x, var_y = n * sxx - sx ** 2, (n * sxx - sx ** 2).T
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_x * var_y)
    ok = (n >= 2) & (var_x > 1e-12 * n * n) & (var_y > 1e-12 * n * n)
    return np.where(ok, np.clip(r, -1, 1), np.nan)


def cluster_order(similarity):
    """Leaf order of average-linkage clustering on distance 1 - similarity (NaN: 1)."""
    m = len(similarity)
    if m < 3:
        return np.arange(m)
    dist = 1.0 - np.nan_to_num(np.asarray(similarity, dtype=np.float64), nan=0.0)
    dist = np.clip((dist + dist.T) / 2, 0, None)
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def ranked_pairs(matrix, names, other=None):
    """Every pair i < j with a value, most similar first: list of (a, b, value, other value)."""
    m = len(names)
    out = [(names[i], names[j], float(matrix[i, j]), None if other is None else float(other[i, j]))
           for i in range(m) for j in range(i + 1, m) if np.isfinite(matrix[i, j])]
    return sorted(out, key=lambda t: -t[2])


def similar_pairs(matrix, names, top, other=None):
    """The `top` most similar pairs (highest value first) and the `top` least similar
    (lowest first) of an (M, M) similarity matrix, as ranked_pairs tuples.

    With two pairs or more the lists share no pair: with fewer than 2 * top pairs the most
    similar list takes the upper half (rounded up) and the least similar the rest. A single
    pair (two models) is both the most and the least similar: each list holds it.
    """
    pairs = ranked_pairs(matrix, names, other)
    if len(pairs) == 1:
        return pairs, pairs
    n_most = min(top, (len(pairs) + 1) // 2)
    n_least = min(top, len(pairs) - n_most)
    return pairs[:n_most], pairs[::-1][:n_least]
