"""A dataset over the uint8 image cache, its loaders, and how an epoch is cut into batches.

Augmentation randomness comes from a numpy Generator seeded by (seed, epoch, index)
for every sample, and the visiting order from utils/data/sampling.py as a pure function
of (seed, epoch). So an epoch can be resumed at any step, with any number of loader
workers, and see exactly the same batches. A loader yields uint8 (B, H, W, C) batches;
`to_input` turns one into the normalised float batch the network takes.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils.common.errors import DataError


class CachedImages(Dataset):
    """Items (uint8 HWC tensor, float32 label vector) from a cached image array.

    images: (M, S, S, C) uint8 (memmap, never copied); rows: item i is images[rows[i]]
    (default: all rows); y: (N, L) labels of the items; augment: callable
    (img, y, rng) -> (img, y) or None; seed/epoch make each item's randomness.
    """

    def __init__(self, images, y, rows=None, augment=None, seed=0, epoch=0):
        self.images, self.y = images, np.asarray(y, np.float32)
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows)
        self.augment, self.seed, self.epoch = augment, seed, epoch

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        img, y = np.array(self.images[self.rows[i]]), self.y[i]  # a writable copy of the memmap row
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            img, y = self.augment(img, y.copy(), rng)
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(np.asarray(y, np.float32))


class ListSampler(Sampler):
    """Yields a fixed list of indices (an epoch's order, possibly resumed mid-way)."""

    def __init__(self, indices):
        self.indices = [int(i) for i in indices]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def make_loader(dataset, indices, bs, workers, device, drop_last=False):
    """DataLoader over `indices` in order. A private generator keeps the global torch
    RNG untouched by loader creation (exact resume of dropout randomness)."""
    kw = {}
    if workers > 0:
        kw = dict(persistent_workers=False, prefetch_factor=4)
    return DataLoader(dataset, batch_size=bs, sampler=ListSampler(indices), num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last,
                      generator=torch.Generator().manual_seed(0), **kw)


@functools.lru_cache(maxsize=8)
def _norm_tensors(mean, std, device):
    """mean/std as (1, C, 1, 1) tensors on `device` (C bands), made once (a host-to-device copy
    per step would make every step wait for the GPU)."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1),
            torch.tensor(std, device=device).view(1, -1, 1, 1))


def to_float(batch_u8, device):
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1] on `device`. The uint8 batch crosses
    to the GPU (4x fewer bytes than float) and becomes float there."""
    return batch_u8.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)


def normalise(x, mean, std, channels_last=False):
    """(x - mean) / std per channel, optionally in channels_last memory format."""
    m, s = _norm_tensors(tuple(mean), tuple(std), x.device)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def to_input(batch_u8, mean, std, device, channels_last=False):
    """uint8 (B, H, W, C) -> the normalised float batch the network takes."""
    return normalise(to_float(batch_u8, device), mean, std, channels_last)


def steps_in_epoch(n_items, bs, drop_last):
    """Number of batches an epoch of n_items makes."""
    return n_items // bs if drop_last else math.ceil(n_items / bs)


@dataclass(frozen=True)
class BatchPlan:
    """How one process cuts an epoch into training batches (see batch_plan)."""
    n_local: int     # items this process visits per epoch
    bs_local: int    # its batch size
    drop_last: bool  # the last, partial batch is left out
    steps: int       # batches per epoch (the same on every process)


def batch_plan(n_epoch, bs, world=1, where="training"):
    """Cut an epoch of n_epoch items into batches of bs (over all `world` processes).

    Each process visits ceil(n_epoch / world) items (utils.common.distributed.shard pads by
    wrapping) in batches of bs // world. A training batch of one image breaks BatchNorm
    ("Expected more than 1 value per channel when training"), so the last partial batch
    is left out whenever it would hold one image, and also (the rule since the first
    version, kept so results do not change) whenever the epoch has two full batches.
    Raises DataError, naming `where`, when a process would see fewer than 2 images or
    batches of 1. Resuming mid-epoch slices the same order at a batch boundary, so the
    batches stay the same.
    """
    n_local, bs_local = math.ceil(n_epoch / world), bs // world
    if bs_local < 2:
        raise DataError(f"{where}: batch size {bs} over {world} process(es) makes batches of {bs_local} "
                        f"image(s); BatchNorm needs at least 2 per batch: use a batch size >= {2 * world}")
    if n_local < 2:
        raise DataError(f"{where}: {n_epoch} training image(s) per epoch over {world} process(es) is too few "
                        f"to train (BatchNorm needs batches of at least 2); use more images or another fold")
    drop_last = n_epoch >= 2 * bs or n_local % bs_local == 1
    return BatchPlan(n_local, bs_local, drop_last, steps_in_epoch(n_local, bs_local, drop_last))
