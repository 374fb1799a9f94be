"""Scores of runs and models from their out-of-fold predictions.

The library behind tools/statistics.py (the leaderboard), tools/prune.py (ranks
within each validation fold, safety checks, PRUNED.csv), tools/correlation.py
(pairwise agreement of models) and tools/plot_probs.py.

A run's out-of-fold (OOF) predictions are preds/val.<tta>.csv; the truth is
train.csv in the run's data root, found on this machine by utils/runs.load_run
(relative path, path map or re-rooting). A *model*'s OOF joins its runs: one row
per image, probabilities averaged over the runs that predicted the image (its
seeds), so the model score is that of the seed-bagged model.
"""
import fnmatch
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from scipy.stats import rankdata

from utils.data import align_names, read_tags_csv, split_tags
from utils.io import DataError, atomic_write, atomic_write_csv, read_preds
from utils.metrics import fbeta_samples
from utils.runs import display_name
from utils.thresholds import FIXED_THRESHOLD, best_label_fbeta, greedy_thresholds

log = logging.getLogger(__name__)

F2_FIXED = "f2@0.2"
F2_BEST = "f2_best"
LABEL_COL = "f2:"     # per-label column prefix: f2:<label>
RANK_COL = "rank:"    # per-label rank column prefix in prune tables
PRUNED_FILE = "PRUNED.csv"
CONVERTED = ("mapped", "rerooted")


# ----------------------------------------------------------------------------- truth and OOF

@dataclass
class OOF:
    """Out-of-fold predictions aligned with the truth.

    names: N image names; labels: L names; probs: (N, L) float64; y: (N, L) uint8;
    tta: TTA name(s) the probabilities come from.
    """
    names: list
    labels: list
    probs: np.ndarray
    y: np.ndarray
    tta: str


class Truth:
    """Truth (train.csv) for runs, each file read once.

    data: a data folder whose train.csv serves every run (None: each run's own data root).
    """

    def __init__(self, data=None):
        self.data = Path(data) if data else None
        self._tables = {}

    def path_for(self, run):
        """train.csv for `run`, or DataError saying how to make its data root findable."""
        root = self.data or run.data_root
        if root is None:
            stored = run.config.get("data_root_abs") or run.config.get("data_root")
            raise DataError(f"data root not found here (stored {stored}); pass --path-map or --data, "
                            f"or rewrite the record with tools/convert_paths.py")
        return Path(root) / "train.csv"

    def _table(self, path):
        if path not in self._tables:
            df = read_tags_csv(path)
            self._tables[path] = (df["image_name"].tolist(), [split_tags(t) for t in df["tags"]])
        return self._tables[path]

    def matrix(self, path, names, labels, what=None):
        """(N, L) uint8 truth of `names` from the image_name,tags file `path`, in
        `labels` order (tags outside `labels` ignored)."""
        ref, tags = self._table(Path(path))
        idx = align_names(names, ref, what or f"predictions vs {path}")
        col = {lab: j for j, lab in enumerate(labels)}
        y = np.zeros((len(names), len(labels)), dtype=np.uint8)
        for r, i in enumerate(idx):
            for t in tags[i]:
                if t in col:
                    y[r, col[t]] = 1
        return y

    def labels_for(self, run, names, labels):
        """`matrix` from the run's truth file (see path_for)."""
        path = self.path_for(run)
        return self.matrix(path, names, labels, f"{run.dir} predictions vs {path}")


def load_oof(run, truth, tta=None):
    """The run's validation predictions with their truth, as an OOF.

    tta: a TTA name, or None for the best available one (highest F2 at greedy
    thresholds). Raises DataError for a run without such predictions or truth.
    """
    available = run.tta_available("val")
    if not available:
        raise DataError("no predictions (preds/val.*.csv); run predict.py --split val")
    if tta is not None and tta not in available:
        raise DataError(f"no preds/val.{tta}.csv (available: {', '.join(available)})")
    oofs = []
    for name in [tta] if tta else available:
        names, labels, probs = read_preds(run.preds_path("val", name))
        oofs.append(OOF(names, labels, probs, truth.labels_for(run, names, labels), name))
    if len(oofs) == 1:
        return oofs[0]
    return max(oofs, key=lambda o: greedy_thresholds(o.y, o.probs)[1])


def merge_oofs(oofs):
    """One OOF from several runs' OOFs of one model: union of images, probabilities
    averaged over the runs that predicted each image. Labels must agree."""
    labels = oofs[0].labels
    for o in oofs[1:]:
        if o.labels != labels:
            raise DataError(f"runs of one model predict different labels: {labels} vs {o.labels}")
    names = [n for o in oofs for n in o.names]
    probs = pd.DataFrame(np.concatenate([o.probs for o in oofs]), index=names).groupby(level=0, sort=False)
    y = pd.DataFrame(np.concatenate([o.y for o in oofs]), index=names).groupby(level=0, sort=False).first()
    mean = probs.mean()
    ttas = ",".join(sorted({o.tta for o in oofs}))
    return OOF(mean.index.tolist(), labels, mean.to_numpy(np.float64), y.to_numpy(np.uint8), ttas)


def score_oof(oof, threshold=FIXED_THRESHOLD):
    """Scores of one OOF: dict with F2_FIXED (every label at `threshold`), F2_BEST
    (greedy per-label thresholds), 'thresholds' (L,) and 'per_label' {label: the
    label's own F2 at its best threshold (utils.thresholds.best_label_fbeta)}."""
    thr, f_best = greedy_thresholds(oof.y, oof.probs)
    per_label = {lab: float(best_label_fbeta(oof.y[:, j], oof.probs[:, j:j + 1])[0][0])
                 for j, lab in enumerate(oof.labels)}
    return {F2_FIXED: fbeta_samples(oof.y, oof.probs >= threshold), F2_BEST: float(f_best),
            "thresholds": thr, "per_label": per_label}


# ----------------------------------------------------------------------------- leaderboard

def _stage_sizes(config):
    sizes = [s.get("size") for s in config.get("stages", []) if isinstance(s, dict)]
    return ">".join(str(s) for i, s in enumerate(sizes) if s is not None and (i == 0 or s != sizes[i - 1]))


def _history(run):
    path = run.dir / "history.csv"
    try:
        return pd.read_csv(path) if path.is_file() else None
    except Exception:  # a torn or empty history only loses the epoch count
        return None


def run_info(run):
    """Descriptive leaderboard columns of a run (no scores)."""
    hist = _history(run)
    epochs = run.result.get("epochs", None if hist is None else len(hist))
    seconds = run.result.get("train_seconds")
    if seconds is None and hist is not None and "seconds" in hist:
        seconds = float(hist["seconds"].sum())
    status = "ok" if run.finished else "unfinished"
    return {"run": run.name, "model": run.model, "arch": run.config.get("arch"),
            "images": run.config.get("images", "train"), "fold": run.fold, "seed": run.seed,
            "epochs": epochs, "size": _stage_sizes(run.config),
            "minutes": None if seconds is None else round(seconds / 60, 1),
            "tta": ",".join(run.tta_available("val")), "paths": run.data_how, "status": status}


def _score_cols(scores):
    out = {F2_FIXED: scores[F2_FIXED], F2_BEST: scores[F2_BEST]}
    out.update({LABEL_COL + k: v for k, v in scores["per_label"].items()})
    return out


def _model_row(model, runs, oof, scores, n_pruned):
    infos = [run_info(r) for r in runs]
    minutes = [i["minutes"] for i in infos if i["minutes"] is not None]
    epochs = [i["epochs"] for i in infos if i["epochs"] is not None]
    hows = sorted({r.data_how for r in runs})
    return {"model": model, "name": display_name(model, [r.name for r in runs], infos[0]["images"]),
            "arch": infos[0]["arch"], "images": infos[0]["images"], "runs": len(runs),
            "folds": ",".join(str(f) for f in sorted({r.fold for r in runs})),
            "seeds": ",".join(str(s) for s in sorted({r.seed for r in runs})), "n_images": len(oof.names),
            "epochs": float(np.mean(epochs)) if epochs else None, "size": infos[0]["size"],
            "minutes": round(sum(minutes), 1) if minutes else None, "tta_used": oof.tta,
            **_score_cols(scores), "paths": ",".join(hows),
            "converted": any(h in CONVERTED for h in hows), "pruned": n_pruned}


def leaderboard(runs, truth, tta=None, pruned=None, threshold=FIXED_THRESHOLD):
    """Score every run and model.

    runs: utils.runs.Run list; truth: Truth; tta: TTA name or None (best per run);
    pruned: DataFrame of PRUNED.csv rows (their runs appear with status 'pruned').
    Returns (runs DataFrame, models DataFrame, skipped: list of (run name, reason)).
    """
    pruned = pruned if pruned is not None else pd.DataFrame(columns=["run"])
    pruned_rows = {r["run"]: r for r in pruned.to_dict("records")}
    rows, by_model, skipped, seen = [], {}, [], set()
    for run in runs:
        seen.add(run.name)
        info = run_info(run)
        info["tta_used"] = None
        info["converted"] = run.converted
        if not run.tta_available("val") and run.name in pruned_rows:
            rows.append({**info, **_pruned_scores(pruned_rows[run.name]), "status": "pruned"})
            continue
        try:
            oof = load_oof(run, truth, tta)
            scores = score_oof(oof, threshold)
        except DataError as e:
            skipped.append((run.name, str(e).splitlines()[0]))
            continue
        info["tta_used"] = oof.tta
        rows.append({**info, **_score_cols(scores)})
        by_model.setdefault(run.model, []).append((run, oof))
    for name, row in pruned_rows.items():
        if name not in seen:  # the run folder itself is gone: show what PRUNED.csv kept
            keep = {k: row.get(k) for k in ("model", "arch", "images", "fold", "seed")}
            rows.append({"run": name, **keep, **_pruned_scores(row), "status": "pruned"})
    n_pruned = pruned["model"].value_counts().to_dict() if "model" in pruned else {}
    models = []
    for model, items in by_model.items():
        oof = merge_oofs([o for _, o in items])
        models.append(_model_row(model, [r for r, _ in items], oof, score_oof(oof, threshold),
                                 int(n_pruned.get(model, 0))))
    return _order_columns(pd.DataFrame(rows)), _order_columns(pd.DataFrame(models)), skipped


def _pruned_scores(row):
    return {k: row[k] for k in row if k in (F2_FIXED, F2_BEST) or str(k).startswith(LABEL_COL)}


def _order_columns(df):
    """Descriptive columns, then the overall scores, then per-label F2, then the rest."""
    if df.empty:
        return df
    labels = [c for c in df.columns if str(c).startswith(LABEL_COL)]
    scores = [c for c in (F2_FIXED, F2_BEST) if c in df.columns]
    tail = [c for c in ("paths", "converted", "status", "pruned") if c in df.columns]
    head = [c for c in df.columns if c not in labels + scores + tail]
    return df[head + scores + labels + tail]


def _value_str(v):
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return "" if v is None else str(v)


def parse_where(items):
    """['arch=resnet50', 'fold=0'] -> [(key, pattern)]; DataError for an item without '='."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise DataError(f"--where {item!r}: expected KEY=VALUE (e.g. arch=resnet50)")
        k, v = item.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def config_value(run, key):
    """A run's value for a --where key: 'name', 'model', or a config key (dotted keys
    look inside dicts and lists, e.g. stages.0.size). None when absent."""
    if key == "name":
        return run.name
    if key == "model":
        return run.model
    if key in run.config:
        return run.config[key]
    v = run.config
    for part in key.split("."):
        if isinstance(v, dict) and part in v:
            v = v[part]
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            return None
    return v


def text_matches(value, pattern):
    """True when the value's text matches the shell-style pattern (case-insensitive;
    booleans as true/false, lists and dicts as JSON)."""
    return fnmatch.fnmatch(_value_str(value).lower(), pattern.lower())


def matches(run, where):
    """True when every (key, pattern) of `where` holds for the run (see config_value)."""
    return all(text_matches(config_value(run, k), p) for k, p in where)


def row_matches(row, where):
    """`matches` for a dict (a PRUNED.csv row): a key the row lacks does not match."""
    return all(k in row and not pd.isna(row[k]) and text_matches(row[k], p) for k, p in where)


def sort_table(df, key, ascending=None):
    """Sort by a column name or 'label:NAME' (the f2:NAME column). Numbers sort high
    first and text A-Z unless `ascending` says otherwise; missing values last."""
    if df.empty:
        return df
    col = LABEL_COL + key.split(":", 1)[1] if key.startswith("label:") else key
    if col not in df.columns:
        raise DataError(f"--sort {key!r}: no such column; choose from {', '.join(map(str, df.columns))} "
                        f"or label:NAME")
    if ascending is None:
        ascending = not pd.api.types.is_numeric_dtype(df[col])
    return df.sort_values(col, ascending=ascending, na_position="last", kind="stable").reset_index(drop=True)


def format_table(df, brief=False):
    """Aligned text table; `brief` drops the per-label columns."""
    if brief:
        df = df[[c for c in df.columns if not str(c).startswith(LABEL_COL)]]
    return df.to_string(index=False, na_rep="-", formatters=_formatters(df))


def _formatters(df):
    """Scores with 4 decimals, other numbers as short as they allow."""
    def fmt(spec):
        return lambda x: "-" if pd.isna(x) else format(x, spec)
    return {c: fmt(".4f" if _is_score(c) else ".6g") for c in df.columns
            if pd.api.types.is_float_dtype(df[c])}


def _is_score(col):
    return col in (F2_FIXED, F2_BEST) or str(col).startswith(LABEL_COL)


def to_markdown(df):
    """A GitHub markdown table of df (floats with 4 decimals, missing as '-')."""
    fmt = _formatters(df)

    def cell(col, v):
        if col in fmt:
            return fmt[col](v)
        return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(df.columns, row)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- pruning

def read_pruned(path):
    """PRUNED.csv as a DataFrame (empty, with a 'run' column, when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["run"])
    try:
        return pd.read_csv(path, dtype={"run": str, "model": str})
    except Exception as e:
        raise DataError(f"{path}: cannot read ({e})") from e


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
            obj = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
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


# ----------------------------------------------------------------------------- correlation

def stack_matrix(oofs, thresholds, label=None):
    """Decisions and probabilities of several OOFs on a common grid.

    oofs: {name: OOF}; thresholds: {name: (L,) thresholds}; label: one label or None.
    Rows are models, columns the (image, label) cells of the union of images and labels
    (only `label` if given). Returns (D, P): float64 (M, K) with 0/1 decisions and
    probabilities, NaN where a model has no prediction for the cell.
    """
    names = list(dict.fromkeys(n for o in oofs.values() for n in o.names))
    labels = [label] if label else list(dict.fromkeys(lab for o in oofs.values() for lab in o.labels))
    row = {n: i for i, n in enumerate(names)}
    M, N, L = len(oofs), len(names), len(labels)
    D = np.full((M, N, L), np.nan)
    P = np.full((M, N, L), np.nan)
    for m, (key, o) in enumerate(oofs.items()):
        rows = np.array([row[n] for n in o.names])
        for j, lab in enumerate(labels):
            if lab in o.labels:
                c = o.labels.index(lab)
                P[m, rows, j] = o.probs[:, c]
                D[m, rows, j] = o.probs[:, c] >= thresholds[key][c]
    return D.reshape(M, -1), P.reshape(M, -1)


def pairwise_agreement(D):
    """(M, M) fraction of equal decisions between rows of D (M, K) 0/1 with NaN gaps,
    over the cells both rows have; NaN for pairs with no common cell."""
    V = (~np.isnan(D)).astype(np.float64)
    X = np.nan_to_num(D)
    equal = (X * V) @ (X * V).T + ((1 - X) * V) @ ((1 - X) * V).T
    n = V @ V.T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, equal / n, np.nan)


def pairwise_pearson(P):
    """(M, M) Pearson correlation between rows of P (M, K) over the cells both rows have
    (NaN = missing); NaN for pairs with fewer than two common cells or a constant row."""
    V = (~np.isnan(P)).astype(np.float64)
    X = np.nan_to_num(P)
    n = V @ V.T
    sx = X @ V.T                       # sum of x over cells the other row also has
    sxx = (X * X) @ V.T
    sxy = X @ X.T
    cov = n * sxy - sx * sx.T
    var_x, var_y = n * sxx - sx ** 2, (n * sxx - sx ** 2).T
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_x * var_y)
    ok = (n >= 2) & (var_x > 1e-12 * n * n) & (var_y > 1e-12 * n * n)
    return np.where(ok, np.clip(r, -1, 1), np.nan)


def cluster_order(similarity):
    """Leaf order of average-linkage clustering on distance 1 - similarity (NaN: 1)."""
    m = len(similarity)
    if m < 3:
        return np.arange(m)
    dist = 1.0 - np.nan_to_num(np.asarray(similarity, dtype=np.float64), nan=0.0)
    dist = np.clip((dist + dist.T) / 2, 0, None)
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average"))


def ranked_pairs(matrix, names, other=None):
    """Every pair i < j with a value, most similar first: list of (a, b, value, other value)."""
    m = len(names)
    out = [(names[i], names[j], float(matrix[i, j]), None if other is None else float(other[i, j]))
           for i in range(m) for j in range(i + 1, m) if np.isfinite(matrix[i, j])]
    return sorted(out, key=lambda t: -t[2])


# ----------------------------------------------------------------------------- figures

def plot_prob_comparison(sources, path, bins=40, dpi=80):
    """Per-label probability histograms of several prediction sets side by side.

    sources: list of (title, labels, probs (N, L), y (N, L) 0/1 or None, thresholds
    (L,) or None). One row per label (the union, in first-seen order), one column per
    source; positives orange, negatives blue (all predictions grey without truth), log
    counts, the threshold as a red line. Written atomically; returns the Path.
    """
    from utils.plots import NEG_COLOUR, POS_COLOUR, THR_COLOUR

    labels = list(dict.fromkeys(lab for s in sources for lab in s[1]))
    rows, cols = len(labels), len(sources)
    fig = Figure(figsize=(2.8 * cols + 0.6, 1.5 * rows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, sharex=True))
    edges = np.linspace(0, 1, bins + 1)
    for c, (title, labs, probs, y, thr) in enumerate(sources):
        axes[0, c].set_title(title, fontsize=8)
        for r, lab in enumerate(labels):
            ax = axes[r, c]
            if lab not in labs:
                ax.set_axis_off()
                continue
            j = labs.index(lab)
            groups = [(np.ones(len(probs), bool), "grey")] if y is None else \
                [(y[:, j] == 0, NEG_COLOUR), (y[:, j] == 1, POS_COLOUR)]
            for mask, colour in groups:
                ax.stairs(np.histogram(probs[mask, j], bins=edges)[0], edges, color=colour, fill=True, alpha=0.5)
            if thr is not None:
                ax.axvline(float(thr[j]), color=THR_COLOUR, lw=1)
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())
            ax.set_xlim(0, 1)
            ax.set_ylim(bottom=0.8)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel(lab, fontsize=8)
    fig.suptitle("blue: without the tag, orange: with it, red: greedy threshold", fontsize=9)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def now():
    """Local time stamp used in PRUNED.csv."""
    return time.strftime("%Y-%m-%dT%H:%M:%S")
