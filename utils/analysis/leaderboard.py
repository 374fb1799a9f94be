"""The leaderboard: scores of runs and models in one table (tools/statistics.py, the report).

Per run: its validation fold; per model (runs sharing a configuration except fold and
seed): the runs' out-of-fold predictions joined and averaged over seeds
(utils/analysis/scores.py). A model joins its runs as stack.py does (utils/stack/library.py): per
seed one run per fold, the last by name (finished ones first); another run of a fold already
covered (a stand-alone train.py run with the configuration of a scripts/cv.sh model) is kept
apart, with status 'apart', instead of being averaged in as if it were a seed. A model is
named as stack.py names it (utils.runs.directory.model_name over the runs given). Also the
table helpers: sorting, text and markdown rendering.
"""
import numpy as np
import pandas as pd

from utils.common.errors import DataError
from utils.common.text import read_csv
from utils.runs.directory import model_names
from utils.analysis.scores import F2_BEST, F2_FIXED, LABEL_COL, load_oof, merge_oofs, score_oof
from utils.metrics.threshold_search import FIXED_THRESHOLD

CONVERTED = ("mapped", "rerooted")


def _stage_sizes(config):
    sizes = [s.get("size") for s in config.get("stages", []) if isinstance(s, dict)]
    return ">".join(str(s) for i, s in enumerate(sizes) if s is not None and (i == 0 or s != sizes[i - 1]))


def _history(run):
    path = run.dir / "history.csv"
    try:
        return read_csv(path) if path.is_file() else None
    except DataError:  # a torn or empty history only loses the epoch count
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


def _score_cols(scores, oof):
    """The score columns of a row; a label no image of `oof` has gets NaN, not a score: its own F2 is 0/0."""
    out = {F2_FIXED: scores[F2_FIXED], F2_BEST: scores[F2_BEST]}
    none = {lab for lab, n in zip(oof.labels, oof.y.sum(0)) if n == 0}
    out.update({LABEL_COL + k: np.nan if k in none else v for k, v in scores["per_label"].items()})
    return out


def model_runs(scored):
    """The runs each model joins, as stack.py joins them.

    scored: list of (Run, OOF). Returns {model id: (kept: list of (Run, OOF), apart: list of Run)}:
    per seed one run per fold, the last by name with finished runs first; the other runs of a fold
    already covered are apart.
    """
    members = {}
    for run, oof in sorted(scored, key=lambda t: (t[0].finished, t[0].name)):
        members.setdefault((run.model, run.seed), {}).setdefault(run.fold, []).append((run, oof))
    out = {}
    for (model, _), folds in members.items():
        kept, apart = out.setdefault(model, ([], []))
        for f in sorted(folds):
            kept.append(folds[f][-1])
            apart += [r for r, _ in folds[f][:-1]]
    return out


def _model_row(model, name, runs, oof, scores, n_pruned):
    infos = [run_info(r) for r in runs]
    minutes = [i["minutes"] for i in infos if i["minutes"] is not None]
    epochs = [i["epochs"] for i in infos if i["epochs"] is not None]
    hows = sorted({r.data_how for r in runs})
    return {"model": model, "name": name,
            "arch": infos[0]["arch"], "images": infos[0]["images"], "runs": len(runs),
            "folds": ",".join(str(f) for f in sorted({r.fold for r in runs})),
            "seeds": ",".join(str(s) for s in sorted({r.seed for r in runs})), "n_images": len(oof.names),
            "epochs": float(np.mean(epochs)) if epochs else None, "size": infos[0]["size"],
            "minutes": round(sum(minutes), 1) if minutes else None, "tta_used": oof.tta,
            **_score_cols(scores, oof), "paths": ",".join(hows),
            "converted": any(h in CONVERTED for h in hows), "pruned": n_pruned}


def leaderboard(runs, truth, tta=None, pruned=None, threshold=FIXED_THRESHOLD):
    """Score every run and model.

    runs: utils.runs.directory.Run list; truth: Truth; tta: TTA name or None (best per run);
    pruned: DataFrame of PRUNED.csv rows (their runs appear with status 'pruned').
    Returns (runs DataFrame, models DataFrame, skipped: list of (run name, reason)).
    """
    pruned = pruned if pruned is not None else pd.DataFrame(columns=["run"])
    pruned_rows = {r["run"]: r for r in pruned.to_dict("records")}
    rows, scored, skipped, seen = [], [], [], set()
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
        info["tta_used"], info["n_images"] = oof.tta, len(oof.names)
        rows.append({**info, **_score_cols(scores, oof)})
        scored.append((run, oof))
    for name, row in pruned_rows.items():
        if name not in seen:  # the run folder itself is gone: show what PRUNED.csv kept
            keep = {k: row.get(k) for k in ("model", "arch", "images", "fold", "seed")}
            rows.append({"run": name, **keep, **_pruned_scores(row), "status": "pruned"})
    n_pruned = pruned["model"].value_counts().to_dict() if "model" in pruned else {}
    names = model_names(runs)  # over every run given, as stack.py names a model over every run it finds
    models, apart = [], set()
    for model, (items, others) in model_runs(scored).items():
        oof = merge_oofs([o for _, o in items])
        models.append(_model_row(model, names[model], [r for r, _ in items], oof, score_oof(oof, threshold),
                                 int(n_pruned.get(model, 0))))
        apart |= {r.name for r in others}
    for row in rows:
        if row["run"] in apart:
            row["status"] = "apart" if row["status"] == "ok" else f"{row['status']}, apart"
    return _order_columns(pd.DataFrame(rows)), _order_columns(pd.DataFrame(models)), skipped


def apart_notes(run_df, model_df):
    """One line per run kept apart (status 'apart'): the run of its fold its model joins instead."""
    if run_df.empty or "status" not in run_df:
        return []
    names = dict(zip(model_df["model"], model_df["name"])) if not model_df.empty else {}
    runs = run_df[run_df["status"] != "pruned"]
    is_apart = runs["status"].str.endswith("apart")
    lines = []
    for row in runs[is_apart].itertuples():
        same = runs[(runs["model"] == row.model) & (runs["fold"] == row.fold) & (runs["seed"] == row.seed)
                    & ~is_apart]["run"].tolist()
        lines.append(f"{row.run}: kept apart from model {names.get(row.model, row.model)}, whose fold {row.fold} "
                     f"(seed {row.seed}) is {', '.join(same)} (as stack.py uses it: one run per fold, the last "
                     f"by name); select runs with --runs/--where to score it in the model")
    return lines


def one_model_id(run_df, model_df):
    """The tables as printed: both name each model in their 'model' column as stack.py does (the
    models table's 'name'), with no second id column."""
    if model_df.empty or "name" not in model_df:
        return run_df, model_df
    run_df = with_model_names(run_df, model_df)
    return run_df, model_df.assign(model=model_df["name"]).drop(columns="name")


def with_model_names(run_df, model_df):
    """run_df with its model column showing each model's name as the models table does."""
    if run_df.empty or model_df.empty or "model" not in run_df:
        return run_df
    names = dict(zip(model_df["model"], model_df["name"]))
    return run_df.assign(model=[names.get(m, m) for m in run_df["model"]])


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


TERMINAL_WIDTH = 120
# Columns the terminal table leaves to --csv/--md: the model hash (the name column shows the
# model), the image folder when every run used train/, and how the data paths were found
# when nothing had to be converted.
HIDDEN = {"model": lambda df: "name" in df, "images": lambda df: set(df["images"]) <= {"train"},
          "paths": lambda df: not df.get("converted", pd.Series(dtype=bool)).any(),
          "converted": lambda df: not df["converted"].any()}


def format_table(df, brief=False, width=TERMINAL_WIDTH):
    """Text tables of a leaderboard that fit `width` characters (None: one wide table).

    The descriptive and overall score columns come first; the per-label F2 columns
    follow in a second table (left out with `brief`), both split into blocks of columns
    that fit the width, each block repeating the row's name. Columns that say nothing
    here (HIDDEN) are left out unless `width` is None.
    """
    if width is None:
        cols = [c for c in df.columns if not (brief and str(c).startswith(LABEL_COL))]
        return _text(df[cols])
    df = df[[c for c in df.columns if not (c in HIDDEN and HIDDEN[c](df))]]
    key = next(c for c in ("run", "name", "model") if c in df.columns)
    labels = [c for c in df.columns if str(c).startswith(LABEL_COL)]
    main = [c for c in df.columns if c not in labels and c != key]
    text = _blocks(df, key, main, width)
    if labels and not brief:
        text += "\n\nper-label F2 at each label's best threshold (f2:<label>):\n" + _blocks(df, key, labels, width)
    return text


def _text(df):
    return df.to_string(index=False, na_rep="-", formatters=_formatters(df))


def _blocks(df, key, cols, width):
    """df's `cols` as tables of at most `width` characters, each starting with the `key` column."""
    widths = {c: max(len(line) for line in _text(df[[c]]).splitlines()) + 1 for c in [key, *cols]}
    blocks, current, used = [], [], widths[key]
    for c in cols:
        if current and used + widths[c] > width:
            blocks.append(current)
            current, used = [], widths[key]
        current.append(c)
        used += widths[c]
    blocks.append(current)
    return "\n\n".join(_text(df[[key, *b]]) for b in blocks if b)


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
