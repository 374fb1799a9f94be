"""A markdown table of every model in a set of runs, scored honestly from out-of-fold data.

    python scripts/summarise_runs.py --runs 'runs/demo-exp/*' [--tta none] [--rare 3]

Per model (all folds of one configuration): the F2 at a fixed 0.2 threshold, the F2
with greedy per-label thresholds fitted on the other folds (cross-fitted: what a
test set would see), and for each of the `--rare` rarest labels its own F2 with a
threshold chosen for that label's F2 on the other folds (whether the model learned
the tag at all: under the sample-averaged metric the best choice for a very rare
tag is often never to predict it). Models trained on a subset of the tags are scored
on their tags only, so they appear with their own columns blank.
"""
import argparse
import logging
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.cli import run_script  # noqa: E402
from utils.library import load_library  # noqa: E402
from utils.metrics import fbeta_per_label, fbeta_samples  # noqa: E402
from utils.thresholds import best_label_fbeta, binarize, fit_thresholds  # noqa: E402


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
                     {l: per.get(l) for l in rare_labels}))
    return rare_labels, rows


def main(args):
    lib = load_library(args.runs, args.tta, need_test=False)
    rare_labels, rows = summarise(lib, args.rare)
    dens = dict(zip(lib.labels, lib.y.mean(0)))
    head = ["model", "labels", "F2 at 0.2", "F2 cross-fitted"] + [f"{l} ({dens[l]:.4f})" for l in rare_labels]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, n, f02, fcf, rare in rows:
        cells = [name, str(n), f"{f02:.4f}", f"{fcf:.4f}"] + ["" if v is None else f"{v:.3f}" for v in rare.values()]
        print("| " + " | ".join(cells) + " |")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders or glob patterns (quote them)")
    p.add_argument("--tta", default="none", help="which preds/val.<tta>.csv to read (default: none)")
    p.add_argument("--rare", type=int, default=3, help="how many of the rarest labels get a column (default: 3)")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
