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

Here: the --aug language (PRESETS, OPS, parse_augment), the pipeline (Augment,
build_augment), the one resample (warp) and the PCA statistics (pca_stats). The ops live in
utils.augment.ops (geometric and colour) and utils.augment.torchvision_ops; the same
pipeline on whole batches on the GPU (--aug-device gpu) is utils.augment.gpu.GpuAugment.
"""
import math

import numpy as np
from PIL import Image

from utils.augment.ops import ColorSwap, Crop, HFlip, PCALighting, RandomResizedCrop, Rotate, Shift, VFlip
from utils.augment.torchvision_ops import AutoAug, Erase, RandAug, TrivialAug
from utils.common.errors import DataError
from utils.common.options import check_choice, old_separators, parse_items, refuse_old_list

PRESETS = {
    "none": "",
    "light": "hflip",
    "default": "hflip;rotate:10;shift:0.0625;crop:0.125",
    "heavy": "hflip;vflip;rotate:15;shift:0.1;rrc:0.35;pca:0.1;colorswap:rb",
    "strong": "hflip;erase:1;randaug:2,m=9",
}

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


def build_augment(spec, size, labels=None, pca=None, check_only=False):
    """Build an Augment from an --aug spec (names, options, presets; see the module doc).

    size: output side in pixels; labels: label names (needed by colorswap remap);
    pca: {"eigval": [3], "eigvec": [[3x3]]} from pca_stats (ImageNet's when None, with a
    warning unless check_only: a pipeline built only to check the spec, before the
    training images' statistics exist).
    Raises DataError for unknown names or options, listing the valid ones.
    """
    ops = []
    for name, opts in parse_augment(spec):
        if name == "pca":
            ops.append(PCALighting(stats=pca, warn=not check_only, **opts))
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


