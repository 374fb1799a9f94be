"""Rescaling a stage plan to the flags --epochs, --size, --bs and --lr: epochs spread in
proportion, sizes rounded to multiples of 32, the linear scaling rule for the batch
(Goyal et al. 2017), the last stage's lr exact and the others in proportion."""
import dataclasses
import math

from utils.common.errors import DataError


def round_size(px, multiple=32):
    """Round an image side to the nearest multiple of `multiple` (32), at least `multiple`."""
    return max(multiple, int(math.floor(px / multiple + 0.5)) * multiple)


def distribute_epochs(total, weights):
    """Split `total` epochs over stages in proportion to `weights`, at least 1 each.

    Largest-remainder rounding, so the parts sum to `total` exactly. DataError when
    total < len(weights).
    """
    n = len(weights)
    if total < n:
        raise DataError(f"--epochs {total} is fewer than the plan's {n} stages (at least 1 each)")
    ideal = [total * w / sum(weights) for w in weights]
    parts = [max(1, math.floor(x)) for x in ideal]
    while sum(parts) < total:  # give to the stage furthest below its share
        i = max(range(n), key=lambda j: (ideal[j] - parts[j], -j))
        parts[i] += 1
    while sum(parts) > total:  # take from the stage furthest above its share
        i = max((j for j in range(n) if parts[j] > 1), key=lambda j: (parts[j] - ideal[j], j))
        parts[i] -= 1
    return parts


def scale_sizes(stages, size):
    """Final stage at `size`; earlier ones scaled in proportion, rounded to 32 (min 32)."""
    old = stages[-1].size
    out = []
    for s in stages[:-1]:
        new = round_size(s.size * size / old)
        if s.size <= old:  # a stage smaller than the final one stays no larger than it
            new = min(new, size)
        out.append(dataclasses.replace(s, size=new))
    return out + [dataclasses.replace(stages[-1], size=size)]


def scale_bs(stages, bs):
    """Linear scaling rule (Goyal et al. 2017): the largest batch becomes `bs`, every
    stage's batch scales by the same factor and its lr (and min_lr) with its batch."""
    ref = max(s.bs for s in stages)
    out = []
    for s in stages:
        new = max(1, round(s.bs * bs / ref))
        k = new / s.bs
        out.append(dataclasses.replace(s, bs=new, lr=s.lr * k, min_lr=s.min_lr * k))
    return out


def scale_lr(stages, lr):
    """Last stage's lr becomes `lr`; the others (and min_lr) keep their ratio to it."""
    k = lr / stages[-1].lr
    return [dataclasses.replace(s, lr=s.lr * k, min_lr=s.min_lr * k) for s in stages]


def scale_epochs(stages, epochs):
    """`epochs` in all, spread over the stages in proportion to their epochs (distribute_epochs);
    a warm-up longer than its stage's new length is cut to it. Step and milestones are
    fractions of the stage, so they follow."""
    parts = distribute_epochs(epochs, [s.epochs for s in stages])
    return [dataclasses.replace(s, epochs=e, warmup=min(s.warmup, e)) for s, e in zip(stages, parts)]
