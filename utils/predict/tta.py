"""Test-time augmentation: named view sets, batched prediction, merging on probabilities.

A TTA variant turns a batch of normalised images x (B, C, S, S) into V views of it
(C bands: every view is geometric, so any number of bands works);
the network sees every view, the sigmoid turns logits into probabilities, and the V
probabilities of each image are merged into one row. Variants (`TTA_NAMES`):

  none         1 view: the image itself
  hflip        2 views: image, left-right mirror
  vflip        2 views: image, up-down mirror
  d4           8 views: the dihedral group (4 rotations by 90 degrees, each with and
               without a left-right mirror)
  5crop        5 views: the four corner crops and the centre crop, each of side
               c = round(crop_frac * S) (7/8 by default, as in the AlexNet/ResNet
               test-time protocol); the centre crop starts at (S - c) // 2
  10crop       10 views: 5crop plus the left-right mirror of each crop
  10crop+full  12 views: 10crop plus the full image and its mirror
  multiscale   3 views: the image resized to round(f * S) for f in 0.875, 1, 1.125
               (S=128: 112/128/144, S=224: 196/224/252, S=256: 224/256/288). Sizes
               are exact, not rounded to a multiple of 32: networks that end in
               global pooling accept any size, and rounding would change the scales.

Crops are resized back to S by default (bilinear, antialiased): the image cache
holds images at the training size S, so the papers' "crop at the network input
size" becomes "crop 7/8 of the cached image and feed it at the training size".
`crop_resize=False` keeps the crops at side c (what ttach does).

Merging happens on probabilities, after the sigmoid (`MERGES`): mean, gmean
(geometric mean), max, tsharpen (mean of p**0.5, ttach's "temperature sharpen";
its output is not on the probability scale, so fit thresholds on predictions made
with the same merge).

`predict_tta` sends the views of a batch through the network together (at most
`max_views_per_forward` views per forward; all by default), making the views lazily
so only one forward's worth exists at a time; `predict_tta_loop` is the plain
reference, one forward per view.
"""
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from utils.common.errors import DataError
from utils.predict.tta_views import CROP_FRAC, MERGES, TTA_NAMES, TTA_VIEWS  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

MULTISCALE_FACTORS = (0.875, 1.0, 1.125)
TSHARPEN_T = 0.5


def check_tta(name):
    """Return `name` if it is a known TTA variant, else raise DataError listing them."""
    if name not in TTA_NAMES:
        raise DataError(f"unknown TTA {name!r}; choose one of: {', '.join(TTA_NAMES)}")
    return name


def check_merge(merge):
    """Return `merge` if it is a known merge, else raise DataError listing them."""
    if merge not in MERGES:
        raise DataError(f"unknown TTA merge {merge!r}; choose one of: {', '.join(MERGES)}")
    return merge


# ---------------------------------------------------------------- views

def _hflip(x):
    return x.flip(-1)


def _vflip(x):
    return x.flip(-2)


def _rot(k):
    return lambda x: torch.rot90(x, k, dims=(-2, -1))


def _then(f, g):
    """Compose: apply f, then g."""
    return lambda x: g(f(x))


def _resize(x, side):
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False,
                         antialias=True)


def crop_side(size, crop_frac=CROP_FRAC):
    """Side in pixels of a 5crop/10crop crop of an image of side `size`: round(frac * size)."""
    if not 0 < crop_frac <= 1:
        raise ValueError(f"crop_frac must be in (0, 1], got {crop_frac}")
    return max(1, int(size * crop_frac + 0.5))


def multiscale_sizes(size, factors=MULTISCALE_FACTORS):
    """Sides of the multiscale views of an image of side `size`: round(f * size), deduplicated."""
    sides = [max(1, int(size * f + 0.5)) for f in factors]
    return list(dict.fromkeys(sides))


def _five_crops(size, crop_frac, resize):
    """Functions cutting the 4 corner crops and the centre crop (top-left, top-right,
    bottom-left, bottom-right, centre), resized back to `size` when `resize`."""
    c = crop_side(size, crop_frac)
    m = (size - c) // 2
    corners = [(0, 0), (0, size - c), (size - c, 0), (size - c, size - c), (m, m)]
    out_side = size if resize else c

    def crop(top, left):
        return lambda x: _resize(x[..., top:top + c, left:left + c], out_side)
    return [crop(t, l) for t, l in corners]


def view_fns(name, size, crop_frac=CROP_FRAC, crop_resize=True):
    """The per-view functions of TTA `name` for images of side `size`.

    Returns a list of callables, each mapping a (B, C, size, size) tensor to one view
    (B, C, s, s). Order: identity (or the first crop) first.
    """
    check_tta(name)
    identity = lambda x: x  # noqa: E731
    if name == "none":
        return [identity]
    if name == "hflip":
        return [identity, _hflip]
    if name == "vflip":
        return [identity, _vflip]
    if name == "d4":
        rots = [_rot(k) for k in range(4)]
        return rots + [_then(_hflip, r) for r in rots]
    if name == "multiscale":
        return [(lambda x, s=s: _resize(x, s)) for s in multiscale_sizes(size)]
    crops = _five_crops(size, crop_frac, crop_resize)
    if name == "5crop":
        return crops
    fns = crops + [_then(c, _hflip) for c in crops]
    if name == "10crop+full":
        fns += [identity, _hflip]
    return fns


def n_views(name):
    """Number of views TTA `name` makes of each image."""
    return len(view_fns(name, 64))


def view_groups(name, x, max_views=None, crop_frac=CROP_FRAC, crop_resize=True):
    """Yield the views of a batch lazily, in lists that each make one forward pass.

    x: float tensor (B, C, S, S). Each list holds consecutive views of one output
    size, at most `max_views` of them (None: no limit); each view is (B, C, s, s).
    Only one list of views exists at a time, which bounds memory.
    """
    pending = []
    for fn in view_fns(name, x.shape[-1], crop_frac, crop_resize):
        v = fn(x)
        if pending and (v.shape != pending[0].shape or len(pending) == max_views):
            yield pending
            pending = []
        pending.append(v)
    if pending:
        yield pending


def tta_views(name, x, crop_frac=CROP_FRAC, crop_resize=True):
    """All views of a batch, grouped by output size so each group is one forward.

    x: float tensor (B, C, S, S). Returns a list of tensors (V_k * B, C, s_k, s_k),
    view-major: rows v*B .. v*B+B-1 of a group are view v of the B images. All
    variants but multiscale (and crops with crop_resize=False) give one group.
    """
    return [torch.cat(vs) for vs in view_groups(name, x, None, crop_frac, crop_resize)]


# ---------------------------------------------------------------- merging

def merge_probs(probs, merge="mean", t=TSHARPEN_T):
    """Merge per-view probabilities: (V, N, L) array in [0, 1] -> float64 (N, L).

    mean, gmean (exp of mean log p; 0 if any view says 0), max, tsharpen (mean of p**t).
    """
    check_merge(merge)
    p = np.asarray(probs, dtype=np.float64)
    if merge == "mean":
        return p.mean(axis=0)
    if merge == "max":
        return p.max(axis=0)
    if merge == "tsharpen":
        return (p ** t).mean(axis=0)
    with np.errstate(divide="ignore"):  # log(0) = -inf -> exp gives 0, as it should
        return np.exp(np.log(p).mean(axis=0))


# ---------------------------------------------------------------- prediction

@dataclass
class _Setup:
    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    amp: bool
    channels_last: bool


def _iter_uint8_batches(images, bs, rows=None):
    """Yield uint8 tensors (b, S, S, 3) or (b, 3, S, S) from an array or tensor (only
    `rows` of it when given), a Dataset (batched here) or an iterable of batches
    (first element of tuples)."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        n = len(images) if rows is None else len(rows)
        for i in range(0, n, bs):
            idx = slice(i, i + bs) if rows is None else np.asarray(rows[i:i + bs])
            b = images[idx]
            # np.array reads only this batch of a memmap into (writable) memory
            yield b if isinstance(b, torch.Tensor) else torch.from_numpy(np.array(b))
        return
    if rows is not None:
        raise TypeError("rows is only supported for array or tensor images")
    if isinstance(images, torch.utils.data.Dataset) and hasattr(images, "__len__"):
        images = torch.utils.data.DataLoader(images, batch_size=bs, shuffle=False)
    for batch in images:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        yield torch.as_tensor(batch)


def _to_input(batch, s):
    """uint8 batch (NHWC or NCHW, C = len(mean) bands) -> normalised float (B, C, S, S) on the device."""
    c = s.mean.shape[1]
    if batch.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {batch.dtype}")
    if batch.ndim != 4 or c not in (batch.shape[1], batch.shape[-1]):
        raise ValueError(f"expected images (B, S, S, {c}) or (B, {c}, S, S), got {tuple(batch.shape)}")
    if s.device.type == "cuda":
        batch = batch.pin_memory().to(s.device, non_blocking=True)
    else:
        batch = batch.to(s.device)
    if batch.shape[-1] == c and batch.shape[1] != c:
        batch = batch.permute(0, 3, 1, 2)
    return (batch.float() / 255 - s.mean) / s.std


def _forward_probs(model, x, s):
    """Sigmoid probabilities (float32) of one forward pass."""
    if s.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.amp):
        logits = model(x)
    return torch.sigmoid(logits.float())


def _setup(model, mean, std, device, amp, channels_last):
    device = torch.device(device)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    stat = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device).view(1, -1, 1, 1)  # noqa: E731
    return _Setup(device, stat(mean), stat(std), amp, channels_last)


def _run(model, images, rows, per_batch, mean, std, bs, device, amp, channels_last, progress, desc):
    """Shared driver: per_batch(x) -> (V, b, L) probabilities; returns the merged-ready
    (V, N, L) float32 array in input order. Restores the model's training mode."""
    was_training = model.training
    s = _setup(model, mean, std, device, amp, channels_last)
    out = []
    try:
        with torch.inference_mode():
            for batch in tqdm(_iter_uint8_batches(images, bs, rows),
                              total=_n_batches(images if rows is None else rows, bs),
                              desc=desc, disable=not progress, unit="batch"):
                out.append(per_batch(_to_input(batch, s), s).cpu())
    finally:
        model.train(was_training)
    if not out:
        raise DataError("no images to predict")
    return torch.cat(out, dim=1).numpy()


def _n_batches(images, bs):
    """Number of batches for the progress bar, or None when unknown."""
    try:
        if isinstance(images, torch.utils.data.DataLoader):
            return len(images)
        return -(-len(images) // bs)
    except TypeError:
        return None


def predict_tta(model, images, tta="none", merge="mean", mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225), bs=64, device="cpu", amp=False,
                channels_last=False, max_views_per_forward=None, progress=True,
                crop_frac=CROP_FRAC, crop_resize=True, rows=None):
    """Batched TTA probabilities of a multi-label model.

    model: returns logits (B, L). images: uint8 (N, S, S, C) numpy array or memmap (C = len(mean)),
    a uint8 tensor, a Dataset of uint8 images, or an iterable of uint8 batches (or of
    tuples whose first element is the batch). rows: optional indices; predict
    images[rows] in that order (arrays and tensors only; a memmap is read batch by
    batch). mean, std: per-band normalisation (C values) on the 0-1 scale, applied on the
    device. The views of each batch of `bs` images go through the network together,
    at most `max_views_per_forward` views (of `bs` images each) per forward pass
    (None: all views of one output size together; 1: one forward per view, which is
    fastest on CPU, see bench/tta.py). amp: bf16 autocast, on CUDA or CPU (predict.py turns it on
    where utils/models/fast_path.py says it pays). Returns float64 (N, L) merged
    probabilities in input order. The model is put in eval mode on `device` (its
    training flag is restored after; channels_last converts it in place).
    """
    check_tta(tta)
    check_merge(merge)
    if max_views_per_forward is not None and max_views_per_forward < 1:
        raise ValueError("max_views_per_forward must be >= 1")

    def per_batch(x, s):
        b, probs = x.shape[0], []
        for views in view_groups(tta, x, max_views_per_forward, crop_frac, crop_resize):
            p = _forward_probs(model, views[0] if len(views) == 1 else torch.cat(views), s)
            probs.append(p.view(len(views), b, -1))  # view-major -> (V_k, b, L)
        return torch.cat(probs)

    probs = _run(model, images, rows, per_batch, mean, std, bs, device, amp, channels_last,
                 progress, f"predict {tta}")
    return merge_probs(probs, merge)


def predict_tta_loop(model, images, tta="none", merge="mean", mean=(0.485, 0.456, 0.406),
                     std=(0.229, 0.224, 0.225), bs=64, device="cpu", amp=False,
                     channels_last=False, progress=True, crop_frac=CROP_FRAC,
                     crop_resize=True, rows=None):
    """Reference for predict_tta: same inputs and output, one forward per view per batch
    (what ttach does). Used by the tests and the benchmark."""
    check_tta(tta)
    check_merge(merge)

    def per_batch(x, s):
        fns = view_fns(tta, x.shape[-1], crop_frac, crop_resize)
        return torch.stack([_forward_probs(model, fn(x), s) for fn in fns])

    probs = _run(model, images, rows, per_batch, mean, std, bs, device, amp, channels_last,
                 progress, f"predict {tta} (loop)")
    return merge_probs(probs, merge)
