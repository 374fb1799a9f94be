"""Which training images an epoch visits, and in what order (--sampler).

    none         every image once, shuffled
    oversample   repeat-factor sampling (Gupta et al., LVIS, CVPR 2019): image i is visited
                 r_i = max over its tags c of max(1, sqrt(t / f_c)) times on average, f_c being
                 the fraction of images tagged c (untagged images: r = 1). The fractional part
                 is rounded stochastically each epoch. Default t = 0.1: tags on fewer than 10%
                 of images are boosted (a 1% tag about 3.2x, a 0.2% tag about 7x); LVIS used
                 t = 0.001 for its ~1000 categories, far too low for 10-30 tags.
    undersample  each epoch drops `frac` (default 0.5) of the images whose tags are all
                 frequent (every tag on more than `threshold`, default 0.3, of the images);
                 untagged images and images with any rarer tag are always kept.

An epoch's list is a pure function of (labels, seed, epoch, options), so a resumed run
slices the same list where it stopped. Options come from a string: `oversample:t=0.05`.
"""
import numpy as np

from utils.common.errors import DataError
from utils.common.options import check_choice, merge_options, parse_item

SAMPLERS = ("none", "oversample", "undersample")

DEFAULTS = {
    "none": {},
    "oversample": {"t": 0.1},
    "undersample": {"frac": 0.5, "threshold": 0.3},
}


def resolve_sampler(name, **opts):
    """Parse a sampler name or spec ('oversample:t=0.05') -> (name, options with defaults).

    Raises DataError for an unknown sampler or option, or an option out of range.
    """
    name, spec_opts = parse_item(name, "--sampler")
    check_choice("sampler", name, SAMPLERS)
    opts = merge_options("sampler", name, {**spec_opts, **opts}, DEFAULTS[name])
    if name == "oversample" and not 0 < float(opts["t"]) <= 1:
        raise DataError(f"oversample t must be in (0, 1]; got {opts['t']}")
    if name == "undersample" and not (0 <= float(opts["frac"]) <= 1
                                      and 0 <= float(opts["threshold"]) <= 1):
        raise DataError(f"undersample frac and threshold must be in [0, 1]; got {opts}")
    return name, opts


def _labels(y):
    y = np.asarray(y)
    if y.ndim != 2 or len(y) == 0:
        raise DataError(f"label matrix must be (N, L) with N > 0; got shape {y.shape}")
    return y > 0.5


def repeat_factors(y, t=0.1):
    """LVIS repeat factor of every image: (N, L) 0/1 -> float64 (N,), each >= 1."""
    y = _labels(y)
    f = y.mean(axis=0)
    with np.errstate(divide="ignore"):
        r_tag = np.maximum(1.0, np.sqrt(t / f))  # f = 0 gives inf but no image carries the tag
    return np.where(y, r_tag, 1.0).max(axis=1)


def frequent_only(y, threshold=0.3):
    """Bool (N,): the image has at least one tag and every one of its tags is on more than
    `threshold` of the images."""
    y = _labels(y)
    frequent = y.mean(axis=0) > threshold
    return y.any(axis=1) & ~(y & ~frequent).any(axis=1)


def _rng(seed, epoch):
    # SeedSequence mixes (seed, epoch) so neighbouring epochs get unrelated streams
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)]))


def _draw_counts(name, y, rng, opts):
    n = len(_labels(y))
    counts = np.ones(n, dtype=np.int64)
    if name == "oversample":
        r = repeat_factors(y, float(opts["t"]))
        counts = np.floor(r).astype(np.int64) + (rng.random(n) < r - np.floor(r))
    elif name == "undersample":
        cand = np.flatnonzero(frequent_only(y, float(opts["threshold"])))
        drop = rng.choice(cand, size=int(round(float(opts["frac"]) * len(cand))), replace=False)
        counts[drop] = 0
    return counts


def visit_counts(name, y, seed, epoch, **opts):
    """How many times each image is visited in this epoch: int64 (N,), the same draw as
    epoch_indices."""
    name, opts = resolve_sampler(name, **opts)
    return _draw_counts(name, y, _rng(seed, epoch), opts)


def epoch_indices(name, y, seed, epoch, **opts):
    """The dataset indices one epoch visits, in order: int64 array.

    name: a SAMPLERS name or spec; y: (N, L) 0/1 training labels; the result depends only
    on (y, seed, epoch, options), so resuming mid-epoch can slice it.
    """
    name, opts = resolve_sampler(name, **opts)
    rng = _rng(seed, epoch)
    counts = _draw_counts(name, y, rng, opts)  # drawn first, so visit_counts sees the same draw
    return rng.permutation(np.repeat(np.arange(len(counts), dtype=np.int64), counts))


def expected_counts(name, y, **opts):
    """Expected visits of each image per epoch under the sampler: float64 (N,)."""
    name, opts = resolve_sampler(name, **opts)
    n = len(_labels(y))
    if name == "oversample":
        return repeat_factors(y, float(opts["t"]))
    if name == "undersample":
        cand = frequent_only(y, float(opts["threshold"]))
        kept = 1.0 - round(float(opts["frac"]) * cand.sum()) / max(cand.sum(), 1)
        return np.where(cand, kept, 1.0)
    return np.ones(n)


def describe_sampling(name, y, **opts):
    """JSON-ready summary for the log: sampler, options, images, expected epoch length,
    per-label frequency before and (expected) after sampling."""
    name, opts = resolve_sampler(name, **opts)
    w = expected_counts(name, y, **opts)
    yb = _labels(y).astype(np.float64)
    return {
        "sampler": name, **opts,
        "n_images": int(len(yb)),
        "expected_epoch_len": round(float(w.sum()), 2),
        "label_freq": [round(float(v), 5) for v in yb.mean(axis=0)],
        "expected_label_freq": [round(float(v), 5) for v in (w @ yb) / w.sum()],
    }


def realised_frequencies(y, indices):
    """Per-label frequency among the images an epoch visited (repeats counted): float64 (L,)."""
    return _labels(y)[np.asarray(indices)].mean(axis=0)
