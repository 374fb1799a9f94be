"""Multi-label losses chosen by name (--loss), for imbalanced tags.

    bce     plain binary cross-entropy on logits
    wbce    BCE with a per-label positive weight from the training fold's densities d:
            mode=inverse (default) w = 1/d, which scales each label's density up to 1;
            mode=odds w = (1-d)/d, which balances positives against negatives;
            w is capped at `cap` (default 1000); a label absent from the fold gets 1 (it has no
            positive to weight, and `cap` would only inflate its validation loss)
    focal   focal loss (Lin et al., ICCV 2017): gamma (default 2), alpha (default 0.25, none = off)
    asl     asymmetric loss (Ridnik et al., ICCV 2021): gamma_neg=4, gamma_pos=0, clip=0.05,
            eps=1e-8; detach=true treats the focusing weight as a constant, as the
            authors' code does

Every loss maps (logits (B, L), targets (B, L) float) to the mean over all B*L entries
and is computed in float32 whatever the autocast dtype of the logits.
Options come from a string: `--loss wbce:mode=odds,cap=50`, `--loss asl:gamma_neg=2`.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from utils.common.errors import DataError
from utils.common.options import as_bool, check_choice, merge_options, parse_item

LOSSES = ("bce", "wbce", "focal", "asl")

DEFAULTS = {
    "bce": {},
    "wbce": {"mode": "inverse", "cap": 1000.0},
    "focal": {"gamma": 2.0, "alpha": 0.25},
    "asl": {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05, "eps": 1e-8, "detach": True},
}


class BCELoss(nn.Module):
    """Mean BCE on logits with an optional per-label positive weight (a buffer: it moves
    with .to() and is saved in the state dict)."""

    def __init__(self, pos_weight=None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits, targets):
        return F.binary_cross_entropy_with_logits(
            logits.float(), targets.float(), pos_weight=self.pos_weight)


class FocalLoss(nn.Module):
    """Mean sigmoid focal loss (torchvision's); alpha None switches the class weighting off."""

    def __init__(self, gamma=2.0, alpha=0.25):
        super().__init__()
        self.gamma = float(gamma)
        self.alpha = -1.0 if alpha is None else float(alpha)  # torchvision: alpha < 0 = off

    def forward(self, logits, targets):
        return sigmoid_focal_loss(logits.float(), targets.float(),
                                  alpha=self.alpha, gamma=self.gamma, reduction="mean")


class AsymmetricLoss(nn.Module):
    """Mean asymmetric loss: negatives' probability shifted down by `clip`, then focused with
    gamma_neg; positives focused with gamma_pos. With gamma_neg=gamma_pos=clip=0 it is BCE."""

    def __init__(self, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8, detach=True):
        super().__init__()
        self.gamma_neg, self.gamma_pos = float(gamma_neg), float(gamma_pos)
        self.clip, self.eps, self.detach = float(clip), float(eps), bool(detach)

    def forward(self, logits, targets):
        x, y = logits.float(), targets.float()
        p = torch.sigmoid(x)
        log_pos = F.logsigmoid(x)  # exact log(p) even where p underflows
        if self.clip > 0:
            p_neg = (1 - p + self.clip).clamp(max=1)
            log_neg = torch.log(p_neg.clamp(min=self.eps))
        else:
            p_neg, log_neg = 1 - p, F.logsigmoid(-x)
        loss = y * log_pos + (1 - y) * log_neg
        if self.gamma_neg > 0 or self.gamma_pos > 0:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach):
                p_t = p * y + p_neg * (1 - y)
                w = torch.pow(1 - p_t, self.gamma_pos * y + self.gamma_neg * (1 - y))
            loss = loss * w
        return -loss.mean()


def label_density(y):
    """Fraction of images carrying each label: (N, L) 0/1 -> float64 (L,)."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or len(y) == 0:
        raise DataError(f"label matrix must be (N, L) with N > 0; got shape {y.shape}")
    return y.mean(axis=0)


def positive_weights(y, mode="inverse", cap=1000.0):
    """Per-label positive weight for wbce from an (N, L) 0/1 matrix -> float64 (L,).

    inverse: 1/d; odds: (1-d)/d; both capped at `cap`; a label with d = 0 gets 1 (no positive
    to weight up; a large weight would only inflate the validation loss of its positives).
    """
    check_choice("wbce mode", mode, ("inverse", "odds"))
    if not cap or cap <= 0:
        raise DataError(f"wbce cap must be > 0; got {cap}")
    d = label_density(y)
    with np.errstate(divide="ignore"):
        w = 1.0 / d if mode == "inverse" else (1.0 - d) / d
    return np.minimum(np.where(d > 0, w, 1.0), cap)


def check_option_types(name, opts):
    """Raise DataError for a loss option whose value is not of its default's kind (number, boolean);
    booleans given as 1/0 become True/False in `opts`.

    focal's alpha may also be none (no class weighting, as in torchvision).
    """
    for key, value in opts.items():
        default = DEFAULTS[name][key]
        if isinstance(default, bool):
            opts[key] = as_bool(value, f"--loss {name}: {key}={value!r} (e.g. {name}:{key}={str(default).lower()})")
        elif isinstance(default, float):
            if value is None and (name, key) == ("focal", "alpha"):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise DataError(f"--loss {name}: {key} must be a number; got {value!r} (e.g. {name}:{key}={default:g})")


def build_loss(name, y_train=None, **opts):
    """Build a loss by name (or spec such as 'asl:gamma_neg=2'; keyword opts override it).

    y_train: (N, L) 0/1 labels of the training fold (needed by wbce).
    Returns (module mapping (logits, targets) -> scalar mean loss, info dict for config.json).
    Raises DataError for an unknown loss or option, listing the valid ones.
    """
    name, spec_opts = parse_item(name, "--loss")
    check_choice("loss", name, LOSSES)
    opts = merge_options("loss", name, {**spec_opts, **opts}, DEFAULTS[name])
    check_option_types(name, opts)
    info = {"loss": name, **opts}
    if name == "bce":
        return BCELoss(), info
    if name == "wbce":
        if y_train is None:
            raise DataError("wbce needs the training labels to compute its weights")
        w = positive_weights(y_train, opts["mode"], float(opts["cap"]))
        info.update(pos_weight=[round(float(v), 6) for v in w],
                    density=[round(float(v), 6) for v in label_density(y_train)])
        return BCELoss(torch.tensor(w, dtype=torch.float32)), info
    if name == "focal":
        return FocalLoss(**opts), info
    return AsymmetricLoss(**opts), info
