"""Gradient accumulation: one optimizer step per group of `accum` micro-batches.

    --accum N, or the stage key accum=N: the effective batch is N x bs (bs images per
    forward pass, N forward/backward passes per optimizer step).

What goes in: the number of micro-batches per group and the epoch's BatchPlan
(utils/data/loader.py: items and batch size per process, batches per epoch). What comes
out: for the micro-batch of index i, whether it opens a group (zero the gradients),
whether it closes one (step the optimizer), and the weight of its mean loss, so
that the accumulated gradient is the gradient of the mean loss over the whole group,
exactly what one batch of the group's images would give (in a model without
BatchNorm; BatchNorm sees each micro-batch's statistics).

The last group of an epoch may hold fewer micro-batches (and its last micro-batch
fewer images): it still makes an optimizer step, its losses weighted by their share
of the images the group really holds. The lr schedule counts optimizer steps
(`updates_per_epoch`).

Resume: checkpoints are written only at group boundaries (`boundary`). A kill in the
middle of a group loses the partial gradients, and the resumed run recomputes that
group's micro-batches from the last boundary; their data, augmentation and mixing
are pure functions of (seed, epoch, index) and the RNG state is in the checkpoint, so
the result is the same. Saving the partial gradients instead would add a model-sized
tensor set to every checkpoint for no gain in exactness.

Same rule as timm's train.py `--grad-accum-steps` (its last partial group steps with
the micro-batches it has), with the loss weighted per image rather than per micro-batch.
"""
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Accumulation:
    """Micro-batch bookkeeping of one epoch on one process.

    accum: micro-batches per optimizer step (>= 1); steps: micro-batches per epoch;
    bs: images per full micro-batch; n_items: images the process visits per epoch.
    """

    accum: int
    steps: int
    bs: int
    n_items: int

    @classmethod
    def of(cls, accum, plan):
        """From the stage's accum and a utils.data.loader.BatchPlan."""
        return cls(max(1, int(accum)), plan.steps, plan.bs_local, plan.n_local)

    @property
    def updates_per_epoch(self):
        """Optimizer steps per epoch (the last group may be partial)."""
        return math.ceil(self.steps / self.accum)

    def opens_group(self, i):
        """Micro-batch i (0-based in the epoch) is the first of its group: zero the gradients."""
        return i % self.accum == 0

    def closes_group(self, i):
        """Micro-batch i is the last of its group: step the optimizer after it."""
        return (i + 1) % self.accum == 0 or i + 1 == self.steps

    def group_items(self, i):
        """Images in micro-batch i's group (all its micro-batches, the last maybe partial)."""
        g = i // self.accum
        start = g * self.accum * self.bs
        end = min((g + 1) * self.accum, self.steps) * self.bs
        return min(end, self.n_items) - start

    def loss_weight(self, i, n):
        """Weight of micro-batch i's mean loss over its n images: n / group_items(i)."""
        return 1.0 if self.accum == 1 else n / self.group_items(i)

    def boundary(self, done):
        """After `done` micro-batches of the epoch, no gradient is pending (a checkpoint may be written)."""
        return done % self.accum == 0 or done == self.steps

    def updates_done(self, done):
        """Optimizer steps made after `done` micro-batches of the epoch."""
        return done // self.accum + (1 if done == self.steps and done % self.accum else 0)
