"""Mixup and CutMix of whole batches for multi-hot targets (`--mix`).

    --mix mixup:0.2                          mixup, lambda ~ Beta(0.2, 0.2)
    --mix cutmix:1.0                         cutmix, lambda ~ Beta(1, 1)
    --mix 'mixup:0.2;cutmix:1.0;switch=0.5'  per batch: cutmix with probability 0.5, else mixup
    --mix 'mixup:0.2;p=0.5,off_epochs=2'     mix half the batches; none in the last 2 epochs
    --mix none                               off (the default)

Items are `;`-separated (README "Option strings"): `mixup:ALPHA` and `cutmix:ALPHA`
(ALPHA > 0, each at most once) choose the methods; one item without a name holds the
options of the whole mix: `switch=P` (both methods given; default 0.5) is the
probability of cutmix; `p=P` (default 1) the probability that a batch is mixed;
`off_epochs=N` (default 0) turns mixing off in the run's last N epochs.

What goes in: a float batch x (B, C, H, W) and its targets y (B, L) float in [0, 1]
on the training device, and a numpy Generator. What comes out: the mixed batch and
targets y' = lam * y + (1 - lam) * y[perm], a convex combination of two images'
multi-hot vectors, i.e. soft targets (every loss in utils/train/losses.py accepts them).
One lambda and one permutation per batch ('batch' mode of timm's Mixup).

Sources: mixup (Zhang et al., ICLR 2018); CutMix (Yun et al., ICCV 2019) with the box
of timm's `rand_bbox` and its lambda correction (lam = 1 - box area / image area, the
share of the image that stays). timm's Mixup class itself is not used: it turns class
indices into one-hot targets with label smoothing, and it draws from the global numpy
RNG; as fastai's MixUp does for non-integer targets, targets here interpolate linearly,
and every draw comes from a generator seeded by (seed, epoch, batch index), the rule
of the GPU augmentation in utils/train/loop.py Step, so a resumed epoch mixes the same.
"""
from dataclasses import dataclass

import numpy as np
import torch

from utils.common.errors import DataError
from utils.common.options import parse_items

_STREAM = 0x6D6978  # keeps mixing's random stream apart from the other (seed, epoch, index) streams


@dataclass(frozen=True)
class MixSpec:
    """Parsed --mix: alphas (0 = method off), switch and p probabilities, off_epochs."""
    mixup: float = 0.0
    cutmix: float = 0.0
    switch: float = 0.5
    p: float = 1.0
    off_epochs: int = 0


_USAGE = "write e.g. mixup:0.2 | cutmix:1.0 | mixup:0.2;cutmix:1.0;switch=0.5,p=1,off_epochs=0"
# option -> (type, test, what it must be)
_CHECKS = {"mixup": (float, lambda v: v > 0, "ALPHA > 0, e.g. mixup:0.2"),
           "cutmix": (float, lambda v: v > 0, "ALPHA > 0, e.g. cutmix:1.0"),
           "switch": (float, lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
           "p": (float, lambda v: 0 < v <= 1, "a probability in (0, 1]"),
           "off_epochs": (int, lambda v: v >= 0, "an integer >= 0")}


def _number(flag, key, v):
    kind, ok, rule = _CHECKS[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
            or not ok(v):
        shown = f"{key}:{v}" if key in ("mixup", "cutmix") else f"{key}={v}"
        raise DataError(f"{flag} {shown}: must be {rule}")
    return kind(v)


def _values(text, flag):
    """{option: raw value} from the items: mixup:ALPHA, cutmix:ALPHA, and one item without a
    name holding switch=, p=, off_epochs=."""
    vals = {}
    for name, opts in parse_items(text, flag, lambda name: ("alpha",)):
        if name and name not in ("mixup", "cutmix"):
            raise DataError(f"{flag} {text!r}: unknown method {name!r} (valid: mixup, cutmix); {_USAGE}")
        if name and set(opts) != {"alpha"}:
            raise DataError(f"{flag} {text!r}: {name} takes one option: write method:ALPHA ({name}:0.2); {_USAGE}")
        unknown = sorted(set(opts) - set(_CHECKS)) if not name else []
        if unknown:
            raise DataError(f"{flag} {text!r}: unknown option(s) {', '.join(unknown)} "
                            f"(valid: switch, p, off_epochs); {_USAGE}")
        new = {name: opts["alpha"]} if name else opts
        if set(new) & set(vals):
            raise DataError(f"{flag} {text!r}: {', '.join(sorted(set(new) & set(vals)))} given twice")
        vals.update(new)
    return vals


def _old_form(text):
    """A --mix typed in the former spelling (all items `,`-separated) in today's: methods
    `;`-separated, then the options as one item. None when it does not look like one."""
    parts = [s.strip() for s in str(text).split(",") if s.strip()]
    methods = [s for s in parts if ":" in s and "=" not in s]
    opts = [s for s in parts if "=" in s and ":" not in s]
    if ";" in str(text) or not methods or len(methods) + len(opts) != len(parts) or len(parts) < 2:
        return None
    return ";".join(methods + ([",".join(opts)] if opts else []))


def modern_mix(text):
    """A --mix string in today's spelling: the former one (`,` between all items) converted."""
    return _old_form(text) or text


def parse_mix(text, flag="--mix"):
    """A --mix string -> MixSpec, or None when mixing is off (None, '', 'none', 'off').

    Raises DataError naming `flag`, the bad item and the valid syntax; a string in the former
    spelling (`mixup:0.2,cutmix:1.0,switch=0.5`) is refused with its new form.
    """
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return None
    old = _old_form(text)
    if old is not None:
        raise DataError(f"{flag} {text!r}: ';' now separates the methods and a last item holds the "
                        f"options; write {flag} '{old}'")
    vals = {k: _number(flag, k, v) for k, v in _values(text, flag).items()}
    if "mixup" not in vals and "cutmix" not in vals:
        raise DataError(f"{flag} {text!r}: name a method (mixup:ALPHA and/or cutmix:ALPHA); {_USAGE}")
    if "switch" in vals and not ("mixup" in vals and "cutmix" in vals):
        raise DataError(f"{flag} {text!r}: switch= chooses between mixup and cutmix; give both")
    return MixSpec(**vals)


def mixup(x, y, lam, perm):
    """Mixup: (lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm])."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix_box(h, w, lam, rng):
    """timm's rand_bbox drawn from `rng`: a box of side sqrt(1 - lam) x (h, w) centred
    uniformly, clipped to the image. Returns (y0, y1, x0, x1), half-open."""
    ratio = np.sqrt(1 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + (cut_h + 1) // 2, 0, h)
    x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + (cut_w + 1) // 2, 0, w)
    return int(y0), int(y1), int(x0), int(x1)


def cutmix(x, y, box, perm):
    """CutMix: x[perm]'s pixels inside `box` pasted into x; targets mixed by the share of
    the image each keeps. Returns (x', y', lam) with lam = 1 - box area / image area."""
    y0, y1, x0, x1 = box
    h, w = x.shape[-2:]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return out, lam * y + (1 - lam) * y[perm], lam


class BatchMix:
    """The --mix of a run: callable (x, y, seed, epoch, index) -> (x, y).

    spec: MixSpec; total_epochs: the plan's epochs (epoch numbers count from 0 over the
    whole run; the last spec.off_epochs of them are left unmixed).
    """

    def __init__(self, spec, total_epochs):
        self.spec, self.total_epochs = spec, int(total_epochs)

    def active(self, epoch):
        return epoch < self.total_epochs - self.spec.off_epochs

    def draw(self, batch, h, w, rng):
        """The batch's decision: None (unmixed) or (method, lam or box, perm)."""
        s = self.spec
        if rng.random() >= s.p:
            return None
        use_cutmix = s.cutmix > 0 and (s.mixup == 0 or rng.random() < s.switch)
        lam = float(rng.beta(*(2 * [s.cutmix if use_cutmix else s.mixup])))
        perm = rng.permutation(batch)
        return ("cutmix", cutmix_box(h, w, lam, rng), perm) if use_cutmix else ("mixup", lam, perm)

    def __call__(self, x, y, seed, epoch, index):
        if not self.active(epoch):
            return x, y
        rng = np.random.default_rng([_STREAM, int(seed), int(epoch), int(index)])
        d = self.draw(len(x), x.shape[-2], x.shape[-1], rng)
        if d is None:
            return x, y
        method, arg, perm = d
        perm = torch.as_tensor(perm, device=x.device)
        y = y.float()
        if method == "mixup":
            return mixup(x, y, arg, perm)
        return cutmix(x, y, arg, perm)[:2]


def build_mix(text, total_epochs):
    """A BatchMix for a --mix string, or None when off. DataError for bad syntax."""
    spec = parse_mix(text)
    return None if spec is None else BatchMix(spec, total_epochs)
