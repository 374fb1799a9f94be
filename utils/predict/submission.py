"""predict.py --submission: one model's tags from its runs' test probabilities.

`check_submission` refuses, before any prediction, runs that cannot make one submission (label
sets, test sets, out-of-fold files for the thresholds); `oof_table` is the runs' out-of-fold
table (utils.runs.oof.assemble_oof) with its truth and folds; `make_submission` averages the test
probabilities, fits or applies the thresholds and the decision rules; `write_submission` writes
it and says what it holds.
"""
import logging

import numpy as np

from utils.common.errors import DataError, preview, report_problems
from utils.runs.oof import assemble_oof

log = logging.getLogger("predict")


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
    """Out-of-fold probabilities of the runs (just predicted, else their preds/val.<tta>.csv),
    averaged per image over repeats of a fold: (names, probs (N, L), y (N, L), fold ids (N,))."""
    from utils.predict.jobs import run_folds
    from utils.runs.pred_files import read_preds

    parts = []
    for j in jobs:
        names, labels, probs = j.out["val"] if "val" in j.out else read_preds(j.run.preds_path("val", j.tta))
        if labels != j.run.labels:
            raise DataError(f"{j.run.preds_path('val', j.tta)}: columns {labels} differ from the run's labels")
        parts.append((names, probs))
    names, probs = assemble_oof(parts)
    spec, labels = jobs[0].spec, jobs[0].run.labels
    index = {n: i for i, n in enumerate(spec.names)}
    report_problems("out-of-fold images no longer in train.csv", [n for n in names if n not in index])
    rows = np.array([index[n] for n in names])
    cols = [spec.labels.index(lab) for lab in labels]
    fold_of = run_folds(jobs[0].run)
    report_problems(f"out-of-fold images without a fold in {jobs[0].run.config.get('folds_file', 'folds.csv')}",
                    [n for n in names if n not in fold_of])
    return names, probs, spec.y[rows][:, cols], np.array([fold_of[n] for n in names])


def make_submission(jobs, args, constraints=None, thresholds=None):
    """image_name,tags DataFrame: mean test probabilities of the runs, thresholds from their OOF (or
    `thresholds` (L,) from --thresholds), then the --exactly-one/--at-most-one/--min-tags/--max-tags rules."""
    from utils.metrics.constraints import constrained_decisions
    from utils.metrics.thresholds import fit_thresholds
    from utils.runs.pred_files import submission_frame

    names, labels, _ = jobs[0].out["test"]
    test = np.mean([j.out["test"][2] for j in jobs], axis=0)
    if thresholds is not None:
        thr = thresholds
        log.info("thresholds from %s: %s", args.thresholds, " ".join(f"{lab}={t:.3f}" for lab, t in zip(labels, thr)))
    else:
        _, oof, y, folds = oof_table(jobs)
        thr = fit_thresholds(y, oof, args.threshold, folds=folds, beta=args.beta)
        log.info("thresholds (%s, from %d out-of-fold images): %s", args.threshold, len(oof),
                 "expected-F2 decisions" if thr is None else " ".join(f"{lab}={t:.3f}" for lab, t in zip(labels, thr)))
    decisions = constrained_decisions(test, thr, args.threshold, constraints, beta=args.beta)
    return submission_frame(names, labels, decisions)


def write_submission(args, sub, n_runs):
    """Write the submission (atomically) and say what it holds; returns its path."""
    from utils.common.atomic import atomic_write_csv

    path = atomic_write_csv(args.submission, sub)
    print(f"wrote the submission {args.submission}: {len(sub)} test images, "
          f"{sub['tags'].str.split().str.len().mean():.2f} tags per image on average, from the mean test "
          f"probabilities of {n_runs} run(s) and " +
          (f"the thresholds of {args.thresholds}" if args.thresholds else f"--threshold {args.threshold} thresholds"))
    return path
