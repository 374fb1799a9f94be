"""Recall and precision of tools/near_duplicates.py on copies planted in a real dataset.

    python scripts/planted_duplicates.py --data data/apparel --n 300

Copies N random training images three ways (JPEG quality 60; resized to 0.8x; cropped
by 3-5% per side, each side drawn at random), hashes originals, copies and test images
exactly as the tool does (utils/data/duplicates.py), and prints, for a grid of thresholds:
recall per kind of copy, pairs found among the dataset's own images (true copies in
the data, or false matches: look at them), and precision on the planted copies (a
pair with a copy is right when its partner is the copy's original, or another copy of
it, or an image the original itself is paired with). Writes nothing but the caches.
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

from utils.data.cache import default_cache_dir, to_rgb  # noqa: E402
from utils.common.cli import run_script  # noqa: E402
from utils.data.dataset import load_dataset  # noqa: E402
from utils.analysis.leaderboard import to_markdown  # noqa: E402
from utils.data.duplicates import (DEFAULT_MAX_COLOUR, DEFAULT_MAX_DISTANCE, cached_hashes,  # noqa: E402
                              close_pairs, components)

KINDS = ("jpeg60", "resize0.8", "crop3-5%")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory in the Planet layout")
    p.add_argument("--n", type=int, default=300, help="training images to copy, each three ways (default: 300)")
    p.add_argument("--seed", type=int, default=0, help="seed of the choice of images and crops (default: 0)")
    p.add_argument("--cache-dir", default=None, help="image and hash cache (default: as the tool's)")
    p.add_argument("--grey", default="6,8,10,12,14",
                   help="pHash + dHash thresholds to tabulate, bits (default: 6,8,10,12,14)")
    p.add_argument("--colour", default="2,3,4,42", help="colour-hash thresholds to tabulate; 42 = none "
                                                        "(default: 2,3,4,42)")
    return p


def plant(im, kind, rng):
    """A copy of a PIL RGB image: re-encoded, resized or cropped."""
    w, h = im.size
    if kind == "jpeg60":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resize0.8":
        return im.resize((max(1, round(w * 0.8)), max(1, round(h * 0.8))), Image.Resampling.BICUBIC)
    f = rng.uniform(0.03, 0.05, 4)
    return im.crop((round(f[0] * w), round(f[1] * h), w - round(f[2] * w), h - round(f[3] * h)))


def main(args):
    spec = load_dataset(args.data, check=False)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(args.data)
    rng = np.random.default_rng(args.seed)
    src = rng.choice(len(spec.files), min(args.n, len(spec.files)), replace=False)
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
        hp = cached_hashes(files, Path(tmp) / "cache", "planted")
    h = np.concatenate([cached_hashes(spec.files, cache, spec.images)]
                       + ([cached_hashes(spec.test_files, cache, spec.test_images)] if spec.test_files else []))
    n0, origin, kind = len(h), np.asarray(origin), np.asarray(kind)
    grey_t = [int(v) for v in args.grey.split(",")]
    colour_t = [int(v) for v in args.colour.split(",")]
    i, j, d, c = close_pairs(np.concatenate([h, hp]), max(grey_t), max(colour_t))
    rows = []
    for tg in grey_t:
        for tc in colour_t:
            keep = (d <= tg) & (c <= tc)
            rows.append(evaluate(i[keep], j[keep], n0, origin, kind) | {"grey": tg, "colour": tc})
    table = pd.DataFrame(rows)
    table = table[["grey", "colour"] + [c for c in table.columns if c not in ("grey", "colour")]]
    print(f"{len(src)} images of {args.data} copied 3 ways; {n0} dataset images (train + test)\n")
    print(to_markdown(table.round(3)))
    both = (i >= n0) & (j >= n0)
    direct = (i < n0) & (j >= n0) & (origin[np.clip(j - n0, 0, None)] == i)
    dists = pd.DataFrame({"kind": kind[j[direct] - n0], "grey": d[direct], "colour": c[direct]})
    print("\nplanted copy vs its original (pairs within the largest thresholds), percentiles 50/95/max:")
    print(to_markdown(dists.groupby("kind").agg(
        lambda v: f"{int(np.percentile(v, 50))}/{int(np.percentile(v, 95))}/{v.max()}").reset_index()))
    print(f"\ndefaults: --max-distance {DEFAULT_MAX_DISTANCE} --max-colour-distance {DEFAULT_MAX_COLOUR}; "
          f"copy-copy pairs within the largest thresholds: {int(both.sum())}")
    return table


def evaluate(i, j, n0, origin, kind):
    """Recall per kind, pairs among the dataset's images, precision on pairs that involve a copy."""
    n = n0 + len(origin)
    group = components(n0, i[(i < n0) & (j < n0)], j[(i < n0) & (j < n0)])  # the originals' own groups
    owner = np.concatenate([np.arange(n0), origin])  # each copy stands for its original
    found = set(zip(i.tolist(), j.tolist()))
    out = {}
    for k in KINDS:
        idx = np.flatnonzero(kind == k)
        out[f"recall {k}"] = np.mean([(int(origin[t]), n0 + int(t)) in found for t in idx])
    dataset = (i < n0) & (j < n0)
    with_copy = ~dataset
    right = group[owner[i[with_copy]]] == group[owner[j[with_copy]]]
    out["pairs among dataset images"] = int(dataset.sum())
    out["pairs with a copy"] = int(with_copy.sum())
    out["precision on copies"] = float(right.mean()) if len(right) else float("nan")
    assert n == len(owner)
    return out


if __name__ == "__main__":
    run_script(main, lambda: get_args_parser().parse_args())
