"""Pruning: rank runs per label within each validation fold, find those in the bottom
half on every label, check that deleting their weights is safe (stack reports, label
coverage), delete, and keep their scores in PRUNED.csv (tools/prune.py; the leaderboard
shows pruned runs from that file).
"""
import re
import shutil
import time
from pathlib import Path

import pandas as pd
from scipy.stats import rankdata

from utils.common.atomic import atomic_write_csv
from utils.common.errors import DataError
from utils.common.text import read_json, read_csv
from utils.analysis.scores import LABEL_COL

PRUNED_FILE = "PRUNED.csv"
RANK_COL = "rank:"    # per-label rank column prefix in prune tables


def read_pruned(path):
    """PRUNED.csv as a DataFrame (empty, with a 'run' column, when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["run"])
    return read_csv(path, dtype={"run": str, "model": str})


def append_pruned(path, rows):
    """Add rows (DataFrame) to PRUNED.csv atomically; a run listed again replaces its old row."""
    old = read_pruned(path)
    old = old[~old["run"].isin(rows["run"])]
    both = rows if old.empty else pd.concat([old, rows], ignore_index=True)
    return atomic_write_csv(path, both)


def rank_runs(scores):
    """Rank runs per label within each validation fold.

    scores: list of (run name, fold, {label: best-threshold F2}). Rank 1 is the best;
    ties share their average rank. A run is below the median on a label when its
    rank > (n + 1) / 2, n = runs of its fold with that label; it is prunable when it is
    below the median on every one of its labels. Returns a DataFrame, one row per
    run: run, fold, n (runs in the fold), rank:<label>, f2:<label>, prunable.
    """
    long = pd.DataFrame([(r, f, lab, v) for r, f, d in scores for lab, v in d.items()],
                        columns=["run", "fold", "label", "f2"])
    if long.empty:
        return pd.DataFrame(columns=["run", "fold", "n", "prunable"])
    grp = long.groupby(["fold", "label"])["f2"]
    long["rank"] = grp.transform(lambda s: rankdata(-s.to_numpy(), method="average"))
    long["below"] = long["rank"] > (grp.transform("size") + 1) / 2
    order = list(dict.fromkeys(long["label"]))  # the runs' label order, not alphabetical
    ranks = long.pivot(index="run", columns="label", values="rank")[order].add_prefix(RANK_COL)
    f2 = long.pivot(index="run", columns="label", values="f2")[order].add_prefix(LABEL_COL)
    out = long.groupby("run").agg(fold=("fold", "first"), prunable=("below", "all"))
    out["n"] = long.groupby("fold")["run"].nunique().reindex(out["fold"]).to_numpy()
    out = out.join(ranks).join(f2).reset_index()
    return out[["run", "fold", "n", *ranks.columns, *f2.columns, "prunable"]]


def run_artifacts(run_dir):
    """Files prune deletes (everything under checkpoints/ and preds/) and their total bytes."""
    files = [p for sub in ("checkpoints", "preds") for p in sorted((Path(run_dir) / sub).rglob("*"))
             if p.is_file()]
    return files, sum(p.stat().st_size for p in files)


def usable(run_dir):
    """True when a run can still serve as a model: it has a checkpoint or test predictions."""
    d = Path(run_dir)
    return any((d / "checkpoints").glob("*.pt")) or any((d / "preds").glob("test.*.csv"))


def delete_artifacts(run_dir):
    """Remove checkpoints/ and preds/ of a run (config, history, plots stay). Returns bytes freed."""
    _, size = run_artifacts(run_dir)
    for sub in ("checkpoints", "preds"):
        if (Path(run_dir) / sub).exists():
            shutil.rmtree(Path(run_dir) / sub)
    return size


def find_stack_reports(runs_dir):
    """stack_report*.json files in the runs folder, its parent, or one folder below either."""
    runs_dir = Path(runs_dir).resolve()
    found = set()
    for base in (runs_dir, runs_dir.parent):
        for pat in ("stack_report*.json", "*/stack_report*.json"):
            found.update(base.glob(pat))
    return sorted(found)


def _strings(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def stack_usage(report_paths, run_names):
    """Which runs the stack reports mention. A run counts as used when any string in a
    report (key or value) is its folder name, or a path with its name as a component.

    Returns ({run name: report path}, problems: list of unreadable reports).
    """
    names = set(run_names)
    used, problems = {}, []
    for path in report_paths:
        try:
            obj = read_json(path)
        except DataError as e:
            problems.append(f"{path}: cannot read stack report ({e}); cannot tell which runs it uses")
            continue
        for s in _strings(obj):
            for part in {s, *re.split(r"[\\/]", s)} & names:
                used.setdefault(part, str(path))
    return used, problems


def coverage_refusals(table, delete, usable_runs):
    """Reasons deleting `delete` would leave a (fold, label) without a usable top-half run.

    table: rank_runs output; delete: run names to delete; usable_runs: names of runs
    that still have checkpoints or test predictions. A (fold, label) is refused when a
    usable run of it would be deleted and no usable run ranked in its top half stays.
    """
    reasons = []
    for fold, g in table.groupby("fold"):
        for col in [c for c in g.columns if str(c).startswith(RANK_COL)]:
            has = g[g[col].notna()]
            top = has[has[col] <= (len(has) + 1) / 2]
            keep = [r for r in top["run"] if r in usable_runs and r not in delete]
            gone = [r for r in has["run"] if r in delete and r in usable_runs]
            if gone and not keep:
                reasons.append(f"fold {fold}, label {col[len(RANK_COL):]!r}: no top-half run keeps a "
                               f"checkpoint or test predictions; deleting {', '.join(gone)} would leave none")
    return reasons


def now():
    """Local time stamp used in PRUNED.csv."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")
