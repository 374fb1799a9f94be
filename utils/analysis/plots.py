"""PNG figures of a run: per-label probability distributions, training history, correlation.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no windows, no global
backend switch, nothing left open) and written atomically, so a viewer never sees half a file.
"""
import math
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator, NullLocator

from utils.common.atomic import atomic_write
from utils.metrics.fbeta import fbeta_per_label
from utils.metrics.threshold_search import best_label_fbeta

NEG_COLOUR, POS_COLOUR, THR_COLOUR = "tab:blue", "tab:orange", "tab:red"


def _figure(width, height, layout="constrained"):
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)  # Agg canvas: renders off-screen
    return fig


def _save(fig, path, dpi):
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def label_thresholds(y, probs, thresholds=None):
    """Per-label threshold and that label's F2 over images: (thr (L,), f2 (L,)).

    Best-F2 cut of each label (utils.metrics.threshold_search.best_label_fbeta) unless `thresholds`
    (scalar or (L,)) is given; NaN for a label without positives.
    """
    y, probs = np.asarray(y) > 0.5, np.asarray(probs, dtype=np.float64)
    if thresholds is None:
        found = [best_label_fbeta(y[:, j], probs[:, j]) for j in range(y.shape[1])]
        f2 = np.array([f[0] for f, _ in found])
        thr = np.array([t[0] for _, t in found])
    else:
        thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (y.shape[1],)).copy()
        f2 = fbeta_per_label(y, probs >= thr)
    none = ~y.any(axis=0)
    thr[none], f2[none] = np.nan, np.nan
    return thr, f2


# the probability panels' text in points: 7.5 pt is 10 px at the 96-100 dpi tools/plot_probs.py saves at
TITLE_PT, NOTE_PT, TICK_PT = 9, 8, 7.5
NO_POSITIVES = "no positives: F2 n/a"  # a label no image has: its F2 is 0/0, shown as n/a


def _no_positives_note(ax):
    """NO_POSITIVES in a panel's corner, on white over the histograms: no threshold is drawn there."""
    ax.text(0.97, 0.95, NO_POSITIVES.replace(": ", ":\n"), transform=ax.transAxes, ha="right", va="top",
            fontsize=NOTE_PT, color="dimgrey", bbox=dict(facecolor="white", edgecolor="none", alpha=0.8, pad=1))


def _grid(n):
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


PANEL_KEY = ("blue: images without the tag, orange: with it (log counts); red: threshold t, F2 at it; "
             "d: share of images with the tag, n: their number")


def _short(name, limit=28):
    """A label's name cut to `limit` characters (an ellipsis last), to fit above its panel."""
    return name if len(name) <= limit else name[:limit - 1] + "…"


def _prob_panel(ax, name, p, y, thr, f2, edges):
    """One label's panel on ax: histograms (log counts, bin edges `edges`) of its probabilities
    p (N,) float for images with the tag (orange) and without it (blue), y (N,) bool, or of all
    of them grey when y is None; the threshold thr (float, NaN: none) as a red line with
    't=..., F2=...' (f2 float, NaN: left out) in the corner away from it (NO_POSITIVES instead
    for a label no image has); the title 'name' over 'd=share (n=count)'."""
    groups = [(np.ones(len(p), bool), "grey")] if y is None else [(~y, NEG_COLOUR), (y, POS_COLOUR)]
    for mask, colour in groups:
        # np.histogram + stairs is several times faster than ax.hist's patches
        ax.stairs(np.histogram(p[mask], bins=edges)[0], edges, color=colour, fill=True, alpha=0.5)
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0.8)
    if y is not None and not y.any():
        _no_positives_note(ax)
    elif np.isfinite(thr):
        ax.axvline(thr, color=THR_COLOUR, lw=1)
        right = thr < 0.5  # write on the side away from the line
        ax.text(0.97 if right else 0.03, 0.95, f"t={thr:.2f}" + (f"\nF2={f2:.2f}" if np.isfinite(f2) else ""),
                transform=ax.transAxes, ha="right" if right else "left", va="top", fontsize=NOTE_PT)
    counts = "(no truth: d, n unknown)" if y is None else f"d={y.mean():.3g} (n={int(y.sum())})"
    ax.set_title(f"{_short(name)}\n{counts}", fontsize=TITLE_PT)
    ax.tick_params(labelsize=TICK_PT)


def _comparison_key(truth, thresholds):
    """The key of plot_prob_comparison: PANEL_KEY where any set has truth (truth: one bool per set),
    grey for the sets without it; a red line explained without truth when thresholds are drawn."""
    parts = [PANEL_KEY] if any(truth) else []
    if not all(truth):
        parts.append("grey: every image of a set without truth (log counts)")
        if thresholds and not any(truth):
            parts.append("red: threshold t")
    return "; ".join(parts)


def plot_prob_distributions(y, probs, labels, path, thresholds=None, title="", bins=40, dpi=80):
    """One small panel per label: histograms (log counts) of predicted probabilities for
    images with the label (orange) and without it (blue), the label's density d (share of
    the images that have it) and positive count n in the title (explained in the figure),
    and its threshold as a red line (best-F2 on these data unless `thresholds` (L,) is
    given; value and F2 written in the corner).

    y: (N, L) 0/1; probs: (N, L) in [0, 1]; labels: L names. Returns the PNG's Path.
    """
    y, probs = np.asarray(y) > 0.5, np.asarray(probs, dtype=np.float64)
    if y.shape != probs.shape or y.shape[1] != len(labels):
        raise ValueError(f"y {y.shape}, probs {probs.shape} and {len(labels)} labels disagree")
    rows, cols = _grid(len(labels))
    # fixed margins, in inches: constrained layout would take most of the time of this many panels
    width = 2.6 * cols
    head = ([title] if title else []) + textwrap.wrap(PANEL_KEY, int(width * 13))
    top = 0.45 + 0.17 * len(head)  # the figure's title lines, then the panels' two-line titles
    height = 2.1 * rows + top
    fig = _figure(width, height, layout=None)
    fig.subplots_adjust(left=0.35 / width, right=1 - 0.08 / width, bottom=0.3 / height, top=1 - top / height,
                        wspace=0.25, hspace=0.75)
    edges = np.linspace(0, 1, bins + 1)
    thr, f2 = label_thresholds(y, probs, thresholds)
    for j, name in enumerate(labels):
        _prob_panel(fig.add_subplot(rows, cols, j + 1), name, probs[:, j], y[:, j], thr[j], f2[j], edges)
    fig.suptitle("\n".join(head), fontsize=9, y=1 - 0.08 / height, va="top")
    return _save(fig, path, dpi)


# plot_prob_comparison's layout, in inches: a panel's cell (axes, ticks, two-line title), the gap
# between blocks of panels (one block per label, a panel per set), the widest figure aimed for
CELL_W, CELL_H, BLOCK_GAP, MAX_PANEL_COLUMNS, ASPECT = 2.5, 2.1, 0.35, 12, 1.5
KEY_PT, HEAD_PT = 10, 9


def comparison_grid(n_labels, n_sources):
    """(rows, blocks across) of plot_prob_comparison: a block of n_sources panels per label, as
    many blocks across as brings the figure nearest ASPECT (width / height) within
    MAX_PANEL_COLUMNS panels across (one block at least)."""
    def aspect_miss(b):
        width = b * n_sources * CELL_W + (b - 1) * BLOCK_GAP
        return abs(math.log(width / (math.ceil(n_labels / b) * CELL_H + 1.0) / ASPECT))
    across = range(1, max(1, min(n_labels, MAX_PANEL_COLUMNS // n_sources)) + 1)
    blocks = min(across, key=aspect_miss)
    return math.ceil(n_labels / blocks), blocks


def plot_prob_comparison(sources, path, bins=40, dpi=100):
    """Per-label probability histograms of several prediction sets side by side.

    sources: list of (title, labels, probs (N, L), y (N, L) 0/1 or None, thresholds
    (L,) or None). One block per label (the union, in first-seen order), the blocks in a
    grid (comparison_grid: rows x blocks across, sized to a readable page); a block holds one
    panel per source, in the order given, each column of panels headed by its source's title.
    Each panel as in plot_prob_distributions: positives orange, negatives blue (all
    predictions grey without truth), log counts, the threshold as a red line with t and the
    F2 at it, the title 'label' over 'd=share (n=count)' of that source's images, all
    explained at the top; a label a source lacks reads '(not predicted)'. The text is at least
    TICK_PT points (10 px at 96 dpi). Axes are added source by source, each source's label by
    label. Written atomically; returns the Path. Raises ValueError when a source's probs, y
    and labels disagree in shape.
    """
    labels = list(dict.fromkeys(lab for s in sources for lab in s[1]))
    k = len(sources)
    rows, blocks = comparison_grid(len(labels), k)
    # fixed margins, in inches (constrained layout is slow at this many panels)
    width = blocks * k * CELL_W + (blocks - 1) * BLOCK_GAP + 0.2
    key = _comparison_key([s[3] is not None for s in sources], any(s[4] is not None for s in sources))
    head = textwrap.wrap(key, int(width * 72 / (0.55 * KEY_PT)))
    names = [textwrap.wrap(str(s[0]), int(CELL_W * 72 / (0.62 * HEAD_PT))) or [""] for s in sources]
    key_h = 0.1 + KEY_PT * 1.25 / 72 * len(head)
    top = key_h + 0.1 + HEAD_PT * 1.25 / 72 * max(len(n) for n in names)
    height = rows * CELL_H + top + 0.1
    fig = _figure(width, height, layout=None)
    edges = np.linspace(0, 1, bins + 1)
    for c, (title, labs, probs, y, thr) in enumerate(sources):
        probs = np.asarray(probs, dtype=np.float64)
        y = None if y is None else np.asarray(y) > 0.5
        if probs.shape[1:] != (len(labs),) or (y is not None and y.shape != probs.shape):
            raise ValueError(f"{title}: probs {probs.shape}, y {None if y is None else y.shape} "
                             f"and {len(labs)} labels disagree")
        f2 = np.full(len(labs), np.nan) if y is None or thr is None else label_thresholds(y, probs, thr)[1]
        for i, lab in enumerate(labels):
            x0 = 0.1 + (i % blocks) * (k * CELL_W + BLOCK_GAP) + c * CELL_W
            y1 = height - top - (i // blocks) * CELL_H  # the cell's top: the title above the axes
            ax = fig.add_axes([(x0 + 0.42) / width, (y1 - CELL_H + 0.25) / height,
                               (CELL_W - 0.52) / width, (CELL_H - 0.25 - 0.5) / height])
            if i < blocks:  # the source's title over each of its columns
                fig.text((x0 + 0.42 + (CELL_W - 0.52) / 2) / width, 1 - (key_h + 0.05) / height,
                         "\n".join(names[c]), ha="center", va="top", fontsize=HEAD_PT, fontweight="bold")
            if lab not in labs:
                ax.set_axis_off()
                ax.set_title(f"{_short(lab)}\n(not predicted)", fontsize=TITLE_PT, color="grey")
                continue
            j = labs.index(lab)
            _prob_panel(ax, lab, probs[:, j], None if y is None else y[:, j],
                        np.nan if thr is None else float(thr[j]), f2[j], edges)
    fig.suptitle("\n".join(head), fontsize=KEY_PT, y=1 - 0.06 / height, va="top")
    return _save(fig, path, dpi)


def plot_label_f2(per_label, path, thresholds=None, best=None, title="", dpi=80):
    """Horizontal bars of each label's F2 at the threshold written beside it.

    per_label: {label: F2 at that label's threshold} (labels in the given order; NaN, for a
    label without positives, draws no bar and reads NO_POSITIVES); thresholds: {label: t}
    the bars were scored at, written as 't=0.23'; best: {label: the label's best F2 over
    all thresholds}, drawn as a black tick and written beside the value where it is higher.
    The numbers stand in a column right of the axes, clear of every bar. Returns the PNG's Path.
    """
    labels = list(per_label)
    values = np.array([per_label[k] for k in labels], dtype=np.float64)
    thresholds, best = thresholds or {}, best or {}
    fig = _figure(7.0, 1.3 + 0.24 * len(labels))
    ax = fig.subplots()
    y = np.arange(len(labels))
    ax.barh(y, np.nan_to_num(values), color=POS_COLOUR, label="F2 at the threshold t written beside it")
    higher = {i: best[k] for i, (k, v) in enumerate(zip(labels, values))  # ticks only where they say something
              if np.isfinite(v) and np.isfinite(best.get(k, np.nan)) and best[k] > v + 5e-4}
    if higher:
        ax.plot(list(higher.values()), list(higher), "|", color="k", ms=9, mew=1.5,
                label="best F2 of the label on its own (at its own threshold)")
    for i, (k, v) in enumerate(zip(labels, values)):
        t = f"t={thresholds[k]:.2f}" if k in thresholds else ""
        if not np.isfinite(v):
            note = f"{NO_POSITIVES}  {t}".rstrip()
        else:
            note = f"{v:.3f}  {t}".rstrip() + (f"  (best {higher[i]:.3f})" if i in higher else "")
        ax.text(1.02, i, note, va="center", fontsize=7, transform=ax.get_yaxis_transform(),
                color="k" if np.isfinite(v) else "grey")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first label on top, as in the tables
    ax.set_xlim(0, 1)
    ax.set_xlabel("F2 of the label over the images", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    handles, names = ax.get_legend_handles_labels()
    fig.legend(handles[::-1], names[::-1], loc="outside lower center", fontsize=7, frameon=False)  # the bars first
    return _save(fig, path, dpi)


def _epoch_axis(history):
    # epochs may restart at each stage: fall back to the row number when not increasing
    if "epoch" in history and history["epoch"].is_monotonic_increasing \
            and history["epoch"].is_unique:
        return history["epoch"].to_numpy(), "epoch"
    return np.arange(1, len(history) + 1), "epoch (row)"


LINES_UP_TO = 10  # more labels than this: per-label F2 as a heatmap, one row per label


def plot_history(history, path, dpi=80, no_positives=()):
    """Loss (train/val), validation F2 and per-label F2 (columns f2_<label>) against the
    epoch, with dashed lines where the `stage` column changes. Every epoch is a marker, so
    a one-epoch run shows its points. Up to LINES_UP_TO labels the per-label F2 are lines
    whose legend gives each label's last F2 (labels on top of each other, at 0 say, stay
    apart there); with more, a heatmap below with one named row per label. history: the
    DataFrame of history.csv (missing columns are skipped); no_positives: labels no
    validation image has, whose F2 is undefined: no line (legend: NO_POSITIVES) or a grey
    row named so. Returns the PNG's Path."""
    x, xlabel = _epoch_axis(history)
    label_cols = [c for c in history.columns if c.startswith("f2_")]
    as_lines = len(label_cols) <= LINES_UP_TO
    heat_h = 0 if as_lines else 1.0 + 0.14 * len(label_cols)
    fig = _figure(14, 3.6 + heat_h)
    grid = fig.add_gridspec(1 if as_lines else 2, 3 if as_lines else 2,
                            height_ratios=None if as_lines else [3.6, heat_h])
    ax_loss, ax_f2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    ax_lab = fig.add_subplot(grid[0, 2]) if as_lines else None
    for col, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if col in history:
            ax_loss.plot(x, history[col], style, ms=3, label=col)
    if "val_f2" in history:
        ax_f2.plot(x, history["val_f2"], "-o", ms=3, color="k", label="val_f2")
    axes = [ax_loss, ax_f2] + ([ax_lab] if as_lines else [])
    empty = {"f2_" + lab for lab in no_positives}
    if as_lines:
        colours = colormaps["tab10"].colors
        for k, col in enumerate(label_cols):
            last = history[col].dropna()
            if col in empty:  # its 0/0 F2 would read as 1.0 or 0: a legend entry, no line
                ax_lab.plot([], [], "o", ms=3, color="lightgrey", label=f"{col[3:]} ({NO_POSITIVES})")
                continue
            ax_lab.plot(x, history[col], "-o", ms=3, lw=1, color=colours[k % 10],
                        label=f"{col[3:]} ({last.iloc[-1]:.2f})" if len(last) else col[3:])
    for i in _stage_changes(history):
        for ax in axes:
            ax.axvline((x[i - 1] + x[i]) / 2, color="grey", ls="--", lw=0.8)
    titles = ["loss", "validation F2"] + (["per-label F2 (legend: last value)"] if as_lines else [])
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(x) == 1:  # one epoch: a readable axis around its point
            ax.set_xlim(x[0] - 1, x[0] + 1)
    for ax in (ax_loss, ax_f2):
        if any(not line.get_label().startswith("_") for line in ax.lines):  # stage lines have no label
            ax.legend(fontsize=7)
    if as_lines and label_cols:
        ax_lab.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if not as_lines:
        _label_heatmap(fig.add_subplot(grid[1, :]), history, label_cols, x, xlabel, empty)
    return _save(fig, path, dpi)


def _stage_changes(history):
    """Row indices where the `stage` column changes."""
    if "stage" not in history or not len(history):
        return []
    stage = history["stage"].to_numpy()
    return list(np.flatnonzero(stage[1:] != stage[:-1]) + 1)


def _label_heatmap(ax, history, label_cols, x, xlabel, empty=frozenset()):
    """Per-label F2 as an image: one row per label (named), one column per epoch; the
    columns in `empty` (labels without positives) grey and named so."""
    values = history[label_cols].to_numpy(np.float64, copy=True).T
    values[[c in empty for c in label_cols]] = np.nan
    image = ax.imshow(values, aspect="auto", cmap=colormaps["viridis"].with_extremes(bad="lightgrey"), vmin=0,
                      vmax=1, interpolation="nearest", extent=(x[0] - 0.5, x[-1] + 0.5, len(label_cols) - 0.5, -0.5))
    ax.figure.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="F2")
    ax.set_yticks(range(len(label_cols)),
                  [c[3:] + (" (no positives)" if c in empty else "") for c in label_cols], fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_title(f"per-label F2 of {len(label_cols)} labels, each row one label (dark: 0, yellow: 1"
                 + ("; grey: no positives, F2 n/a)" if empty & set(label_cols) else ")"), fontsize=10)
    for i in _stage_changes(history):
        ax.axvline((x[i - 1] + x[i]) / 2, color="w", ls="--", lw=0.8)


CORR_ANNOTATE = 20  # at most this many models: every cell of the heatmap shows its value
CORR_NAME_CHARS = 48  # a longer model name is shortened in its middle on the heatmap's axes
TICK_CHAR_IN = 7 * 0.62 / 72  # inches per character of a 7 pt tick label, a little over the mean width


def short_names(names, limit=CORR_NAME_CHARS):
    """Names longer than `limit` characters with their middle replaced by an ellipsis (start and end
    kept: a model's architecture and its hash or seed); the names as given when that would make
    two of them alike."""
    def short(name):
        if len(name) <= limit:
            return name
        head = (limit - 1) // 2
        return name[:head] + "…" + name[len(name) - (limit - 1 - head):]
    out = [short(str(n)) for n in names]
    return out if len(set(out)) == len(set(names)) else [str(n) for n in names]


def correlation_size(m, longest):
    """(width, height) inches of the heatmap of m models whose longest (shown) name has `longest`
    characters: room for the names on both axes, cells wide enough for their values when
    m <= CORR_ANNOTATE, the colour bar, a title of up to three lines."""
    grid = max(m * (0.45 if m <= CORR_ANNOTATE else 0.22), 3.0)
    names = 0.2 + longest * TICK_CHAR_IN
    return names + grid + 1.4, names + grid + 0.9


def plot_correlation(matrix, names, path, title="", dpi=100):
    """Heatmap of an (M, M) matrix (e.g. model agreement) with `names` on both axes (shortened in
    the middle past CORR_NAME_CHARS characters), values written in the cells when M <= CORR_ANNOTATE
    ('-' for NaN, a pair without shared cells), the title wrapped to the figure's width. The figure
    grows with M and the longest name, so nothing is cut. Returns the PNG's Path; ValueError when
    the matrix is not (M, M)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    m = len(names)
    if matrix.shape != (m, m):
        raise ValueError(f"matrix {matrix.shape} does not match {m} names")
    shown = short_names(names)
    width, height = correlation_size(m, max(map(len, shown)))
    fig = _figure(width, height)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap=colormaps["viridis"].with_extremes(bad="lightgrey"))
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(m), shown, rotation=90, fontsize=7)
    ax.set_yticks(range(m), shown, fontsize=7)
    if m <= CORR_ANNOTATE:
        _annotate_cells(ax, matrix, image.norm)
    if title:  # wrapped to the figure's width at ~0.6 em per character of 10 pt text
        fig.suptitle(textwrap.fill(title, max(20, int(width * 72 / 6.5))), fontsize=10)
    return _save(fig, path, dpi)


def _annotate_cells(ax, matrix, norm):
    """Each cell's value (2 decimals, '-' for NaN) in black on light colours, white on dark."""
    for i, j in np.ndindex(matrix.shape):
        v = matrix[i, j]
        light = np.isnan(v) or norm(v) > 0.5
        ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="k" if light else "w")
