"""One training epoch, top to bottom (train_one_epoch), and the logistic function
(prediction without augmentation: utils/predict/logits.py).

    parts = StageParts(model, loss_fn, optimizer, scheduler, device, mean, std, ...)  # once per stage
    loader = epoch_loader(parts, sampler, fit_y, seed, epoch, start, workers)
    train_one_epoch(parts, loader, epoch, start, total, stats, after_step)

Batches come from utils/data/loader.py (uint8, in an order that is a pure function of
seed and epoch); the GPU augmentation and batch mixing draw from generators seeded
by (seed, epoch, batch index), so a resumed epoch computes the same steps.
"""
import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from utils.common import distributed as dist
from utils.common.errors import NonFinite
from utils.data.loader import make_loader, normalise, to_float
from utils.data.sampling import epoch_indices
from utils.models.factory import unwrap_model as unwrap
from utils.models.layer_groups import freeze_bn
from utils.train.optimizers import weights_mode


@dataclass
class StageParts:
    """What every step of a stage trains with (built once per stage: Trainer._build_stage)."""
    model: torch.nn.Module          # wrapped for DDP / torch.compile
    loss_fn: object                 # (logits, targets) -> mean loss
    optimizer: object
    scheduler: object               # utils/train/schedule.py: step_batch, step_epoch, lr
    device: torch.device
    mean: tuple                     # normalisation per band
    std: tuple
    amp_dtype: object = None        # autocast dtype; None: full precision
    scaler: object = None           # torch.amp.GradScaler under fp16 autocast, else None
    channels_last: bool = False
    accumulation: object = None     # utils/train/accumulation.py Accumulation; None: a step per batch
    gpu_augment: object = None      # utils/augment/gpu.py GpuAugment (--aug-device gpu) or None
    mix: object = None              # utils/augment/mix.py BatchMix (--mix: mixup/cutmix) or None
    ema: object = None              # utils/models/ema.py WeightEMA (--ema) or None
    bn_frozen: bool = False         # the stage's bn=frozen: every BatchNorm keeps its statistics
    seed: int = 0
    dataset: object = None          # the stage's CachedImages (or static-augmentation copies)
    plan: object = None             # its utils/data/loader.py BatchPlan
    n_epoch: int = 0                # items per epoch over all ranks


def train_one_epoch(parts, loader, epoch, start, total, stats, after_step=None, desc="train"):
    """Train one epoch, or its rest from batch `start`, on the loader's (uint8 images, targets) batches.

    parts: the stage's StageParts; epoch: the run's epoch (0-based), which with the batch index seeds
    the GPU augmentation and the mixing; total: batches in the whole epoch (the progress bar);
    stats: the epoch's totals (utils/train/run_state.py new_epoch_stats), updated in place and kept in
    last.pt so a resumed epoch reports the same numbers; loss_sum and n are totals over every rank,
    the same on each (rank 0 alone writes checkpoints). after_step(done): the checkpoint hook, told
    after every batch how many of the epoch's are done (the trainer records its position there and
    writes last.pt when due, Trainer._after_step). Returns stats. Raises NonFinite (step: 1-based,
    lr) at the first batch whose loss, summed over ranks, is NaN or infinite: before after_step.
    """
    model, optimizer, scheduler, scaler = parts.model, parts.optimizer, parts.scheduler, parts.scaler
    device = parts.device
    set_train_mode(parts)
    bar = progress_bar(desc, start, total)
    batches = iter(loader)  # (starts the loader's workers)
    t0 = time.perf_counter()
    for i, (xb, yb) in enumerate(batches, start):
        t1 = time.perf_counter()
        # the batch on the device: uint8 -> float in [0, 1], augmented there, mixed, normalised
        y = yb.to(device, non_blocking=True)
        x = to_float(xb, device)
        if parts.gpu_augment is not None:  # --aug-device gpu
            x, y = parts.gpu_augment(x, y, batch_generator(parts.seed, epoch, i))
        if parts.mix is not None:  # --mix: mixup or cutmix of the whole batch
            x, y = parts.mix(x, y, parts.seed, epoch, i)
        x = normalise(x, parts.mean, parts.std, parts.channels_last)
        # forward under autocast, loss, backward; --accum: a group of micro-batches adds up its gradients
        opens, closes, weight = group_role(parts.accumulation, i, len(xb))
        with ddp_gradient_sync(model, closes):
            with torch.autocast(device.type, dtype=parts.amp_dtype, enabled=parts.amp_dtype is not None):
                logits = model(x)
            loss = parts.loss_fn(logits.float(), y)
            if opens:
                optimizer.zero_grad(set_to_none=True)
            scaled = loss if weight == 1.0 else loss * weight
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        # at the group's last micro-batch: the optimizer step, the lr schedule, the weight EMA
        if closes:
            optimizer_step(optimizer, scaler)
            scheduler.step_batch()
            if parts.ema is not None:
                parts.ema.update(unwrap(model))
        # divergence: every rank's loss summed; NaN or infinite stops before these weights are saved
        loss_value = float(loss.detach())  # waits for the device, so the compute time is real
        t2 = time.perf_counter()
        loss_sum, n = summed_over_ranks([loss_value * len(xb), len(xb)], device)
        if not math.isfinite(loss_sum):
            raise NonFinite(f"the training loss is {loss_sum / max(n, 1):g}", step=i + 1, lr=scheduler.lr)
        # progress: the epoch's totals and the bar
        add_to_totals(stats, loss_sum, n, t1 - t0, t2 - t1, done=i + 1)
        show_progress(bar, stats, scheduler.lr)
        # the checkpoint hook (the trainer's position; mid-epoch last.pt for exact resume)
        if after_step is not None:
            after_step(i + 1)
        t0 = time.perf_counter()
    bar.close()
    return stats


def epoch_loader(parts, sampler, fit_y, seed, epoch, start, workers):
    """The loader of the epoch's batches from batch `start` on: the visiting order (a pure function
    of seed and epoch, utils/data/sampling.py, cut to the stage's fixed length), this rank's share,
    over the stage's dataset (whose augmentation draws from seed, epoch and item)."""
    order = fixed_length(epoch_indices(sampler, fit_y, seed, epoch), parts.n_epoch)
    parts.dataset.epoch = epoch
    plan = parts.plan
    return make_loader(parts.dataset, dist.shard(order)[start * plan.bs_local:], plan.bs_local, workers,
                       parts.device, plan.drop_last)


def fixed_length(order, n):
    """An epoch's visiting order cut or extended (by wrapping) to n items.

    Repeat-factor sampling rounds stochastically, so epochs differ by a few images;
    the stage's lr schedule is planned for a fixed number of steps per epoch.
    """
    order = np.asarray(order)
    if len(order) >= n:
        return order[:n]
    return np.concatenate([order, order[: n - len(order)]])


def set_train_mode(parts):
    """The model in train mode; a schedule-free optimizer's gradients at its train-mode weights; frozen
    BatchNorm layers (all of them with bn=frozen) back in eval mode, keeping their statistics."""
    parts.model.train()
    weights_mode(parts.optimizer, train=True)
    freeze_bn(unwrap(parts.model), all_layers=parts.bn_frozen)


def progress_bar(desc, start, total):
    """The epoch's tqdm bar in steps (rank 0 only), starting at `start`."""
    return tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True,
                disable=not dist.is_main(), unit="step")


def batch_generator(seed, epoch, index):
    """The GPU augmentation's random generator for batch `index` of `epoch`: resumable like the CPU
    path; a CPU generator, so drawing the batch's seed does not wait for the GPU."""
    return torch.Generator().manual_seed(hash((seed, epoch, index)) % 2**62)


def group_role(accumulation, index, n):
    """(opens a group: zero the gradients, closes it: step the optimizer, weight of its mean loss)
    for the index-th micro-batch of the epoch, of n images; without accumulation every batch is a group."""
    if accumulation is None:
        return True, True, 1.0
    return accumulation.opens_group(index), accumulation.closes_group(index), accumulation.loss_weight(index, n)


def ddp_gradient_sync(model, closes):
    """DDP all-reduces the gradients once per group, at its last micro-batch: `no_sync` around the
    forward and backward of the others. A context manager (nothing outside DDP)."""
    no_sync = getattr(model, "no_sync", None) if not closes else None
    return no_sync() if no_sync is not None else contextlib.nullcontext()


def optimizer_step(optimizer, scaler):
    """Step the optimizer on the gradients; under fp16 through the grad scaler (the gradients
    unscaled, the step skipped when they overflowed, the scale updated)."""
    if scaler is None:
        optimizer.step()
        return
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()


def summed_over_ranks(values, device):
    """A list of floats summed over the ranks under torchrun (as is on one process)."""
    return dist.all_reduce_sum(values, device) if dist.world_size() > 1 else values


def add_to_totals(stats, loss_sum, n, data_s, compute_s, done):
    """Add one batch to the epoch's totals: its loss x images, images, seconds waiting for it and
    computing; `done` batches of the epoch are done."""
    stats["loss_sum"] += loss_sum
    stats["n"] += int(n)
    stats["data_s"] += data_s
    stats["compute_s"] += compute_s
    stats["steps"] = done


def show_progress(bar, stats, lr):
    """One more step on the bar, with the epoch's mean loss, the lr and images per second."""
    elapsed = stats["data_s"] + stats["compute_s"]
    bar.set_postfix(loss=f"{stats['loss_sum'] / stats['n']:.4f}", lr=f"{lr:.2e}",
                    img_s=f"{stats['n'] / max(elapsed, 1e-9):.0f}", refresh=False)
    bar.update()


def sigmoid(x):
    """Numerically stable logistic function on numpy arrays (float64 out)."""
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))
