"""Probabilities for the test set and the out-of-fold validation rows, with batched TTA.

    python predict.py --runs runs/A --tta 10crop                    # test + val, mean merge
    python predict.py --runs 'runs/resnet50-train-f*' --tta hflip --split test
    python predict.py --runs 'runs/resnet50-train-f*' --tta d4 --submission sub.csv

Each run gets preds/test.<tta>.csv (test images in sample_submission.csv order) and/or
preds/val.<tta>.csv (its own validation fold, in folds.csv order). The model, labels,
image size and normalisation come from the checkpoint; the data from config.json
(its paths converted when it was written on another machine).

--submission averages the runs' test probabilities (e.g. the folds of one model) and
turns them into tags with thresholds fitted on the same runs' out-of-fold predictions.

Every check (checkpoints, data, label sets) runs before the first prediction and
every file is written at the end, atomically: an error leaves no prediction file.
"""
from utils.common.cli import stop_on_ctrl_c  # the repository is sys.path[0]: this script's folder

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
# On CPU, OpenMP threads that spin while waiting lose most of their speed as soon as
# loader workers or other processes share the cores (measured: 14 vs 47 img/s on 2
# cores, BENCHMARKS.md); passive waiting costs nothing measurable when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, which main's modules import

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.common.cli import add_cache_argument, add_hidden_alias, pick_device, run_script  # noqa: E402
from utils.metrics.constraints import add_constraint_arguments, constrained_decisions, parse_constraints  # noqa: E402
from utils.common.atomic import atomic_write_csv  # noqa: E402
from utils.common.errors import DataError, preview, report_problems  # noqa: E402
from utils.runs.pred_files import read_preds, submission_frame, write_preds  # noqa: E402
from utils.runs.run_guard import RunFolder  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.predict.tta_views import CROP_FRAC, MERGES, TTA_NAMES  # noqa: E402  (torch-free: flags parse at once)

log = logging.getLogger("predict")
SPLITS = ("test", "val", "both")


def get_args_parser():
    from utils.metrics.thresholds import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to predict")
    g.add_argument("--runs", nargs="+", action="extend", required=True, metavar="RUN",
                   help="run folders or glob patterns (quote them); a folder of runs counts as all of them")
    # none: the file train.py writes itself (preds/val.none.csv), which stack.py and the tools read by
    # default; 10crop is the test of the default --aug's crops, +0.017 with it on 6 of 6 folds
    # (EXPERIMENTS.md#d-which-augmentations-are-unnecessary, EXPERIMENTS.md#s-a-second-seed-which-answers-hold)
    g.add_argument("--tta", default="none", choices=TTA_NAMES,
                   help="test-time augmentation (default: none; use 10crop for models trained with crops, train.py's "
                        "default --aug: +0.017 over none on every fold of two seeds; evidence: EXPERIMENTS.md "
                        "sections d, s)")
    g.add_argument("--merge", default="mean", choices=MERGES,
                   help="how the views' probabilities are merged (default: mean)")
    g.add_argument("--split", default="both", choices=SPLITS,
                   help="test images, the run's validation fold, or both (default: both)")
    g.add_argument("--checkpoint", default="best",
                   help="best | avg | last (the run's checkpoints/<name>.pt; avg from tools/average_checkpoints.py) "
                   "or a path to a checkpoint file; files of any but best are named <split>.<tta>-<name>.csv, "
                   "those of another run's file <split>.<tta>-from_<run>_<stem>.csv; --split val/both refuses "
                   "weights that did not hold out the run's fold (a leak) (default: best)")
    g.add_argument("--size", type=int, default=None, metavar="PX",
                   help="image side to predict at, in px; files are then named <split>.<tta>-<PX>px.csv "
                   "(FixRes: testing above the training size) (default: each checkpoint's training size)")
    g.add_argument("--crop-frac", type=float, default=CROP_FRAC,
                   help="side of the 5crop/10crop crops as a fraction of the image side (default: 0.875)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="dataset directory (default: the one each run recorded, "
                   "converted to this machine)")
    g.add_argument("--path-map", default=None, help="file of OLD=NEW path prefixes for converting recorded paths "
                   "(also env MULTITAG_PATH_MAP) (default: none)")
    add_cache_argument(g)
    g = p.add_argument_group("submission")
    g.add_argument("--submission", default=None, metavar="CSV",
                   help="also write image_name,tags from the runs' averaged test probabilities (default: none)")
    g.add_argument("--threshold", default="greedy", choices=STRATEGIES,
                   help="threshold strategy fitted on the runs' out-of-fold predictions (default: greedy)")
    g.add_argument("--thresholds", default=None, metavar="FILE",
                   help="per-label thresholds to apply instead of fitting them: JSON {\"thresholds\": {label: value}}, "
                        "as tools/explore.py saves them (a stack_report.json is one) (default: none)")
    g.add_argument("--beta", type=float, default=2.0, help="beta of the F-beta score (default: 2)")
    add_constraint_arguments(g)
    g = p.add_argument_group("speed")
    g.add_argument("--bs", type=int, default=64, help="images per batch; each brings all its views (default: 64)")
    g.add_argument("--max-views-per-forward", type=int, default=0,
                   help="most views of a batch in one forward pass (default: 0 = auto: all on CUDA, "
                   "1 on CPU, where larger forwards were slower in bench/tta.py)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    g.add_argument("--amp", default="auto", nargs="?", const="bf16", choices=["auto", "off", "bf16"],
                   help="mixed precision, as train.py's: auto = bf16 autocast on CUDA where supported; on CPU fp32 "
                   "or bf16 autocast, whichever predicted this network at this size faster when measured on this "
                   "machine (bf16 only where the CPU computes it natively; measured once, cached); off = fp32 "
                   "(default: auto)")
    g.add_argument("--no-amp", dest="amp", action="store_const", const="off", help=argparse.SUPPRESS)
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format; --no-channels-last: contiguous (default: auto = on for CUDA, "
                   "measured with --amp on CPU)")
    add_hidden_alias(p, "--run", "--runs")  # the former name
    return p


@dataclass
class Job:
    """One run to predict: where its weights and images are, and what it will write."""
    run: object
    ckpt: Path
    spec: object
    val_names: list = field(default_factory=list)
    val_rows: np.ndarray = None
    out: dict = field(default_factory=dict)  # split -> (names, labels, probs)
    tta: str = "none"  # the <tta> part of its prediction files (preds_name)


def find_all_runs(patterns, path_map):
    """Runs for every pattern; DataError when a pattern matches no run or a run is unreadable."""
    from utils.common.paths import load_path_map
    from utils.runs.directory import find_runs, no_run_message

    pairs = load_path_map(path_map)
    runs, problems = [], []
    for pat in patterns:
        found, skipped = find_runs(pat, pairs)
        problems += [reason for _, reason in skipped]
        if not found and not skipped:
            problems.append(no_run_message(pat))
        runs += [r for r in found if r.dir.resolve() not in {q.dir.resolve() for q in runs}]
    report_problems("cannot read the runs", problems)
    return runs


def folds_table(run):
    """The run's folds.csv as a DataFrame image_name,fold (file order)."""
    path = run.data_root / run.config.get("folds_file", "folds.csv")
    if not path.is_file():
        raise DataError(f"folds file {path} not found; it was written when the run trained")
    from utils.data.folds_file import read_folds_file  # every value checked; names NFC, as train.csv's

    folds = read_folds_file(path)
    return pd.DataFrame({"image_name": list(folds), "fold": list(folds.values())})


def val_fold(run, spec):
    """The run's validation images in folds.csv order: (names, rows into spec.names)."""
    df = folds_table(run)
    index = {n: i for i, n in enumerate(spec.names)}
    names = df.loc[df["fold"] == run.fold, "image_name"].tolist()
    report_problems(f"fold {run.fold} of folds.csv lists images that train.csv no longer has",
                    [repr(n) for n in names if n not in index])
    if not names:
        raise DataError(f"fold {run.fold} of folds.csv has no images")
    return names, np.array([index[n] for n in names])


NAMED_CHECKPOINTS = ("best", "avg", "last")


def checkpoint_path(run_dir, which):
    """--checkpoint: a name in NAMED_CHECKPOINTS -> run_dir/checkpoints/<name>.pt; else the path
    of an existing file. DataError for anything else (a mistyped name)."""
    if which in NAMED_CHECKPOINTS:
        return Path(run_dir) / "checkpoints" / f"{which}.pt"
    if not Path(which).is_file():
        raise DataError(f"--checkpoint {which!r}: not one of {', '.join(NAMED_CHECKPOINTS)} nor an existing "
                        f"checkpoint file")
    return Path(which)


def plan_jobs(runs, args, splits):
    """Check every run before any prediction: checkpoint, data, test set, folds. Returns Jobs.

    A problem of a dataset several runs share is reported once, with the runs it stops.
    """
    from utils.models.factory import check_input_sizes
    from utils.models.checkpoint import load_for_inference
    from utils.runs.checkpoint_origin import check_val_origin
    from utils.runs.fingerprint import dataset_problem
    from utils.data.dataset import check_rows, check_test_images, load_dataset, unlisted_test_images

    # only the images of the predicted splits are checked: a broken training image does not stop
    # --split test, and --split val checks the run's own validation fold (check_rows)
    specs, failed, folds_checked, jobs, problems = {}, {}, {}, [], []
    for run in runs:
        if run.diverged:  # train.py stopped it (diverged.json): its weights are not used
            problems.append(run.diverged)
            continue
        ckpt = checkpoint_path(run.dir, args.checkpoint)
        if not ckpt.is_file():
            problems.append(f"{run.dir}: no {ckpt}; " + (
                f"make it with: python tools/average_checkpoints.py --runs {run.dir}" if args.checkpoint == "avg"
                else "the run has not saved a model (still training, or pruned) - train it or drop it from --runs"))
            continue
        try:  # a damaged or foreign checkpoint is found now, not after hours of other runs
            model, meta = load_for_inference(ckpt, "cpu", run.labels)
            check_input_sizes(model, fed_sizes(args, int(args.size or meta["size"])),
                              f"{run.dir}: --tta {args.tta}" + (f" --size {args.size}" if args.size else ""))
        except DataError as e:
            problems.append(str(e))
            continue
        if "val" in splits and (leak := check_val_origin(ckpt, meta, run)):
            problems.append(leak)
            continue
        root = Path(args.data) if args.data else run.data_root
        if root is None:
            problems.append(f"{run.dir}: its data directory {run.config.get('data_root_abs')} is not found here; "
                            f"pass --data DIR or --path-map FILE")
            continue
        if args.data and (other := dataset_problem(run.config, run.dir, root)):
            problems.append(f"{other}; pass the dataset it was trained on as --data, or leave --data out")
            continue
        key = (str(root.resolve()), run.config.get("images", "train"), run.config.get("test_images", "test"),
               run.config.get("channels", 3))
        if key not in specs and key not in failed:
            try:
                specs[key] = load_dataset(root, key[1], key[2], need_test="test" in splits, channels=key[3],
                                          splits=("test",) if "test" in splits else ())
                if "test" in splits:
                    report_problems(f"{root}: test images that cannot be read; fix or remove them",
                                    check_test_images(specs[key]))
                    warn_unlisted(unlisted_test_images(specs[key]), specs[key])
            except DataError as e:
                failed[key] = (str(e), [])
        if key in failed:
            failed[key][1].append(run.name)
            continue
        try:
            run.data_root = root
            job = Job(run, ckpt, specs[key], tta=preds_name(args, ckpt, meta, run.dir))
            if "val" in splits:
                job.val_names, job.val_rows = val_fold(run, job.spec)
                fold_key = (key, run.fold)
                if fold_key not in folds_checked:
                    folds_checked[fold_key] = check_rows(job.spec, job.val_rows, key[3])
                    problems += [f"{run.dir}: validation fold {run.fold}: {p}" for p in folds_checked[fold_key]]
            jobs.append(job)
        except DataError as e:
            problems.append(f"{run.dir}: {e}")
    for msg, names in failed.values():
        problems.append(f"{msg}\n  (the data of {len(names)} run(s): {preview(names)})")
    report_problems("cannot predict", problems)
    return jobs


def fed_sizes(args, size):
    """The image sides (px) the network sees under --tta for images of side `size`."""
    import torch

    from utils.predict.tta import view_fns

    return {int(fn(torch.zeros(1, 1, size, size)).shape[-1]) for fn in view_fns(args.tta, size, args.crop_frac)}


def warn_unlisted(unlisted, spec):
    """Say that images in the test folder are not predicted because sample_submission.csv omits them."""
    if unlisted:
        log.warning("%d image(s) in %s are not listed in sample_submission.csv and will not be predicted: %s",
                    len(unlisted), spec.root / spec.test_images, preview(unlisted))


def predict_job(job, splits, args, device):
    """Load the job's model and predict each split into job.out (nothing written)."""
    from utils.data.bands import image_options
    from utils.data.cache import default_cache_dir, is_cached, load_images
    from utils.models.fast_path import network_name, resolve
    from utils.models.checkpoint import load_for_inference
    from utils.predict.tta import predict_tta

    model, meta = load_for_inference(job.ckpt, device, job.run.labels)
    labels, size, spec = list(meta["labels"]), int(args.size or meta["size"]), job.spec
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(spec.root)
    cuda = device.type == "cuda"
    channels = int(meta.get("channels") or len(meta["mean"]))
    setting, how = resolve(device, args.amp, args.channels_last, model,
                           network_name(meta["arch"], meta.get("head"), channels), size, "infer", args.bs, channels)
    kw = dict(tta=args.tta, merge=args.merge, mean=meta["mean"], std=meta["std"], bs=args.bs,
              device=device, crop_frac=args.crop_frac, amp=setting.amp == "bf16",
              channels_last=setting.channels_last,
              max_views_per_forward=args.max_views_per_forward or (None if cuda else 1))
    log.info("%s: %s at %d px, TTA %s (%s merge), %s (%s)", job.run.name, meta["arch"], size, args.tta,
             args.merge, setting.name, how)
    # the bands and 8-bit scaling the model was trained with (from the checkpoint alone)
    bands = image_options(meta)
    if "val" in splits:
        if is_cached(spec.files, size, cache_dir, desc=spec.images, **bands):  # train.py's cache: no decoding
            images, rows = load_images(spec.files, size, cache_dir, desc=spec.images, **bands), job.val_rows
        else:  # only this fold's images are decoded (and were checked)
            images, rows = load_images([spec.files[i] for i in job.val_rows], size, cache_dir,
                                       desc=f"{spec.images}-fold{job.run.fold}", **bands), None
        job.out["val"] = (job.val_names, labels, predict_tta(model, images, rows=rows, **kw))
    if "test" in splits:
        images = load_images(spec.test_files, size, cache_dir, desc=spec.test_images, **bands)
        job.out["test"] = (spec.test_names, labels, predict_tta(model, images, **kw))


def check_submission(jobs, splits, need_oof=True):
    """Before predicting: one label set, one test set, and out-of-fold predictions to come (need_oof:
    the thresholds are fitted on them, i.e. no --thresholds file)."""
    problems = []
    label_sets = {tuple(j.run.labels) for j in jobs}
    if len(label_sets) > 1:
        problems.append("the runs predict different label sets, so their test predictions cannot be "
                        "averaged: " + "; ".join(f"{j.run.name}: {' '.join(j.run.labels)}" for j in jobs))
    groups = {}  # test set -> runs predicting it
    for j in jobs:
        groups.setdefault(tuple(j.spec.test_names), []).append(j)
    (ref, ref_jobs), *others = groups.items()
    for names, js in others:  # one line per differing test set, naming its runs
        only_a, only_b = [n for n in ref if n not in set(names)], [n for n in names if n not in set(ref)]
        problems.append(f"the runs have different test sets: {preview([j.run.name for j in js])} "
                        f"({js[0].spec.root}) vs {preview([j.run.name for j in ref_jobs])} "
                        f"({ref_jobs[0].spec.root}): {len(only_b)} image(s) only in the first {preview(only_b)}, "
                        f"{len(only_a)} only in the second {preview(only_a)}"
                        + ("" if only_a or only_b else " (the same images in another order)"))
    if "val" not in splits and need_oof:
        problems += [f"{j.run.dir}: no preds/val.{j.tta}.csv for the thresholds; use --split both"
                     for j in jobs if not j.run.preds_path("val", j.tta).is_file()]
    report_problems("cannot make a submission", problems)


def oof_table(jobs):
    """Out-of-fold probabilities of the runs, averaged per image (repeats of a fold):
    (names, probs (N, L), y (N, L), fold ids (N,))."""
    frames = []
    for j in jobs:
        names, labels, probs = j.out["val"] if "val" in j.out else read_preds(j.run.preds_path("val", j.tta))
        if labels != j.run.labels:
            raise DataError(f"{j.run.preds_path('val', j.tta)}: columns {labels} differ from the run's labels")
        frames.append(pd.DataFrame(probs, index=names, columns=labels))
    oof = pd.concat(frames).groupby(level=0, sort=False).mean()
    spec, labels = jobs[0].spec, list(oof.columns)
    index = {n: i for i, n in enumerate(spec.names)}
    missing = [n for n in oof.index if n not in index]
    report_problems("out-of-fold images no longer in train.csv", missing)
    rows = np.array([index[n] for n in oof.index])
    cols = [spec.labels.index(l) for l in labels]
    fold_of = folds_table(jobs[0].run).set_index("image_name")["fold"]
    return list(oof.index), oof.to_numpy(), spec.y[rows][:, cols], fold_of.loc[list(oof.index)].to_numpy()


def make_submission(jobs, args, constraints=None, thresholds=None):
    """image_name,tags DataFrame: mean test probabilities of the runs, thresholds from their OOF (or
    `thresholds` (L,) from --thresholds), then the --exactly-one/--at-most-one/--min-tags/--max-tags rules."""
    from utils.metrics.thresholds import fit_thresholds

    names, labels, _ = jobs[0].out["test"]
    test = np.mean([j.out["test"][2] for j in jobs], axis=0)
    if thresholds is not None:
        thr = thresholds
        log.info("thresholds from %s: %s", args.thresholds, " ".join(f"{l}={t:.3f}" for l, t in zip(labels, thr)))
    else:
        _, oof, y, folds = oof_table(jobs)
        thr = fit_thresholds(y, oof, args.threshold, folds=folds, beta=args.beta)
        log.info("thresholds (%s, from %d out-of-fold images): %s", args.threshold, len(oof),
                 "expected-F2 decisions" if thr is None else " ".join(f"{l}={t:.3f}" for l, t in zip(labels, thr)))
    decisions = constrained_decisions(test, thr, args.threshold, constraints, beta=args.beta)
    return submission_frame(names, labels, decisions)


def preds_name(args, ckpt=None, meta=None, run_dir=None):
    """The <tta> part of a run's prediction files: the TTA name, plus -<PX>px when --size is
    given, plus -<checkpoint> for any checkpoint but best (avg, last), so predictions of other
    weights never replace the best checkpoint's. A --checkpoint file (ckpt, its meta) that is
    not one of run_dir's own is named for the run that trained it: -from_<run>_<stem>
    (utils.runs.checkpoint_origin.weights_tag), never as if it were the run's own."""
    from utils.runs.checkpoint_origin import weights_tag

    name = args.tta + (f"-{args.size}px" if args.size else "")
    if args.checkpoint in NAMED_CHECKPOINTS:
        tag = "" if args.checkpoint == "best" else args.checkpoint
    else:
        tag = weights_tag(ckpt, meta or {}, run_dir)
    return name + (f"-{tag}" if tag else "")


def main(args):
    splits = ("test", "val") if args.split == "both" else (args.split,)
    if args.submission and "test" not in splits:
        raise DataError("--submission needs the test predictions: use --split test or both")
    if args.bs < 1 or args.max_views_per_forward < 0 or not 0 < args.crop_frac <= 1:
        raise DataError("--bs must be >= 1, --max-views-per-forward >= 0, --crop-frac in (0, 1]")
    if args.size is not None and args.size < 8:
        raise DataError(f"--size {args.size}: give an image side of at least 8 px")
    device = pick_device(args.device)
    jobs = plan_jobs(find_all_runs(args.runs, args.path_map), args, splits)
    constraints = thresholds = None
    if args.thresholds and not args.submission:
        raise DataError("--thresholds decides the tags of a --submission; give one")
    if args.thresholds and args.threshold in ("expected", "prevalence"):
        raise DataError(f"--thresholds gives thresholds; --threshold {args.threshold} decides without them")
    if args.submission:
        check_output_file(args.submission, "--submission", {j.run.data_root for j in jobs}, in_runs=True)
        check_submission(jobs, splits, need_oof=not args.thresholds)
        if args.thresholds:
            from utils.metrics.threshold_file import read_thresholds_file
            thresholds = read_thresholds_file(args.thresholds, jobs[0].run.labels)
        constraints = parse_constraints(jobs[0].run.labels, args.exactly_one, args.at_most_one, args.min_tags,
                                        args.max_tags)
    elif args.exactly_one or args.at_most_one or args.min_tags or args.max_tags is not None:
        raise DataError("--exactly-one, --at-most-one, --min-tags and --max-tags shape a --submission; give one")
    folders = {job.run.dir: RunFolder(job.run.dir) for job in jobs}  # a run deleted meanwhile is not recreated
    for job in jobs:
        predict_job(job, splits, args, device)
    for folder in folders.values():
        folder.check(while_doing="predicting")
    sub = make_submission(jobs, args, constraints, thresholds) if args.submission else None
    written = []
    for job in jobs:  # every prediction exists: now write them
        for split, (names, labels, probs) in job.out.items():
            written.append(write_preds(job.run.preds_path(split, job.tta), names, labels, probs))
    print(f"wrote {len(written)} prediction file(s):\n" + "\n".join(f"  {p}" for p in written))
    if sub is not None:
        written.append(atomic_write_csv(args.submission, sub))
        print(f"wrote the submission {args.submission}: {len(sub)} test images, "
              f"{sub['tags'].str.split().str.len().mean():.2f} tags per image on average, from the mean test "
              f"probabilities of {len(jobs)} run(s) and " +
              (f"the thresholds of {args.thresholds}" if args.thresholds else f"--threshold {args.threshold} thresholds"))
    return written


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
