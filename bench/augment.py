"""Throughput of the --aug presets on uint8 images, one core, side by side.

    python bench/augment.py                       # synthetic textured images
    python bench/augment.py --data ../data/apparel --n 256 --sizes 96 128 224
    python bench/augment.py --loader 2            # also through a DataLoader with 2 workers

Prints images per CPU-second (one core) per preset and size, and the ratio to torchvision's v2 transforms
doing the same job as `default` (flip, affine with black fill, resized crop) on the same images.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.augment.transforms import PRESETS, build_augment, pca_stats  # noqa: E402

EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif"}


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=None, help="data dir with train/ images (default: synthetic)")
    p.add_argument("--n", type=int, default=128, help="images held in memory (default 128)")
    p.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 224],
                   help="output sides in px (default 96 128 224)")
    p.add_argument("--specs", nargs="+", default=list(PRESETS),
                   help="--aug specs to time (default: the presets)")
    p.add_argument("--seconds", type=float, default=1.5, help="time per measurement (default 1.5)")
    p.add_argument("--loader", type=int, default=0,
                   help="also time `default` through a DataLoader with this many workers "
                        "(default 0: skip)")
    return p


def load_images(data, n, size, seed=0):
    """n uint8 (size, size, 3) images: decoded from DATA/train, else smooth noise textures."""
    from PIL import Image

    if data:
        files = sorted(f for f in (Path(data) / "train").iterdir() if f.suffix.lower() in EXTS)[:n]
        return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size)))
                         for f in files])
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(s).resize((size, size), Image.Resampling.BICUBIC))
                     for s in small])


def rate(fn, images, seconds):
    """Images per CPU-second of fn(img, i) over the images, repeated for about `seconds`.

    CPU time of this (single-threaded) process, so other jobs on the machine slow the
    measurement down but do not change it much: the number is per core."""
    fn(images[0], 0)
    done, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for i, img in enumerate(images):
            fn(img, i)
        done += len(images)
    return done / (time.process_time() - start)


def torchvision_default(size):
    """torchvision v2 pipeline matching `default`: hflip, rotate 10, shift 1/16, crop 7/8-1."""
    import torch
    from torchvision.transforms import v2

    t = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomAffine(10, translate=(0.0625, 0.0625)),
                    v2.RandomResizedCrop(size, scale=(0.77, 1.0), ratio=(1.0, 1.0),
                                         antialias=True)])
    return lambda img, i: t(torch.from_numpy(img).permute(2, 0, 1))


def time_loader(images, spec, workers, seconds):
    """Images per second through a DataLoader (batch 64) applying `spec` in the workers."""
    import torch
    from torch.utils.data import DataLoader, Dataset

    class DS(Dataset):
        def __init__(self):
            self.aug = build_augment(spec, images.shape[1])

        def __len__(self):
            return len(images) * 20

        def __getitem__(self, i):
            img, y = self.aug(images[i % len(images)], np.zeros(13, np.float32),
                              np.random.default_rng(i))
            return torch.from_numpy(img), torch.from_numpy(y)

    loader = DataLoader(DS(), batch_size=64, num_workers=workers, persistent_workers=False)
    start, done = time.perf_counter(), 0
    for x, _ in loader:
        done += len(x)
        if time.perf_counter() - start > seconds * 4:
            break
    return done / (time.perf_counter() - start)


def main(args):
    import torch

    torch.set_num_threads(1)  # one core per worker, as in the loader
    rows = []
    for size in args.sizes:
        images = load_images(args.data, args.n, size)
        stats = pca_stats(images)
        y = np.zeros(13, np.float32)
        tv = rate(torchvision_default(size), images, args.seconds)
        for spec in args.specs:
            aug = build_augment(spec, size, pca=stats)
            rng = np.random.default_rng(0)
            r = rate(lambda img, i: aug(img, y, rng), images, args.seconds)
            rows.append((size, spec, r, r / tv))
        rows.append((size, "torchvision v2 ~default", tv, 1.0))
    print(f"\n{'size':>5}  {'spec':<26}{'img/cpu-s':>10}  {'vs tv2':>7}")
    for size, spec, r, vs_tv in rows:
        print(f"{size:>5}  {spec:<26}{r:>10.0f}  {vs_tv:>7.2f}")
    if args.loader:
        images = load_images(args.data, args.n, 128)
        r = time_loader(images, "default", args.loader, args.seconds)
        print(f"\nDataLoader, default at 128 px, {args.loader} workers, batch 64: {r:.0f} img/s "
              "(wall clock)")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
