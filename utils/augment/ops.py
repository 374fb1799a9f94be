"""The per-sample augmentation ops of --aug: geometric steps (flips, rotate, shift, crop,
random-resized crop) as normalised output->input maps, and colour steps (PCA lighting,
channel swaps and hue rotation) on uint8 R, G, B.

`Op` is their base: a name, option defaults (the first is the positional one), a canonical
spec. Geometric ops give `matrix(rng)`, composed by utils.augment.transforms.Augment into one
resample; colour ops give `apply(rgb, y, rng)` and, for the GPU path (utils.augment.gpu),
`apply_batch`. Every random draw comes from the numpy Generator passed in.
"""
import logging
import math

import numpy as np
import torch

from utils.common.errors import DataError
from utils.common.options import check_choice, merge_options

log = logging.getLogger(__name__)

# ImageNet RGB statistics (pixels in [0, 1]) from fb.resnet.torch, used by `pca` when no
# statistics of the training images are given; eigvec columns are the eigenvectors.
IMAGENET_PCA = {
    "eigval": [0.2175, 0.0188, 0.0045],
    "eigvec": [[-0.5675, 0.7192, 0.4009],
               [-0.5808, -0.0045, -0.8140],
               [-0.5836, -0.6948, 0.4203]],
}


class Op:
    """One augmentation step: `name`, option defaults (the first is the positional one)."""

    name = ""
    defaults = {}
    geometric = True

    def __init__(self, **opts):
        self.opts = merge_options("augmentation", self.name, opts, self.defaults)
        for key, value in self.opts.items():
            if isinstance(self.defaults[key], float):
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    raise DataError(f"augmentation {self.name}: {key} must be a number; "
                                    f"got {value!r}")
                self.opts[key] = float(value)
        self.check()

    def check(self):
        """Raise DataError for options out of range."""
        p = self.opts.get("p")
        if p is not None and not 0 <= p <= 1:
            raise DataError(f"augmentation {self.name}: p must be in [0, 1]; got {p}")

    @property
    def spec(self):
        """Canonical text: the name, its first option bare (unless it is a default p), then
        the other options that differ from their defaults."""
        keys = list(self.defaults)
        parts = [f"{k}={_fmt(self.opts[k])}" for k in keys[1:] if self.opts[k] != self.defaults[k]]
        if keys and (keys[0] != "p" or self.opts["p"] != self.defaults["p"] or parts):
            parts.insert(0, _fmt(self.opts[keys[0]]))
        return self.name + (":" + ",".join(parts) if parts else "")

    def matrix(self, rng):
        """3x3 map from output to input in normalised coordinates ([-1, 1] spans the image)."""
        raise NotImplementedError


def _fmt(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


class HFlip(Op):
    name, defaults = "hflip", {"p": 0.5}

    def matrix(self, rng):
        return np.diag([-1.0 if rng.random() < self.opts["p"] else 1.0, 1.0, 1.0])


class VFlip(Op):
    name, defaults = "vflip", {"p": 0.5}

    def matrix(self, rng):
        return np.diag([1.0, -1.0 if rng.random() < self.opts["p"] else 1.0, 1.0])


class Rotate(Op):
    name, defaults = "rotate", {"deg": 10.0}

    def check(self):
        if not 0 <= self.opts["deg"] <= 180:
            raise DataError(f"rotate: deg must be in [0, 180]; got {self.opts['deg']}")

    def matrix(self, rng):
        a = math.radians(rng.uniform(-self.opts["deg"], self.opts["deg"]))
        c, s = math.cos(a), math.sin(a)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Shift(Op):
    name, defaults = "shift", {"frac": 0.1}

    def check(self):
        if not 0 <= self.opts["frac"] <= 1:
            raise DataError(f"shift: frac must be in [0, 1]; got {self.opts['frac']}")

    def matrix(self, rng):
        tx, ty = 2 * rng.uniform(-self.opts["frac"], self.opts["frac"], 2)  # side = 2 units
        return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


class Crop(Op):
    name, defaults = "crop", {"frac": 0.125}

    def check(self):
        if not 0 <= self.opts["frac"] < 1:
            raise DataError(f"crop: frac must be in [0, 1); got {self.opts['frac']}")

    def matrix(self, rng):
        s = 1.0 - rng.uniform(0, self.opts["frac"])
        tx, ty = rng.uniform(-(1 - s), 1 - s, 2)
        return np.array([[s, 0.0, tx], [0.0, s, ty], [0.0, 0.0, 1.0]])


class RandomResizedCrop(Op):
    name, defaults = "rrc", {"scale": 0.08, "ratio": 0.75}

    def check(self):
        if not 0 < self.opts["scale"] <= 1 or not 0 < self.opts["ratio"] <= 1:
            raise DataError(f"rrc: scale and ratio must be in (0, 1]; got {self.opts}")

    def matrix(self, rng):
        area = rng.uniform(self.opts["scale"], 1.0)
        log_r = math.log(self.opts["ratio"])
        r = math.exp(rng.uniform(log_r, -log_r))
        # half-sides in normalised units; clipping to the image replaces torchvision's retries
        w, h = min(1.0, math.sqrt(area * r)), min(1.0, math.sqrt(area / r))
        tx, ty = rng.uniform(-(1 - w), 1 - w), rng.uniform(-(1 - h), 1 - h)
        return np.array([[w, 0.0, tx], [0.0, h, ty], [0.0, 0.0, 1.0]])


class PCALighting(Op):
    name, defaults, geometric = "pca", {"std": 0.1}, False

    def __init__(self, stats=None, warn=True, **opts):
        """stats: {"eigval", "eigvec"} of the training pixels (pca_stats); None takes
        ImageNet's, with a warning unless `warn` is False (a pipeline built only to check
        the --aug spec, before the statistics exist)."""
        super().__init__(**opts)
        self.source = "train" if stats is not None else "imagenet"
        if stats is None and warn:
            log.warning("--aug's `pca` op: no RGB statistics of the training images were given, so its "
                        "lighting noise follows ImageNet's colour eigenvectors (pca_stats computes the "
                        "training images' own)")
        stats = IMAGENET_PCA if stats is None else stats
        self.eigval = np.asarray(stats["eigval"], dtype=np.float64).reshape(3)
        self.eigvec = np.asarray(stats["eigvec"], dtype=np.float64).reshape(3, 3)

    def check(self):
        if self.opts["std"] < 0:
            raise DataError(f"pca: std must be >= 0; got {self.opts['std']}")

    def offset(self, rng):
        """Per-channel offset in uint8 levels for one image: float64 (3,)."""
        alpha = rng.normal(0.0, self.opts["std"], 3)
        return 255.0 * self.eigvec @ (alpha * self.eigval)

    def apply(self, img, y, rng):
        delta = np.rint(self.offset(rng)).astype(np.int16)
        return (img.astype(np.int16) + delta).clip(0, 255).astype(np.uint8), y

    def apply_batch(self, x, y, rng):
        """Batch version on a float tensor (B, 3, H, W) in [0, 1]."""
        off = np.stack([self.offset(rng) for _ in range(len(x))]) / 255.0
        off = torch.as_tensor(off, dtype=x.dtype, device=x.device)
        return (x + off[:, :, None, None]).clamp_(0, 1), y


_SWAPS = {"rb": (2, 1, 0), "rg": (1, 0, 2), "gb": (0, 2, 1)}
_PERMS = [(0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


class ColorSwap(Op):
    name, geometric = "colorswap", False
    defaults = {"mode": "rb", "p": 0.5, "deg": 180.0, "remap": ""}

    def __init__(self, labels=None, **opts):
        super().__init__(**opts)
        self.pairs = self._pairs(labels)

    def check(self):
        super().check()
        check_choice("colorswap mode", self.opts["mode"], (*_SWAPS, "perm", "hue"))
        if self.opts["remap"] and self.opts["mode"] not in _SWAPS:
            raise DataError(f"colorswap: remap needs a fixed swap ({', '.join(_SWAPS)}), "
                            f"not {self.opts['mode']!r}")

    def _pairs(self, labels):
        """Label column pairs to exchange with the channels, from remap=a/b+c/d."""
        text = str(self.opts["remap"] or "")
        if not text:
            return []
        if labels is None:
            raise DataError("colorswap remap needs the label list")
        index, pairs = {str(t): i for i, t in enumerate(labels)}, []
        for item in text.split("+"):
            tags = [t.strip() for t in item.split("/")]
            if len(tags) != 2 or not all(tags):
                raise DataError(f"colorswap remap: {item!r} is not a pair like blue/red")
            present = [t in index for t in tags]
            if all(present):
                pairs.append((index[tags[0]], index[tags[1]]))
            elif any(present):
                raise DataError(f"colorswap remap {item!r}: tag {tags[present.index(False)]!r} "
                                f"is not among the labels {list(labels)}")
            else:
                log.info("colorswap remap %s: neither tag among these labels; ignored", item)
        return pairs

    def draw(self, rng):
        """One image's draw: None (unchanged), ("perm", channel order) or ("hue", degrees)."""
        if rng.random() >= self.opts["p"]:
            return None
        mode = self.opts["mode"]
        if mode == "hue":
            return "hue", rng.uniform(-self.opts["deg"], self.opts["deg"])
        return "perm", _SWAPS[mode] if mode in _SWAPS else _PERMS[rng.integers(len(_PERMS))]

    def remap(self, y):
        """Labels with the remap pairs' columns exchanged (a copy; y (..., L))."""
        y = np.array(y, dtype=np.float32, copy=True)
        for a, b in self.pairs:
            y[..., [a, b]] = y[..., [b, a]]
        return y

    def apply(self, img, y, rng):
        d = self.draw(rng)
        if d is None:
            return img, y
        if d[0] == "hue":
            return hue_rotate(img, d[1]), y
        return img[..., list(d[1])], (self.remap(y) if self.pairs else y)

    def apply_batch(self, x, y, rng):
        """Batch version on a float tensor (B, 3, H, W) in [0, 1] and labels y (B, L)."""
        draws = [self.draw(rng) for _ in range(len(x))]
        mats = np.stack([np.eye(3) if d is None else hue_matrix(d[1]) if d[0] == "hue"
                         else np.eye(3)[list(d[1])] for d in draws])
        mats = torch.as_tensor(mats, dtype=x.dtype, device=x.device)
        x = torch.einsum("bij,bjhw->bihw", mats, x).clamp_(0, 1)
        swapped = [i for i, d in enumerate(draws) if d is not None and d[0] == "perm"]
        if self.pairs and swapped:
            y = y.clone()
            for a, b in self.pairs:
                y[swapped, a], y[swapped, b] = y[swapped, b], y[swapped, a]  # indexing copies
        return x, y


def hue_matrix(deg):
    """3x3 RGB matrix rotating colours by `deg` degrees about the grey axis (greys unchanged)."""
    a = math.radians(deg)
    k = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)  # cross product with grey
    return math.cos(a) * np.eye(3) + (1 - math.cos(a)) / 3 * np.ones((3, 3)) + math.sin(a) * k


def hue_rotate(img, deg):
    """Rotate the hue of a uint8 RGB image by `deg` degrees; clipped back to uint8."""
    out = img.reshape(-1, 3).astype(np.float32) @ hue_matrix(deg).T.astype(np.float32)
    return np.rint(out).clip(0, 255).astype(np.uint8).reshape(img.shape)
