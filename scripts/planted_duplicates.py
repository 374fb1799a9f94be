"""Calibration of tools/near_duplicates.py on copies and recolours planted in a real dataset.

    python scripts/planted_duplicates.py --data data/apparel --n 300

Copies N random training images five ways (JPEG quality 60 and 85; resized to 0.8x;
cropped by 1 px per side, and by 3-5% per side, each side drawn at random) and recolours
each once (hue rotated by 60-300 degrees: the same garment in another colour, which must
stay apart when it is visible: its thumbnail differs from the original's by VISIBLE of 255
in plain RGB; a hue rotation of a grey or white image changes nothing), hashes originals, copies and test images exactly as the tool does
(utils/data/duplicates.py), and prints:

1. the gate statistics of each planted image against its original, percentiles
   5/50/95/max: pHash + dHash bits (of 128), the colour difference and the plain RGB
   thumbnail difference (of 255), next to those of random pairs of distinct dataset images;
2. for a grid of thresholds: recall per kind of copy, the share of recolours kept apart
   from their original and its copies, pairs found among the dataset's own images (true
   copies in the data, or false matches: look at them), and precision on the planted
   copies (a pair with a copy is right when its partner is the copy's original, another
   copy of it, or an image the original itself is paired with).

Writes nothing but the caches.
"""
import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.analysis.leaderboard import to_markdown  # noqa: E402
from utils.common.cli import run_script  # noqa: E402
from utils.data.cache import default_cache_dir, to_rgb  # noqa: E402
from utils.data.dataset import load_dataset  # noqa: E402
from utils.data.duplicates import (DEFAULT_MAX_DISTANCE, DEFAULT_MAX_COLOUR, Hashes, cached_hashes,  # noqa: E402
                                   close_pairs, components, distance, colour_difference)

COPIES = ("jpeg60", "jpeg85", "resize0.8", "crop1px", "crop3-5%")
RECOLOUR = "recolour"
KINDS = COPIES + (RECOLOUR,)
VISIBLE = 6.0  # of 255: plain RGB thumbnail difference of a recolour that must stay apart


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory in the Planet layout")
    p.add_argument("--n", type=int, default=300, help="training images to copy and recolour (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of images, crops and hues (default: 0)")
    p.add_argument("--cache-dir", default=None, help="image and hash cache (default: as the tool's)")
    p.add_argument("--grey", default="8,10,12", help="pHash + dHash thresholds to tabulate, bits (default: 8,10,12)")
    p.add_argument("--colour", default="2,3,4,5,255",
                   help="colour-difference thresholds to tabulate, of 255; 255 = none (default: 2,3,4,5,255)")
    return p


def plant(im, kind, rng):
    """A PIL RGB image re-encoded, resized, cropped or recoloured (hue rotated)."""
    w, h = im.size
    if kind.startswith("jpeg"):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(kind[4:]))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resize0.8":
        return im.resize((max(1, round(w * 0.8)), max(1, round(h * 0.8))), Image.Resampling.BICUBIC)
    if kind == "crop1px":
        return im.crop((1, 1, w - 1, h - 1))
    if kind == RECOLOUR:
        hsv = np.asarray(im.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(43, 213))) % 256  # 60-300 degrees
        return Image.fromarray(hsv, "HSV").convert("RGB")
    f = rng.uniform(0.03, 0.05, 4)
    return im.crop((round(f[0] * w), round(f[1] * h), w - round(f[2] * w), h - round(f[3] * h)))


def planted_hashes(spec, src, rng, cache):
    """Hashes of every KINDS version of the images at rows `src`; (Hashes, origin rows, kinds)."""
    with tempfile.TemporaryDirectory() as tmp:
        files, origin, kind = [], [], []
        for i in src:
            with Image.open(spec.files[i]) as im:
                im = to_rgb(ImageOps.exif_transpose(im))
            for k in KINDS:
                files.append(Path(tmp) / f"{i}_{k}.png")
                plant(im, k, rng).save(files[-1])
                origin.append(i)
                kind.append(k)
        return cached_hashes(files, Path(tmp) / "cache", "planted"), np.asarray(origin), np.asarray(kind)


def pct(v, qs=(5, 50, 95)):
    return "/".join(f"{np.percentile(v, q):.3g}" for q in qs) + f"/{np.max(v):.3g}"


def statistics(h, n0, origin, kind, rng):
    """Percentiles of the gate statistics, planted image vs original and distinct pairs."""
    k = np.arange(len(origin))
    grey = distance(h.grey[origin], h.grey[n0 + k])
    colour = colour_difference(h.thumbs, origin, n0 + k)
    rgb = colour_difference(h.thumbs, origin, n0 + k, chroma=False)
    sel = {kd: kind == kd for kd in COPIES} | {"recolour (visible)": (kind == RECOLOUR) & (rgb >= VISIBLE),
                                               "recolour (not visible)": (kind == RECOLOUR) & (rgb < VISIBLE)}
    rows = [{"pair": f"{kd} vs original", "n": int(s.sum()), "grey bits": pct(grey[s]),
             "colour": pct(colour[s]) if kd in COPIES else pct(colour[s], (0, 1, 5)),
             "RGB": pct(rgb[s])} for kd, s in sel.items() if s.any()]
    a, b = rng.integers(0, n0, 20000), rng.integers(0, n0, 20000)
    a, b = a[a != b], b[a != b]
    rows.append({"pair": "random distinct images", "n": len(a), "grey bits": pct(distance(h.grey[a], h.grey[b])),
                 "colour": pct(colour_difference(h.thumbs, a, b), (0, 1, 50)),
                 "RGB": pct(colour_difference(h.thumbs, a, b, chroma=False), (0, 1, 50))})
    return pd.DataFrame(rows)


def main(args):
    spec = load_dataset(args.data, check=False)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(args.data)
    rng = np.random.default_rng(args.seed)
    src = rng.choice(len(spec.files), min(args.n, len(spec.files)), replace=False)
    hp, origin, kind = planted_hashes(spec, src, rng, cache)
    h = Hashes.concat([cached_hashes(spec.files, cache, spec.images)]
                      + ([cached_hashes(spec.test_files, cache, spec.test_images)] if spec.test_files else []) + [hp])
    n0 = len(h) - len(hp)
    grey_t = [int(v) for v in args.grey.split(",")]
    colour_t = [float(v) for v in args.colour.split(",")]
    i, j, d, c = close_pairs(h, max(grey_t), max(colour_t))
    k = np.arange(len(origin))
    visible = colour_difference(h.thumbs, origin, n0 + k, chroma=False) >= VISIBLE
    table = pd.DataFrame([evaluate(i[keep], j[keep], n0, origin, kind, visible) | {"grey": tg, "colour": tc}
                          for tg in grey_t for tc in colour_t for keep in [(d <= tg) & (c <= tc)]])
    table = table[["grey", "colour"] + [c for c in table.columns if c not in ("grey", "colour")]]
    print(f"{len(src)} images of {args.data} planted {len(KINDS)} ways; {n0} dataset images (train + test)\n")
    print("planted image vs its original, percentiles 5/50/95/max (recolours' colour: 0/1/5/max), and random "
          "pairs of distinct dataset images (colour and RGB: 0/1/50/max); colour and RGB of 255:")
    print(to_markdown(statistics(h, n0, origin, kind, rng)))
    print()
    print(to_markdown(table.round(3)))
    print(f"\ndefaults: --max-distance {DEFAULT_MAX_DISTANCE} --max-colour-difference {DEFAULT_MAX_COLOUR:g}")
    return table


def evaluate(i, j, n0, origin, kind, visible):
    """Recall per kind of copy, visible recolours kept apart, pairs among the dataset's images,
    precision on pairs that involve a copy (recolours left out)."""
    group = components(n0, i[(i < n0) & (j < n0)], j[(i < n0) & (j < n0)])  # the originals' own groups
    owner = np.concatenate([np.arange(n0), origin])  # each planted image stands for its original
    recolour = np.concatenate([np.zeros(n0, bool), kind == RECOLOUR])
    shown = np.concatenate([np.zeros(n0, bool), (kind == RECOLOUR) & visible])
    found = set(zip(i.tolist(), j.tolist()))
    out = {}
    for k in COPIES:
        idx = np.flatnonzero(kind == k)
        out[f"recall {k}"] = np.mean([(int(origin[t]), n0 + int(t)) in found for t in idx])
    same = group[owner[i]] == group[owner[j]]
    rec = recolour[i] ^ recolour[j]
    joined = np.unique(np.where(recolour[i], i, j)[rec & same])
    out["visible recolours kept apart"] = 1 - shown[joined].sum() / max(1, shown.sum())
    dataset = (i < n0) & (j < n0)
    with_copy = ~dataset & ~recolour[i] & ~recolour[j]
    out["pairs among dataset images"] = int(dataset.sum())
    out["precision on copies"] = float(same[with_copy].mean()) if with_copy.any() else float("nan")
    return out


if __name__ == "__main__":
    run_script(main, lambda: get_args_parser().parse_args())
