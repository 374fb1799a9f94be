"""Planet-size load test: the whole pipeline on a synthetic dataset of Planet's size, per stage.

    nice -n 10 python bench/load_test.py --scale 0.25 1.0 --out data/load_test

For each scale s, a synthetic dataset of round(40,479 s) train and round(61,191 s) test
images (Planet's counts; tiny --px px JPEGs with the demo's 13 tags and their densities,
utils/data/demo.py, so it fits on disk), then every stage in its own process, as a user runs them:

  data     write the dataset (all cores)
  check    load_dataset (every image header) and folds.csv (iterative stratification)
  cache    the uint8 caches of train and test at --px (all cores)
  train    train.py, one epoch of tiny_cnn, for each of the K folds (times summed)
  predict  predict.py --tta hflip, val and test, all K runs in one call
  runs     --runs synthetic runs (config, result, preds/val and preds/test) in the run layout
  stack    stack.py over the K real and the synthetic runs: the methods (--method) scored by
           cross-fitting, thresholds, submission.csv

Each stage reports wall time and peak memory: the largest single process (wait4's
ru_maxrss, children it waited for included) and the whole process tree (VmRSS summed over
the tree, sampled every 0.2 s; shared pages such as the memory-mapped cache count once per
process, so this is an upper bound). With two scales or more, a table gives for each stage
the time ratio divided by the size ratio (1 = linear) and the growth exponent
log(t2 / t1) / log(n2 / n1). Absolute times depend on the machine and its load.
Results also go to OUT/results.json. Nothing outside --out is written.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PLANET_TRAIN, PLANET_TEST = 40_479, 61_191
FAST_METHODS = ("prior", "best", "mean", "bag", "topk", "select", "select-bag", "select-soft", "select-restarts",
                "select-model", "beam", "beam-norep", "lr", "ridge", "ridge-corr")
STAGES = ("data", "check", "cache", "train", "predict", "runs", "stack")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, nargs="+", default=[0.25, 1.0],
                   help="dataset sizes as fractions of Planet's 40,479 + 61,191 images (default: 0.25 1.0)")
    p.add_argument("--out", default=str(REPO / "data" / "load_test"),
                   help="folder for the datasets, runs and results (default: data/load_test, gitignored)")
    p.add_argument("--px", type=int, default=32, help="image side in px, also the training size (default: 32)")
    p.add_argument("--folds", type=int, default=5, help="folds, one training run each (default: 5)")
    p.add_argument("--runs", type=int, default=50, help="synthetic runs added to the stack, --folds per model "
                   "(default: 50 = 10 models x 5 folds)")
    p.add_argument("--method", nargs="*", default=list(FAST_METHODS),
                   help="stack.py --method list (default: every method but xgb, lgbm and nn, whose per-label "
                        "boosted trees / networks take minutes even on 810 images; pass them to include them)")
    p.add_argument("--keep", action="store_true", help="keep each scale's data and runs (default: delete after)")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # internal: run one in-process stage
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--n-train", type=int, help=argparse.SUPPRESS)
    p.add_argument("--n-test", type=int, help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------- in-process stages

def _write_images(task):
    """Write one chunk of tiny JPEGs: noise plus, for each tag j present, a bright cell j of a
    4 x 4 grid (drawing the demo's outfits runs at ~100 images/s, too slow for 100k images)."""
    from PIL import Image
    import numpy as np

    folder, names, y, px, seed = task
    rng = np.random.default_rng(seed)
    cell = px // 4
    for name, row in zip(names, y):
        img = rng.integers(40, 120, (px, px, 3), dtype=np.uint8)
        for j in np.flatnonzero(row):
            r, c = divmod(int(j) % 16, 4)
            img[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] += 100
        Image.fromarray(img).save(folder / f"{name}.jpg", quality=90)


def stage_data(args):
    """Planet-layout dataset: train.csv with the demo's 13 tags and densities, labels.txt,
    sample_submission.csv, tiny JPEGs written by all cores."""
    from multiprocessing import Pool

    import numpy as np
    import pandas as pd

    from utils.data.cache import default_workers
    from utils.data.demo import TAGS, sample_labels, tags_to_str

    root = Path(args.data)
    rng = np.random.default_rng(0)
    y = {"train": sample_labels(args.n_train, rng), "test": sample_labels(args.n_test, rng)}
    names = {s: [f"{s}_{i}" for i in range(len(y[s]))] for s in y}
    tasks = []
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for i in range(0, len(names[split]), 2000):
            tasks.append((root / split, names[split][i:i + 2000], y[split][i:i + 2000], args.px, len(tasks)))
    with Pool(default_workers()) as pool:
        for _ in pool.imap_unordered(_write_images, tasks):
            pass
    pd.DataFrame({"image_name": names["train"], "tags": [tags_to_str(r) for r in y["train"]]}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"image_name": names["test"], "tags": ""}).to_csv(root / "sample_submission.csv", index=False)
    (root / "labels.txt").write_text("\n".join(TAGS) + "\n")


def stage_check(args):
    from utils.data.dataset import load_dataset
    from utils.data.folds import load_or_make_folds

    spec = load_dataset(args.data)
    load_or_make_folds(spec, args.folds)


def stage_cache(args):
    from utils.data.cache import default_cache_dir, load_images
    from utils.data.dataset import load_dataset

    spec = load_dataset(args.data, check=False)
    cache = default_cache_dir(args.data)
    load_images(spec.files, args.px, cache, desc=spec.images)  # what train.py and predict.py read
    load_images(spec.test_files, args.px, cache, desc=spec.test_images)


def stage_runs(args):
    """args.runs synthetic runs beside the real ones: the first real run's config with another
    arch per model, probabilities near the truth with a per-model noise level."""
    import numpy as np
    import pandas as pd

    from utils.data.dataset import load_dataset
    from utils.data.folds import load_or_make_folds
    from utils.common.atomic import atomic_write_json
    from utils.common.text import read_json
    from utils.runs.pred_files import write_preds
    from utils.runs.directory import model_key

    runs = Path(args.out_runs)
    spec = load_dataset(args.data, check=False)
    folds = load_or_make_folds(spec, args.folds)
    template = read_json(sorted(runs.glob("tiny-f*/config.json"))[0])
    result = {"finished": True, "best_val_f2": 0.0, "best_epoch": 1, "epochs": 1, "train_seconds": 0.0}
    labels = template["labels"]
    y = pd.DataFrame(spec.y, columns=spec.labels)[labels].to_numpy(np.float64)
    n_test = len(spec.test_names)
    for r in range(args.runs):
        m, k = divmod(r, args.folds)
        rng = np.random.default_rng([m, k])
        noise = 0.5 + 0.1 * m
        cfg = dict(template, name=f"synth{m:02d}-f{k}", arch=f"synth{m:02d}", fold=k, seed=0)
        cfg["model_key"] = model_key(cfg)
        d = runs / cfg["name"]
        val = folds == k
        logit_v = 3 * (y[val] - 0.5) + rng.normal(0, 1 + noise, (int(val.sum()), len(labels)))
        logit_t = rng.normal(-1, 1 + noise, (n_test, len(labels)))
        write_preds(d / "preds" / "val.hflip.csv", [spec.names[i] for i in np.flatnonzero(val)], labels,
                    1 / (1 + np.exp(-logit_v)))
        write_preds(d / "preds" / "test.hflip.csv", spec.test_names, labels, 1 / (1 + np.exp(-logit_t)))
        atomic_write_json(d / "config.json", cfg)
        atomic_write_json(d / "result.json", result)


# ---------------------------------------------------------------------------- measuring a process

def _tree_rss_kb(root):
    """VmRSS summed over `root` and its descendants, in KiB (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, todo = set(), [root]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo += [c for c, pp in parent.items() if pp == p and c not in tree]
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(cmd, log_path):
    """Run `cmd`; return (seconds, peak RSS of one process in MiB, peak tree RSS in MiB).
    Raises RuntimeError with the log's tail when the command fails."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        log.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        peak_tree = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss_kb(proc.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        from utils.common.text import read_text

        tail = read_text(log_path)[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed ({proc.returncode}):\n{tail}")
    return seconds, usage.ru_maxrss / 1024, max(peak_tree, usage.ru_maxrss) / 1024


# ---------------------------------------------------------------------------- one scale

def run_scale(args, scale):
    n_train, n_test = round(PLANET_TRAIN * scale), round(PLANET_TEST * scale)
    base = Path(args.out) / f"scale-{scale:g}"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    data, runs, log = base / "data", base / "runs", base / "log.txt"
    me = [sys.executable, __file__, "--data", data, "--px", args.px, "--folds", args.folds,
          "--n-train", n_train, "--n-test", n_test, "--runs", args.runs]
    plan = "epochs=1,size={0},bs=64,lr=1e-2,train=all".format(args.px)
    stages = {
        "data": [me + ["--stage", "data"]],
        "check": [me + ["--stage", "check"]],
        "cache": [me + ["--stage", "cache"]],
        "train": [[sys.executable, REPO / "train.py", "--data", data, "--out", runs, "--arch", "tiny_cnn",
                   "--no-pretrained", "--name", f"tiny-f{k}", "--fold", k, "--folds-k", args.folds,
                   "--stages", plan, "--aug", "light", "--plots", "none"] for k in range(args.folds)],
        "predict": [[sys.executable, REPO / "predict.py", "--run", *[runs / f"tiny-f{k}" for k in range(args.folds)],
                     "--tta", "hflip", "--split", "both"]],
        "runs": [me + ["--stage", "runs", "--out", runs]],
        "stack": [[sys.executable, REPO / "stack.py", "--runs", runs, "--tta", "hflip",
                   "--out", base / "submission.csv"] + (["--method", *args.method] if args.method else [])],
    }
    rows = {}
    for name in STAGES:
        total, peak, tree = 0.0, 0.0, 0.0
        for cmd in stages[name]:
            s, p, t = measure(cmd, log)
            total, peak, tree = total + s, max(peak, p), max(tree, t)
        rows[name] = {"seconds": total, "peak_mib": peak, "tree_mib": tree}
        print(f"  scale {scale:g} ({n_train} + {n_test} images)  {name:8s} {total:8.1f} s  "
              f"peak {peak:7.0f} MiB  tree {tree:7.0f} MiB", flush=True)
    disk = sum(f.stat().st_size for f in base.rglob("*") if f.is_file()) / 2**20
    if not args.keep:
        shutil.rmtree(base)
    return {"scale": scale, "n_train": n_train, "n_test": n_test, "disk_mib": disk, "stages": rows}


# ---------------------------------------------------------------------------- tables

def tables(results):
    """Markdown: one row per stage, time and memory per scale, then growth between the
    smallest and the largest scale (time ratio / size ratio; exponent)."""
    a, b = results[0], results[-1]
    size_ratio = (b["n_train"] + b["n_test"]) / (a["n_train"] + a["n_test"])
    head = "| stage | " + " | ".join(f"s={r['scale']:g}: s / peak MiB / tree MiB" for r in results)
    head += f" | time ratio / size ratio ({size_ratio:.2f}x images) | exponent | peak memory ratio |"
    lines = [head, "|" + "---|" * (len(results) + 4)]
    for st in STAGES:
        ra, rb = a["stages"][st], b["stages"][st]
        tr = rb["seconds"] / max(ra["seconds"], 1e-9)
        exp = math.log(max(tr, 1e-9)) / math.log(size_ratio) if size_ratio != 1 else float("nan")
        cells = " | ".join(f"{r['stages'][st]['seconds']:.1f} / {r['stages'][st]['peak_mib']:.0f} / "
                           f"{r['stages'][st]['tree_mib']:.0f}" for r in results)
        lines.append(f"| {st} | {cells} | {tr / size_ratio:.2f} | {exp:.2f} | "
                     f"{rb['peak_mib'] / max(ra['peak_mib'], 1e-9):.2f} |")
    total = [sum(r["stages"][s]["seconds"] for s in STAGES) for r in results]
    lines.append("| total | " + " | ".join(f"{t:.0f} s" for t in total) +
                 f" | {total[-1] / total[0] / size_ratio:.2f} | "
                 f"{math.log(total[-1] / total[0]) / math.log(size_ratio):.2f} | |")
    return "\n".join(lines)


def main(args):
    if args.stage:
        args.out_runs = args.out
        {"data": stage_data, "check": stage_check, "cache": stage_cache, "runs": stage_runs}[args.stage](args)
        return
    results = []
    for scale in sorted(args.scale):
        print(f"scale {scale:g}: {round(PLANET_TRAIN * scale)} train + {round(PLANET_TEST * scale)} test images "
              f"at {args.px} px", flush=True)
        results.append(run_scale(args, scale))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=1))
    if len(results) > 1:
        print(tables(results))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
