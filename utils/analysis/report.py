"""The competition report: one self-contained HTML file over a folder of runs (tools/report.py).

It gathers what the other tools compute: the leaderboard (utils/analysis/leaderboard.py), each
model's out-of-fold scores and thresholds (utils/analysis/scores.py), the agreement of models
(utils/analysis/diversity.py), the figures (utils/analysis/plots.py), and the stack reports stack.py wrote
(stack_report*.json). It renders them with the jinja2 template
utils/analysis/templates/report.html.j2. Figures are embedded as base64 PNG and the table sorting
is a few lines of inline JavaScript, so the file opens from disk with no server and no
other file.
"""
import base64
import logging
import math
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
import numpy as np
import pandas as pd
from tqdm import tqdm

from utils.analysis.diversity import cluster_order, pairwise_agreement, pairwise_pearson, stack_matrix
from utils.common.errors import DataError
from utils.common.text import read_csv, read_json
from utils.analysis.leaderboard import HIDDEN, leaderboard, model_runs, with_model_names
from utils.analysis.plots import plot_correlation, plot_history, plot_label_f2, plot_prob_distributions
from utils.analysis.pruning import PRUNED_FILE, find_stack_reports, read_pruned
from utils.analysis.scores import F2_BEST, F2_FIXED, LABEL_COL, load_oof, merge_oofs, score_oof
from utils.metrics.fbeta import fbeta_per_label
from utils.metrics.threshold_search import FIXED_THRESHOLD

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "report.html.j2"
FIGURE_DPI = 90  # figures are shown at most page-wide; a click shows one at this full resolution


# ----------------------------------------------------------------------------- building blocks

def anchor(kind, key):
    """An HTML id for a section: 'model-resnet50_train_ab12', safe in URLs and selectors."""
    return f"{kind}-" + re.sub(r"[^A-Za-z0-9_-]+", "_", str(key))


def png_uri(draw):
    """Run draw(path) (a utils.analysis.plots function writing a PNG at path) and return the image
    as a data: URI (base64), so the HTML needs no other file."""
    with tempfile.TemporaryDirectory() as d:
        path = draw(Path(d) / "figure.png")
        return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


@dataclass
class Cell:
    """One table cell: text shown, sort key (a number or text; None sorts last), optional link."""
    text: str
    key: object = None
    href: str = None


@dataclass
class Table:
    """A sortable HTML table: id (for ?sort=ID:COLUMN, e.g. ?sort=runs-table:f2_best), column names, rows of
    Cells, and a footnote shown under it (None: none)."""
    id: str
    columns: list
    rows: list = field(default_factory=list)
    footnote: str = None


NA = "n/a*"  # a label's F2 where no image has the label (0/0); NO_POSITIVES_NOTE explains it
NO_POSITIVES_NOTE = ("* n/a: no image here has the tag (for a run: no image of its validation fold), so the "
                     "label's own F2 is 0/0, undefined. By the metric's convention (an image with no true and no "
                     "predicted tag scores 1) it would read 1.0 when nothing is predicted and 0 otherwise; the "
                     "image-averaged F2 still counts the label's false positives.")


def _is_score(col):
    return col in (F2_FIXED, F2_BEST) or str(col).startswith(LABEL_COL) or "f2" in str(col).lower()


def cell(value, col="", href=None):
    """Cell of a value: scores with 4 decimals, other floats short, missing as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Cell("-", None, href)
    if isinstance(value, (bool, np.bool_)):
        return Cell(str(bool(value)).lower(), str(bool(value)), href)
    if isinstance(value, (int, np.integer)):
        return Cell(str(int(value)), int(value), href)
    if isinstance(value, (float, np.floating)):
        spec = ".4f" if _is_score(col) or col in ("frequency", "threshold") else ".6g"
        return Cell(format(float(value), spec).replace("-0.0000", "0.0000"), float(value), href)  # no "-0.0000"
    return Cell(str(value), str(value), href)


def empty_labels(oof):
    """The labels of an OOF (utils.analysis.scores.OOF) that no image has: their F2 is undefined."""
    return {lab for lab, n in zip(oof.labels, oof.y.sum(0)) if n == 0}


def mark_no_positives(table, empty, note):
    """Write NA (sorting last) in table's 'f2:LABEL' cells whose label is in empty[row name]
    ({first cell's text: set of labels}), and `note` under the table when any was."""
    cols = {j: c[len(LABEL_COL):] for j, c in enumerate(table.columns) if str(c).startswith(LABEL_COL)}
    marked = 0
    for row in table.rows:
        for j, lab in cols.items():
            if lab in empty.get(row[0].text, ()):
                row[j] = Cell(NA, None, row[j].href)
                marked += 1
    if marked:
        table.footnote = note
    return table


def table_from_frame(df, table_id, links=None, rename=None):
    """Table of a DataFrame; links: {column: row dict -> href or None}; rename: {column: header}."""
    links, rename = links or {}, rename or {}
    rows = [[cell(rec[c], c, links[c](rec) if c in links else None) for c in df.columns]
            for rec in df.to_dict("records")]
    return Table(table_id, [rename.get(c, c) for c in df.columns], rows)


# ----------------------------------------------------------------------------- models

@dataclass
class ModelView:
    """One model of the report: its runs, joined out-of-fold predictions, scores, figures."""
    key: str
    name: str
    runs: list
    oof: object
    scores: dict
    figures: dict = field(default_factory=dict)
    run_empty: dict = field(default_factory=dict)  # {run name: labels no image of its validation fold has}

    @property
    def anchor(self):
        return anchor("model", self.key)

    @property
    def thresholds(self):
        return {lab: float(t) for lab, t in zip(self.oof.labels, self.scores["thresholds"])}


def model_views(runs, truth, tta, names, threshold=FIXED_THRESHOLD):
    """ModelView per model with validation predictions, in `names` order ({model id: display name}).
    A model's runs are those stack.py and the leaderboard join (one per fold and seed,
    utils.analysis.leaderboard.model_runs); a second run of a covered fold stays out."""
    scored = []
    for run in runs:
        try:
            scored.append((run, load_oof(run, truth, tta)))
        except DataError:
            continue  # the leaderboard lists it among the skipped runs
    groups = {model: kept for model, (kept, _) in model_runs(scored).items()}
    views = []
    for key in [k for k in names if k in groups]:
        items = sorted(groups[key], key=lambda t: (t[0].fold, t[0].seed, t[0].name))
        oof = merge_oofs([o for _, o in items])
        views.append(ModelView(key, names[key], [r for r, _ in items], oof, score_oof(oof, threshold),
                               run_empty={r.name: empty_labels(o) for r, o in items}))
    return views


def label_f2_at(oof, thresholds):
    """{label: the label's F2 over the images when predicted at probs >= its threshold}.

    oof: utils.analysis.scores.OOF; thresholds: (L,) float. The score of the decisions the
    thresholds make (utils.metrics.fbeta.fbeta_per_label), not the label's best one; NaN for a
    label no image has (0/0)."""
    f2 = fbeta_per_label(oof.y, oof.probs >= np.asarray(thresholds, dtype=np.float64)[None, :])
    f2[oof.y.sum(0) == 0] = np.nan
    return dict(zip(oof.labels, f2.tolist()))


def draw_model(view, dpi=FIGURE_DPI):
    """Figures of a model: per-label F2 bars at the greedy thresholds (each label's best F2
    as a tick), probability distributions, each run's history."""
    s = view.scores
    empty = empty_labels(view.oof)
    best = {lab: math.nan if lab in empty else f for lab, f in s["per_label"].items()}
    view.figures["label_f2"] = png_uri(lambda p: plot_label_f2(
        label_f2_at(view.oof, s["thresholds"]), p, view.thresholds, best=best,
        title=f"{view.name}: per-label F2 at the greedy thresholds (out-of-fold)", dpi=dpi))
    view.figures["probs"] = png_uri(lambda p: plot_prob_distributions(
        view.oof.y, view.oof.probs, view.oof.labels, p, thresholds=s["thresholds"],
        title=f"{view.name} out-of-fold", dpi=dpi))
    view.figures["history"] = {}
    for run in view.runs:
        path = run.dir / "history.csv"
        try:
            hist = read_csv(path)
        except DataError:
            continue  # a run without a readable history still has its scores
        if len(hist):
            view.figures["history"][run.name] = png_uri(lambda p: plot_history(
                hist, p, dpi=dpi, no_positives=view.run_empty.get(run.name, ())))


def correlation_section(views, dpi=FIGURE_DPI):
    """Agreement heatmap of the models' decisions at their own greedy thresholds (clustered
    order) and the Pearson heatmap of their probabilities, as in tools/correlation.py; None
    with fewer than two models."""
    if len(views) < 2:
        return None
    oofs = {v.name: v.oof for v in views}
    D, P = stack_matrix(oofs, {v.name: v.scores["thresholds"] for v in views})
    agree, pearson = pairwise_agreement(D), pairwise_pearson(P)
    order = cluster_order(agree)
    names = [views[i].name for i in order]
    agree, pearson = agree[np.ix_(order, order)], pearson[np.ix_(order, order)]
    return {"agreement": png_uri(lambda p: plot_correlation(agree, names, p, "agreement of decisions", dpi)),
            "pearson": png_uri(lambda p: plot_correlation(pearson, names, p, "Pearson correlation of probabilities",
                                                          dpi)),
            "order": [views[i] for i in order]}


def threshold_table(views, stacks):
    """Labels x (frequency, each model's greedy threshold, each stack's chosen thresholds)."""
    widest_first = sorted(views, key=lambda v: -len(v.oof.labels))  # the full label order, not a group's
    labels = list(dict.fromkeys(lab for v in widest_first for lab in v.oof.labels))
    cols = ["label", "frequency"] + [v.name for v in views] + [f"stack: {s['name']}" for s in stacks if s["thresholds"]]
    table = Table("thresholds-table", cols)
    for lab in labels:
        freq = next((float(v.oof.y[:, v.oof.labels.index(lab)].mean()) for v in views if lab in v.oof.labels), None)
        row = [cell(lab), cell(freq)]
        row += [cell(v.thresholds.get(lab), "threshold", "#" + v.anchor) for v in views]
        row += [cell(s["thresholds"].get(lab), "threshold", "#" + s["anchor"]) for s in stacks if s["thresholds"]]
        table.rows.append(row)
    return table


# ----------------------------------------------------------------------------- stack reports

def _num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def stack_section(path, model_anchors, run_anchors, index):
    """What the report shows of one stack_report.json (stack.py): every method's cross-fitted
    F2, its spread over folds and per-fold values, per-label F2, thresholds and members.
    Raises DataError for a file that is not such a report."""
    try:
        rep = read_json(path)
        methods = rep["methods"]
        labels = list(rep["library"]["labels"])
    except DataError:
        raise
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable stack report ({e})") from e
    chosen = rep.get("chosen")
    name = f"{Path(path).parent.name}/{Path(path).name}"
    sid = f"stack{index}"
    t = Table(f"{sid}-methods", ["method", "cross-fitted F2", "± std (folds)", "F2 per fold", "in-sample F2",
                                 "optimism", "seconds"])
    ranked = sorted(methods.items(), key=lambda kv: -(_num(kv[1].get("f2_cross_fitted")) or -1))
    for spec, m in ranked:
        folds = m.get("f2_per_fold") or []
        t.rows.append([Cell(spec + (" (chosen)" if spec == chosen else ""), spec),
                       cell(_num(m.get("f2_cross_fitted")), "f2"), cell(_num(m.get("std")), "f2"),
                       Cell(" ".join(f"{f:.4f}" for f in folds), float(np.min(folds)) if folds else None),
                       cell(_num(m.get("f2_in_sample")), "f2"), cell(_num(m.get("optimism")), "f2"),
                       cell(_num(m.get("seconds")))])
    bs = rep.get("best_single")
    if bs:
        t.rows.append([Cell(f"best single model ({bs.get('name')})", "best single"),
                       cell(_num(bs.get("f2_cross_fitted")), "f2"), cell(_num(bs.get("std")), "f2"), Cell("-"),
                       cell(_num(bs.get("f2_in_sample")), "f2"), Cell("-"), Cell("-")])
    per_label = Table(f"{sid}-labels", ["label", "frequency"] + [s for s, _ in ranked])
    freq = rep["library"].get("label_frequency", {})
    empty = {lab for lab in labels if _num(freq.get(lab)) == 0}
    for lab in labels:
        per_label.rows.append([cell(lab), cell(_num(freq.get(lab)), "frequency")] +
                              [Cell(NA) if lab in empty else cell(_num(m.get("per_label", {}).get(lab)), "f2")
                               for _, m in ranked])
    members = Table(f"{sid}-members", ["member", "runs", "cross-fitted F2", "in-sample F2", "mean label F2"])
    if empty:
        per_label.footnote = NO_POSITIVES_NOTE
        members.footnote = f"mean label F2: over the labels with positives (not {', '.join(sorted(empty))})."
    for m in rep.get("members", []):
        lf = [v for k, v in (m.get("label_f2") or {}).items() if isinstance(v, (int, float)) and k not in empty]
        runs = [(r, run_anchors.get(r)) for r in m.get("runs", [])]
        members.rows.append([Cell(m.get("name", "?"), m.get("name", "?"), model_anchors.get(m.get("model"))),
                             Cell(" ".join(r for r, _ in runs), len(runs)),
                             cell(_num(m.get("f2_cross_fitted")), "f2"), cell(_num(m.get("f2_in_sample")), "f2"),
                             cell(float(np.mean(lf)) if lf else None, "f2")])
    thresholds = rep.get("thresholds") or {}
    return {"name": name, "path": str(path), "anchor": anchor("stack", index), "command":
            (rep.get("settings") or {}).get("command"), "chosen": chosen, "chosen_by": rep.get("chosen_by"),
            "methods": t, "per_label": per_label, "members": members,
            "thresholds": {k: float(v) for k, v in thresholds.items() if _num(v) is not None},
            "notes": list((rep.get("library") or {}).get("notes") or [])}


# ----------------------------------------------------------------------------- the report

def _pruned(folders):
    tables = [read_pruned(Path(f) / PRUNED_FILE) for f in folders]
    tables = [t for t in tables if not t.empty]
    return pd.concat(tables, ignore_index=True).drop_duplicates("run", keep="last") if tables else None


def split_label_columns(df):
    """(the leaderboard's own columns, its per-label F2 columns), each with the row's name
    first, so that the first fits the page; columns that say nothing here (leaderboard.HIDDEN:
    the model hash, the image folder when always train/, unconverted data paths) are left out."""
    key = df.columns[0]
    labels = [c for c in df.columns if str(c).startswith(LABEL_COL)]
    hidden = [c for c in df.columns if c in HIDDEN and HIDDEN[c](df)]
    own = [c for c in df.columns if c not in labels and c not in hidden]
    return df[own], df[[key, *labels]]


def build_context(runs, truth, folders, tta=None, stack_reports=(), threshold=FIXED_THRESHOLD, title=None,
                  explore=None):
    """Everything the template shows, as plain data.

    runs: utils.runs.directory.Run list; truth: utils.analysis.scores.Truth; folders: the runs folders
    (PRUNED.csv and stack reports are looked for there); tta: TTA name or None (best per
    run); stack_reports: extra stack_report*.json paths; explore: the link to the error explorer
    (tools/explore.py's page) or None. Raises DataError when no run is finished or no run can be scored.
    """
    if not any(r.finished for r in runs):
        raise DataError(f"no finished runs under {', '.join(map(str, folders))} (no run has result.json); "
                        f"train some first, e.g. python train.py --out {folders[0] if folders else 'runs'}")
    run_df, model_df, skipped = leaderboard(runs, truth, tta, _pruned(folders), threshold)
    if model_df.empty:
        raise DataError("no run has validation predictions that can be scored: " +
                        "; ".join(f"{n}: {why}" for n, why in skipped[:5]))
    model_df = model_df.sort_values(F2_BEST, ascending=False, kind="stable").reset_index(drop=True)
    names = dict(zip(model_df["model"], model_df["name"]))
    views = model_views(runs, truth, tta, names, threshold)
    for v in tqdm(views, desc="figures", unit="model", leave=False):
        draw_model(v)
    model_anchors = {v.key: "#" + v.anchor for v in views}
    run_anchors = {r.name: "#" + anchor("run", r.name) for v in views for r in v.runs}
    paths = sorted({*(p.resolve() for f in folders for p in find_stack_reports(f)),
                    *(Path(p).resolve() for p in stack_reports)})  # one file named twice counts once
    stacks, notes = [], [f"skipped run {n}: {why}" for n, why in skipped]
    for i, p in enumerate(paths):
        try:
            stacks.append(stack_section(p, model_anchors, run_anchors, i))
        except DataError as e:
            notes.append(str(e))
    model_df = model_df[["name"] + [c for c in model_df.columns if c != "name"]]
    model_of = dict(zip(run_df["run"], run_df["model"])) if not run_df.empty else {}
    model_by_name = dict(zip(model_df["name"], model_df["model"]))
    model_link = {"name": lambda r: model_anchors.get(model_by_name[r["name"]])}
    run_links = {"run": lambda r: run_anchors.get(r["run"]), "model": lambda r: model_anchors.get(model_of[r["run"]])}
    run_df = with_model_names(run_df, model_df)
    models, models_labels = (table_from_frame(df, tid, links=model_link) for df, tid in
                             zip(split_label_columns(model_df), ("models-table", "models-labels")))
    runs_table, runs_labels = (table_from_frame(df, tid, links=run_links) for df, tid in
                               zip(split_label_columns(run_df), ("runs-table", "runs-labels")))
    mark_no_positives(models_labels, {v.name: empty_labels(v.oof) for v in views}, NO_POSITIVES_NOTE)
    mark_no_positives(runs_labels, {r: e for v in views for r, e in v.run_empty.items()}, NO_POSITIVES_NOTE)
    return {"title": title or f"Report: {', '.join(Path(f).name for f in folders)}",
            "generated": time.strftime("%Y-%m-%d %H:%M"), "folders": [str(f) for f in folders],
            "n_runs": len(runs), "n_finished": sum(r.finished for r in runs), "n_models": len(views),
            "models_table": models, "runs_table": runs_table, "models": views,
            "models_labels": models_labels, "runs_labels": runs_labels,
            "run_anchor": lambda name: anchor("run", name),
            "correlation": correlation_section(views), "stacks": stacks,
            "thresholds": threshold_table(views, stacks), "notes": notes,
            "fixed_threshold": threshold, "f2_fixed_key": F2_FIXED, "explore": explore}


def render(context):
    """The HTML text of a context made by build_context (template: utils/analysis/templates/report.html.j2)."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**context)
