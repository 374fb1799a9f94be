"""Compare threshold strategies on out-of-fold probabilities: in-sample vs cross-fitted F2.

In-sample F2 fits the thresholds on the rows it scores (optimistic); cross-fitted F2
fits them on K-1 folds and scores the held-out fold (what to expect on test data).

    python tools/thresholds.py --probs runs/X/preds/val.none.csv --truth data/demo/train.csv
    python tools/thresholds.py --runs runs/X --strategy greedy smooth --json
    python tools/thresholds.py --runs runs/X --tta hflip

Folds: --folds FILE, else folds.csv next to the truth file; when those give the rows
fewer than two folds (one run's val file covers one fold), a seeded random --kfold
split is used instead.
"""
import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.data.dataset import align_names, read_truth  # noqa: E402
from utils.common.errors import DataError, preview, report_problems  # noqa: E402
from utils.common.text import read_csv  # noqa: E402
from utils.runs.pred_files import read_preds  # noqa: E402
from utils.runs.directory import load_run  # noqa: E402
from utils.runs.tta_choice import AUTO, choose_tta, tta_help  # noqa: E402
from utils.metrics.threshold_search import random_folds  # noqa: E402
from utils.metrics.thresholds import STRATEGIES, compare_strategies  # noqa: E402
from utils.common.cli import add_hidden_alias, run_script  # noqa: E402

log = logging.getLogger("thresholds")



def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    g = p.add_argument_group("inputs")
    g.add_argument("--probs", help="predictions CSV: image_name, then one probability column per label")
    g.add_argument("--truth", help="truth CSV in train.csv format (image_name,tags; tags space-separated); "
                                   "with --runs the default is train.csv in the run's data root")
    g.add_argument("--runs", dest="run", metavar="RUN", help="one run directory: uses RUN/preds/val.<tta>.csv")
    add_hidden_alias(p, "--run", "--runs")
    g.add_argument("--tta", default=AUTO, help=tta_help("RUN/preds/val.<tta>.csv"))
    g.add_argument("--folds", help="folds CSV (image_name,fold); default: folds.csv next to the truth file, if any")
    g.add_argument("--kfold", type=int, default=5,
                   help="random K-way split used when the folds give the rows fewer than 2 folds; "
                        "0 = no cross-fitting (default 5)")
    g.add_argument("--seed", type=int, default=0, help="seed of that random split (default 0)")
    s = p.add_argument_group("strategies")
    s.add_argument("--strategy", nargs="+", action="extend", choices=STRATEGIES, metavar="NAME",
                   help=f"strategies to compare, any of {', '.join(STRATEGIES)} (default: all)")
    s.add_argument("--beta", type=float, default=2.0, help="beta of the F-beta score (default 2)")
    s.add_argument("--zero-division", type=float, default=1.0,
                   help="score of an image with no true and no predicted tag (default 1.0)")
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    return p


def _read_table(path, columns):
    """CSV with the given leading columns as strings; DataError naming the file otherwise."""
    path = Path(path)
    df = read_csv(path, dtype=str, keep_default_na=False)
    if list(df.columns[: len(columns)]) != list(columns):
        raise DataError(f"{path}: expected columns {','.join(columns)}; got {list(df.columns)[:5]}")
    dup = df["image_name"][df["image_name"].duplicated()].tolist()
    report_problems(f"{path}: bad file", [f"{len(dup)} duplicate image name(s): {preview(dup)}"] if dup else [])
    return df


def read_folds(path):
    """Folds CSV (image_name,fold) -> (names, fold ids int (n,))."""
    df = _read_table(path, ["image_name", "fold"])
    try:
        return df["image_name"].tolist(), df["fold"].astype(int).to_numpy()
    except ValueError as e:
        raise DataError(f"{path}: fold column must hold integers ({e})") from e


def resolve_run(run, tta=AUTO):
    """Run directory -> (val preds path, truth path or None) following its config.json.

    tta: a TTA name, or AUTO (utils.runs.tta_choice: the run's val file with the most views;
    the choice is printed on stderr). DataError when the file is missing."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"--runs {run}: no such folder; give a run folder (runs/<name>, with config.json)")
    if not (run / "config.json").is_file():
        raise DataError(f"--runs {run}: not a run folder (no config.json); give a run folder (runs/<name>) "
                        f"made by train.py, or a probability file with --probs")
    rec = load_run(run)  # converts a data path recorded on another machine
    choice = choose_tta([rec], ("val",), tta)
    if choice.line:
        print(choice.line, file=sys.stderr)
    preds = rec.preds_path("val", choice.name)
    if not preds.is_file():
        have = ", ".join(f"val.{t}.csv" for t in rec.tta_available("val")) or "no preds/val.*.csv"
        raise DataError(f"{preds}: missing (the run has {have}); make it with "
                        f"python predict.py --runs {run} --tta {choice.name} --split val")
    if rec.data_root is None:
        stored = rec.config.get("data_root_abs") or rec.config.get("data_root")
        if stored is None:
            return preds, None
        raise DataError(f"{run / 'config.json'}: data root {stored} not found here; pass --truth "
                        f"(or --path-map / tools/convert_paths.py)")
    return preds, rec.data_root / "train.csv"


def check_values(args):
    """DataError naming the flag for --kfold 1 or < 0, --beta <= 0, --zero-division outside [0, 1] (or NaN)."""
    if args.kfold < 0 or args.kfold == 1:
        raise DataError(f"--kfold {args.kfold}: must be 0 (no cross-fitting) or at least 2")
    if not args.beta > 0:
        raise DataError(f"--beta {args.beta}: must be > 0 (2 for F2)")
    if not 0 <= args.zero_division <= 1:  # NaN too: the threshold searches need a number
        raise DataError(f"--zero-division {args.zero_division}: must be in [0, 1] (a score)")


def load_inputs(args):
    """Returns (labels, Y (N, L), P (N, L), folds (N,) or None, folds description)."""
    check_values(args)
    if bool(args.run) == bool(args.probs):
        raise DataError("give either --runs DIR or --probs FILE (with --truth FILE)")
    probs_path, truth_path = (args.probs, args.truth)
    if args.run:
        probs_path, run_truth = resolve_run(args.run, args.tta)
        truth_path = args.truth or run_truth
        if truth_path is None:
            raise DataError(f"{Path(args.run) / 'config.json'} has no data_root: pass --truth")
    if truth_path is None:
        raise DataError("--probs needs --truth (a train.csv: image_name,tags)")
    names, labels, P = read_preds(probs_path)
    truth_names, Y = read_truth(truth_path, labels)
    Y = Y[align_names(names, truth_names, f"{probs_path} vs {truth_path}")]
    folds, source = None, "none"
    folds_path = args.folds or (Path(truth_path).parent / "folds.csv")
    if args.folds or Path(folds_path).is_file():
        fold_names, ids = read_folds(folds_path)
        folds, source = ids[align_names(names, fold_names, f"{probs_path} vs {folds_path}")], str(folds_path)
    if folds is not None and np.unique(folds).size < 2:
        log.warning("%s gives these %d rows a single fold: it cannot cross-fit", folds_path, len(names))
        folds, source = None, "none"
    if folds is None and args.kfold:
        k = min(args.kfold, len(names))
        if k < 2:
            log.warning("%d row(s): too few to cross-fit; in-sample scores only", len(names))
            return labels, Y, P, None, f"none ({len(names)} row: too few to cross-fit)"
        folds = random_folds(len(names), k, args.seed)
        source = f"random {k}-way split (seed {args.seed})"
        if k < args.kfold:
            log.warning("only %d rows: --kfold %d lowered to %d (one row per fold)", len(names), args.kfold, k)
            source += f"; --kfold {args.kfold} lowered to the {len(names)} rows"
    return labels, Y, P, folds, source


def format_table(result, n, source):
    """Human-readable summary of a compare_strategies result.

    The last column compares each strategy with the first one fold by fold (mean +-
    std of the paired differences): fold-to-fold spread is shared by all strategies,
    so the paired difference is what says whether one is really better.
    """
    strategies = result["strategies"]
    ref = next(iter(strategies))
    lines = [f"{n} images, {len(result['labels'])} labels, folds: {source}",
             f"{'strategy':<10} {'in-sample F2':>12} {'cross-fitted F2':>20} {'paired diff vs ' + ref:>24} "
             f"{'seconds':>8}"]
    for name, r in strategies.items():
        cf = diff = "n/a"
        if r["f2_cross_fitted"] is not None:
            cf = f"{r['f2_cross_fitted']:.5f} +- {r['f2_cross_fitted_std']:.5f}"
            d = np.subtract(r["f2_per_fold"], strategies[ref]["f2_per_fold"])
            diff = f"{d.mean():+.5f} +- {d.std(ddof=1):.5f}"
        lines.append(f"{name:<10} {r['f2_in_sample']:>12.5f} {cf:>20} {diff:>24} {r['seconds']:>8.3f}")
    fitted = {k: r["thresholds"] for k, r in strategies.items() if r["thresholds"] is not None}
    if fitted:
        width = max(len(lab) for lab in result["labels"])
        lines += ["", "thresholds (predict when probability >= t)",
                  f"{'label':<{width}} " + " ".join(f"{k:>8}" for k in fitted)]
        for lab in result["labels"]:
            lines.append(f"{lab:<{width}} " + " ".join(f"{t[lab]:>8.4f}" for t in fitted.values()))
    return "\n".join(lines)


def main(args):
    labels, Y, P, folds, source = load_inputs(args)
    strategies = tuple(dict.fromkeys(args.strategy or STRATEGIES))
    result = compare_strategies(Y, P, folds, strategies, labels, beta=args.beta,
                                zero_division=args.zero_division)
    print(json.dumps(result, indent=2) if args.json else format_table(result, len(Y), source))
    return result


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
