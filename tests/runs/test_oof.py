"""assemble_oof: the one out-of-fold table of runs' validation predictions, against a plain loop."""
import numpy as np
import pytest

from utils.common.errors import DataError
from utils.runs.oof import assemble_oof


def fold_parts(n=60, k=4, labels=3, seed=0):
    """A training set of n images in k folds and one run per fold: (names, fold ids, probs (n, L), parts)."""
    rng = np.random.default_rng(seed)
    names = [f"img{i:03d}" for i in range(n)]
    folds = rng.integers(0, k, n)
    probs = rng.random((n, labels))
    parts = []
    for f in rng.permutation(k):  # the runs in any order, each fold's rows shuffled as a file may hold them
        rows = rng.permutation(np.flatnonzero(folds == f))
        parts.append(([names[i] for i in rows], probs[rows]))
    return names, folds, probs, parts


def test_one_run_per_fold_puts_every_row_back_in_place():
    names, folds, probs, parts = fold_parts()
    expected = np.full_like(probs, np.nan)
    for part_names, p in parts:  # the per-fold loop the table replaces
        for name, row in zip(part_names, p):
            expected[names.index(name)] = row
    got_names, got = assemble_oof(parts, names)
    assert got_names == names and np.array_equal(got, expected) and np.array_equal(got, probs)


def test_without_names_the_rows_follow_the_runs():
    names, _, probs, parts = fold_parts(seed=1)
    got_names, got = assemble_oof(parts)
    assert got_names == [n for part_names, _ in parts for n in part_names]
    assert np.array_equal(got, np.concatenate([p for _, p in parts]))


def test_repeats_of_a_fold_are_averaged_and_missing_rows_are_nan():
    names, folds, probs, parts = fold_parts(seed=2)
    rng = np.random.default_rng(3)
    seed2 = [(n, rng.random(p.shape)) for n, p in parts[:2]]  # a second seed of two folds
    got_names, got = assemble_oof(parts[2:] + parts[:2] + seed2, names)
    sums, counts = np.zeros_like(probs), np.zeros(len(names))
    for part_names, p in parts + seed2:
        for name, row in zip(part_names, p):
            sums[names.index(name)] += row
            counts[names.index(name)] += 1
    assert np.allclose(got, sums / counts[:, None], rtol=0, atol=1e-15)

    _, partial = assemble_oof(parts[:1], names)  # one fold only: the others' rows have no prediction
    covered = np.isin(names, parts[0][0])
    assert np.isnan(partial[~covered]).all() and np.array_equal(partial[covered], probs[covered])


def test_refuses_images_not_in_the_table_and_mixed_label_counts():
    with pytest.raises(DataError, match="1 out-of-fold image.*'z'"):
        assemble_oof([(["a", "z"], np.zeros((2, 2)))], ["a", "b"])
    with pytest.raises(DataError, match="different numbers of labels"):
        assemble_oof([(["a"], np.zeros((1, 2))), (["b"], np.zeros((1, 3)))])
    with pytest.raises(DataError, match="no validation predictions"):
        assemble_oof([])
