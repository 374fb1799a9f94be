"""Training-time augmentation of uint8 RGB images (--aug), run per sample in the loader workers.

--aug is a `;` list of names, each with optional `,`-separated options after a colon
(README "Option strings"); a bare value sets the first option listed below:

    hflip[:p]              horizontal flip with probability p (0.5)
    vflip[:p]              vertical flip (p 0.5)
    rotate[:deg]           rotation by U(-deg, deg) degrees (10), reflect padding
    shift[:frac]           shift by U(-frac, frac) of the side on each axis (0.1), reflect padding
    crop[:frac]            AlexNet/ResNet crop: keep a square (1 - U(0, frac)) of the side (0.125)
                           at a random place, resized back
    rrc[:scale,ratio]      random-resized crop (Inception/torchvision): area U(scale, 1) (0.08),
                           aspect log-uniform in [ratio, 1/ratio] (0.75), resized back
    pca[:std]              AlexNet lighting: add eigvec @ (N(0, std) * eigval) to every pixel (0.1),
                           eigen-decomposition of the training pixels' RGB covariance (pca_stats)
    colorswap[:mode,p,deg,remap]
                           with probability p (0.5): mode rb / rg / gb exchanges two channels,
                           perm applies a random non-identity channel permutation, hue rotates
                           hue by U(-deg, deg) degrees (180) about the grey axis.
                           remap=blue/red+navy/maroon (rb, rg or gb only) swaps those tags'
                           label columns whenever the channels are swapped, for data where
                           colour is a tag; without it the labels never change.

    erase[:p,side,ratio,fill]
                           random erasing / cutout (Zhong et al. 2017; DeVries & Taylor 2017),
                           torchvision v2 RandomErasing: with probability p (0.5) a box whose
                           sides are at most `side` of the image side (0.5), aspect ratio in
                           [ratio, 1/ratio] (1: squares, as cutout), filled with `fill`: a grey
                           level 0-255 or random, a random solid colour per image as in the
                           ASL scripts' CutoutPIL (random)
    randaug[:n,m,bins]     RandAugment (Cubuk et al. 2020), torchvision v2: n ops (2) at
                           magnitude m (9) of bins levels (31)
    trivialaug[:bins]      TrivialAugmentWide (Mueller & Hutter 2021), torchvision v2 (31 bins)
    autoaug[:policy]       AutoAugment (Cubuk et al. 2019), torchvision v2, policy imagenet,
                           cifar10 or svhn (imagenet)

Presets: none; light = hflip; default = hflip;rotate:10;shift:0.0625;crop:0.125,
heavy = hflip;vflip;rotate:15;shift:0.1;rrc:0.35;pca:0.1;colorswap:rb (assumes colour is not a
tag; add `,remap=...` otherwise); strong = hflip;erase:1;randaug:2,m=9 (the ASL scripts'
combination, Ridnik et al. 2021: cutout of up to half the side on every image, then
RandAugment, on top of flips). Presets and names mix (`default;vflip`); a name given again
replaces the earlier one's options in place (`default;rotate:30`). Quote specs in a shell:
`--aug 'light;colorswap:rb,remap=blue/red'`.

The input (any H x W) is treated as stretched to size x size. All geometric steps, in the
order listed, are composed into one affine map and applied with a single bilinear resample
(PIL) of a reflect-padded image, so there are no black borders and no repeated blurring.
Colour steps and the torchvision ops (erase, randaug, trivialaug, autoaug) follow, in the
order listed. Every random draw comes from the numpy Generator passed in, so a (seed, index)
pair fixes the result in any worker.

Images with more bands (--channels 4: R, G, B, near-infrared; utils/data/bands.py): geometric
steps move every band (PIL resamples them three at a time); colour steps and the torchvision
ops see bands 0-2 only, the others pass through (erase leaves them as they were; train.py
refuses randaug, trivialaug and autoaug there, whose rotations would move RGB alone).
"""
import logging
import math

import numpy as np
from PIL import Image

from utils.common.errors import DataError
from utils.common.options import check_choice, merge_options, old_separators, parse_items, refuse_old_list

log = logging.getLogger(__name__)

PRESETS = {
    "none": "",
    "light": "hflip",
    "default": "hflip;rotate:10;shift:0.0625;crop:0.125",
    "heavy": "hflip;vflip;rotate:15;shift:0.1;rrc:0.35;pca:0.1;colorswap:rb",
    "strong": "hflip;erase:1;randaug:2,m=9",
}

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

    def __init__(self, stats=None, **opts):
        super().__init__(**opts)
        self.source = "train" if stats is not None else "imagenet"
        if stats is None:
            log.warning("pca: no statistics of the training images given; using ImageNet's")
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
        import torch

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
        import torch

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


# ----------------------------------------------------------------------------- torchvision ops

class TorchvisionOp(Op):
    """A step run by a torchvision.transforms.v2 transform on a uint8 (3, H, W) tensor.

    Subclasses give `transform(rng)`, the v2 transform for one image. v2 transforms draw
    their parameters from torch's global CPU generator, which would make the result depend
    on whatever ran before in the process (and break exact resume). So each image's call
    runs inside torch.random.fork_rng, with the CPU generator seeded from the numpy rng
    passed in: the result is a pure function of that rng, and the global torch RNG (dropout,
    the loader) is left as it was. Only the CPU generator is forked and seeded
    (default_generator.manual_seed, not torch.manual_seed, which would also reseed CUDA):
    v2 draws its parameters on the CPU whatever the image's device.
    """

    geometric = False

    def transform(self, rng):
        raise NotImplementedError

    def _check_int(self, key, lo, hi=None):
        v = self.opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            bound = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
            raise DataError(f"augmentation {self.name}: {key} must be {bound}; got {v!r}")

    def run(self, img, rng):
        """Apply to one uint8 (3, H, W) tensor (any device); returns a uint8 (3, H, W) tensor."""
        import torch

        t = self.transform(rng)
        seed = int(rng.integers(2 ** 63))
        threads = torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                if img.device.type == "cpu":
                    # one image is far too small for intra-op threads: with them these ops ran
                    # 10-25x slower outside the loader workers (which are single-threaded)
                    torch.set_num_threads(1)
                return t(img)
        finally:
            torch.set_num_threads(threads)

    def apply(self, img, y, rng):
        import torch

        img = img if img.flags.writeable else img.copy()
        out = self.run(torch.from_numpy(img).permute(2, 0, 1), rng)
        return out.permute(1, 2, 0).numpy(), y

    def apply_batch(self, x, y, rng):
        """Batch version on a float tensor (B, 3, H, W) in [0, 1]: each image is quantised to
        uint8 and transformed on its own, with its own draws. A v2 transform called on a batch
        draws one set of parameters for all of it (the same box, ops and magnitudes on every
        image), so the images go one by one; with the same rng a batch of one gives the CPU
        path's result exactly."""
        import torch

        u8 = x.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        out = torch.stack([self.run(img, rng) for img in u8])
        return out.to(x.dtype).div_(255), y


class Erase(TorchvisionOp):
    name = "erase"
    defaults = {"p": 0.5, "side": 0.5, "ratio": 1.0, "fill": "random"}

    def check(self):
        super().check()
        if not 0 < self.opts["side"] <= 1 or not 0 < self.opts["ratio"] <= 1:
            raise DataError(f"augmentation erase: side and ratio must be in (0, 1]; got "
                            f"side={self.opts['side']}, ratio={self.opts['ratio']}")
        fill = self.opts["fill"]
        if fill != "random" and (isinstance(fill, bool) or not isinstance(fill, (int, float))
                                 or not 0 <= fill <= 255):
            raise DataError(f"augmentation erase: fill must be a grey level 0-255 or random; got {fill!r}")

    def transform(self, rng):
        from torchvision.transforms import v2

        side, ratio = self.opts["side"], self.opts["ratio"]
        # box height = sqrt(area * aspect) <= sqrt(side^2 * ratio / ratio) = side (width alike)
        top = side * side * ratio
        fill = self.opts["fill"]
        fill = [float(c) for c in rng.integers(0, 256, 3)] if fill == "random" else float(fill)
        return v2.RandomErasing(p=self.opts["p"], scale=(min(0.02, top), top), ratio=(ratio, 1 / ratio),
                                value=fill)


class RandAug(TorchvisionOp):
    name, defaults = "randaug", {"n": 2, "m": 9, "bins": 31}

    def check(self):
        self._check_int("bins", 2)
        self._check_int("n", 0)
        self._check_int("m", 0, self.opts["bins"] - 1)

    def transform(self, rng):
        from torchvision.transforms import v2

        # bilinear, as torchvision's reference training presets use (v2's default is nearest)
        return v2.RandAugment(num_ops=self.opts["n"], magnitude=self.opts["m"],
                              num_magnitude_bins=self.opts["bins"],
                              interpolation=v2.InterpolationMode.BILINEAR)


class TrivialAug(TorchvisionOp):
    name, defaults = "trivialaug", {"bins": 31}

    def check(self):
        self._check_int("bins", 2)

    def transform(self, rng):
        from torchvision.transforms import v2

        return v2.TrivialAugmentWide(num_magnitude_bins=self.opts["bins"],
                                     interpolation=v2.InterpolationMode.BILINEAR)


class AutoAug(TorchvisionOp):
    name, defaults = "autoaug", {"policy": "imagenet"}

    def check(self):
        check_choice("autoaug policy", str(self.opts["policy"]).lower(), ("imagenet", "cifar10", "svhn"))
        self.opts["policy"] = str(self.opts["policy"]).lower()

    def transform(self, rng):
        from torchvision.transforms import v2

        return v2.AutoAugment(policy=v2.AutoAugmentPolicy(self.opts["policy"]),
                              interpolation=v2.InterpolationMode.BILINEAR)


OPS = {cls.name: cls for cls in (HFlip, VFlip, Rotate, Shift, Crop, RandomResizedCrop,
                                 PCALighting, ColorSwap, Erase, RandAug, TrivialAug, AutoAug)}
AUGMENTS = tuple(OPS)
_POSITIONAL = {name: tuple(cls.defaults)[:1] for name, cls in OPS.items()}


def parse_augment(spec):
    """Expand an --aug spec into an ordered list of (name, options); presets expanded,
    a repeated name replacing the earlier one in place. DataError lists valid names, and
    shows the `;`-separated form of a list typed with the former `,` between augmentations."""
    try:
        return _parse_augment(spec)
    except DataError:
        refuse_old_list("--aug", spec, _parse_augment)
        raise


def modern_aug(spec):
    """An --aug spec in today's spelling: one typed with the former separators (`,` between
    augmentations, `;` inside one) converted; any other spec unchanged."""
    try:
        parse_augment(spec)
    except DataError:
        new = old_separators(spec)
        try:
            _parse_augment(new)
            return new
        except DataError:
            pass
    return spec


def _parse_augment(spec):
    items = {}
    for name, opts in parse_items(spec, "--aug", lambda name: _POSITIONAL.get(name, ("value",))):
        if name in PRESETS and not opts:
            items.update(_parse_augment(PRESETS[name]))
            continue
        check_choice("augmentation", name, (*OPS, *PRESETS))
        if name in PRESETS:
            raise DataError(f"--aug preset {name!r} takes no options; got {opts}")
        items[name] = opts
    return list(items.items())


class Augment:
    """A parsed --aug pipeline. Call it as aug(img uint8 (H, W, C), y float32 (L,), rng)
    -> (img uint8 (size, size, C) C-contiguous, new array; y, a copy when changed). Geometric
    steps move every band, colour steps change R, G, B (bands 0-2) only (ValueError if C < 3)."""

    def __init__(self, ops, size):
        self.ops, self.size = list(ops), int(size)
        self.geometric = [op for op in self.ops if op.geometric]
        self.colour = [op for op in self.ops if not op.geometric]

    @property
    def spec(self):
        """Canonical spec string; build_augment(aug.spec, ...) rebuilds the same pipeline."""
        return ";".join(op.spec for op in self.ops) or "none"

    def __str__(self):
        return self.spec

    def __repr__(self):
        return f"Augment({self.spec!r}, size={self.size})"

    def info(self):
        """JSON-ready description for config.json: spec, size and the PCA statistics used."""
        out = {"aug": self.spec, "size": self.size}
        for op in self.ops:
            if isinstance(op, PCALighting):
                out["pca"] = {"source": op.source, "eigval": op.eigval.tolist(),
                              "eigvec": op.eigvec.tolist()}
        return out

    def matrix(self, rng):
        """Compose the geometric steps' normalised output->input maps (in listed order)."""
        m = np.eye(3)
        for op in self.geometric:
            m = m @ op.matrix(rng)  # the first step acts last on output coordinates
        return m

    def __call__(self, img, y, rng):
        img = _check_image(img)
        if self.colour and img.shape[2] < 3:
            raise ValueError(f"colour steps ({self.spec}) need R, G, B; the image has {img.shape[2]} band(s)")
        img = warp(img, self.matrix(rng), self.size)
        rgb = img[..., :3]  # colour steps see R, G, B only; extra bands (near-infrared) pass through
        for op in self.colour:
            rgb, y = op.apply(rgb, y, rng)
        if img.shape[2] > 3:
            rgb = np.concatenate([rgb, img[..., 3:]], axis=2)
        return np.ascontiguousarray(rgb), y


def build_augment(spec, size, labels=None, pca=None):
    """Build an Augment from an --aug spec (names, options, presets; see the module doc).

    size: output side in pixels; labels: label names (needed by colorswap remap);
    pca: {"eigval": [3], "eigvec": [[3x3]]} from pca_stats (ImageNet's when None).
    Raises DataError for unknown names or options, listing the valid ones.
    """
    ops = []
    for name, opts in parse_augment(spec):
        if name == "pca":
            ops.append(PCALighting(stats=pca, **opts))
        elif name == "colorswap":
            ops.append(ColorSwap(labels=labels, **opts))
        else:
            ops.append(OPS[name](**opts))
    return Augment(ops, size)


def _check_image(img):
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected a uint8 (H, W, C) image; got {img.dtype} {img.shape}")
    return img


def warp(img, m, size):
    """Resample uint8 (H, W, C) `img` to (size, size, C) through the normalised output->input
    map `m` (3x3; identity = plain resize), reflecting the image where the map leaves it."""
    if img.shape[2] != 3:
        # PIL has no mode for C bands (4 would be RGBA, whose alpha PIL premultiplies):
        # warp three bands at a time, the last group padded with its last band
        c = img.shape[2]
        img = np.concatenate([img, img[..., -1:].repeat(-c % 3, axis=2)], axis=2)
        return np.concatenate([warp(np.ascontiguousarray(img[..., i:i + 3]), m, size)
                               for i in range(0, img.shape[2], 3)], axis=2)[..., :c]
    h, w = img.shape[:2]
    if np.allclose(m[:2, 2], 0) and np.allclose(np.abs(m[:2, :2]), np.eye(2)):
        # flips only: slicing is exact and costs nothing
        img = img[:: int(np.sign(m[1, 1])), :: int(np.sign(m[0, 0]))]
        if (h, w) == (size, size):
            return np.array(img)
        return np.array(Image.fromarray(np.ascontiguousarray(img)).resize(
            (size, size), Image.Resampling.BILINEAR))
    # pixel maps: output pixel u in [0, size] <-> q = 2u/size - 1; p -> input x = (p + 1) w / 2
    out_to_q = np.array([[2 / size, 0, -1], [0, 2 / size, -1], [0, 0, 1]])
    p_to_in = np.array([[w / 2, 0, w / 2], [0, h / 2, h / 2], [0, 0, 1]])
    a = p_to_in @ m @ out_to_q
    step = math.sqrt(abs(np.linalg.det(a[:2, :2])))  # input pixels per output pixel
    if step >= 2:
        # box-reduce first so bilinear sampling of a much larger image does not alias
        k = int(step)
        img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).reduce(k))
        a = np.diag([img.shape[1] / w, img.shape[0] / h, 1.0]) @ a
        h, w = img.shape[:2]
    corners = a @ np.array([[0, size, 0, size], [0, 0, size, size], [1, 1, 1, 1]], dtype=float)
    left, top = (max(0, math.ceil(-v) + 1) for v in corners[:2].min(axis=1))
    right = max(0, math.ceil(corners[0].max() - w) + 1)
    bottom = max(0, math.ceil(corners[1].max() - h) + 1)
    if left or top or right or bottom:
        img = np.pad(img, ((top, bottom), (left, right), (0, 0)), mode="reflect")
        a = np.array([[1, 0, left], [0, 1, top], [0, 0, 1]]) @ a
    out = Image.fromarray(np.ascontiguousarray(img)).transform(
        (size, size), Image.Transform.AFFINE, data=tuple(a[:2].ravel()),
        resample=Image.Resampling.BILINEAR)
    return np.array(out)  # writable, so torch.from_numpy takes it without a warning


def pca_stats(images, max_pixels=1_000_000, seed=0):
    """RGB eigen-decomposition of (a random sample of) training pixels scaled to [0, 1].

    images: uint8 (N, H, W, 3) array or a sequence of (H, W, 3) arrays.
    Returns {"eigval": [3] descending, "eigvec": 3x3 nested list whose columns are the
    eigenvectors} (JSON-ready), the input `pca` of build_augment.
    """
    rng = np.random.default_rng(seed)
    if isinstance(images, np.ndarray):
        px = _sample_rows(images.reshape(-1, 3), max_pixels, rng)
    else:
        per = max(1, max_pixels // max(1, len(images)))
        px = np.concatenate([_sample_rows(np.asarray(im).reshape(-1, 3), per, rng)
                             for im in images])
    if len(px) < 2:
        raise DataError("pca_stats needs at least two pixels")
    cov = np.cov(px.astype(np.float64) / 255.0, rowvar=False)
    val, vec = np.linalg.eigh(cov)
    order = np.argsort(val)[::-1]
    return {"eigval": [float(v) for v in val[order]],
            "eigvec": [[float(v) for v in row] for row in vec[:, order]]}


def _sample_rows(rows, k, rng):
    # with replacement: exact enough for a 3x3 covariance, and fast on 10^8 pixels
    return rows if len(rows) <= k else rows[rng.integers(0, len(rows), k)]


def warp_batch(x, mats, size):
    """Torch version of `warp` for a batch: x float (B, C, H, W) on any device, mats (B, 3, 3)
    normalised output->input maps -> (B, C, size, size), bilinear with reflection padding.
    No anti-aliasing: give it images at about the output size."""
    import torch
    import torch.nn.functional as F

    theta = torch.as_tensor(np.asarray(mats)[:, :2], dtype=torch.float32, device=x.device)
    # affine_grid with align_corners=False uses the same [-1, 1]-spans-the-image convention
    grid = F.affine_grid(theta, (len(x), x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


class GpuAugment:
    """The same pipeline as build_augment(spec, ...) on whole batches with torch ops, for the
    GPU: call it as gaug(x float (B, C, H, W) in [0, 1], y (B, L) tensor, generator) ->
    (x float (B, C, size, size) in [0, 1], y); colour steps change bands 0-2 only. The
    torch.Generator seeds one numpy Generator per batch, which draws every parameter, so the
    result is fixed by the generator's state."""

    def __init__(self, spec, size, labels=None, pca=None):
        self.augment = build_augment(spec, size, labels=labels, pca=pca)
        self.size = int(size)

    @property
    def spec(self):
        return self.augment.spec

    def __str__(self):
        return self.spec

    def __call__(self, x, y, generator):
        import torch

        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
        rng = np.random.default_rng(seed)
        mats = np.stack([self.augment.matrix(rng) for _ in range(len(x))])
        if x.shape[-2:] != (self.size, self.size) or not np.allclose(mats, np.eye(3)):
            x = warp_batch(x, mats, self.size)
        rgb = x[:, :3]  # colour steps on R, G, B only, as on the CPU
        for op in self.augment.colour:
            rgb, y = op.apply_batch(rgb, y, rng)
        return (torch.cat([rgb, x[:, 3:]], dim=1) if x.shape[1] > 3 else rgb), y
