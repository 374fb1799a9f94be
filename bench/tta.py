"""Benchmark: batched 10-crop TTA against ttach's ClassificationTTAWrapper and a per-view loop.

Same model (timm tf_efficientnet_lite0, random init, 13 outputs), same uint8 images,
side by side in one run:

  ttach        ClassificationTTAWrapper(model + sigmoid, ten_crop_transform(c, c)),
               one forward per view (merging on probabilities: the sigmoid is inside)
  loop         utils.predict.tta.predict_tta_loop, one forward per view
  batched      utils.predict.tta.predict_tta: all views of a batch in one forward, or
               1 view per forward (predict.py's default on CPU)
  CL           channels_last (on a copy of the model)

ttach feeds its crops at the crop size c = 7/8 S, so every row but the last uses
crop_resize=False: identical views, identical compute per view, and the probabilities
must agree (checked). The last row is the project default (crops resized back to S),
which costs (S/c)^2 more compute per crop and is timed for reference only.

    python bench/tta.py [--n 32] [--size 128] [--bs 32] [--repeats 3] [--threads 2]
"""
import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

# as predict.py: spinning OpenMP threads lose most of their speed when other
# processes share the cores, which made timings on a busy machine erratic
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.predict.tta import crop_side, predict_tta, predict_tta_loop  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # tf_efficientnet_lite0's own


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tf_efficientnet_lite0", help="timm model (default %(default)s)")
    p.add_argument("--n", type=int, default=32, help="images (default %(default)s)")
    p.add_argument("--size", type=int, default=128, help="image side in px (default %(default)s)")
    p.add_argument("--bs", type=int, default=32, help="images per batch (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method, median kept (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default %(default)s)")
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"],
                   help="where to measure; all = CPU, and CUDA when present (default %(default)s)")
    return p


def ttach_predict(model, images, size, bs, device):
    """10-crop probabilities with ttach, one wrapper call per batch of `bs` images."""
    import ttach

    c = crop_side(size)
    wrapper = ttach.ClassificationTTAWrapper(torch.nn.Sequential(model, torch.nn.Sigmoid()),
                                             ttach.aliases.ten_crop_transform(c, c), merge_mode="mean")
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    model.eval().to(device)
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), bs):
            x = torch.from_numpy(images[i:i + bs]).to(device).permute(0, 3, 1, 2)
            out.append(wrapper((x.float() / 255 - mean) / std).float().cpu())
    return torch.cat(out).double().numpy()


def measure(methods, device, repeats):
    """Time every method, round-robin so background load hits all alike.

    methods: list of (name, views px, fn). Each fn runs once to warm up, then
    `repeats` times. Returns rows (name, px, median wall s, median CPU s of this
    process, probs of the last run). CPU seconds are steadier than wall time when
    other processes share the cores.
    """
    results = [fn() for _, _, fn in methods]
    wall = [[] for _ in methods]
    cpu = [[] for _ in methods]
    for _ in range(repeats):
        for i, (_, _, fn) in enumerate(methods):
            if device == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            results[i] = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return [(name, px, statistics.median(w), statistics.median(c), r)
            for (name, px, _), w, c, r in zip(methods, wall, cpu, results)]


def make_methods(model, images, args, device):
    """The compared methods: (name, views px, fn returning (N, L) probabilities)."""
    c = crop_side(args.size)
    common = dict(tta="10crop", mean=MEAN, std=STD, bs=args.bs, device=device, progress=False)
    at_c = dict(common, crop_resize=False)
    model_cl = copy.deepcopy(model)  # predict_tta converts it in place
    return [
        ("ttach", c, lambda: ttach_predict(model, images, args.size, args.bs, device)),
        ("loop", c, lambda: predict_tta_loop(model, images, **at_c)),
        ("batched, all views", c, lambda: predict_tta(model, images, **at_c)),
        ("batched, 1 view/forward", c,
         lambda: predict_tta(model, images, max_views_per_forward=1, **at_c)),
        ("batched, all views, CL", c,
         lambda: predict_tta(model_cl, images, channels_last=True, **at_c)),
        ("batched, resized, all views", args.size, lambda: predict_tta(model, images, **common)),
    ]


def print_table(rows, device, args):
    ref_wall, ref_cpu, ref = rows[0][2], rows[0][3], rows[0][4]
    print(f"\n10-crop TTA, {args.n} images at {args.size} px, bs {args.bs}, {args.arch}, "
          f"device {device}, median of {args.repeats}")
    print(f"{'method':<28}{'views at':>9}{'wall s':>9}{'vs ttach':>10}{'CPU s':>9}{'vs ttach':>10}"
          f"{'max |dp|':>10}")
    for name, px, w, c, probs in rows:
        diff = np.abs(probs - ref).max()
        print(f"{name:<28}{px:>6} px{w:>9.3f}{ref_wall / w:>9.2f}x{c:>9.2f}{ref_cpu / c:>9.2f}x{diff:>10.1e}")


def main(args):
    torch.set_num_threads(args.threads)
    import timm

    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, num_classes=13)
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3), dtype=np.uint8)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else \
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {args.threads} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    for device in devices:
        rows = measure(make_methods(model, images, args, device), device, args.repeats)
        print_table(rows, device, args)
        # same views and compute: all rows at crop size must agree with ttach
        for name, _, _, _, probs in rows[1:-1]:
            np.testing.assert_allclose(probs, rows[0][4], atol=1e-4, err_msg=f"{name} vs ttach")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
