"""Leaderboard of runs and models: F2 at 0.2 and at best thresholds, per-label F2.

    python tools/statistics.py                                   # every run under runs/
    python tools/statistics.py --where arch=resnet50 --sort label:red --csv board.csv --md board.md
    python tools/statistics.py --runs /mnt/old/runs --path-map paths.txt

Per run: its validation fold (preds/val.<tta>.csv: unless --tta, the best of the TTA
predictions predict.py made, train.py's val.none.csv only when there is none). Per
model (runs sharing a configuration except fold and seed): the runs' out-of-fold
predictions joined, averaged over seeds, one run per fold and seed as stack.py joins
them (the last by name); another run of a fold already covered, such as a stand-alone
train.py run with the configuration of a scripts/cv.sh model, is scored on its own with
status 'apart' and a line on stderr, not averaged into the model. Both tables name a
model in their 'model' column as stack.py does. f2@0.2 thresholds every label
at 0.2, f2_best uses greedy per-label thresholds, f2:<label> is each label's own F2
at its best threshold; n/a (footnoted, 'n/a' in --csv) where no image of the row's validation
images has the label: that F2 is 0/0, undefined. Runs removed by tools/prune.py appear with the scores kept in
PRUNED.csv. The printed tables fit 120 columns: the per-label F2 in a second table,
column blocks that repeat the row's name, the image folder and path columns left to
--csv/--md (--wide prints every column in one table).

Records written on other machines need nothing done: a stored data path that does
not exist here is converted (a path map from --path-map or MULTITAG_PATH_MAP, else
re-rooting on the longest suffix that exists under the current directory or above
the run); the 'paths' column says how each run's data was found, 'converted' marks
the converted ones.

Given --data, runs trained on another dataset (config.json's fingerprint, utils/runs/fingerprint.py)
are refused, naming each run and both fingerprints, as predict.py and stack.py refuse them:
exit code 2. So is a board where no run could be scored.
"""
import sys
from pathlib import Path

# This file shares its name with the standard library's `statistics`: keep its folder off
# the import path so that a library importing `statistics` gets the real module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

import pandas as pd  # noqa: E402

from utils.common.atomic import atomic_write_csv, atomic_write_text  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.analysis.leaderboard import (TERMINAL_WIDTH, apart_notes, format_table, leaderboard,  # noqa: E402
                                          one_model_id, sort_table, to_markdown)
from utils.analysis.pruning import PRUNED_FILE, read_pruned  # noqa: E402
from utils.runs.filter import matches, parse_where, row_matches  # noqa: E402
from utils.analysis.scores import F2_BEST, LABEL_COL, Truth  # noqa: E402
from utils.common.paths import load_path_map  # noqa: E402
from utils.runs.directory import find_runs  # noqa: E402
from utils.runs.fingerprint import check_runs_dataset  # noqa: E402
from utils.common.cli import add_runs_argument, add_truth_arguments, run_script  # noqa: E402

log = logging.getLogger("statistics")

NA = "n/a*"  # a label's F2 where no image of the row has the label (0/0); NO_POSITIVES_NOTE explains it
NO_POSITIVES_NOTE = "* n/a: no validation image of the row has the label, so the label's own F2 is 0/0, undefined"


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("runs")
    add_runs_argument(g)
    g.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep runs whose config KEY matches VALUE (shell pattern, case-insensitive; "
                        "keys: any config.json key, dotted for nested values, or name, model); repeatable")
    g.add_argument("--tta", default=None, metavar="NAME",
                   help="score preds/val.NAME.csv (default: the best TTA predict.py made for each run; none only without one)")
    g.add_argument("--threshold", type=float, default=0.2, help="fixed threshold of the f2@0.2 column (default 0.2)")
    d = p.add_argument_group("data paths")
    add_truth_arguments(d)
    o = p.add_argument_group("output")
    o.add_argument("--level", choices=("run", "model", "both"), default="both",
                   help="tables to show: per run, per model, or both (default both)")
    o.add_argument("--sort", default=F2_BEST, metavar="COLUMN",
                   help=f"sort by a column or label:NAME (that label's F2) (default {F2_BEST})")
    o.add_argument("--ascending", action="store_true", help="sort low to high (default: scores high first)")
    o.add_argument("--brief", action="store_true", help="leave the per-label columns out of the printed table")
    o.add_argument("--wide", action="store_true",
                   help="print each level as one table with every column, however wide (default: tables that "
                        "fit 120 columns, the per-label F2 in a second table)")
    o.add_argument("--csv", default=None, metavar="FILE", help="also write the table(s) as CSV (a 'level' column)")
    o.add_argument("--md", default=None, metavar="FILE", help="also write the table(s) as markdown")
    return p


def check_patterns(patterns):
    """DataError for a plain path (no wildcard) that does not exist."""
    missing = [p for p in patterns if not any(c in p for c in "*?[") and not Path(p).exists()]
    if missing:
        raise DataError(f"runs folder not found: {', '.join(missing)}")


def pruned_records(patterns, runs):
    """PRUNED.csv rows from the given folders and the folders holding the runs."""
    folders = {Path(p).resolve() for p in patterns if Path(p).is_dir()}
    folders |= {r.dir.resolve().parent for r in runs}
    tables = []
    for f in sorted(folders):
        try:
            t = read_pruned(f / PRUNED_FILE)
        except DataError as e:
            print(f"skipped {f / PRUNED_FILE}: {e}", file=sys.stderr)
            continue
        if not t.empty:
            tables.append(t)
    return pd.concat(tables, ignore_index=True).drop_duplicates("run", keep="last") if tables \
        else pd.DataFrame(columns=["run"])


def filter_pruned(pruned, kept_runs, all_runs, where):
    """PRUNED rows of the kept runs, plus rows of runs whose folder is gone that match
    `where` on the columns PRUNED.csv holds."""
    kept = {r.name for r in kept_runs}
    present = {r.name for r in all_runs}

    def keep(row):
        if row["run"] in kept:
            return True
        if row["run"] in present:
            return False
        return row_matches(row, where)
    return pruned[[keep(r) for r in pruned.to_dict("records")]] if len(pruned) else pruned


def row_labels(runs, model_df):
    """{'run': {run name: its labels}, 'model': {model name as printed: its runs' labels}}."""
    by_run = {r.name: set(r.config.get("labels", ())) for r in runs}
    by_model = {}
    for r in runs:
        by_model.setdefault(r.model, set()).update(by_run[r.name])
    names = dict(zip(model_df["model"], model_df["name"])) if "name" in model_df else {}
    return {"run": by_run, "model": {names.get(m, m): labels for m, labels in by_model.items()}}


def no_positive_cells(df, labels_of, key):
    """Bool DataFrame over df's f2:<label> columns: True where the row was scored on the label
    (it is in labels_of[row's `key`]; never a pruned row) yet has no F2: no image of it has the label."""
    cols = [c for c in df.columns if str(c).startswith(LABEL_COL)]
    pruned = df["status"].eq("pruned").tolist() if "status" in df else [False] * len(df)
    scored = pd.DataFrame({c: [c[len(LABEL_COL):] in labels_of.get(k, ()) and not p
                               for k, p in zip(df[key], pruned)] for c in cols}, index=df.index, dtype=bool)
    return df[cols].isna() & scored


def with_na(df, na, mark, text=True):
    """df with `mark` in the cells `na` marks; their columns' other cells as the tables print scores
    (4 decimals, '-' when missing) with `text`, else as they are. df itself when `na` marks none."""
    if not na.to_numpy().any():
        return df

    def column(c):
        values = df[c].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}") if text else df[c].astype(object)
        return values.where(~na[c], mark)
    return df.assign(**{c: column(c) for c in na.columns})


def main(args):
    check_patterns(args.runs)
    where = parse_where(args.where)
    pairs = load_path_map(args.path_map)
    all_runs, bad = find_runs(args.runs, pairs)
    runs = [r for r in all_runs if matches(r, where)]
    pruned = filter_pruned(pruned_records(args.runs, all_runs), runs, all_runs, where)
    for path, reason in bad:
        print(f"skipped {path}: {reason.splitlines()[0]}", file=sys.stderr)
    if not runs and pruned.empty:
        print(f"no runs{' matching --where' if where and all_runs else ''} under {' '.join(args.runs)}",
              file=sys.stderr)
        return None, None
    if args.data:
        check_runs_dataset(runs, Path(args.data))
    roots = {r.data_root for r in all_runs} | ({Path(args.data)} if args.data else set())
    for flag, path in (("--csv", args.csv), ("--md", args.md)):
        if path:
            check_output_file(path, flag, roots)
    run_df, model_df, skipped = leaderboard(runs, Truth(args.data), args.tta, pruned, args.threshold)
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for line in apart_notes(run_df, model_df):
        print(line, file=sys.stderr)
    named_runs, named_models = one_model_id(run_df, model_df)
    tables = {"model": named_models, "run": named_runs}
    tables = {k: sort_table(v, args.sort, True if args.ascending else None)
              for k, v in tables.items() if args.level in (k, "both") and not v.empty}
    if not tables:
        raise DataError("no run could be scored (reasons above)")
    labels_of = row_labels(runs, model_df)
    na = {lvl: no_positive_cells(df, labels_of[lvl], lvl) for lvl, df in tables.items()}
    any_na = any(m.to_numpy().any() for m in na.values())
    for level, df in tables.items():
        text = format_table(with_na(df, na[level], NA), args.brief, None if args.wide else TERMINAL_WIDTH)
        print(f"\n{level}s ({len(df)})\n{text}")
    if any_na and not args.brief:
        print(f"\n{NO_POSITIVES_NOTE}")
    if args.csv and tables:
        both = pd.concat([with_na(df, na[lvl], "n/a", text=False).assign(level=lvl) for lvl, df in tables.items()],
                         ignore_index=True)
        atomic_write_csv(args.csv, both[["level", *[c for c in both.columns if c != "level"]]])
    if args.md and tables:
        md = "\n".join(f"### {lvl}s\n\n{to_markdown(with_na(df, na[lvl], NA))}" for lvl, df in tables.items())
        atomic_write_text(args.md, md + (f"\n{NO_POSITIVES_NOTE}\n" if any_na else ""))
    return run_df, model_df


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
