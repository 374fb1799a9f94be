"""Decode once vs decode every epoch: images/s of the two data paths, side by side.

    python bench/cache.py --data ../datasets/apparel --size 128

Measures, on the same files in one run: PIL decode + resize of every image (what a
loader without a cache does every epoch), building the uint8 cache once (all cores),
and reading items from the memory-mapped cache (what every epoch does with it).
Prints a ratio table; absolute numbers depend on the machine and its load.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.data.cache import decode_image, default_workers, load_images  # noqa: E402
from utils.data.dataset import load_dataset  # noqa: E402


def pil_every_epoch(files, size):
    """The uncached path: open, convert and resize with plain PIL (no draft mode)."""
    for f in files:
        with Image.open(f) as im:
            np.asarray(im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def main(args):
    spec = load_dataset(args.data)
    files = spec.files[: args.limit] if args.limit else spec.files
    n = len(files)
    rows = []
    t = time.perf_counter()
    pil_every_epoch(files, args.size)
    rows.append(("PIL decode+resize, 1 process (per epoch)", time.perf_counter() - t))
    t = time.perf_counter()
    for f in files:
        decode_image(f, args.size)
    rows.append(("project decoder (JPEG draft), 1 process", time.perf_counter() - t))
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        arr = load_images(files, args.size, d, "bench", workers=default_workers())
        rows.append((f"cache build, {default_workers()} processes (once)", time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(args.epochs):
            for i in np.random.default_rng(0).permutation(n):
                np.array(arr[i])
        rows.append((f"read from uint8 cache (per epoch, mean of {args.epochs})",
                     (time.perf_counter() - t) / args.epochs))
    base = rows[0][1]
    print(f"{n} images from {args.data} at {args.size}px")
    print(f"{'path':58s} {'seconds':>9s} {'img/s':>9s} {'vs PIL':>8s}")
    for name, s in rows:
        print(f"{name:58s} {s:9.3f} {n / s:9.0f} {base / s:7.1f}x")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory (Planet layout)")
    p.add_argument("--size", type=int, default=128, help="image size in px (default: 128)")
    p.add_argument("--limit", type=int, default=0, help="use the first N images (default: all)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of cache reads to average (default: 3)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
