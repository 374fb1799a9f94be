"""Synthetic "outfits" dataset in the Kaggle/Planet layout: the project's built-in demo data.

Every image is a drawn figure wearing garments and accessories on a textured
background. The 13 tags follow the label densities of the competition this project
grew from (two tags near 90%, several below 1%), so the imbalance problems of the
real data show up on the demo too. Garment colours are random and never a tag, so
colour augmentation is label-preserving.

Output is deterministic: labels come from one generator per (seed, split) and each
image from its own generator seeded by (seed, split, index), so the bytes written do
not depend on the number of worker processes.
"""
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from functools import partial
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from tqdm import tqdm

from utils.common.atomic import atomic_write_csv, atomic_write_text
from utils.common.errors import DataError
from utils.common.text import read_csv

log = logging.getLogger(__name__)

# Label order (labels.txt) and the density of each tag, in that order.
TAGS = ("glasses", "hat", "top", "tie", "trousers", "bag", "umbrella",
        "scarf", "shoes", "stripes", "skirt", "dots", "long_sleeves")
DENSITIES = (1 / 527, 1 / 12.8, 1 / 1.1, 1 / 210, 1 / 2.8, 1 / 6.18, 1 / 279.32,
             1 / 40.5, 1 / 1.11, 1 / 7.7, 1 / 14.79, 1 / 43.9, 1 / 156)
# These only exist on a top; they are sampled given a top with probability p / p_top,
# which keeps their overall density exactly p.
ON_TOP = ("tie", "stripes", "dots", "long_sleeves")

_SPLITS = {"train": 0, "test": 1}
_SUPERSAMPLE = 2  # draw at 2x and box-downsample: smooth edges at small sizes
_JPEG_QUALITY = 90


def sample_labels(n, rng, densities=DENSITIES):
    """Draw an (n, len(TAGS)) bool label matrix, one Bernoulli per tag and image.

    n: number of images; rng: numpy Generator; densities: per-tag probabilities in
    TAGS order. Tags in ON_TOP are drawn only on images with a top (conditional
    probability p / p_top), so every tag's marginal density is its `densities` value.
    """
    p = np.asarray(densities, dtype=np.float64)
    top = TAGS.index("top")
    u = rng.random((n, len(TAGS)))
    y = u < p
    for tag in ON_TOP:
        j = TAGS.index(tag)
        y[:, j] = y[:, top] & (u[:, j] < p[j] / p[top])
    return y


def tags_to_str(row):
    """Space-separated tag names (TAGS order) of one bool label row."""
    return " ".join(t for t, on in zip(TAGS, row) if on)


# ----------------------------------------------------------------------------- drawing

@dataclass
class _Frame:
    """Maps figure coordinates to canvas pixels.

    u runs across the body (0 = centre line, flip mirrors it), v runs down
    (hat top ~0, soles 1); `scale` is the figure height in pixels.
    """
    cx: float
    top: float
    scale: float
    flip: int

    def p(self, u, v):
        return (self.cx + self.flip * u * self.scale, self.top + v * self.scale)

    def box(self, u0, v0, u1, v1):
        (x0, y0), (x1, y1) = self.p(u0, v0), self.p(u1, v1)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def poly(self, pts):
        return [self.p(u, v) for u, v in pts]

    def w(self, length):
        return max(1, int(round(length * self.scale)))


def _background(side, rng, skin):
    """Smooth two-colour noise with an optional floor band.

    Returns ((side, side, 3) uint8 image, its two base colours). Base colours keep
    away from the skin colour so the figure always stands out.
    """
    c0, c1 = (np.asarray(_colour(rng, [skin], 70), dtype=np.float32) for _ in range(2))
    k = int(rng.integers(2, 6))
    low = Image.fromarray(rng.random((k, k), dtype=np.float32), mode="F")
    low = np.asarray(low.resize((side, side), Image.BICUBIC)).clip(0, 1)[..., None]
    img = c0 + (c1 - c0) * low
    floor = int(side * rng.uniform(0.78, 0.97))
    if rng.random() < 0.6:  # a floor or wall band under the figure
        img[floor:] *= rng.uniform(0.6, 1.3)
    return img.clip(0, 255).astype(np.uint8), [tuple(c0), tuple(c1)]


def _grain(img, rng):
    """Add camera-like noise (grey plus a little colour) to a finished image."""
    a = np.asarray(img, dtype=np.float32)
    h, w, _ = a.shape
    a = a + rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(2, 10)
    a += rng.standard_normal((h, w, 3), dtype=np.float32) * 2.5
    return Image.fromarray(a.clip(0, 255).astype(np.uint8), "RGB")


def _colour(rng, avoid, min_dist=80.0, tries=30):
    """A random RGB colour at least `min_dist` from every colour in `avoid` (best effort)."""
    best, best_d = None, -1.0
    for _ in range(tries):
        c = rng.integers(0, 256, 3)
        d = min((float(np.linalg.norm(c - np.asarray(a))) for a in avoid), default=1e9)
        if d >= min_dist:
            return tuple(int(x) for x in c)
        if d > best_d:
            best, best_d = c, d
    return tuple(int(x) for x in best)


def _skin(rng):
    t = rng.random()
    light, dark = np.array([245, 205, 175]), np.array([90, 58, 40])
    return tuple(int(x) for x in (light + t * (dark - light) + rng.normal(0, 8, 3)).clip(0, 255))


def _extent(on):
    """Horizontal and vertical extent (u_min, u_max, v_min) of what is drawn, in figure units."""
    u_min, u_max, v_min = -0.21, 0.21, 0.04
    if on["hat"]:
        v_min = 0.0
    if on["bag"]:
        u_max = 0.32
    if on["umbrella"]:
        u_min, v_min = -0.52, min(v_min, -0.08)
    return u_min, u_max, v_min


def _place(on, side, rng):
    """Random scale, position and mirror that keep the whole figure inside the canvas."""
    u_min, u_max, v_min = _extent(on)
    margin = 0.03 * side
    scale = side * rng.uniform(0.72, 0.92)
    scale = min(scale, (side - 2 * margin) / (u_max - u_min), (side - 2 * margin) / (1 - v_min))
    flip = 1 if rng.random() < 0.5 else -1
    lo_x, hi_x = margin - u_min * scale, side - margin - u_max * scale
    if flip < 0:  # mirrored: the figure's u range maps to the other side of cx
        lo_x, hi_x = margin + u_max * scale, side - margin + u_min * scale
    lo_y, hi_y = margin - v_min * scale, side - margin - scale
    cx = rng.uniform(lo_x, max(lo_x, hi_x))
    top = rng.uniform(lo_y, max(lo_y, hi_y))
    return _Frame(cx, top, scale, flip)


def _pattern(top_rgb, size, f, rng, stripes, dots, avoid):
    """The top's fabric: solid colour, plus stripes and/or dots in a contrasting colour."""
    fabric = Image.new("RGB", size, top_rgb)
    d = ImageDraw.Draw(fabric)
    if stripes:
        c = _colour(rng, [top_rgb] + avoid, 110)
        period = f.scale * rng.uniform(0.05, 0.065)
        y = f.top + rng.uniform(0, period)
        while y < size[1]:
            d.rectangle((0, y, size[0], y + period * 0.5), fill=c)
            y += period
    if dots:
        c = _colour(rng, [top_rgb] + avoid, 110)
        step, r = f.scale * 0.075, f.scale * 0.022
        x0, y0 = f.cx + rng.uniform(0, step), f.top + rng.uniform(0, step)
        for i in range(-12, 13):
            for j in range(-1, 16):
                x, y = x0 + i * step + (j % 2) * step / 2, y0 + j * step
                d.ellipse((x - r, y - r, x + r, y + r), fill=c)
    return fabric


def _draw_body(d, f, skin, arm_end):
    d.ellipse(f.box(-0.075, 0.055, 0.075, 0.225), fill=skin)  # head
    d.rectangle(f.box(-0.03, 0.2, 0.03, 0.28), fill=skin)  # neck
    for s in (-1, 1):
        d.line([f.p(s * 0.13, 0.29), f.p(s * arm_end, 0.57)], fill=skin, width=f.w(0.05))
        d.ellipse(f.box(s * arm_end - 0.028, 0.545, s * arm_end + 0.028, 0.6), fill=skin)
        d.line([f.p(s * 0.055, 0.55), f.p(s * 0.06, 0.93)], fill=skin, width=f.w(0.075))
        d.ellipse(f.box(s * 0.03, 0.925, s * 0.1, 0.965), fill=skin)  # bare foot


def _draw_top(img, f, on, top_rgb, arm_end, rng, avoid):
    mask = Image.new("L", img.size, 0)
    m = ImageDraw.Draw(mask)
    m.polygon(f.poly([(-0.145, 0.27), (0.145, 0.27), (0.12, 0.57), (-0.12, 0.57)]), fill=255)
    reach = 0.95 if on["long_sleeves"] else 0.3  # fraction of the arm the sleeve covers
    for s in (-1, 1):
        u0, v0, u1, v1 = s * 0.13, 0.29, s * arm_end, 0.57
        end = (u0 + reach * (u1 - u0), v0 + reach * (v1 - v0))
        m.line([f.p(u0, v0 - 0.01), f.p(*end)], fill=255, width=f.w(0.07))
    m.ellipse(f.box(-0.045, 0.245, 0.045, 0.305), fill=0)  # neckline shows the neck
    fabric = _pattern(top_rgb, img.size, f, rng, on["stripes"], on["dots"], avoid)
    img.paste(fabric, (0, 0), mask)


def _draw_umbrella(d, f, rgb, arm_end):
    cu, cv, r = -0.31, 0.13, 0.21
    d.line([f.p(-arm_end, 0.57), f.p(cu, cv)], fill=(40, 40, 40), width=f.w(0.014))
    d.pieslice(f.box(cu - r, cv - r, cu + r, cv + r), 180, 360, fill=rgb)
    rib = tuple(int(c * 0.6) for c in rgb)
    for k in range(1, 4):  # ribs and a scalloped rim make the canopy an unmistakable shape
        d.line([f.p(cu, cv - r), f.p(cu - r + k * r / 2, cv)], fill=rib, width=f.w(0.01))
    for k in range(4):
        u = cu - r + (k + 0.5) * r / 2
        d.ellipse(f.box(u - r / 4, cv - 0.03, u + r / 4, cv + 0.03), fill=rgb)


def draw_outfit(row, size, rng):
    """Draw one image for a bool label row (TAGS order); returns an RGB PIL image size x size.

    All random choices come from `rng`, so a fixed generator state gives a fixed image.
    """
    on = dict(zip(TAGS, (bool(x) for x in row)))
    side = size * _SUPERSAMPLE
    skin = _skin(rng)
    bg, bg_colours = _background(side, rng, skin)
    img = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(img)
    f = _place(on, side, rng)
    avoid = [skin] + bg_colours
    # One colour per item, drawn whether or not the item is present, so that toggling
    # a tag changes only that item.
    names = ("top", "trousers", "skirt", "shoes", "hat", "glasses", "tie", "scarf", "bag", "umbrella")
    rgb = {k: _colour(rng, avoid) for k in names}
    arm_end = rng.uniform(0.17, 0.21)

    _draw_body(d, f, skin, arm_end)
    if on["shoes"]:
        for s in (-1, 1):
            d.rounded_rectangle(f.box(s * 0.015, 0.905, s * 0.135, 0.99), radius=f.w(0.025), fill=rgb["shoes"])
            d.line([f.p(s * 0.015, 0.985), f.p(s * 0.135, 0.985)], fill=(30, 30, 30), width=f.w(0.012))
    if on["trousers"]:
        for s in (-1, 1):
            d.polygon(f.poly([(0, 0.53), (s * 0.125, 0.53), (s * 0.105, 0.925), (s * 0.01, 0.925)]),
                      fill=rgb["trousers"])
    if on["top"]:
        _draw_top(img, f, on, rgb["top"], arm_end, rng, avoid)
    if on["skirt"]:
        d.polygon(f.poly([(-0.12, 0.53), (0.12, 0.53), (0.22, 0.76), (-0.22, 0.76)]), fill=rgb["skirt"])
    if on["tie"]:
        tie = _colour(rng, [rgb["top"]] + avoid, 120)
        d.rectangle(f.box(-0.02, 0.265, 0.02, 0.3), fill=tie)
        d.polygon(f.poly([(-0.016, 0.3), (0.016, 0.3), (0.035, 0.46), (0, 0.51), (-0.035, 0.46)]), fill=tie)
    if on["scarf"]:
        d.rounded_rectangle(f.box(-0.09, 0.215, 0.09, 0.3), radius=f.w(0.03), fill=rgb["scarf"])
        d.rectangle(f.box(0.02, 0.27, 0.08, 0.46), fill=rgb["scarf"])
    if on["hat"]:
        d.rounded_rectangle(f.box(-0.07, 0.0, 0.07, 0.1), radius=f.w(0.03), fill=rgb["hat"])
        d.ellipse(f.box(-0.15, 0.075, 0.15, 0.115), fill=rgb["hat"])
    if on["glasses"]:
        for s in (-1, 1):  # sunglasses: dark lenses in a coloured frame
            d.ellipse(f.box(s * 0.005, 0.105, s * 0.07, 0.165), fill=(20, 20, 25),
                      outline=rgb["glasses"], width=f.w(0.012))
        d.line([f.p(-0.01, 0.125), f.p(0.01, 0.125)], fill=rgb["glasses"], width=f.w(0.012))
    if on["bag"]:
        d.line([f.p(0.17, 0.62), f.p(0.21, 0.53), f.p(0.29, 0.62)], fill=rgb["bag"], width=f.w(0.016))
        d.rounded_rectangle(f.box(0.15, 0.61, 0.31, 0.77), radius=f.w(0.02), fill=rgb["bag"])
    if on["umbrella"]:
        _draw_umbrella(d, f, rgb["umbrella"], arm_end)
    return _grain(img.reduce(_SUPERSAMPLE), rng)


def _render_one(task, out_dir, size, seed):
    """Worker: draw image `index` of `split` and write it as JPEG under out_dir/split."""
    split, index, name, row = task
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    draw_outfit(row, size, rng).save(Path(out_dir) / split / f"{name}.jpg", quality=_JPEG_QUALITY)


# ----------------------------------------------------------------------------- dataset

def _split_labels(split, n, seed):
    """Image names and bool labels of one split; they depend only on (seed, split, n)."""
    width = max(5, len(str(n)))
    names = [f"{split}_{i + 1:0{width}d}" for i in range(n)]
    return names, sample_labels(n, np.random.default_rng([seed, _SPLITS[split]]))


def _render(tasks, out_dir, size, seed, workers):
    """Draw and write every (split, index, name, row) task, in `workers` processes."""
    fn = partial(_render_one, out_dir=str(out_dir), size=size, seed=seed)
    bar = partial(tqdm, total=len(tasks), desc="demo images", unit="img", leave=False)
    if workers <= 1:
        for _ in bar(map(fn, tasks)):
            pass
        return
    # forkserver, not fork: a process forked from train.py, whose torch and BLAS threads may hold
    # locks at that moment, can hang on them for ever
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        for _ in bar(pool.imap_unordered(fn, tasks, chunksize=32)):
            pass


def check_target(out):
    """True if `out` is a folder holding anything, False if absent or empty; DataError if a file."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    return out.exists() and any(out.iterdir())



def check_settings(what, out_dir, n_train, n_test, size, seed, force):
    """The resolved output folder of a dataset generator (`what`: demo, mosaic), after checking
    its counts, size and seed and that the folder is empty (unless force). Raises DataError."""
    out = Path(out_dir).resolve()
    problems = [f"{k} must be >= {lo}, got {v}" for k, v, lo in
                (("n_train", n_train, 1), ("n_test", n_test, 1), ("size", size, 16), ("seed", seed, 0))
                if v < lo]
    if problems:
        raise DataError(f"invalid {what} settings: " + "; ".join(problems))
    if check_target(out) and not force:
        raise DataError(f"{out} exists and is not empty; choose another folder or pass --force to replace it")
    return out

def move_into_place(tmp, out, force):
    """Rename the finished tmp folder to `out`, replacing an empty (or, with force, any) folder."""
    if check_target(out):
        if not force:
            raise DataError(f"{out} appeared while the dataset was being generated; not replacing it")
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)


def make_demo(out_dir, n_train=3000, n_test=1000, size=96, seed=0, workers=None, force=False):
    """Generate the synthetic outfits dataset in `out_dir`; returns out_dir as a Path.

    Writes train.csv and test_labels.csv (image_name,tags; names without extension),
    train/*.jpg, test/*.jpg, sample_submission.csv (test order, empty tags) and
    labels.txt (TAGS). Same seed and counts give byte-identical files for any
    `workers` (None = all available cores). Everything is generated in a hidden
    sibling folder renamed to out_dir at the end, so an interrupted run leaves no
    half dataset. Raises DataError if out_dir exists and is not empty (unless
    force, which replaces it) or for invalid counts, size or seed.
    """
    out = check_settings("demo", out_dir, n_train, n_test, size, seed, force)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        tables, tasks = {}, []
        for split, n in (("train", n_train), ("test", n_test)):
            names, labels = _split_labels(split, n, seed)
            (tmp / split).mkdir()
            tasks += [(split, i, name, row) for i, (name, row) in enumerate(zip(names, labels))]
            tables[split] = pd.DataFrame({"image_name": names, "tags": [tags_to_str(r) for r in labels]})
        _render(tasks, tmp, size, seed, workers)
        atomic_write_csv(tmp / "train.csv", tables["train"])
        atomic_write_csv(tmp / "test_labels.csv", tables["test"])
        atomic_write_csv(tmp / "sample_submission.csv", tables["test"].assign(tags=""))
        atomic_write_text(tmp / "labels.txt", "\n".join(TAGS) + "\n")
        move_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("demo dataset: %d train + %d test images at %d px in %s", n_train, n_test, size, out)
    return Path(out_dir)


def ensure_demo(out_dir, **kwargs):
    """Return out_dir, generating the demo there first (make_demo kwargs) if it has no train.csv.

    Safe when two processes race: the loser of the final rename keeps the winner's data.
    """
    out = Path(out_dir)
    if (out / "train.csv").exists():
        return out
    try:
        return make_demo(out, **kwargs)
    except DataError:
        if (out / "train.csv").exists():
            return out
        raise


def tag_frequencies(data_dir, tags=TAGS, densities=DENSITIES):
    """Table of each tag's target density and realised frequency in train.csv and test_labels.csv.

    Returns a DataFrame indexed by tag (`tags` order) with columns density (from
    `densities`, same order), then train and/or test (fraction of images carrying
    the tag), for the CSVs present.
    """
    data_dir = Path(data_dir)
    table = pd.DataFrame({"density": densities}, index=pd.Index(tags, name="tag"))
    for split, csv in (("train", "train.csv"), ("test", "test_labels.csv")):
        if (data_dir / csv).exists():
            rows = read_csv(data_dir / csv, keep_default_na=False)["tags"].str.split()
            counts = pd.Series([t for ts in rows for t in ts]).value_counts()
            table[split] = counts.reindex(list(tags), fill_value=0).to_numpy() / len(rows)
    return table
