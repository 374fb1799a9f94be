"""The CPU fast path: images/s of each precision and memory format, per network, size and direction.

For every --archs x --sizes x direction (a training step: forward, loss, backward; inference:
forward under inference_mode), the four candidates of utils/models/fast_path.py are timed side
by side by its own time_candidates (each candidate's step in turn, best of --steps after one
warm-up step, batch --bs, random weights: weights do not change speed): fp32 contiguous, fp32
channels_last, bf16 autocast, bf16 autocast + channels_last (bf16 rows only where the CPU
computes bf16 natively). The table gives fp32 contiguous in images/s and the others as ratios
to it, and which one `--amp auto` would take (the fastest, unless it is within
fast_path.MARGIN of fp32 contiguous).

With --compile ARCH:SIZE ..., torch.compile is measured too for those networks in the fastest
eager setting: the seconds the first (compiling) step takes, the compiled speed as a ratio to
fp32 contiguous, and after how many images the compilation has paid for itself against that
eager setting (never: it is not faster).

    OMP_WAIT_POLICY=PASSIVE python bench/cpu_fast_path.py
    OMP_WAIT_POLICY=PASSIVE python bench/cpu_fast_path.py --archs resnet50 --sizes 224 --compile resnet50:224
"""
import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.models import fast_path as F  # noqa: E402
from utils.models.factory import create_model  # noqa: E402

LITES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"]


def get_args_parser():
    p = argparse.ArgumentParser(description="CPU images/s of fp32 / bf16 x contiguous / channels_last.")
    p.add_argument("--archs", nargs="+", default=LITES + ["resnet50"], help="networks (default Lite0-2, resnet50)")
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 224], help="image sides (default 64 128 224)")
    p.add_argument("--directions", nargs="+", default=list(F.DIRECTIONS), help="train and/or infer (default both)")
    p.add_argument("--bs", type=int, default=16, help="images per step (default 16)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per candidate, best kept (default 3)")
    p.add_argument("--compile", nargs="*", default=[], metavar="ARCH:SIZE",
                   help="also time torch.compile for these (default none)")
    return p


def speed_row(arch, size, direction, bs):
    """{setting name: seconds per image} of the fast path's candidates, measured side by side."""
    model = create_model(arch, 10, pretrained=False)
    settings = F.candidates("auto", None)
    return model, dict(zip((s.name for s in settings), F.time_candidates(model, settings, size, direction, bs)))


def auto_takes(sec):
    """What fast_path.choose keeps of these timings: the fastest, unless within its margin of the first."""
    first, best = next(iter(sec)), min(sec, key=sec.get)
    return best if sec[best] <= F.MARGIN * sec[first] else first


def compile_cost(model, setting, size, direction, bs, steps):
    """(seconds of the first, compiling step; best seconds per image after) of torch.compile in `setting`."""
    step = F._stepper(model, setting, torch.randn(bs, 3, size, size), direction, compile=True)
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return first, best / bs


def main(args):
    F.TIMED = args.steps
    names = [s.name for s in F.candidates("auto", None)]
    print(f"# {platform.processor() or platform.machine()}, {F.machine()}, torch {torch.__version__}, "
          f"native bf16 {F.native_bf16()}, load {os.getloadavg()[0]:.1f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; batch {args.bs}, best of {args.steps}")
    print("| network | px | direction | fp32 img/s | " + " | ".join(n for n in names[1:]) + " | auto takes |")
    print("|---|---:|---|---:|" + "---:|" * (len(names) - 1) + "---|")
    rows = {}
    for arch in args.archs:
        for size in args.sizes:
            for direction in args.directions:
                model, sec = speed_row(arch, size, direction, args.bs)
                rows[arch, size, direction] = model, sec
                base = sec["fp32 contiguous"]
                print(f"| {arch} | {size} | {direction} | {1 / base:.1f} | "
                      + " | ".join(f"{base / sec[n]:.2f}x" for n in names[1:])
                      + f" | {auto_takes(sec)} |", flush=True)
    if args.compile:
        print("\n| network | px | direction | eager setting | compile s | compiled vs fp32 | vs eager setting "
              "| pays back after |")
        print("|---|---:|---|---|---:|---:|---:|---:|")
    for item in args.compile:
        arch, size = item.rsplit(":", 1)
        for direction in args.directions:
            model, sec = rows.get((arch, int(size), direction)) or speed_row(arch, int(size), direction, args.bs)
            best = min(sec, key=sec.get)
            setting = next(s for s in F.candidates("auto", None) if s.name == best)
            first, per_img = compile_cost(model, setting, int(size), direction, args.bs, args.steps)
            gain = sec[best] - per_img
            payback = f"{(first - per_img * args.bs) / gain:,.0f} images" if gain > 0 else "never"
            print(f"| {arch} | {size} | {direction} | {best} | {first:.0f} | {sec['fp32 contiguous'] / per_img:.2f}x "
                  f"| {sec[best] / per_img:.2f}x | {payback} |", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
