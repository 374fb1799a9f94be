"""CPU training throughput of the demo recipe, its data wait, and the loader alone: one run.

    python bench/train_speed.py                         # random uint8 images in RAM
    OMP_WAIT_POLICY=PASSIVE python bench/train_speed.py --threads 0,1   # on a shared machine
    python bench/train_speed.py --data data/demo        # a dataset's images, from the uint8 cache

Training: --arch (random init: weights do not change speed, 13 labels) at --size px, batch --bs,
the demo plan's main stage (every layer trained, AdamW, one-cycle; utils.train.stages.resolve_stages
with the demo's size and epochs), through the project's path: uint8 cache -> CachedImages with
the --aug augmentation per image -> make_loader (--workers processes) -> train_one_epoch
(utils/train/loop.py). For each torch thread count in --threads and each worker count in --workers it reports
images/s and the share of step time spent waiting for data, train_one_epoch's
data_s / (data_s + compute_s), over --steps steps after --warmup untimed ones (loader start-up
left out).

Loader alone: the same CachedImages + make_loader with the --aug augmentation, iterated
without a model, at each of --loader-sizes px (the cache at that size, as the trainer keeps it).

On a machine shared with other busy processes, torch's OpenMP threads spin-wait for one
another and can lose several times their speed (set OMP_WAIT_POLICY=PASSIVE, or compare
--threads 1); the header prints the load average and that variable.

Without --data the cache is --n-images random uint8 images in RAM (augmentation cost does not
depend on content); with --data it is the dataset's train images decoded once by
utils.data.cache.load_images. Tables go to stdout, progress bars to stderr (`2>/dev/null` keeps
only the tables). Absolute numbers depend on the machine and what else runs on it.
"""
import argparse
import logging
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.data.cache import default_cache_dir, load_images  # noqa: E402
from utils.data.loader import CachedImages, make_loader  # noqa: E402
from utils.train.loop import StageParts, train_one_epoch  # noqa: E402
from utils.train.losses import build_loss  # noqa: E402
from utils.models.factory import create_model, model_meta  # noqa: E402
from utils.models.layer_groups import param_groups  # noqa: E402
from utils.train.schedule import build_optimizer, build_scheduler  # noqa: E402
from utils.train.stages import resolve_stages  # noqa: E402
from utils.augment.transforms import build_augment  # noqa: E402
from utils.common.cli import run_script  # noqa: E402

LABELS = 13
DEMO = {"size": 96, "epochs": 3}  # the demo plan (train.py without --data)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="dataset directory (Planet layout) whose train images fill the "
                   "cache (default: none, random images)")
    p.add_argument("--cache-dir", default=None, help="uint8 cache folder for --data (default: DATA/.cache)")
    p.add_argument("--n-images", type=int, default=512, help="random images when no --data (default: 512)")
    p.add_argument("--arch", default="tf_efficientnet_lite0", help="model (default: tf_efficientnet_lite0)")
    p.add_argument("--size", type=int, default=DEMO["size"], help="training image side in px (default: 96)")
    p.add_argument("--bs", type=int, default=32, help="batch size (default: 32, the demo plan's)")
    p.add_argument("--aug", default="default", help="augmentation spec or preset (default: default)")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts to compare (default: 0,1,2)")
    p.add_argument("--threads", default="0", help="torch thread counts to compare; 0 = torch's default "
                   "(default: 0)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per setting (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: 3)")
    p.add_argument("--loader-sizes", default="96,128", help="image sides for the loader alone (default: 96,128)")
    p.add_argument("--loader-batches", type=int, default=30, help="timed batches of the loader alone "
                   "(default: 30)")
    return p


def ints(text):
    return [int(v) for v in str(text).split(",") if v.strip()]


def image_source(args, size):
    """(uint8 images (N, size, size, 3), labels (N, L) float32, label names, description)."""
    if args.data:
        from utils.data.dataset import load_dataset

        spec = load_dataset(args.data)
        cache = args.cache_dir or default_cache_dir(args.data)
        images = load_images(spec.files, size, cache, desc=spec.images)
        return images, spec.y.astype(np.float32), spec.labels, f"{len(images)} train images of {args.data}"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n_images, size, size, 3), dtype=np.uint8)
    y = (rng.random((args.n_images, LABELS)) < 0.3).astype(np.float32)
    return images, y, [f"tag{i}" for i in range(LABELS)], f"{args.n_images} random uint8 images in RAM"


def epoch_loader(images, y, labels, size, bs, n_batches, workers, aug):
    """make_loader over CachedImages with the augmentation: n_batches full batches, cycling
    over the images (augmentation differs on every pass: it is seeded by the item index)."""
    n = n_batches * bs
    rows = np.arange(n) % len(images)
    dataset = CachedImages(images, y[rows], rows, build_augment(aug, size, labels), seed=0)
    return make_loader(dataset, range(n), bs, workers, torch.device("cpu"), drop_last=True)


def train_speed(args, stage, images, y, labels, workers):
    """(images/s, data-wait share, ms per step) of the project's training path."""
    torch.manual_seed(0)
    model = create_model(args.arch, y.shape[1], pretrained=False)
    meta = model_meta(model)
    total = args.warmup + args.steps
    optimizer = build_optimizer(stage, param_groups(model, stage.train, stage.lr, stage.lr_mult, stage.wd))
    scheduler = build_scheduler(stage, optimizer, total)
    parts = StageParts(model, build_loss("bce")[0], optimizer, scheduler, torch.device("cpu"),
                       meta["mean"], meta["std"])
    loader = epoch_loader(images, y, labels, args.size, args.bs, total, workers, args.aug)
    stats = {"loss_sum": 0.0, "n": 0, "steps": 0, "data_s": 0.0, "compute_s": 0.0}
    marks = {}

    def on_step(i):
        if i in (args.warmup, total):
            marks[i] = (time.perf_counter(), stats["data_s"], stats["compute_s"])

    train_one_epoch(parts, loader, 0, 0, total, stats, on_step)  # the model in train mode there
    (t0, d0, c0), (t1, d1, c1) = marks[args.warmup], marks[total]
    return args.steps * args.bs / (t1 - t0), (d1 - d0) / ((d1 - d0) + (c1 - c0)), 1000 * (t1 - t0) / args.steps


def loader_speed(args, images, y, labels, size, workers):
    """Images/s of the loader alone (augmentation included), after --warmup batches."""
    total = args.warmup + args.loader_batches
    t0 = None
    for i, _ in enumerate(epoch_loader(images, y, labels, size, args.bs, total, workers, args.aug)):
        if i + 1 == args.warmup:
            t0 = time.perf_counter()
    return args.loader_batches * args.bs / (time.perf_counter() - t0)


def print_table(title, headers, rows):
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    print(f"\n{title}")
    for r in [headers, ["-" * w for w in widths]] + rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))


def main(args):
    default_threads = torch.get_num_threads()
    stage = resolve_stages(size=args.size, epochs=DEMO["epochs"])[-1]
    stage.bs = args.bs
    images, y, labels, source = image_source(args, args.size)
    print(f"command: python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; "
          f"torch {torch.__version__} (default threads {default_threads}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}); data: {source}")
    print(f"training: {args.arch} random init, {y.shape[1]} labels, {args.size}px, batch {args.bs}, stage "
          f"train={stage.train} opt={stage.opt} sched={stage.sched}, aug '{args.aug}', "
          f"{args.warmup} warm-up + {args.steps} timed steps")
    rows = []
    for threads in ints(args.threads):
        torch.set_num_threads(threads or default_threads)
        base = None
        for workers in ints(args.workers):
            ips, wait, ms = train_speed(args, stage, images, y, labels, workers)
            base = base or ips
            rows.append([torch.get_num_threads(), workers, f"{ips:.1f}", f"{ms:.0f}", f"{100 * wait:.1f}%",
                         f"{ips / base:.2f}"])
            print("  ".join(map(str, rows[-1])), flush=True)
    torch.set_num_threads(default_threads)
    print_table("training images/s (project path: CachedImages + augmentation -> make_loader -> "
                "train_one_epoch)", ["threads", "workers", "img/s", "ms/step", "data wait", "vs first"], rows)
    rows = []
    for size in ints(args.loader_sizes):
        imgs, ys = (images, y) if size == args.size else image_source(args, size)[:2]
        base = None
        for workers in ints(args.workers):
            ips = loader_speed(args, imgs, ys, labels, size, workers)
            base = base or ips
            rows.append([size, workers, f"{ips:.0f}", f"{ips / base:.2f}"])
            print("  ".join(map(str, rows[-1])), flush=True)
    print_table(f"loader alone, aug '{args.aug}', batch {args.bs} (no model)",
                ["size", "workers", "img/s", "vs first"], rows)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
