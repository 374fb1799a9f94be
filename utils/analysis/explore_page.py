"""The error explorer's page: an Explorer (utils/analysis/explore.py) as one self-contained HTML file.

Probabilities travel quantised to uint16 (q = round(p * QUANT)), label-major, little-endian and
base64-encoded; the given tags as bits, one row of N bits per label. The page decodes them and
decides, as utils/metrics/thresholds.py `binarize` does, that a label is predicted when
q / QUANT >= its threshold; its F2 is the competition's F2 averaged over images
(utils/metrics/fbeta.py, an image with no true and no predicted tag scoring `zero_division`).
A probability moves by at most 1 / (2 QUANT) (7.6e-6), except that each model's decisions at
its starting thresholds are kept exactly: a value on the wrong side of its label's starting
threshold is moved to the nearest step on the right side (a tiny threshold, 1e-26, still splits
probabilities of 1e-30 from 1e-20; order within a label is kept). So the page starts at the F2
of the unquantised file, and a moved threshold decides otherwise only for images within
1 / (2 QUANT) of it.

Thumbnails are made only for what a gallery can show at the starting thresholds, give or take
`margin`: per model and label the `gallery` negatives of highest probability (false positives)
and positives of lowest probability (false negatives), the first images of each cell of the
"missed A while predicting B" matrix, and the `gallery` images on which each pair of models
disagrees most. The page shows any other image by name and tags, without a picture. The page
is rendered with the jinja2 template utils/analysis/templates/explore.html.j2; nothing in it is
loaded from elsewhere.
"""
import base64
import io
import json
import logging
import sys
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from PIL import Image
from tqdm import tqdm

from utils.metrics.fbeta import ZERO_DIVISION, fbeta_samples

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = "explore.html.j2"
QUANT = 65535
FORMATS = {"jpeg": ("JPEG", "image/jpeg", {"quality": 80}), "webp": ("WEBP", "image/webp", {"quality": 75})}


def page_thresholds(thresholds):
    """(L,) the thresholds as the page holds them: clipped to [0, 1] (a range control's span) and kept to
    15 significant digits (what the control keeps of a value)."""
    return np.array([float(f"{t:.15g}") for t in np.clip(np.asarray(thresholds, np.float64), 0.0, 1.0)])


def cut(t):
    """The page's cut of a threshold t in [0, 1]: the smallest integer q with q / QUANT >= t."""
    c = max(0, int(np.ceil(t * QUANT)))
    while c > 0 and (c - 1) / QUANT >= t:
        c -= 1
    while c <= QUANT and c / QUANT < t:
        c += 1
    return c


def quantise(probs, thresholds=None):
    """(N, L) probabilities -> uint16 (N, L): round(p * QUANT), p clipped to [0, 1].

    thresholds: (L,) starting thresholds or None. Given, each label's values on the wrong side of its
    threshold's cut (page_thresholds, cut) move to the nearest step on the right side, so that
    decide(q, page_thresholds(thresholds)) equals probs >= thresholds exactly (monotone: the order of
    the probabilities within a label is kept, ties aside)."""
    p = np.asarray(probs, np.float64)
    q = np.rint(np.clip(p, 0.0, 1.0) * QUANT).astype(np.int64)
    if thresholds is not None:
        raw = np.asarray(thresholds, np.float64)
        for j, t in enumerate(page_thresholds(raw)):
            c = cut(t)
            on = p[:, j] >= raw[j]
            q[:, j] = np.where(on, np.maximum(q[:, j], c), np.minimum(q[:, j], c - 1))
    return np.clip(q, 0, QUANT).astype(np.uint16)


def decide(q, thresholds):
    """The page's decisions: uint8 (N, L) of q / QUANT >= thresholds. q: uint16 (N, L); thresholds: (L,)."""
    return (q.astype(np.float64) / QUANT >= np.asarray(thresholds, np.float64)).astype(np.uint8)


def page_f2(y, q, thresholds, beta=2.0, zero_division=ZERO_DIVISION):
    """The F2 the page shows: F-beta averaged over images of `decide(q, thresholds)` against y (N, L)."""
    return fbeta_samples(y, decide(q, thresholds), beta, zero_division)


def _first(rows, keys, k):
    """The first k of `rows` ordered by `keys` (lexsort order: last key first)."""
    return rows[np.lexsort(keys)][:k] if rows.size else rows


def gallery_rows(y, q, thresholds, k, margin):
    """Rows the false-positive and false-negative galleries of one model can show while each threshold
    stays within `margin` of `thresholds`: per label the k negatives of highest probability at or above
    t - margin, and the k positives of lowest probability below t + margin (the page's orders: ties by
    row, as its counting sort). y: (N, L) 0/1; q: uint16 (N, L). Returns a set of rows."""
    p = q.astype(np.float64) / QUANT
    rows = set()
    for j, t in enumerate(np.asarray(thresholds, np.float64)):
        neg, pos = np.flatnonzero(y[:, j] == 0), np.flatnonzero(y[:, j] == 1)
        fp = _first(neg, (neg, -q[neg, j].astype(np.int64)), k)
        fn = _first(pos, (-pos, q[pos, j].astype(np.int64)), k)
        rows.update(fp[p[fp, j] >= t - margin].tolist())
        rows.update(fn[p[fn, j] < t + margin].tolist())
    return rows


def matrix_rows(y, q, thresholds, per_cell):
    """Rows of the "missed A while predicting B" cells at `thresholds`: for each pair, the first
    `per_cell` images (highest probability of B first) whose tag A was missed while B, not a given
    tag, was predicted. Returns a set of rows."""
    pred = decide(q, thresholds).astype(bool)
    missed = (y == 1) & ~pred
    rows = set()
    for b in range(y.shape[1]):
        cand = np.flatnonzero(pred[:, b] & (y[:, b] == 0))
        if not cand.size:
            continue
        cand = cand[np.lexsort((cand, -q[cand, b].astype(np.int64)))]
        hits = missed[cand]
        keep = hits & (np.cumsum(hits, axis=0) <= per_cell)
        rows.update(cand[keep.any(axis=1)].tolist())
    return rows


def disagreement_rows(qa, qb, k):
    """The k rows on which two models disagree most: the largest sum over labels of |qa - qb| first,
    ties by row, as the page orders them. qa, qb: uint16 (N, L). Returns int array (k,)."""
    score = np.abs(qa.astype(np.int64) - qb.astype(np.int64)).sum(1)
    return np.lexsort((np.arange(len(score)), -score))[:k]


def thumbnail_rows(ex, quantised, gallery, margin):
    """Sorted rows of every image a gallery of the page can show at its starting thresholds
    (gallery_rows, matrix_rows and disagreement_rows of every model and pair)."""
    rows = set()
    for m, q in zip(ex.models, quantised):
        start = page_thresholds(m.thresholds)
        rows |= gallery_rows(ex.y, q, start, gallery, margin)
        rows |= matrix_rows(ex.y, q, start, max(1, gallery // 6))
    for a in range(len(quantised)):
        for b in range(a + 1, len(quantised)):
            rows.update(disagreement_rows(quantised[a], quantised[b], gallery).tolist())
    return sorted(rows)


def thumbnails(files, rows, size, fmt="jpeg"):
    """{row: data: URI} of the images `files[row]` for `rows`, size x size px, in FORMATS[fmt].

    A missing (None) or unreadable file gets no entry (the page shows its name without a picture).
    A tqdm bar counts the images."""
    from utils.data.cache import decode_image

    kind, mime, options = FORMATS[fmt]
    uris, failed = {}, []
    # closed on any exit, so that no message lands on its line; where stderr is no terminal (a log file,
    # where clearing the line cannot work) it ends with its own line break
    with tqdm(rows, desc="thumbnails", unit="img", leave=not sys.stderr.isatty()) as bar:
        for i in bar:
            if files[i] is None:
                continue
            try:
                pixels = decode_image(files[i], size)
            except (OSError, ValueError) as e:
                failed.append(f"{files[i]}: {e}")
                continue
            buf = io.BytesIO()
            Image.fromarray(pixels[..., :3]).save(buf, kind, **options)
            uris[i] = f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    if failed:
        log.warning("%d image(s) could not be read and are shown without a picture, e.g. %s", len(failed), failed[0])
    return uris


def _b64(array):
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def payload(ex, quantised, thumbs, gallery, beta=2.0, zero_division=ZERO_DIVISION):
    """The JSON-ready data the page decodes.

    truth: base64 of np.packbits(y.T) (L rows of ceil(N / 8) bytes); per model `probs`: base64 of
    its quantised (L, N) uint16 little-endian, `thresholds` (L,) as page_thresholds (what a range
    control holds), `covered` (L,) bool; thumbs: {row: data URI}; flagged: {row: tags to check}.
    """
    models = [{"name": m.name, "source": m.source, "covered": [bool(c) for c in m.covered],
               "thresholds": [float(t) for t in page_thresholds(m.thresholds)],
               "probs": _b64(q.T.astype("<u2"))} for m, q in zip(ex.models, quantised)]
    return {"labels": list(ex.labels), "names": list(ex.names), "quant": QUANT, "gallery": int(gallery),
            "beta": float(beta), "zero_division": float(zero_division),
            "truth": _b64(np.packbits(ex.y.T.astype(bool), axis=1)), "models": models,
            "thumbs": {str(i): u for i, u in thumbs.items()},
            "flagged": {str(i): " ".join(tags) for i, tags in ex.flagged.items()}}


def render_page(data, title, thumb_size, notes=()):
    """The HTML text: the template with `data` (a `payload`) embedded as JSON."""
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    # '<' escaped inside JSON strings: no name can end the script element early
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return env.get_template(TEMPLATE).render(title=title, data_json=text, labels=data["labels"],
                                             start=data["models"][0]["thresholds"], thumb_size=int(thumb_size),
                                             models=[m["name"] for m in data["models"]],
                                             n_images=len(data["names"]), notes=list(notes))


def build_page(ex, title, gallery=50, thumb_size=80, fmt="jpeg", margin=0.1):
    """(HTML text, summary dict) of an Explorer: thumbnails made for `thumbnail_rows`, data embedded.

    summary: thumbnails (count), f2 ({model name: the F2 the page starts at}), bytes (of the HTML).
    """
    quantised = [quantise(m.probs, m.thresholds) for m in ex.models]
    rows = thumbnail_rows(ex, quantised, gallery, margin)
    thumbs = thumbnails(ex.files, rows, thumb_size, fmt)
    html = render_page(payload(ex, quantised, thumbs, gallery), title, thumb_size, ex.notes)
    f2 = {m.name: page_f2(ex.y, q, page_thresholds(m.thresholds)) for m, q in zip(ex.models, quantised)}
    return html, {"thumbnails": len(thumbs), "f2": f2, "bytes": len(html.encode("utf-8"))}
