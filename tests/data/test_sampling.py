import json

import numpy as np
import pytest

from utils.common.errors import DataError
from utils.data.sampling import (SAMPLERS, describe_sampling, epoch_indices, frequent_only,
                            realised_frequencies, repeat_factors, visit_counts)


@pytest.fixture
def y():
    """400 images: tag 0 on 90%, tag 1 on 50%, tag 2 on 2%, tag 3 on 0.5%, some untagged."""
    rng = np.random.default_rng(1)
    y = np.zeros((400, 4), dtype=np.int64)
    y[:360, 0] = 1
    y[rng.permutation(400)[:200], 1] = 1
    y[rng.permutation(400)[:8], 2] = 1
    y[rng.permutation(400)[:2], 3] = 1
    y[-10:] = 0
    return y


@pytest.mark.parametrize("name", SAMPLERS)
def test_pure_function_of_seed_and_epoch(name, y):
    a = epoch_indices(name, y, seed=3, epoch=5)
    assert np.array_equal(a, epoch_indices(name, y, seed=3, epoch=5))
    assert not np.array_equal(a, epoch_indices(name, y, seed=3, epoch=6))
    assert not np.array_equal(a, epoch_indices(name, y, seed=4, epoch=5))
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < len(y)
    assert np.array_equal(np.bincount(a, minlength=len(y)), visit_counts(name, y, 3, 5))


def test_none_is_a_permutation(y):
    a = epoch_indices("none", y, seed=0, epoch=0)
    assert np.array_equal(np.sort(a), np.arange(len(y)))
    assert not np.array_equal(a, np.arange(len(y)))


def test_repeat_factors_match_lvis_formula(y):
    t = 0.1
    f = y.mean(axis=0)
    r = repeat_factors(y, t)
    for i in range(len(y)):  # per-image loop as the reference
        tags = np.flatnonzero(y[i])
        want = max([max(1.0, np.sqrt(t / f[c])) for c in tags], default=1.0)
        assert r[i] == pytest.approx(want)


def test_oversample_realised_frequencies_match_expectation(y):
    r = repeat_factors(y, 0.1)
    expected = (r @ y) / r.sum()
    counts = sum(np.bincount(epoch_indices("oversample", y, 0, e), minlength=len(y))
                 for e in range(200))
    realised = (counts @ y) / counts.sum()
    assert realised == pytest.approx(expected, abs=0.01)
    assert np.mean(counts / 200) == pytest.approx(r.mean(), rel=0.01)
    f = y.mean(axis=0)
    assert realised[3] > 2 * f[3] and realised[2] > 1.5 * f[2]  # rare tags move up
    info = describe_sampling("oversample:t=0.1", y)
    assert info["expected_label_freq"] == pytest.approx(expected, abs=1e-4)
    assert info["expected_epoch_len"] == pytest.approx(r.sum(), abs=0.01)
    json.dumps(info)


def test_oversample_stochastic_rounding_stays_within_floor_ceil(y):
    r = repeat_factors(y, 0.5)
    c = visit_counts("oversample", y, 1, 2, t=0.5)
    assert np.all((c == np.floor(r)) | (c == np.ceil(r)))


def test_undersample_drops_only_all_frequent_images(y):
    cand = frequent_only(y, 0.3)
    for i in range(len(y)):  # reference: tagged, and every tag on > 30% of images
        tags = np.flatnonzero(y[i])
        assert cand[i] == (len(tags) > 0 and all(y[:, c].mean() > 0.3 for c in tags))
    a = epoch_indices("undersample", y, seed=0, epoch=0)
    counts = np.bincount(a, minlength=len(y))
    assert counts.max() == 1
    assert np.all(counts[~cand] == 1)
    assert (counts[cand] == 0).sum() == round(0.5 * cand.sum())
    b = epoch_indices("undersample", y, seed=0, epoch=1)
    assert set(a) != set(b)  # a fresh draw every epoch
    freq = realised_frequencies(y, a)
    assert freq[2] > y[:, 2].mean() and freq[3] > y[:, 3].mean()
    info = describe_sampling("undersample", y)
    assert info["expected_epoch_len"] == len(a)
    mean_freq = np.mean([realised_frequencies(y, epoch_indices("undersample", y, 0, e))
                         for e in range(100)], axis=0)
    assert info["expected_label_freq"] == pytest.approx(mean_freq, abs=0.005)


def test_errors(y):
    with pytest.raises(DataError, match="none, oversample, undersample"):
        epoch_indices("smote", y, 0, 0)
    with pytest.raises(DataError, match="threshold"):
        epoch_indices("undersample:thresh=0.2", y, 0, 0)
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        epoch_indices("oversample:t=0", y, 0, 0)
