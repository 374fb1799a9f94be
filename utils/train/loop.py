"""The inner loops: one optimisation step, one training epoch, and the logistic
function (prediction without augmentation: utils/predict/logits.py).

Batches come from utils/data/loader.py (uint8, in an order that is a pure function of
seed and epoch); the GPU augmentation and batch mixing here draw from generators seeded
by (seed, epoch, batch index), so a resumed epoch computes the same steps.
"""
import contextlib
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from utils.common.distributed import all_reduce_sum, is_main, world_size
from utils.common.errors import NonFinite
from utils.data.loader import normalise, to_float


class Step:
    """Everything one optimisation step needs (the small dataclass, not 18 arguments)."""

    def __init__(self, model, loss_fn, optimizer, scheduler, scaler, amp_dtype, device, mean, std,
                 channels_last=False, grad_clip=0.0, gpu_augment=None, seed=0, after_update=None,
                 accumulation=None, mix=None):
        self.model, self.loss_fn, self.optimizer, self.scheduler = model, loss_fn, optimizer, scheduler
        self.scaler, self.amp_dtype, self.device = scaler, amp_dtype, device
        self.mean, self.std, self.channels_last, self.grad_clip = mean, std, channels_last, grad_clip
        self.gpu_augment, self.seed, self.epoch = gpu_augment, seed, 0
        self.after_update = after_update  # called after every optimizer step (weight EMA)
        self.accumulation = accumulation  # utils/train/accumulation.py Accumulation; None: a step per batch
        self.mix = mix                    # utils/augment/mix.py BatchMix (mixup/cutmix) or None

    def _grouping(self, index, n):
        """(opens a group, closes it, loss weight) for the index-th micro-batch of n images."""
        acc = self.accumulation
        if acc is None:
            return True, True, 1.0
        return acc.opens_group(index), acc.closes_group(index), acc.loss_weight(index, n)

    def __call__(self, xb, yb, index=0):
        """One forward/backward on a uint8 batch (the index-th of the epoch), and the optimizer
        step when it closes an accumulation group; returns the batch's mean loss (detached)."""
        y = yb.to(self.device, non_blocking=True)
        x = to_float(xb, self.device)
        if self.gpu_augment is not None:
            # randomness from (seed, epoch, batch index), resumable like the CPU path; a CPU
            # generator, so drawing the batch's seed does not wait for the GPU
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) % 2**62)
            x, y = self.gpu_augment(x, y, g)
        if self.mix is not None:
            x, y = self.mix(x, y, self.seed, self.epoch, index)
        x = normalise(x, self.mean, self.std, self.channels_last)
        opens, closes, weight = self._grouping(index, len(xb))
        # DDP: gradients are all-reduced once per group, at its last micro-batch (no_sync must
        # cover the forward pass too)
        no_sync = getattr(self.model, "no_sync", None) if not closes else None
        with no_sync() if no_sync is not None else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.model(x)
            loss = self.loss_fn(logits.float(), y)
            if opens:
                self.optimizer.zero_grad(set_to_none=True)
            scaled = loss if weight == 1.0 else loss * weight
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
        if not closes:
            return loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step_batch()
        if self.after_update is not None:
            self.after_update()
        return loss.detach()


def train_one_epoch(step, loader, start_step, total_steps, stats, on_step=None, desc="train"):
    """Run the loader's batches through `step`; accumulate into `stats` in place.

    stats: dict with loss_sum, n, steps, data_s, compute_s (kept in checkpoints so a
    resumed epoch reports the same totals). loss_sum and n are totals over every rank
    under torchrun, the same on each: rank 0 alone writes checkpoints, so its copy must
    hold the other ranks' share too. on_step(step_index) runs after every step
    (mid-epoch checkpoints, the trainer's named events). Returns stats. Raises NonFinite
    (step: 1-based, lr) at the first step whose loss, summed over ranks, is NaN or infinite.
    """
    bar = tqdm(total=total_steps, initial=start_step, desc=desc, leave=False, dynamic_ncols=True,
               disable=not is_main(), unit="step")
    it = iter(loader)
    i = start_step
    t0 = time.perf_counter()
    while True:
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        loss = step(xb, yb, i)
        loss_v = float(loss)  # syncs the device, so compute time below is real
        t2 = time.perf_counter()
        loss_n = [loss_v * len(xb), len(xb)]
        if world_size() > 1:  # a sum of two numbers per step; the loss above has synced already
            loss_n = all_reduce_sum(loss_n, step.device)
        if not math.isfinite(loss_n[0]):  # diverged: stop before these weights are saved anywhere
            raise NonFinite(f"the training loss is {loss_n[0] / max(loss_n[1], 1):g}", step=i + 1,
                            lr=step.scheduler.lr)
        stats["loss_sum"] += loss_n[0]
        stats["n"] += int(loss_n[1])
        stats["data_s"] += t1 - t0
        stats["compute_s"] += t2 - t1
        i += 1
        stats["steps"] = i
        elapsed = stats["data_s"] + stats["compute_s"]
        bar.set_postfix(loss=f"{stats['loss_sum'] / stats['n']:.4f}", lr=f"{step.scheduler.lr:.2e}",
                        img_s=f"{stats['n'] / max(elapsed, 1e-9):.0f}", refresh=False)
        bar.update()
        if on_step is not None:
            on_step(i)
        t0 = time.perf_counter()
    bar.close()
    return stats


def sigmoid(x):
    """Numerically stable logistic function on numpy arrays (float64 out)."""
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
