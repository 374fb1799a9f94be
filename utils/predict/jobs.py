"""predict.py's jobs: the runs to predict, each checked before the first prediction.

A Job is one run with the checkpoint it predicts with, its dataset and the files it will write.
`plan_jobs` checks every run first (diverged, checkpoint present and readable, image sizes the
TTA feeds, weights that held out the run's fold, data root, dataset, test images, validation
fold) and reports every problem in one DataError, a dataset's once with the runs it stops.
`preds_name` names a job's files (preds/<split>.<tta>.csv). Torch is imported only when a
function needs it, so predict.py's flags are checked before it loads.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common.errors import DataError, preview, report_problems

log = logging.getLogger("predict")
NAMED_CHECKPOINTS = ("best", "avg", "last")


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


def run_folds(run):
    """{image name (NFC): fold} of the run's folds file, in file order, every value checked
    (utils.data.folds_file.read_folds_file); DataError when the file is not there."""
    from utils.data.folds_file import read_folds_file

    path = run.data_root / run.config.get("folds_file", "folds.csv")
    if not path.is_file():
        raise DataError(f"folds file {path} not found; it was written when the run trained")
    return read_folds_file(path)


def val_fold(run, spec):
    """The run's validation images in folds.csv order: (names, rows into spec.names)."""
    index = {n: i for i, n in enumerate(spec.names)}
    names = [n for n, f in run_folds(run).items() if f == run.fold]
    report_problems(f"fold {run.fold} of folds.csv lists images that train.csv no longer has",
                    [repr(n) for n in names if n not in index])
    if not names:
        raise DataError(f"fold {run.fold} of folds.csv has no images")
    return names, np.array([index[n] for n in names])


def checkpoint_path(run_dir, which):
    """--checkpoint: a name in NAMED_CHECKPOINTS -> run_dir/checkpoints/<name>.pt; else the path
    of an existing file. DataError for anything else (a mistyped name)."""
    if which in NAMED_CHECKPOINTS:
        return Path(run_dir) / "checkpoints" / f"{which}.pt"
    if not Path(which).is_file():
        raise DataError(f"--checkpoint {which!r}: not one of {', '.join(NAMED_CHECKPOINTS)} nor an existing "
                        f"checkpoint file")
    return Path(which)


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


def checkpoint_problem(run, ckpt, args, splits):
    """Why the run's checkpoint cannot predict, or None: absent, damaged or foreign, images of
    the wrong size for the network under --tta/--size, or (--split val/both) weights that did
    not hold out the run's fold. Returns (problem, meta)."""
    from utils.models.factory import check_input_sizes
    from utils.models.checkpoint import load_for_inference
    from utils.runs.checkpoint_origin import check_val_origin

    if not ckpt.is_file():
        return f"{run.dir}: no {ckpt}; " + (
            f"make it with: python tools/average_checkpoints.py --runs {run.dir}" if args.checkpoint == "avg"
            else "the run has not saved a model (still training, or pruned) - train it or drop it from --runs"), None
    try:  # a damaged or foreign checkpoint is found now, not after hours of other runs
        model, meta = load_for_inference(ckpt, "cpu", run.labels)
        check_input_sizes(model, fed_sizes(args, int(args.size or meta["size"])),
                          f"{run.dir}: --tta {args.tta}" + (f" --size {args.size}" if args.size else ""))
    except DataError as e:
        return str(e), None
    if "val" in splits and (leak := check_val_origin(ckpt, meta, run)):
        return leak, meta
    return None, meta


def data_problem(run, root, args):
    """Why the run's data root cannot be used, or None: not found here, or (--data) another dataset."""
    from utils.runs.fingerprint import dataset_problem

    if root is None:
        return (f"{run.dir}: its data directory {run.config.get('data_root_abs')} is not found here; "
                f"pass --data DIR or --path-map FILE")
    if args.data and (other := dataset_problem(run.config, run.dir, root)):
        return f"{other}; pass the dataset it was trained on as --data, or leave --data out"
    return None


def load_spec(root, key, splits):
    """The dataset of `key` (root, images, test images, channels) with the predicted splits'
    images checked (a broken training image does not stop --split test)."""
    from utils.data.dataset import check_test_images, load_dataset, unlisted_test_images

    spec = load_dataset(root, key[1], key[2], need_test="test" in splits, channels=key[3],
                        splits=("test",) if "test" in splits else ())
    if "test" in splits:
        report_problems(f"{root}: test images that cannot be read; fix or remove them", check_test_images(spec))
        warn_unlisted(unlisted_test_images(spec), spec)
    return spec


def plan_jobs(runs, args, splits):
    """Check every run before any prediction: checkpoint, data, test set, folds. Returns Jobs.

    A problem of a dataset several runs share is reported once, with the runs it stops.
    """
    from utils.data.dataset import check_rows

    # only the images of the predicted splits are checked: --split val checks the run's own
    # validation fold (check_rows)
    specs, failed, folds_checked, jobs, problems = {}, {}, {}, [], []
    for run in runs:
        if run.diverged:  # train.py stopped it (diverged.json): its weights are not used
            problems.append(run.diverged)
            continue
        ckpt = checkpoint_path(run.dir, args.checkpoint)
        problem, meta = checkpoint_problem(run, ckpt, args, splits)
        root = Path(args.data) if args.data else run.data_root
        if problem or (problem := data_problem(run, root, args)):
            problems.append(problem)
            continue
        key = (str(root.resolve()), run.config.get("images", "train"), run.config.get("test_images", "test"),
               run.config.get("channels", 3))
        if key not in specs and key not in failed:
            try:
                specs[key] = load_spec(root, key, splits)
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
