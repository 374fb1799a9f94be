"""Compare threshold strategies on out-of-fold probabilities: in-sample vs cross-fitted F2.

In-sample F2 fits the thresholds on the rows it scores (optimistic); cross-fitted F2
fits them on K-1 folds and scores the held-out fold (what to expect on test data).

    python tools/thresholds.py --probs runs/X/preds/val.none.csv --truth data/demo/train.csv
    python tools/thresholds.py --runs 'runs/resnet50-wbce-f*' --strategy greedy smooth --json
    python tools/thresholds.py --runs 'runs/*' --tta hflip

With --runs, the runs are grouped into models as stack.py groups them (a configuration and
seed, one run per fold) and each model's val files of every fold are compared together: its
out-of-fold predictions, cross-fitted over the folds of the runs' folds.csv. Folds: --folds
FILE, else the runs' folds file (with --probs, folds.csv next to the truth file); when the
rows have fewer than two folds there (a single run's val file is one fold), a seeded random
--kfold split is used instead. The first line of each table says which.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402

from utils.data.dataset import align_names, read_truth  # noqa: E402
from utils.common.errors import DataError, preview, report_problems  # noqa: E402
from utils.common.text import read_csv  # noqa: E402
from utils.data.folds_file import read_folds_file  # noqa: E402
from utils.runs.oof import assemble_oof  # noqa: E402
from utils.runs.pred_files import read_preds  # noqa: E402
from utils.runs.directory import find_runs, model_names, no_run_message  # noqa: E402
from utils.predict.tta_choice import AUTO, choose_tta, make_files_commands, tta_help  # noqa: E402
from utils.metrics.threshold_search import random_folds  # noqa: E402
from utils.metrics.thresholds import STRATEGIES, compare_strategies  # noqa: E402
from utils.common.cli import add_hidden_alias, run_script  # noqa: E402

log = logging.getLogger("thresholds")


@dataclass
class Inputs:
    """What one comparison needs: name (a model's, None for --probs), labels (L names), Y (N, L) 0/1,
    P (N, L) probabilities, folds (N,) int fold ids or None, source (where the folds come from)."""
    name: str
    labels: list
    Y: np.ndarray
    P: np.ndarray
    folds: np.ndarray
    source: str


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    g = p.add_argument_group("inputs")
    g.add_argument("--probs", help="predictions CSV: image_name, then one probability column per label")
    g.add_argument("--truth", help="truth CSV in train.csv format (image_name,tags; tags space-separated); "
                                   "with --runs the default is train.csv in the run's data root")
    g.add_argument("--runs", nargs="+", action="extend", metavar="PATTERN",
                   help="run folders or glob patterns (quote them, e.g. 'runs/*'; a folder of runs counts as all "
                        "of them): each model's preds/val.<tta>.csv of every fold together, one comparison per "
                        "model (a configuration and seed, named as stack.py names it)")
    add_hidden_alias(p, "--run", "--runs")
    g.add_argument("--tta", default=AUTO, help=tta_help("preds/val.<tta>.csv of the runs"))
    g.add_argument("--folds", help="folds CSV (image_name,fold); default: the runs' folds file, with --probs "
                                   "folds.csv next to the truth file, if any")
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
    o.add_argument("--json", action="store_true", help="print the result as JSON instead of a table (several models: "
                   "{\"models\": [one result per model]}; each names its model and folds)")
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


def _data_paths(run, args):
    """(train.csv, folds file or None) of a run, --truth and --folds first; DataError when its data
    root is not found here and --truth is not given."""
    if args.truth:
        return Path(args.truth), Path(args.folds) if args.folds else Path(args.truth).parent / "folds.csv"
    if run.data_root is None:
        stored = run.config.get("data_root_abs") or run.config.get("data_root")
        raise DataError(f"{run.dir / 'config.json'}: data root {stored} not found here; pass --truth "
                        f"(or --path-map / tools/convert_paths.py)")
    return run.data_root / "train.csv", Path(args.folds) if args.folds else run.folds_file()


def _no_run(pattern):
    """Why a pattern gave no run: a missing path, a folder that is not a run, or no match."""
    path = Path(str(pattern))
    if path.is_dir() and not (path / "config.json").is_file() and not any(path.glob("*/config.json")):
        return f"{pattern}: not a run folder (no config.json)"
    return no_run_message(pattern)


def find_val_runs(patterns, tta):
    """The runs matching ``patterns`` and the TTA to read (utils.predict.tta_choice; `auto` prints its
    choice on stderr). DataError when none matches or a run lacks preds/val.<tta>.csv."""
    runs, skipped = find_runs(patterns)
    if not runs:
        why = "; ".join(_no_run(p) for p in patterns)
        raise DataError(f"--runs {why}" + "".join(f"\n  skipped {d}: {why}" for d, why in skipped))
    choice = choose_tta(runs, ("val",), tta)
    if choice.line:
        print(choice.line, file=sys.stderr)
    lacking = [r for r in runs if not r.preds_path("val", choice.name).is_file()]
    if lacking:
        have = {r.name: ", ".join(f"val.{t}.csv" for t in r.tta_available("val")) or "no preds/val.*.csv"
                for r in lacking}
        raise DataError(f"{len(lacking)} run(s) lack preds/val.{choice.name}.csv:\n"
                        + "".join(f"  {r.dir}: has {have[r.name]}\n" for r in lacking)
                        + f"make them with {'; '.join(make_files_commands(lacking, choice.name, 'val'))}, "
                        f"or give --tta NAME")
    return runs, choice.name


def models_of(runs):
    """The runs as stack.py's members: {name: one run per fold} per configuration and seed
    (utils.runs.directory.model_key), named as stack.py names them. Of several runs of one fold
    the last by name is kept, as stack.py does, and the others are named in a warning."""
    by_member = {}
    for r in sorted(runs, key=lambda r: r.name):
        by_member.setdefault((r.model, r.seed), []).append(r)
    seeds = {}
    for model, seed in by_member:
        seeds.setdefault(model, []).append(seed)
    names, out = model_names(runs), {}
    for (model, seed), rs in sorted(by_member.items()):
        per_fold = {}
        for r in rs:
            per_fold[r.fold] = r
        name = names[model] + (f"-s{seed}" if len(seeds[model]) > 1 else "")
        extra = [r.name for r in rs if per_fold[r.fold] is not r]
        if extra:
            log.warning("%s: several runs of one fold; using %s, not %s", name,
                        ", ".join(per_fold[f].name for f in sorted(per_fold)), ", ".join(extra))
        out[name] = [per_fold[f] for f in sorted(per_fold)]
    return out


def model_inputs(name, runs, tta, args):
    """Inputs of one model: every fold's preds/val.<tta>.csv together (its out-of-fold predictions)."""
    parts, labels = [], None
    for r in runs:
        n, lab, p = read_preds(r.preds_path("val", tta))
        if labels is not None and lab != labels:
            raise DataError(f"{r.preds_path('val', tta)}: labels {lab} differ from {labels} of {runs[0].name}")
        parts, labels = parts + [(n, p)], lab
    names, probs = assemble_oof(parts)  # one run per fold: the folds' rows one after another
    truth_path, folds_path = _data_paths(runs[0], args)
    what = f"{name} ({', '.join(r.name for r in runs)}): preds/val.{tta}.csv"
    return with_truth_and_folds(name, names, labels, probs, truth_path, folds_path, args, what)


def check_values(args):
    """DataError naming the flag for --kfold 1 or < 0, --beta <= 0, --zero-division outside [0, 1] (or NaN)."""
    if args.kfold < 0 or args.kfold == 1:
        raise DataError(f"--kfold {args.kfold}: must be 0 (no cross-fitting) or at least 2")
    if not args.beta > 0:
        raise DataError(f"--beta {args.beta}: must be > 0 (2 for F2)")
    if not 0 <= args.zero_division <= 1:  # NaN too: the threshold searches need a number
        raise DataError(f"--zero-division {args.zero_division}: must be in [0, 1] (a score)")


def load_inputs(args):
    """Returns a list of Inputs: one per model of --runs (every fold's val file together), or the
    one of --probs. Nothing is fitted before every input is read."""
    check_values(args)
    if bool(args.runs) == bool(args.probs):
        raise DataError("give either --runs PATTERN... or --probs FILE (with --truth FILE)")
    if args.probs:
        if args.truth is None:
            raise DataError("--probs needs --truth (a train.csv: image_name,tags)")
        names, labels, P = read_preds(args.probs)
        folds_path = Path(args.folds) if args.folds else Path(args.truth).parent / "folds.csv"
        return [with_truth_and_folds(None, names, labels, P, Path(args.truth), folds_path, args, str(args.probs))]
    runs, tta = find_val_runs(args.runs, args.tta)
    return [model_inputs(name, rs, tta, args) for name, rs in models_of(runs).items()]


def with_truth_and_folds(name, names, labels, P, truth_path, folds_path, args, what):
    """Inputs of predictions: their truth and the folds to cross-fit over (the folds file's when it
    gives the rows two folds or more, else a seeded random --kfold split), said in ``source``."""
    truth_names, Y = read_truth(truth_path, labels)
    Y = Y[align_names(names, truth_names, f"{what} vs {truth_path}")]
    folds, source = None, None
    if args.folds or (folds_path is not None and folds_path.is_file()):
        fold_of = read_folds_file(folds_path)  # every value checked, naming the rows
        ids = np.array(list(fold_of.values()), np.int64)
        folds = ids[align_names(names, list(fold_of), f"{what} vs {folds_path}")]
        have = np.unique(folds)
        source = f"{folds_path} (the out-of-fold predictions of folds {', '.join(map(str, have))})"
        if have.size < 2:
            log.warning("%s gives these %d rows a single fold (%d): it cannot cross-fit over it",
                        folds_path, len(names), have[0])
            folds, source = None, f"fold {have[0]} only in {folds_path}"
    if folds is None and args.kfold:
        k = min(args.kfold, len(names))
        if k < 2:
            log.warning("%d row(s): too few to cross-fit; in-sample scores only", len(names))
            return Inputs(name, labels, Y, P, None, f"none ({len(names)} row: too few to cross-fit)")
        folds, source = random_folds(len(names), k, args.seed), \
            f"random {k}-way split (seed {args.seed})" + (f", as the rows cover {source}" if source else "")
        if k < args.kfold:
            log.warning("only %d rows: --kfold %d lowered to %d (one row per fold)", len(names), args.kfold, k)
            source += f"; --kfold {args.kfold} lowered to the {len(names)} rows"
    return Inputs(name, labels, Y, P, folds, source or "none")


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
    inputs = load_inputs(args)
    strategies = tuple(dict.fromkeys(args.strategy or STRATEGIES))
    results, tables = [], []
    for i in inputs:
        result = compare_strategies(i.Y, i.P, i.folds, strategies, i.labels, beta=args.beta,
                                    zero_division=args.zero_division)
        results.append({**({"model": i.name} if i.name else {}), "folds": i.source, **result})
        tables.append((f"model {i.name}\n" if i.name else "") + format_table(result, len(i.Y), i.source))
    out = results[0] if len(results) == 1 else {"models": results}
    print(json.dumps(out, indent=2) if args.json else "\n\n".join(tables))
    return out


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
