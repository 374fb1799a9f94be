"""A markdown table of every model in a set of runs, scored honestly from out-of-fold data.

    python scripts/summarise_runs.py --runs 'runs/demo-exp/*' [--tta none] [--rare 3]

Per model (all folds of one configuration): the F2 at a fixed 0.2 threshold, the F2
with greedy per-label thresholds fitted on the other folds (cross-fitted: what a
test set would see), and for each of the `--rare` rarest labels its own F2 with a
threshold chosen for that label's F2 on the other folds (whether the model learned
the tag at all: under the sample-averaged metric the best choice for a very rare
tag is often never to predict it). Models trained on a subset of the tags are scored
on their tags only, so they appear with their own columns blank.

Then the spread over folds of the cross-fitted F2 (each fold's images scored with the
thresholds fitted on the other folds: std and min-max of the per-fold F2; each fold's
gain over the first row's, a paired comparison on the same images), and time:
training minutes (sum over the folds of the epochs' time) and wall minutes (run
created to finished, with start-up, caching and validation). Rows come in the order
of --runs. --folds 0,1 scores every model on those folds' images only (models trained
on a subset of the folds of one split, compared on the same images).
"""
import argparse
import fnmatch
import glob
import logging
import re
from datetime import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import run_script  # noqa: E402
from utils.stack.library import (Library, Member, _read_member, check_labels, data_root, load_library,  # noqa: E402
                           read_fold_ids, read_truth)
from utils.common.errors import DataError  # noqa: E402
from utils.common.text import read_json  # noqa: E402
from utils.runs.directory import find_runs  # noqa: E402
from utils.metrics.fbeta import fbeta_per_label, fbeta_samples  # noqa: E402
from utils.metrics.threshold_search import best_label_fbeta  # noqa: E402
from utils.metrics.thresholds import binarize, fit_thresholds  # noqa: E402


def cross_fitted_decisions(y, probs, folds, strategy="greedy"):
    """0/1 decisions for every row from thresholds fitted on the other folds."""
    out = np.zeros_like(y)
    for k in np.unique(folds):
        held = folds == k
        thr = fit_thresholds(y[~held], probs[~held], strategy)
        out[held] = binarize(probs[held], thr)
    return out


def describe(member):
    """A readable model name: the first run's name without its fold, plus what sets it apart."""
    name = re.sub(r"-f\d+$", "", member.runs[0] if member.runs else member.name)
    cfg = member.config or {}
    bits = [f"loss={cfg.get('loss_spec')}", f"sampler={cfg.get('sampler')}", f"aug={cfg.get('aug')}"]
    if cfg.get("label_group"):
        bits.append(f"labels={cfg['label_group']}")
    return f"{name} ({', '.join(bits)})"


def label_f2_cross_fitted(y_col, p_col, folds):
    """The label's own F2 with its threshold chosen for that F2 on the other folds."""
    dec = np.zeros_like(y_col)
    for k in np.unique(folds):
        held = folds == k
        _, thr = best_label_fbeta(y_col[~held], p_col[~held, None])
        dec[held] = p_col[held] >= thr[0]
    return float(fbeta_per_label(y_col[:, None], dec[:, None])[0])


def fold_scores(y, dec, folds):
    """Per-fold F2 of cross-fitted decisions: float64 (K,) in fold order."""
    return np.array([fbeta_samples(y[folds == k], dec[folds == k]) for k in np.unique(folds)])


def run_minutes(run_dir):
    """(training minutes, wall minutes) of a finished run from result.json and config.json; NaN if unknown."""
    try:
        res = read_json(run_dir / "result.json")
        cfg = read_json(run_dir / "config.json")
        wall = (datetime.fromisoformat(res["finished_at"]) - datetime.fromisoformat(cfg["created"])).total_seconds()
        return res["train_seconds"] / 60, wall / 60
    except (DataError, KeyError, ValueError):
        return float("nan"), float("nan")


def summarise(lib, rare):
    """Rows (model name, F2@0.2, cross-fitted F2, {label: F2}) for every member."""
    order = np.argsort(lib.y.mean(0), kind="stable")[:rare]
    rare_labels = [lib.labels[j] for j in order]
    rows = []
    for m, member in enumerate(lib.members):
        cols = np.flatnonzero(lib.mask[m])
        y, p = lib.y[:, cols], lib.oof[cols, m, :].T.astype(np.float64)
        dec = cross_fitted_decisions(y, p, lib.folds)
        per = {lib.labels[c]: label_f2_cross_fitted(y[:, i], p[:, i], lib.folds)
               for i, c in enumerate(cols) if lib.labels[c] in rare_labels}
        rows.append((describe(member), len(cols), fbeta_samples(y, p >= 0.2), fbeta_samples(y, dec),
                     {l: per.get(l) for l in rare_labels}, fold_scores(y, dec, lib.folds), member))
    return rare_labels, rows


def pattern_order(member, patterns):
    """Index of the first --runs pattern that matches one of the member's runs (for sorting)."""
    for i, pat in enumerate(patterns):
        if any(fnmatch.fnmatch(r, Path(pat).name) for r in member.runs):
            return i
    return len(patterns)


def member_minutes(member, patterns):
    """Summed (training, wall) minutes of the member's runs, found through the patterns."""
    dirs = {Path(d).name: Path(d) for pat in patterns for d in glob.glob(pat)}
    times = np.array([run_minutes(dirs[r]) if r in dirs else (np.nan, np.nan) for r in member.runs])
    return times.sum(axis=0) if len(times) else (np.nan, np.nan)


def load_fold_subset(patterns, tta, keep):
    """A Library of the models that have a finished run with preds/val.<tta>.csv for every fold
    in `keep`, restricted to those folds' images (load_library needs every fold)."""
    runs, _ = find_runs(patterns)
    if not runs:
        raise DataError(f"no runs match {list(patterns)}")
    labels = check_labels(runs)
    root = data_root(runs)
    names, y = read_truth(root, labels)
    folds, _ = read_fold_ids(runs, root, names)
    by_model = {}
    for r in runs:
        if r.fold in keep and r.finished and r.preds_path("val", tta).is_file():
            by_model.setdefault(r.model, {})[r.fold] = r
    members, oofs, masks = [], [], []
    for model, per_fold in by_model.items():
        if set(per_fold) != set(keep):
            logging.warning("left out %s: no usable run for fold(s) %s", model, sorted(set(keep) - set(per_fold)))
            continue
        rs = [per_fold[k] for k in sorted(keep)]
        oof, _, mask = _read_member(rs, tta, labels, names, folds, [], False)
        members.append(Member(rs[0].name, model, None, rs[0].labels, [r.name for r in rs], None, rs[0].config))
        oofs.append(oof)
        masks.append(mask)
    if not members:
        raise DataError(f"no model has runs for every fold of {sorted(keep)} with preds/val.{tta}.csv")
    rows = np.isin(folds, sorted(keep))
    return Library(labels, [n for n, k in zip(names, rows) if k], y[rows], folds[rows], members,
                   np.stack(oofs, 1)[:, :, rows], np.stack(masks))


def check_two_folds(lib, folds_flag):
    """DataError unless the library's images come from at least two folds: every cross-fitted
    number fits thresholds on the other folds, so a single fold has nothing to fit them on."""
    found = sorted(int(k) for k in np.unique(lib.folds))
    if len(found) < 2:
        given = f" (--folds {folds_flag})" if folds_flag else ""
        raise DataError(f"the runs cover fold(s) {found} only{given}; cross-fitted thresholds are fitted on the "
                        f"other folds, so they need runs of at least 2 folds: train another fold "
                        f"(train.py --fold N) and list its runs" + (" in --folds" if folds_flag else ""))


def main(args):
    if args.folds:
        keep = [int(k) for k in args.folds.split(",")]
        lib = load_fold_subset(args.runs, args.tta, keep)
    else:
        lib = load_library(args.runs, args.tta, need_test=False)
    check_two_folds(lib, args.folds)
    rare_labels, rows = summarise(lib, args.rare)
    dens = dict(zip(lib.labels, lib.y.mean(0)))
    head = ["model", "labels", "F2 at 0.2", "F2 cross-fitted"] + [f"{l} ({dens[l]:.4f})" for l in rare_labels]
    head += ["± std over folds", "fold min–max", "per-fold gain over the first row", "train min", "wall min"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    rows.sort(key=lambda r: pattern_order(r[-1], args.runs))
    first = rows[0][5]
    for name, n, f02, fcf, rare, per_fold, member in rows:
        cells = [name, str(n), f"{f02:.4f}", f"{fcf:.4f}"] + ["" if v is None else f"{v:.3f}" for v in rare.values()]
        train_min, wall_min = member_minutes(member, args.runs)
        cells += [f"{per_fold.std(ddof=1) if len(per_fold) > 1 else float('nan'):.4f}",
                  f"{per_fold.min():.4f}–{per_fold.max():.4f}",
                  " / ".join(f"{d:+.4f}" for d in per_fold - first), f"{train_min:.1f}", f"{wall_min:.1f}"]
        print("| " + " | ".join(cells) + " |")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders or glob patterns (quote them)")
    p.add_argument("--tta", default="none", help="which preds/val.<tta>.csv to read (default: none)")
    p.add_argument("--rare", type=int, default=3, help="how many of the rarest labels get a column (default: 3)")
    p.add_argument("--folds", default=None, help="comma list of folds: score on those folds' images only, "
                   "for models trained on some folds of the split (default: every fold, all required)")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
