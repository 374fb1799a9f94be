import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import fbeta_score

import utils.analysis.plots as plots
from utils.analysis.plots import (label_thresholds, plot_correlation, plot_history,
                         plot_prob_distributions)

LABELS = ["haze", "primary", "blow_down", "water", "clear"]


@pytest.fixture
def preds():
    rng = np.random.default_rng(0)
    y = rng.random((120, len(LABELS))) < np.array([0.1, 0.9, 0.02, 0.3, 0.0])
    probs = 1 / (1 + np.exp(-(rng.normal(0, 1.5, y.shape) + 3 * y - 2)))
    return y.astype(int), probs


def check_png(path, width, height):
    assert path.exists() and path.stat().st_size > 5000
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (height, width)
    assert img[..., :3].std() > 0.05  # something was drawn
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, temp file gone


def test_label_thresholds_match_brute_force(preds):
    y, probs = preds
    thr, f2 = label_thresholds(y, probs)
    for j in range(4):
        brute = max(fbeta_score(y[:, j], probs[:, j] >= c, beta=2, zero_division=0)
                    for c in np.unique(probs[:, j]))
        assert f2[j] == pytest.approx(brute)
        assert fbeta_score(y[:, j], probs[:, j] >= thr[j], beta=2) == pytest.approx(f2[j])
    assert np.isnan(thr[4]) and np.isnan(f2[4])  # no positive at all
    thr, f2 = label_thresholds(y, probs, thresholds=0.5)
    assert np.all(thr[:4] == 0.5)
    assert f2[0] == pytest.approx(fbeta_score(y[:, 0], probs[:, 0] >= 0.5, beta=2))


def test_prob_distributions_png(tmp_path, preds):
    y, probs = preds
    out = plot_prob_distributions(y, probs, LABELS, tmp_path / "plots" / "probs_e001.png",
                                  title="epoch 1", dpi=50)
    assert matplotlib.image.imread(out).shape[1] == round(2.6 * 3 * 50)
    check_png(out, width=round(2.6 * 3 * 50), height=matplotlib.image.imread(out).shape[0])
    out2 = plot_prob_distributions(y, probs, LABELS, tmp_path / "fixed.png",
                                   thresholds=[0.5] * len(LABELS))
    assert out2.stat().st_size > 5000
    with pytest.raises(ValueError):
        plot_prob_distributions(y, probs, LABELS[:2], tmp_path / "bad.png")


def test_history_png_with_stage_restarts_and_missing_columns(tmp_path):
    rng = np.random.default_rng(0)
    hist = pd.DataFrame({"stage": [0, 0, 1, 1, 1], "epoch": [1, 2, 1, 2, 3],
                         "train_loss": np.linspace(0.6, 0.2, 5), "val_f2": np.linspace(0.5, 0.7, 5),
                         **{f"f2_{name}": rng.random(5) for name in LABELS}})
    out = plot_history(hist, tmp_path / "history.png", dpi=50)
    check_png(out, width=14 * 50, height=round(3.6 * 50))


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept to look inside (list of Figure)."""
    figures, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi: figures.append(fig) or save(fig, path, dpi))
    return figures


def boxes(fig, texts):
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts if t.get_text()]


def overlapping(a, b):
    return any(x.overlaps(y) for x in a for y in b)


def drawn_ticklabels(ax):
    """The tick labels of ax inside its view limits: the locator also places labels beyond them, not drawn."""
    return [tick.label1 for axis in (ax.xaxis, ax.yaxis) for tick in axis.get_major_ticks()
            if min(axis.get_view_interval()) <= tick.get_loc() <= max(axis.get_view_interval())]


def test_history_of_one_epoch_shows_points_and_last_values(tmp_path, drawn):
    hist = pd.DataFrame({"stage": [0], "epoch": [1], "train_loss": [0.6], "val_loss": [0.7], "val_f2": [0.4],
                         "f2_haze": [0.0], "f2_water": [0.0], "f2_clear": [0.5]})
    plot_history(hist, tmp_path / "history.png", dpi=50)
    ax_lab = drawn[0].axes[2]
    assert all(line.get_marker() == "o" for line in ax_lab.lines)  # a single epoch is a visible point
    legend = [t.get_text() for t in ax_lab.get_legend().get_texts()]
    assert legend == ["haze (0.00)", "water (0.00)", "clear (0.50)"]  # two labels on top of each other at 0
    lo, hi = drawn[0].axes[0].get_xlim()
    assert lo < 1 < hi and hi - lo >= 1


def test_history_of_many_labels_names_every_label(tmp_path, drawn):
    names = [f"label_{j:03d}" for j in range(120)]
    hist = pd.DataFrame({"stage": [0, 0, 1], "epoch": [1, 2, 3], "train_loss": [0.6, 0.5, 0.4],
                         **{f"f2_{n}": [0.0, 0.1 * (j % 3), 0.2] for j, n in enumerate(names)}})
    out = plot_history(hist, tmp_path / "history.png", dpi=50)
    heat = next(ax for ax in drawn[0].axes if ax.images)
    assert [t.get_text() for t in heat.get_yticklabels()] == names
    assert heat.images[0].get_array().shape == (120, 3)
    fig = drawn[0]
    inside = fig.bbox  # every label name lies inside the figure (none cut off)
    assert all(inside.x0 <= b.x0 and b.y0 >= inside.y0 - 1 and b.y1 <= inside.y1 + 1
               for b in boxes(fig, heat.get_yticklabels()))
    assert matplotlib.image.imread(out).shape[0] > 120 * 0.1 * 50


@pytest.mark.parametrize("n_labels", [3, 120])
@pytest.mark.slow
def test_prob_panels_keep_clear_of_their_titles_and_explain_d(tmp_path, drawn, n_labels):
    rng = np.random.default_rng(0)
    names = [f"a_long_label_name_{j:03d}" for j in range(n_labels)]
    y = (rng.random((200, n_labels)) < 0.3).astype(int)
    plot_prob_distributions(y, rng.random(y.shape), names, tmp_path / "p.png", title="epoch 3", dpi=40)
    fig = drawn[0]
    head = fig._suptitle
    assert "d: share of images with the tag" in head.get_text() and "epoch 3" in head.get_text()
    titles = boxes(fig, [ax.title for ax in fig.axes])
    ticks = boxes(fig, [t for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()])
    assert not overlapping(boxes(fig, [head]), titles + ticks)
    assert not overlapping(titles, ticks)
    assert not any(a.overlaps(b) for i, a in enumerate(titles) for b in titles[i + 1:])
    assert boxes(fig, [head])[0].x0 >= 0 and boxes(fig, [head])[0].x1 <= fig.bbox.x1


def test_correlation_png(tmp_path):
    names = [f"run{i}" for i in range(6)]
    m = np.corrcoef(np.random.default_rng(0).random((6, 30)))
    out = plot_correlation(m, names, tmp_path / "corr.png", title="agreement", dpi=50)
    width, height = plots.correlation_size(6, 4)
    check_png(out, width=round(width * 50), height=round(height * 50))


LONG = "Pearson correlation of probabilities, label selective_logging_and_artisinal_mine_and_blooming"


@pytest.mark.parametrize("m", [2, 5, 20, 30])
def test_correlation_title_and_names_lie_inside_the_figure(tmp_path, drawn, m):
    names = [f"m{i}-tf_efficientnet_b{i % 8}_ns-size{256 + 32 * (i % 4)}-cutmix-e{i:02d}a4b5eb6d8" for i in range(m)]
    rng = np.random.default_rng(m)
    matrix = np.corrcoef(rng.random((m, 40)) + rng.random((1, 40)))
    matrix[0, -1] = matrix[-1, 0] = np.nan  # a pair without shared cells
    out = plot_correlation(matrix, names, tmp_path / "c.png", title=LONG, dpi=60)
    fig = drawn[0]
    ax = fig.axes[0]
    frame = fig.bbox
    title = next(t for t in [*fig.texts, ax.title] if t.get_text())
    assert "\n" in title.get_text() or m > 5  # too long for the narrow figures: wrapped
    assert " ".join(title.get_text().split()) == LONG
    texts = [title, *drawn_ticklabels(ax)]
    assert len(texts) == 1 + 2 * m
    for box in boxes(fig, texts):
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, box
    assert not overlapping(boxes(fig, [title]), boxes(fig, drawn_ticklabels(ax)))
    shown = [t.get_text() for t in ax.get_yticklabels()]
    assert len(set(shown)) == m and all(len(s) <= plots.CORR_NAME_CHARS for s in shown)
    assert shown[-1][:10] == names[-1][:10] and shown[-1][-10:] == names[-1][-10:]
    cells = [t.get_text() for t in ax.texts]
    if m <= plots.CORR_ANNOTATE:  # few models: every value written in its cell
        assert cells == ["-" if np.isnan(v) else f"{v:.2f}" for v in matrix.ravel()] and cells[m - 1] == "-"
    else:
        assert cells == []
    width, height = fig.get_size_inches()
    assert np.allclose(matplotlib.image.imread(out).shape[:2], (height * 60, width * 60), atol=1)
    # the heatmap is not a corner of the picture: at least ~3 inches a side, the names beside it
    grid = ax.get_window_extent(fig.canvas.get_renderer())
    assert min(grid.width, grid.height) >= 0.9 * 3.0 * fig.dpi


def test_short_names_keep_names_apart():
    long = ["a" * 30 + "-x-" + "b" * 30, "a" * 30 + "-y-" + "b" * 30]
    assert plots.short_names(long) == long  # shortened they would read alike
    cut = plots.short_names(["c" * 60 + "1", "c" * 60 + "2", "short"])
    assert [len(n) for n in cut] == [plots.CORR_NAME_CHARS, plots.CORR_NAME_CHARS, 5]
    assert cut[0].endswith("c1") and "…" in cut[0] and cut[2] == "short"


def test_history_marks_labels_without_positives(tmp_path, drawn):
    """A label no validation image has: no line (its F2 of 1.0 is 0/0) but a legend entry
    saying so; beyond ten labels a grey row named so."""
    hist = pd.DataFrame({"epoch": [1, 2], "val_f2": [0.4, 0.5], "f2_haze": [1.0, 1.0], "f2_water": [0.2, 0.3]})
    plot_history(hist, tmp_path / "h.png", dpi=40, no_positives={"haze"})
    ax_lab = drawn[0].axes[2]
    assert [t.get_text() for t in ax_lab.get_legend().get_texts()] == [f"haze ({plots.NO_POSITIVES})",
                                                                       "water (0.30)"]
    assert [len(line.get_xdata()) for line in ax_lab.lines] == [0, 2]
    names = [f"l{j:02d}" for j in range(12)]
    hist = pd.DataFrame({"epoch": [1, 2], **{f"f2_{n}": [1.0, 1.0] for n in names}})
    plot_history(hist, tmp_path / "h2.png", dpi=40, no_positives={"l03"})
    heat = next(ax for ax in drawn[1].axes if ax.images)
    ticks = [t.get_text() for t in heat.get_yticklabels()]
    assert ticks[3] == "l03 (no positives)" and ticks[2] == "l02"
    rows = heat.images[0].get_array()
    assert rows.mask[3].all() and not rows.mask[2].any()  # drawn in the 'bad' colour, grey
    assert "grey: no positives" in heat.get_title()


def test_prob_panel_of_a_label_without_positives_says_so(tmp_path, drawn, preds):
    y, probs = preds  # the last label, clear, has no positive
    plot_prob_distributions(y, probs, LABELS, tmp_path / "p.png", thresholds=[0.3] * len(LABELS), dpi=40)
    texts = [[t.get_text() for t in ax.texts] for ax in drawn[0].axes]
    assert texts[4] == [plots.NO_POSITIVES.replace(": ", ":\n")] and not drawn[0].axes[4].lines
    assert all(t and t[0].startswith("t=0.30") for t in texts[:4])


@pytest.mark.parametrize("n_labels", [1, 2, 30])
def test_prob_comparison_panels_title_d_and_n_as_the_single_grid(tmp_path, drawn, n_labels):
    """Several prediction sets side by side: every panel is titled 'label' over 'd= (n=)' of its
    own set (as plot_prob_distributions' panels), t and the F2 at it in the corner, the key
    explains d and n, the sets' names head their columns, and no text runs into another."""
    rng = np.random.default_rng(1)
    names = [f"a_long_label_name_{j:03d}" for j in range(n_labels)]
    ya, yb = ((rng.random((90, n_labels)) < rng.uniform(0.1, 0.9, n_labels)).astype(int) for _ in range(2))
    pa, pb, pc = (rng.random((90, n_labels)) for _ in range(3))
    thr = np.full(n_labels, 0.3)
    sources = [("run A (val, none)", names, pa, ya, thr), ("run B", names[:1], pb[:, :1], yb[:, :1], thr[:1]),
               ("test.none.csv", names, pc, None, None)]
    plots.plot_prob_comparison(sources, tmp_path / "cmp.png", dpi=40)
    fig = drawn[0]
    grid = np.array(fig.axes).reshape(3, n_labels)  # made source by source
    for j, name in enumerate(names):
        assert grid[0, j].get_title() == f"{name}\nd={ya[:, j].mean():.3g} (n={ya[:, j].sum()})"
        f2 = fbeta_score(ya[:, j], pa[:, j] >= 0.3, beta=2, zero_division=1.0)
        assert [t.get_text() for t in grid[0, j].texts] == [f"t=0.30\nF2={f2:.2f}"]
        assert grid[2, j].get_title().endswith("(no truth: d, n unknown)")
    assert grid[1, 0].get_title() == f"{names[0]}\nd={yb[:, 0].mean():.3g} (n={yb[:, 0].sum()})"
    assert all(not ax.axison for ax in grid[1, 1:])  # B predicts the first label only
    assert "d: share of images with the tag, n: their number" in fig._suptitle.get_text().replace("\n", " ")
    rows, blocks = plots.comparison_grid(n_labels, 3)
    assert rows * blocks >= n_labels and (n_labels < 7 or rows > 1 and blocks > 1)
    heads = [t for t in fig.texts if t is not fig._suptitle]  # each source's title over each of its columns
    assert [t.get_text() for t in heads] == [s[0] for s in sources for _ in range(blocks)]
    for head, ax in zip(heads, grid[:, :blocks].ravel()):
        box = ax.get_position()
        assert head.get_position()[0] == pytest.approx((box.x0 + box.x1) / 2)
    head = boxes(fig, fig.texts)  # the key (the suptitle) and the column titles
    titles = boxes(fig, [ax.title for ax in fig.axes])
    ticks = boxes(fig, [t for ax in fig.axes if ax.axison for t in drawn_ticklabels(ax)])
    assert len(ticks) >= 2 * 6 * n_labels  # each drawn panel's x ticks 0, 0.2, ..., 1 at least
    assert not overlapping(head, titles + ticks) and not overlapping(titles, ticks)
    assert not any(a.overlaps(b) for group in (head, titles) for i, a in enumerate(group) for b in group[i + 1:])
    assert all(b.x0 >= 0 and b.x1 <= fig.bbox.x1 and b.y1 <= fig.bbox.y1 for b in head + titles)


def test_prob_comparison_without_truth_keys_grey_only(tmp_path, drawn):
    """Sets without truth alone: the key explains the grey histograms and no colours, d or n none shows."""
    rng = np.random.default_rng(2)
    sources = [(f"run {k} (test, none)", LABELS, rng.random((30, len(LABELS))), None, None) for k in "AB"]
    plots.plot_prob_comparison(sources, tmp_path / "cmp.png", dpi=40)
    key = drawn[0]._suptitle.get_text().replace("\n", " ")
    assert key == "grey: every image of a set without truth (log counts)"
    assert all(ax.get_title().endswith("(no truth: d, n unknown)") and not ax.lines for ax in drawn[0].axes)
    with pytest.raises(ValueError, match="run A"):
        plots.plot_prob_comparison([("run A", LABELS[:2], sources[0][2], None, None)], tmp_path / "bad.png")


@pytest.mark.parametrize("n_sources, n_labels", [(1, 7), (2, 7), (2, 13), (4, 7), (4, 24), (2, 100)])
def test_prob_comparison_is_readable_at_its_saved_size(tmp_path, drawn, n_sources, n_labels):
    """At the resolution tools/plot_probs.py saves at, no text is under 10 px and the page is
    neither a strip nor a banner: about as wide as high, at most 12 panels across."""
    rng = np.random.default_rng(3)
    names = [f"label_{j:03d}" for j in range(n_labels)]
    sources = [(f"run {k} (val, hflip)", names, rng.random((60, n_labels)),
                (rng.random((60, n_labels)) < 0.3).astype(int), np.full(n_labels, 0.5)) for k in range(n_sources)]
    dpi = 100
    out = plots.plot_prob_comparison(sources, tmp_path / "cmp.png", dpi=dpi)
    fig = drawn[0]
    height, width = matplotlib.image.imread(out).shape[:2]
    assert np.allclose((height, width), fig.get_size_inches()[::-1] * dpi, atol=1)
    assert 1 / 2.5 <= width / height <= 2.5, (width, height)
    assert width <= (12 * plots.CELL_W + 11 * plots.BLOCK_GAP + 0.3) * dpi  # 12 panels, the gaps between blocks
    texts = [*fig.texts, *(t for ax in fig.axes for t in [ax.title, *ax.texts, *drawn_ticklabels(ax)])]
    sizes = [t.get_fontsize() * dpi / 72 for t in texts if t.get_text()]
    assert len(sizes) > 8 * n_labels * n_sources and min(sizes) >= 10, min(sizes)
