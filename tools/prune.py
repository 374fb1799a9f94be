"""List the runs that rank in the bottom half on every label, and delete their weights.

    python tools/prune.py                       # dry run: the table, nothing removed
    python tools/prune.py --runs runs --delete  # remove their checkpoints/ and preds/

Within each validation fold, runs are ranked per label by that label's F2 at its
best threshold (rank 1 = best, ties share the average rank). A run is prunable
when on every one of its labels its rank is below the median of its fold's runs
(rank > (n + 1) / 2). --delete removes the prunable runs' checkpoints/ and preds/
(config.json, history.csv, plots/ and result.json stay) and records their scores
in <runs>/PRUNED.csv, so tools/statistics.py still shows them. It refuses, unless
--force, when a stack report (stack_report*.json in the runs folder, its parent, or
a folder below either, or --stack-report) mentions a run, or when deleting would
leave a label of a fold without a top-half run that still has a checkpoint or test
predictions.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

import pandas as pd  # noqa: E402

from utils.common.errors import DataError, report_problems  # noqa: E402
from utils.analysis.pruning import (PRUNED_FILE, RANK_COL, append_pruned, coverage_refusals,  # noqa: E402
                           delete_artifacts, find_stack_reports, now, rank_runs, read_pruned,
                           run_artifacts, stack_usage, usable)
from utils.analysis.scores import F2_BEST, F2_FIXED, LABEL_COL, Truth, load_oof, score_oof  # noqa: E402
from utils.common.paths import load_path_map  # noqa: E402
from utils.runs.directory import find_runs, model_names  # noqa: E402
from utils.common.cli import DEFAULT_RUNS, add_truth_arguments, run_script  # noqa: E402

log = logging.getLogger("prune")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("runs")
    g.add_argument("--runs", default=DEFAULT_RUNS, metavar="DIR",
                   help="folder of runs; PRUNED.csv is written there (default: runs/ in the repository)")
    g.add_argument("--tta", default=None, metavar="NAME",
                   help="rank on preds/val.NAME.csv (default: the best TTA each run has)")
    add_truth_arguments(g)
    a = p.add_argument_group("action")
    a.add_argument("--delete", action="store_true",
                   help="remove the listed runs' checkpoints/ and preds/ (default: dry run, nothing removed)")
    a.add_argument("--force", action="store_true",
                   help="delete even runs a stack report uses or that leave a label without a top-half run")
    a.add_argument("--stack-report", action="append", default=[], metavar="FILE",
                   help="another stack report whose runs must not be deleted; repeatable")
    a.add_argument("--all", action="store_true", help="show every ranked run, not only the prunable ones")
    return p


def load_runs(runs_dir, pairs):
    """Runs of the folder; DataError for a missing/empty folder or unreadable records."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise DataError(f"{runs_dir}: runs folder not found")
    runs, bad = find_runs(runs_dir, pairs)
    report_problems(f"{runs_dir}: unreadable run records (fix or move them; ranks would be wrong)",
                    [f"{p}: {r.splitlines()[0]}" for p, r in bad])
    if not runs:
        raise DataError(f"{runs_dir}: no runs (folders with config.json)")
    return runs


def score_runs(runs, truth, tta, pruned_names):
    """({run name: (run, oof, scores)}, notes). Runs without predictions are noted and left
    out; a run with predictions that cannot be scored is an error."""
    scored, notes, problems = {}, [], []
    for run in runs:
        if not run.tta_available("val"):
            if run.name not in pruned_names:
                notes.append(f"{run.name}: not ranked (no preds/val.*.csv)")
            continue
        try:
            oof = load_oof(run, truth, tta)
            scored[run.name] = (run, oof, score_oof(oof))
        except DataError as e:
            problems.append(f"{run.name}: {str(e).splitlines()[0]}")
    report_problems("runs whose predictions cannot be scored", problems)
    return scored, notes


def build_table(scored, names=None):
    """rank_runs table with model (its name in `names`, {model id: name}, as tools/statistics.py
    shows it), F2 and the bytes each run would free."""
    names = names or {}
    table = rank_runs([(name, run.fold, s["per_label"]) for name, (run, _, s) in scored.items()])
    table.insert(1, "model", [names.get(scored[n][0].model, scored[n][0].model) for n in table["run"]])
    table[F2_BEST] = [scored[n][2][F2_BEST] for n in table["run"]]
    table["MB"] = [run_artifacts(scored[n][0].dir)[1] / 2 ** 20 for n in table["run"]]
    return table.sort_values(["fold", "prunable", F2_BEST], ascending=[True, False, True]).reset_index(drop=True)


def show(table, everything):
    """Printed view: ranks as numbers, per-label F2 left out."""
    rows = table if everything else table[table["prunable"]]
    if rows.empty:
        return "no run is in the bottom half on every label (--all shows every run's ranks)"
    cols = [c for c in rows.columns if not str(c).startswith(LABEL_COL)]
    view = rows[cols].rename(columns=lambda c: c[len(RANK_COL):] if str(c).startswith(RANK_COL) else c)
    fmt = {c: (lambda x: "-" if pd.isna(x) else f"{x:g}") for c in view.columns
           if pd.api.types.is_float_dtype(view[c])}  # ranks: 2, 2.5
    fmt.update({F2_BEST: lambda x: f"{x:.4f}", "MB": lambda x: f"{x:.1f}"})
    return view.to_string(index=False, formatters=fmt)


def refusals(table, scored, doomed, runs_dir, extra_reports):
    """Every reason not to delete `doomed` (stack reports, label coverage)."""
    reports = find_stack_reports(runs_dir) + [Path(p) for p in extra_reports]
    missing = [f"{p}: stack report not found" for p in extra_reports if not Path(p).is_file()]
    used, problems = stack_usage([p for p in reports if p.is_file()], doomed)
    reasons = missing + problems + [f"{name}: used by stack report {used[name]}" for name in doomed if name in used]
    usable_runs = {n for n, (run, _, _) in scored.items() if usable(run.dir)}
    return reasons + coverage_refusals(table, set(doomed), usable_runs)


def pruned_rows(table, scored, doomed):
    """PRUNED.csv rows: who, when, bytes freed, scores and ranks."""
    rows = []
    for name in doomed:
        run, oof, s = scored[name]
        t = table[table["run"] == name].iloc[0]
        rows.append({"run": name, "model": run.model, "arch": run.config.get("arch"),
                     "images": run.config.get("images", "train"), "fold": run.fold, "seed": run.seed,
                     "tta": oof.tta, "pruned_at": now(), "freed_bytes": run_artifacts(run.dir)[1],
                     F2_FIXED: s[F2_FIXED], F2_BEST: s[F2_BEST],
                     **{LABEL_COL + k: v for k, v in s["per_label"].items()},
                     **{c: t[c] for c in table.columns if str(c).startswith(RANK_COL) and pd.notna(t[c])},
                     "n": t["n"]})
    return pd.DataFrame(rows)


def main(args):
    runs_dir = Path(args.runs)
    runs = load_runs(runs_dir, load_path_map(args.path_map))
    pruned = read_pruned(runs_dir / PRUNED_FILE)
    scored, notes = score_runs(runs, Truth(args.data), args.tta, set(pruned["run"]))
    for n in notes:
        print(n, file=sys.stderr)
    if not scored:
        raise DataError(f"{runs_dir}: no run has validation predictions to rank")
    table = build_table(scored, model_names(runs))
    doomed = table.loc[table["prunable"], "run"].tolist()
    print(show(table, args.all))
    mb = table.loc[table["prunable"], "MB"].sum()
    print(f"\n{len(doomed)} of {len(table)} ranked run(s) prunable, {mb:.1f} MB to free")
    if not doomed:
        return table, []
    reasons = refusals(table, scored, doomed, runs_dir, args.stack_report)
    if not args.delete:
        for r in reasons:
            print(f"--delete would refuse: {r}", file=sys.stderr)
        print("dry run: nothing removed (pass --delete)")
        return table, []
    if reasons and not args.force:
        report_problems("refusing to delete (pass --force to delete anyway)", reasons)
    # Record first: a crash while deleting still leaves the scores in PRUNED.csv.
    append_pruned(runs_dir / PRUNED_FILE, pruned_rows(table, scored, doomed))
    freed = sum(delete_artifacts(scored[name][0].dir) for name in doomed)
    print(f"deleted checkpoints and predictions of {len(doomed)} run(s), {freed / 2 ** 20:.1f} MB freed; "
          f"scores in {runs_dir / PRUNED_FILE}")
    return table, doomed


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
