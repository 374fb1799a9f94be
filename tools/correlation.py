"""How alike are the models? Pairwise agreement of their decisions and correlation of
their probabilities, as a clustered heatmap: the diversity view for choosing ensemble members.

    python tools/correlation.py                          # every model under runs/ -> runs/correlation/
    python tools/correlation.py --label red --out runs/corr_red
    python tools/correlation.py --per-run --where fold=0

Each model's out-of-fold probabilities (its runs' validation folds joined, averaged
over seeds; --per-run: each run alone) are binarised at its own greedy thresholds
(or --threshold). Agreement of two models = the fraction of equal decisions over the
(image, label) cells both predict, all labels or --label only. Pearson = correlation
of the probabilities over the same cells. Writes PREFIX.png (agreement heatmap, models
in hierarchical-clustering order; each cell's value written in it up to 20 models, the
figure as large as the models and their names need, a name over 48 characters shortened
in its middle), PREFIX_pearson.png, and both matrices as CSV
(PREFIX_agreement.csv, PREFIX_pearson.csv); prints the --top most similar pairs (highest
Pearson correlation) and least similar pairs (lowest), two lists that share no pair (of two
models, the one pair is in both lists).
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from utils.common.atomic import atomic_write_csv  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.analysis.diversity import (cluster_order, pairwise_agreement, pairwise_pearson,  # noqa: E402
                             similar_pairs, stack_matrix)
from utils.runs.filter import matches, parse_where  # noqa: E402
from utils.analysis.scores import Truth, load_oof, merge_oofs  # noqa: E402
from utils.common.paths import load_path_map  # noqa: E402
from utils.analysis.plots import plot_correlation  # noqa: E402
from utils.runs.directory import find_runs  # noqa: E402
from utils.runs.fingerprint import check_runs_dataset  # noqa: E402
from utils.metrics.threshold_search import greedy_thresholds  # noqa: E402
from utils.runs.directory import model_names  # noqa: E402
from utils.common.cli import add_runs_argument, add_truth_arguments, run_script  # noqa: E402

log = logging.getLogger("correlation")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("runs")
    add_runs_argument(g)
    g.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep runs whose config KEY matches VALUE (shell pattern); repeatable")
    g.add_argument("--per-run", action="store_true",
                   help="compare runs, not models (runs of different folds share no images)")
    g.add_argument("--tta", default=None, metavar="NAME",
                   help="use preds/val.NAME.csv (default: the best TTA predict.py made for each run; none only without one)")
    add_truth_arguments(g)
    c = p.add_argument_group("comparison")
    c.add_argument("--label", default=None, metavar="NAME", help="compare on this label only (default: all labels)")
    c.add_argument("--threshold", type=float, default=None,
                   help="one threshold for every model and label (default: each model's greedy thresholds)")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, metavar="PREFIX",
                   help="output prefix (default: correlation/correlation[_LABEL] in the folder of the runs, e.g. runs/correlation/correlation)")
    o.add_argument("--top", type=int, default=5, help="pairs to print at each end (default 5)")
    return p


def collect(args):
    """{model or run name: OOF} of the selected runs; skipped runs are reported on stderr."""
    missing = [p for p in args.runs if not any(ch in p for ch in "*?[") and not Path(p).exists()]
    if missing:
        raise DataError(f"runs folder not found: {', '.join(missing)}")
    runs, bad = find_runs(args.runs, load_path_map(args.path_map))
    where = parse_where(args.where)
    truth, groups = Truth(args.data), {}
    for path, reason in bad:
        print(f"skipped {path}: {reason.splitlines()[0]}", file=sys.stderr)
    runs = [r for r in runs if matches(r, where)]
    if args.data:
        check_runs_dataset(runs, Path(args.data))
    names = model_names(runs)  # as tools/statistics.py and stack.py name them
    for run in runs:
        try:
            oof = load_oof(run, truth, args.tta)
        except DataError as e:
            print(f"skipped {run.name}: {str(e).splitlines()[0]}", file=sys.stderr)
            continue
        groups.setdefault(run.name if args.per_run else run.model, []).append((run, oof))
    oofs = {(k if args.per_run else names[k]): merge_oofs([o for _, o in v]) for k, v in groups.items()}
    if args.label:
        oofs = {k: o for k, o in oofs.items() if args.label in o.labels}
    if len(oofs) < 2:
        what = "runs" if args.per_run else "models"
        raise DataError(f"need at least 2 {what} with validation predictions"
                        f"{' for label ' + repr(args.label) if args.label else ''}; found {len(oofs)}")
    return oofs


def output_prefix(args):
    """--out, or correlation/correlation[_LABEL] in the first folder of runs (README "Where outputs go");
    DataError when one of its files cannot be written."""
    prefix = _prefix(args)
    for suffix in (".png", "_pearson.png", "_agreement.csv", "_pearson.csv"):
        check_output_file(prefix.with_name(prefix.name + suffix), "--out")
    return prefix


def _prefix(args):
    if args.out:
        return Path(args.out)
    first = next((Path(p) for p in args.runs if Path(p).is_dir()), Path("runs"))
    folder = first if not (first / "config.json").is_file() else first.parent
    return folder / "correlation" / ("correlation" + (f"_{args.label}" if args.label else ""))


def main(args):
    oofs = collect(args)
    thresholds = {k: np.full(len(o.labels), args.threshold) if args.threshold is not None
                  else greedy_thresholds(o.y, o.probs)[0] for k, o in oofs.items()}
    D, P = stack_matrix(oofs, thresholds, args.label)
    agree, pearson = pairwise_agreement(D), pairwise_pearson(P)
    order = cluster_order(agree)
    names = [list(oofs)[i] for i in order]
    agree, pearson = agree[np.ix_(order, order)], pearson[np.ix_(order, order)]
    prefix = output_prefix(args)
    scope = f"label {args.label}" if args.label else "all labels"
    plot_correlation(agree, names, prefix.with_name(prefix.name + ".png"), title=f"agreement of decisions, {scope}")
    plot_correlation(pearson, names, prefix.with_name(prefix.name + "_pearson.png"),
                     title=f"Pearson correlation of probabilities, {scope}")
    for tag, m in (("agreement", agree), ("pearson", pearson)):
        atomic_write_csv(prefix.with_name(f"{prefix.name}_{tag}.csv"),
                         pd.DataFrame(m, index=names, columns=names), index=True, index_label="name")
    most, least = similar_pairs(pearson, names, args.top, agree)
    only = " (the only pair with a correlation: both the most and the least similar)" if most == least else ""
    for title, rows in (("most similar", most), ("least similar", least)):
        print(f"{title} ({scope}), by Pearson correlation of probabilities{only}:\n  pearson  agreement  pair")
        for a, b, r, v in rows:
            print(f"  {r:7.4f}  {v:9.4f}  {a}  ~  {b}")
        if not rows:
            print("  (no pair of models shares a cell with a correlation)")
    print(f"wrote {prefix}.png, {prefix}_pearson.png, {prefix}_agreement.csv, {prefix}_pearson.csv")
    return names, agree, pearson


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
