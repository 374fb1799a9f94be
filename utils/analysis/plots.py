"""PNG figures of a run: per-label probability distributions, training history, correlation.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no windows, no global
backend switch, nothing left open) and written atomically, so a viewer never sees half a file.
"""
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator, NullLocator

from utils.common.atomic import atomic_write
from utils.metrics.fbeta import fbeta_per_label
from utils.metrics.thresholds import best_label_fbeta

NEG_COLOUR, POS_COLOUR, THR_COLOUR = "tab:blue", "tab:orange", "tab:red"


def _figure(width, height, layout="constrained"):
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)  # Agg canvas: renders off-screen
    return fig


def _save(fig, path, dpi):
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def label_thresholds(y, probs, thresholds=None):
    """Per-label threshold and that label's F2 over images: (thr (L,), f2 (L,)).

    Best-F2 cut of each label (utils.metrics.thresholds.best_label_fbeta) unless `thresholds`
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


def _grid(n):
    cols = max(1, math.ceil(math.sqrt(n)))
    return math.ceil(n / cols), cols


def plot_prob_distributions(y, probs, labels, path, thresholds=None, title="", bins=40, dpi=80):
    """One small panel per label: histograms (log counts) of predicted probabilities for
    images with the label (orange) and without it (blue), the label's density and positive
    count in the title, and its threshold as a red line (best-F2 on these data unless
    `thresholds` (L,) is given; value and F2 written in the corner).

    y: (N, L) 0/1; probs: (N, L) in [0, 1]; labels: L names. Returns the PNG's Path.
    """
    y, probs = np.asarray(y) > 0.5, np.asarray(probs, dtype=np.float64)
    if y.shape != probs.shape or y.shape[1] != len(labels):
        raise ValueError(f"y {y.shape}, probs {probs.shape} and {len(labels)} labels disagree")
    rows, cols = _grid(len(labels))
    # fixed margins: constrained layout would take most of the time of this many panels
    fig = _figure(2.4 * cols, 1.9 * rows + 0.35, layout=None)
    fig.subplots_adjust(left=0.35 / (2.4 * cols), right=1 - 0.08 / (2.4 * cols),
                        bottom=0.3 / (1.9 * rows + 0.35), top=1 - 0.55 / (1.9 * rows + 0.35),
                        wspace=0.25, hspace=0.45)
    edges = np.linspace(0, 1, bins + 1)
    thr, f2 = label_thresholds(y, probs, thresholds)
    for j, name in enumerate(labels):
        ax = fig.add_subplot(rows, cols, j + 1)
        # np.histogram + stairs is several times faster than ax.hist's patches
        for mask, colour in ((~y[:, j], NEG_COLOUR), (y[:, j], POS_COLOUR)):
            counts = np.histogram(probs[mask, j], bins=edges)[0]
            ax.stairs(counts, edges, color=colour, fill=True, alpha=0.5)
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlim(0, 1)
        ax.set_ylim(bottom=0.8)
        if np.isfinite(thr[j]):
            ax.axvline(thr[j], color=THR_COLOUR, lw=1)
            right = thr[j] < 0.5  # write on the side away from the line
            ax.text(0.97 if right else 0.03, 0.95, f"t={thr[j]:.2f}\nF2={f2[j]:.2f}",
                    transform=ax.transAxes, ha="right" if right else "left", va="top",
                    fontsize=7)
        ax.set_title(f"{name}  d={y[:, j].mean():.3g} (n={int(y[:, j].sum())})", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(f"{title}  (blue: without the tag, orange: with it; red: threshold)".strip(),
                 fontsize=9)
    return _save(fig, path, dpi)


def plot_prob_comparison(sources, path, bins=40, dpi=80):
    """Per-label probability histograms of several prediction sets side by side.

    sources: list of (title, labels, probs (N, L), y (N, L) 0/1 or None, thresholds
    (L,) or None). One row per label (the union, in first-seen order), one column per
    source; positives orange, negatives blue (all predictions grey without truth), log
    counts, the threshold as a red line. Written atomically; returns the Path.
    """
    labels = list(dict.fromkeys(lab for s in sources for lab in s[1]))
    rows, cols = len(labels), len(sources)
    fig = _figure(2.8 * cols + 0.6, 1.5 * rows + 0.8)
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
    return _save(fig, path, dpi)


def plot_label_f2(per_label, path, thresholds=None, title="", dpi=80):
    """Horizontal bars of each label's F2 ({label: F2}, labels in the given order, NaN
    drawn as no bar), the value written at the end of each bar and the label's threshold
    beside it when `thresholds` ({label: t}) is given. Returns the PNG's Path."""
    labels = list(per_label)
    values = np.array([per_label[k] for k in labels], dtype=np.float64)
    fig = _figure(5.5, 0.8 + 0.24 * len(labels))
    ax = fig.subplots()
    y = np.arange(len(labels))
    ax.barh(y, np.nan_to_num(values), color=POS_COLOUR)
    for i, (k, v) in enumerate(zip(labels, values)):
        if np.isfinite(v):
            note = f"{v:.3f}" + (f"  t={thresholds[k]:.2f}" if thresholds and k in thresholds else "")
            ax.text(min(v, 1.0) + 0.01, i, note, va="center", fontsize=7)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()  # first label on top, as in the tables
    ax.set_xlim(0, 1.25)
    ax.set_xlabel("F2 at the label's best threshold", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=9)
    return _save(fig, path, dpi)


def _epoch_axis(history):
    # epochs may restart at each stage: fall back to the row number when not increasing
    if "epoch" in history and history["epoch"].is_monotonic_increasing \
            and history["epoch"].is_unique:
        return history["epoch"].to_numpy(), "epoch"
    return np.arange(1, len(history) + 1), "epoch (row)"


def plot_history(history, path, dpi=80):
    """Loss (train/val), validation F2 and per-label F2 (columns f2_<label>) against the
    epoch, with dashed lines where the `stage` column changes. history: the DataFrame of
    history.csv (missing columns are skipped). Returns the PNG's Path."""
    x, xlabel = _epoch_axis(history)
    label_cols = [c for c in history.columns if c.startswith("f2_")]
    fig = _figure(14, 3.6)
    ax_loss, ax_f2, ax_lab = fig.subplots(1, 3)
    for col, style in (("train_loss", "-o"), ("val_loss", "-s")):
        if col in history:
            ax_loss.plot(x, history[col], style, ms=3, label=col)
    if "val_f2" in history:
        ax_f2.plot(x, history["val_f2"], "-o", ms=3, color="k", label="val_f2")
    colours = colormaps["tab20"].colors  # tab10 would repeat colours beyond ten labels
    for k, col in enumerate(label_cols):
        ax_lab.plot(x, history[col], lw=1, color=colours[k % 20], label=col[3:])
    if "stage" in history and len(history):
        stage = history["stage"].to_numpy()
        for i in np.flatnonzero(stage[1:] != stage[:-1]) + 1:
            for ax in (ax_loss, ax_f2, ax_lab):
                ax.axvline((x[i - 1] + x[i]) / 2, color="grey", ls="--", lw=0.8)
    for ax, title in ((ax_loss, "loss"), (ax_f2, "validation F2"), (ax_lab, "per-label F2")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_f2):
        if ax.lines:
            ax.legend(fontsize=7)
    if label_cols:
        ax_lab.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      ncol=1 if len(label_cols) <= 16 else 2)
    return _save(fig, path, dpi)


def plot_correlation(matrix, names, path, title="", dpi=80):
    """Heatmap of an (M, M) matrix (e.g. model agreement) with `names` on both axes,
    values written in the cells when M <= 20. Returns the PNG's Path."""
    matrix = np.asarray(matrix, dtype=np.float64)
    m = len(names)
    if matrix.shape != (m, m):
        raise ValueError(f"matrix {matrix.shape} does not match {m} names")
    side = 2.5 + 0.45 * m
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(m), names, rotation=90, fontsize=7)
    ax.set_yticks(range(m), names, fontsize=7)
    if m <= 20:
        mid = np.nanmean(matrix)
        for i, j in np.ndindex(m, m):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="k" if matrix[i, j] > mid else "w")
    ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)
