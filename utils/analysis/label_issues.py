"""Training images whose tags disagree with out-of-fold predictions (label noise).

The iMet 2019 winner dropped training images whose out-of-fold loss was very high;
confident learning (Northcutt et al., "Confident Learning: Estimating Uncertainty in
Dataset Labels", JAIR 2021; package `cleanlab`, multi-label support in
cleanlab.multilabel_classification) ranks such images more carefully, per tag and
per image. Here the out-of-fold probabilities of every model in a set of runs
(utils/stack/library.py: one member per configuration and seed, all folds) are averaged
per image and handed to cleanlab:

- a score per (image, tag): rank.get_label_quality_scores_per_class (low = the
  given 0/1 is probably wrong);
- a score per image: rank.get_label_quality_scores, its tags' scores pooled by
  cleanlab's softmin by default. On apparel with 40 planted single-tag flips
  (EXPERIMENTS.md "Label issues"), softmin put 37 of them in the top 40 and
  cleanlab's default exponential moving average 6: one wrong tag among six
  confident ones barely moves an average;
- an issue flag per image: filter.find_label_issues (prune by noise rate).
"""
import logging
import textwrap
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from utils.common.atomic import atomic_write
from utils.common.errors import DataError

log = logging.getLogger(__name__)

METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
# image score = cleanlab aggregation of the per-tag scores (aggregator_kwargs)
AGGREGATES = {"softmin": {"method": "softmin"},
              "ema": {"method": "exponential_moving_average", "alpha": 0.8},  # cleanlab's default
              "worst": {"method": np.min}}
COLUMNS = ["rank", "image_name", "tag", "given", "probability", "tag_score", "score", "issue", "given_tags"]


def mean_oof(library):
    """(N, L) float64 out-of-fold probabilities averaged over the library's members.

    A member trained on a subset of the tags (--label-group) counts only for those.
    Raises DataError when some label has no member."""
    P = library.oof.astype(np.float64)  # (L, M, N), NaN where the member has no opinion
    counts = library.mask.sum(0)
    if (counts == 0).any():
        raise DataError(f"no run predicts label(s) {[t for t, c in zip(library.labels, counts) if c == 0]}")
    return (np.nansum(P, 1) / counts[:, None]).T


def rank_label_issues(y, probs, names, labels, method="self_confidence", aggregate="softmin"):
    """Every training image ranked by how likely its tags are wrong, worst first.

    y: (N, L) 0/1 given tags; probs: (N, L) out-of-fold probabilities; names: N image
    names; labels: L tags; method: cleanlab's per-class score (METHODS); aggregate: how
    the tags' scores make the image score (AGGREGATES). Returns a
    DataFrame with COLUMNS: rank (1 = most suspicious), image_name, tag (the image's
    lowest-scoring tag), given (its 0/1), probability (its OOF probability), tag_score,
    score (cleanlab's image score), issue (flagged by find_label_issues), given_tags.
    """
    # lazy: cleanlab (and its own imports) load only when images are ranked, not for --help
    from cleanlab.multilabel_classification import filter as cl_filter
    from cleanlab.multilabel_classification import rank as cl_rank

    if method not in METHODS:
        raise DataError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if aggregate not in AGGREGATES:
        raise DataError(f"--aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, np.float64)
    given = [list(np.flatnonzero(row)) for row in y]
    per_tag = cl_rank.get_label_quality_scores_per_class(given, probs, method=method)  # (N, L)
    score = cl_rank.get_label_quality_scores(given, probs, method=method, aggregator_kwargs=AGGREGATES[aggregate])
    # n_jobs=1: cleanlab's worker pool, forked from a process that has loaded torch, can deadlock
    issue = cl_filter.find_label_issues(given, probs, n_jobs=1)
    worst = per_tag.argmin(1)
    rows = np.arange(len(y))
    lab = np.asarray(labels)
    df = pd.DataFrame({"image_name": list(names), "tag": lab[worst], "given": y[rows, worst],
                       "probability": probs[rows, worst], "tag_score": per_tag[rows, worst], "score": score,
                       "issue": issue, "given_tags": [" ".join(lab[row.astype(bool)]) for row in y]})
    df = df.sort_values(["score", "tag_score"], kind="stable").reset_index(drop=True)
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    return df


CELL_INCHES = 2.0      # width of one image's column of the contact sheet
CAPTION_CHARS = 34     # characters of a caption line at 7 pt in that width


def _caption(r):
    """Lines above one image: '#rank name' (shortened) and its given tags, wrapped to the cell."""
    head = f"#{r.rank} {r.image_name}"
    head = head if len(head) <= CAPTION_CHARS else head[:CAPTION_CHARS - 1] + "…"
    return [head] + textwrap.wrap(f"given: {r.given_tags or '(none)'}", CAPTION_CHARS)


def contact_sheet(table, images, path, cols=6, title=None):
    """A PNG grid of images with their given tags and the suspicious tag in red.

    table: the first rows of rank_label_issues; images: one uint8 (H, W, 3) per row;
    path: PNG written atomically; cols: images per row (at most len(table)). A suspicious
    tag given as 1 reads '-tag? p=0.03' (probably absent), one given as 0 reads
    '+tag? p=0.97' (probably missing). Returns the Path.
    """
    fig = draw_contact_sheet(table, images, cols, title)
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=80))
    return Path(path)


def draw_contact_sheet(table, images, cols=6, title=None):
    """The Figure of contact_sheet: the title (wrapped to the sheet's width), each image's
    caption lines above it and its red line below each get their own room, for any number
    of rows and columns."""
    n = len(table)
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    captions = [_caption(r) for r in table.itertuples()]
    head = textwrap.wrap(title or "most suspicious labels (red: the tag to check)", int(cols * CAPTION_CHARS * 0.7))
    lines = max((len(c) for c in captions), default=2)
    fig = Figure(figsize=(cols * CELL_INCHES, rows * (1.9 + 0.13 * lines + 0.25) + 0.2 * len(head) + 0.2),
                 layout="constrained")  # constrained layout keeps the title, captions and red lines apart
    FigureCanvasAgg(fig)
    for k, (r, img, caption) in enumerate(zip(table.itertuples(), images, captions)):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        sign = "-" if r.given else "+"
        ax.set_title("\n".join(caption), fontsize=7)
        ax.set_xlabel(f"{sign}{r.tag}? p={r.probability:.2f}", color="red", fontsize=8, fontweight="bold")
    fig.suptitle("\n".join(head), fontsize=10)
    return fig
