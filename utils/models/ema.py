"""Exponential moving average (EMA) of a model's weights, for `--ema DECAY`.

    ema = WeightEMA(model, decay=0.9997)       # after the model is on its device
    ema.update(model)                          # after every optimizer step
    ema.module                                 # the averaged network, for validation
    ema.state_dict() / ema.load_state_dict()   # part of checkpoints/last.pt

The averaging is torch.optim.swa_utils.AveragedModel with an EMA `multi_avg_fn`
(the library's foreach lerp, as get_ema_multi_avg_fn does); only the decay schedule
is ours, because get_ema_multi_avg_fn has a fixed decay. The first update copies the
weights (AveragedModel's rule), the k-th one after it (k = 1, 2, ...) computes

    ema <- d_k * ema + (1 - d_k) * weights,   d_k = min(decay, (1 + k) / (10 + k))

with warm-up (tf.train.ExponentialMovingAverage's `num_updates` rule, which timm's
ModelEmaV3 docstring points to), or d_k = decay without. Warm-up keeps the first
epochs' random head out of the average: with decay 0.9997 (ASL/ML-Decoder, Ridnik et
al. 2021) a plain EMA would still hold ~75% of the starting weights after 1,000 steps.

Buffers: AveragedModel(use_buffers=True), so BatchNorm running statistics are
averaged with the same decay as the weights, as timm's ModelEmaV2/V3 and the ASL
code (EMA of the whole state_dict) do. The averaged statistics then match the averaged
weights closely enough without a pass over the data (update_bn), which every epoch's
validation would otherwise need. Integer buffers (num_batches_tracked) are copied.
"""
import torch
from torch.optim.swa_utils import AveragedModel

from utils.common.errors import DataError


def ema_decay(decay, k, warmup=True):
    """The decay of the k-th averaging update after the first copy (k >= 1), a float in [0, 1]."""
    return min(decay, (1.0 + k) / (10.0 + k)) if warmup else decay


def check_decay(decay, flag="--ema"):
    """`decay` as a float in (0, 1), or None when EMA is off (None or 0); DataError naming `flag`."""
    if decay is None or decay == 0:
        return None
    try:
        d = float(decay)
    except (TypeError, ValueError):
        raise DataError(f"{flag} {decay!r} is not a number; give a decay in (0, 1) such as 0.9997") from None
    if not 0.0 < d < 1.0:
        raise DataError(f"{flag} {decay!r} must be in (0, 1), e.g. 0.9997 (0 switches EMA off)")
    return d


class WeightEMA:
    """EMA of `model`'s parameters and buffers (a deep copy, on the model's device).

    decay: float in (0, 1); warmup: use d_k = min(decay, (1+k)/(10+k)) (see the module
    docstring). `module` is the averaged nn.Module (same state-dict keys as `model`),
    kept in eval mode; `updates` counts update() calls.
    """

    def __init__(self, model, decay, warmup=True):
        self.decay, self.warmup = float(decay), bool(warmup)
        self._d, self._count = self.decay, 0  # _count: updates as a Python int (no GPU sync)
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.eval()

    @property
    def module(self):
        return self.averaged.module

    @property
    def updates(self):
        return int(self.averaged.n_averaged)

    @torch.no_grad()
    def _average(self, ema_list, cur_list, _n_averaged):
        # called by AveragedModel once per (device, dtype) group of tensors
        if torch.is_floating_point(ema_list[0]):
            torch._foreach_lerp_(ema_list, cur_list, 1.0 - self._d)
        else:
            torch._foreach_copy_(ema_list, cur_list)

    def update(self, model):
        """Fold the current weights of `model` (unwrapped: no DDP/compile prefix) into the average."""
        self._d = ema_decay(self.decay, self._count, self.warmup)
        self.averaged.update_parameters(model)
        self._count += 1

    def state_dict(self):
        """The averaged weights, buffers and update count (AveragedModel's state dict)."""
        return self.averaged.state_dict()

    def load_state_dict(self, state):
        """Restore what state_dict() returned."""
        self.averaged.load_state_dict(state)
        self._count = self.updates


def build_ema(model, decay, warmup=True):
    """A WeightEMA of `model`, or None when `decay` is None/0 (EMA off)."""
    decay = check_decay(decay)
    return None if decay is None else WeightEMA(model, decay, warmup)
