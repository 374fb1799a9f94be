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
from pathlib import Path

# On CPU, OpenMP threads that spin while waiting lose most of their speed as soon as
# loader workers or other processes share the cores (measured: 14 vs 47 img/s on 2
# cores, BENCHMARKS.md); passive waiting costs nothing measurable when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, which main's modules import

sys.path.insert(0, str(Path(__file__).resolve().parent))

from utils.common.cli import add_cache_argument, add_hidden_alias, pick_device, run_script  # noqa: E402
from utils.metrics.constraints import add_constraint_arguments, parse_constraints  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.runs.pred_files import write_preds  # noqa: E402
from utils.runs.run_guard import RunFolder  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.predict.tta_views import CROP_FRAC, MERGES, TTA_NAMES  # noqa: E402  (torch-free: flags parse at once)
# torch-free too: each imports torch in the function that needs it
from utils.predict.jobs import find_all_runs, plan_jobs  # noqa: E402
from utils.predict.inference import predict_job  # noqa: E402
from utils.predict.submission import check_submission, make_submission, write_submission  # noqa: E402

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
        written.append(write_submission(args, sub, len(jobs)))
    return written


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
