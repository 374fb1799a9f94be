"""Multi-label "mosaic" dataset from real Fashion-MNIST photos, in the Kaggle/Planet layout.

Every image is a 2x2 or 3x3 grid of garment photos (Xiao et al. 2017, Fashion-MNIST,
28x28 greyscale), each cell upscaled to fill its share of the output side and tinted;
its tags are the garment classes present. Class densities are as skewed as in the
competition this project grew from: two tags on about 90% of the images, two below 1%
(DENSITIES). Train images are built from the npz's training photos, test images from
its test photos only, so no photo is shared between the splits; the test labels go to
test_labels.csv (the withheld answers), which nothing in the project reads unless told to.

Tints: with colours=0 (the default) each cell gets a random RGB colour that is never a
tag, so colour augmentation is label-preserving. With colours=N (1..14) each image draws
one or two of the first N named COLOURS (two with probability TWO_COLOURS), the
frequent ones far more often than the rare ones (COLOUR_WEIGHTS: with all 14, blue on
about 41% of the images, the rarest on 1-5%; colour_densities), every garment cell is
tinted with one of the image's colours (each of them on at least one cell), and each
colour present is a tag `colour_<name>` (colour_tags) listed after the garments, so 10 +
N labels. Colour then is a label: colour augmentation (hue rotation, channel swaps)
changes the answer.

Output is deterministic: labels come from one generator per (seed, split) (garments
first, then colours, so a dataset's garment tags do not depend on colours) and each
image from its own generator seeded by (seed, split, index).
"""
import logging
import shutil
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from utils.data.demo import check_settings, move_into_place, tag_frequencies
from utils.common.atomic import atomic_write_csv, atomic_write_text
from utils.common.errors import DataError, report_problems
from utils.common.text import read_text

log = logging.getLogger(__name__)

# Fashion-MNIST class ids 0..9, in order; this is also the label order (labels.txt).
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle_boot")
# Fraction of images carrying each class (CLASSES order). Values are the competition's
# densities (see utils.data.demo): the 3rd and the 5th-from-last tags near 90%, as in the notes.
DENSITIES = (1 / 12.8, 1 / 210, 1 / 1.1, 1 / 2.8, 1 / 6.18, 1 / 1.11, 1 / 40.5, 1 / 7.7, 1 / 14.79, 1 / 156)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_TAGS = 9  # a 3x3 grid holds at most nine classes

# Named tints (RGB), most frequent first; --colours N uses the first N. A cell's pixels are
# photo/255 * tint, so only a tint's chromaticity (tint / its largest channel) tells colours
# apart: no two differ by less than 0.3 there (no "navy" beside "blue": it would only be darker).
COLOURS = (("blue", (40, 90, 255)), ("white", (255, 255, 255)), ("red", (235, 35, 35)),
           ("green", (40, 200, 50)), ("yellow", (245, 225, 20)), ("pink", (255, 120, 190)),
           ("orange", (255, 135, 0)), ("purple", (145, 55, 235)), ("cyan", (0, 215, 230)),
           ("brown", (190, 125, 75)), ("lime", (130, 235, 20)), ("magenta", (235, 30, 215)),
           ("teal", (0, 210, 120)), ("lavender", (190, 165, 255)))
MAX_COLOURS = len(COLOURS)
# Relative odds of each colour (COLOURS order) being drawn; the first N are renormalised.
COLOUR_WEIGHTS = (30, 20, 12, 8, 6, 5, 4, 3, 2.5, 2, 1.5, 1.2, 1, 0.8)
TWO_COLOURS = 0.4  # probability that an image has a second colour (with at least two colours to draw from)

_SPLITS = {"train": 0, "test": 1}
_EMPTY = -1  # a cell left black


# How to get the npz load_npz needs; nothing here downloads it.
OBTAIN = ("Fashion-MNIST as such an .npz: in Python, `from keras.datasets import fashion_mnist; "
          "(x_train, y_train), (x_test, y_test) = fashion_mnist.load_data(); numpy.savez('fashion_mnist.npz', "
          "x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)`, or the same from the four .gz files of "
          "github.com/zalandoresearch/fashion-mnist (data/fashion, read with its utils/mnist_reader.py load_mnist)")


def _what_file(path):
    """What a file that is not a zip archive looks like, from its first bytes (for messages)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file (the raw Fashion-MNIST files are gzip'd IDX: convert them as below)"
    if head.startswith(b"\x80"):
        return "a Python pickle"
    return "not a zip archive"


def load_npz(path):
    """Read a Fashion-MNIST npz: {"train": (x, y), "test": (x, y)}.

    x: (N, H, W) uint8 photos ((N, H, W, 1) is squeezed); y: (N,) int64 class ids in
    0..len(CLASSES)-1. Raises DataError naming the file for a missing or unreadable
    file, missing keys (listing the keys it has), wrong shapes or dtypes, class ids out
    of range, or a class without any photo in a split.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; pass --npz the Fashion-MNIST .npz (keys {', '.join(NPZ_KEYS)})")
    need = (f"--npz needs a numpy .npz with arrays {', '.join(NPZ_KEYS)} (uint8 photos (N, 28, 28), integer "
            f"class ids 0..{len(CLASSES) - 1}). {OBTAIN}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz file ({_what_file(path)}); {need}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {', '.join(missing)}; the file has "
                                f"{', '.join(z.files[:10]) or 'no arrays'}; {need}")
            arrays = {k: z[k] for k in NPZ_KEYS}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read as .npz ({e})") from e
    problems, out = [], {}
    for split in _SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3 or x.dtype != np.uint8:
            problems.append(f"x_{split}: expected (N, H, W) uint8 photos, got shape {x.shape} {x.dtype}")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            problems.append(f"y_{split}: expected ({len(x)},) integer class ids, got shape {y.shape} {y.dtype}")
        elif len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
            problems.append(f"y_{split}: class ids must be 0..{len(CLASSES) - 1}, got {y.min()}..{y.max()}")
        else:
            absent = [CLASSES[c] for c in range(len(CLASSES)) if not (y == c).any()]
            if absent:
                problems.append(f"y_{split}: no photo of class(es) {', '.join(absent)}")
        out[split] = (x, y.astype(np.int64))
    report_problems(f"{path}: not a Fashion-MNIST npz", problems)
    return out


def sample_labels(n, rng, densities=DENSITIES):
    """Draw an (n, len(CLASSES)) bool label matrix: one Bernoulli per class and image.

    Rows with no class or more than MAX_TAGS classes are redrawn (a grid cannot show
    them); with DENSITIES that touches about 0.4% of rows, so realised densities stay
    within a fraction of a percent of `densities`.
    """
    p = np.asarray(densities, dtype=np.float64)
    y = rng.random((n, len(p))) < p
    bad = ~np.isin(y.sum(1), np.arange(1, MAX_TAGS + 1))
    while bad.any():
        y[bad] = rng.random((int(bad.sum()), len(p))) < p
        bad = ~np.isin(y.sum(1), np.arange(1, MAX_TAGS + 1))
    return y


def colour_tags(n_colours):
    """The tags of the first n_colours COLOURS: colour_blue, colour_white, ..."""
    return [f"colour_{name}" for name, _ in COLOURS[:n_colours]]


def mosaic_labels(n_colours=0):
    """labels.txt of a mosaic dataset with n_colours colours: CLASSES, then colour_tags."""
    return [*CLASSES, *colour_tags(n_colours)]


def _colour_probs(n_colours):
    w = np.asarray(COLOUR_WEIGHTS[:n_colours], np.float64)
    return w / w.sum(), (TWO_COLOURS if n_colours >= 2 else 0.0)


def colour_densities(n_colours):
    """Expected fraction of images carrying each of the first n_colours colours (sample_colours).

    A first colour c comes with probability w_c, a second (probability q) from the rest
    with probability w_c / (1 - w_first), so P(c) = w_c + q * sum_{d != c} w_d w_c / (1 - w_d).
    """
    w, q = _colour_probs(n_colours)
    if n_colours < 2:
        return tuple(w.tolist())
    second = w * ((w / (1 - w)).sum() - w / (1 - w))
    return tuple((w + q * second).tolist())


def sample_colours(n, rng, n_colours):
    """Draw an (n, n_colours) bool matrix: one or two colours per image (see colour_densities)."""
    y = np.zeros((n, n_colours), bool)
    if n_colours == 0:
        return y
    w, q = _colour_probs(n_colours)
    first = rng.choice(n_colours, n, p=w)
    two = np.flatnonzero(rng.random(n) < q)
    second = rng.choice(n_colours, len(two), p=w)
    clash = np.flatnonzero(second == first[two])
    while len(clash):  # redraw from w: the second colour is then drawn from w without the first
        second[clash] = rng.choice(n_colours, len(clash), p=w)
        clash = clash[second[clash] == first[two[clash]]]
    y[np.arange(n), first] = True
    y[two, second] = True
    return y


def layout(row, rng):
    """Grid side (2 or 3) and (side*side,) class id per cell (-1 = empty) for one label row.

    Every class in `row` fills at least one cell; the other cells are left empty or
    repeat a present class (half and half), in random order. A row with at most four
    classes gets a 2x2 grid half of the time.
    """
    present = np.flatnonzero(row)
    side = 2 if len(present) <= 4 and rng.random() < 0.5 else 3
    extra = side * side - len(present)
    fill = np.where(rng.random(extra) < 0.5, _EMPTY, rng.choice(present, extra))
    return side, rng.permutation(np.concatenate([present, fill]))


def draw_mosaic(row, photos, size, rng, tints=None):
    """One RGB PIL image (size x size) for a bool label row (CLASSES order).

    photos: list, per class id, of (M, H, W) uint8 greyscale photos to pick from.
    Each non-empty cell shows a random photo of its class, upscaled (bicubic) to the
    cell and multiplied by a colour; empty cells stay black, like the photos' own
    background. tints: None, a random RGB colour per cell (channels 96..255); or a
    (k, 3) array of the image's colours: each cell gets one of them and each of them
    at least one cell (an empty cell is given a present class if the layout has fewer
    garment cells than colours). All random choices come from `rng`.
    """
    side, cells = layout(row, rng)
    if tints is not None:
        tints = np.asarray(tints, np.float32).reshape(-1, 3)
        shown = np.flatnonzero(cells != _EMPTY)
        if len(shown) < len(tints):
            empty = rng.choice(np.flatnonzero(cells == _EMPTY), len(tints) - len(shown), replace=False)
            cells[empty] = rng.choice(np.flatnonzero(row), len(empty))
            shown = np.flatnonzero(cells != _EMPTY)
        which = np.full(len(cells), -1)
        which[shown] = rng.permutation(np.concatenate(
            [np.arange(len(tints)), rng.integers(len(tints), size=len(shown) - len(tints))]))
    edges = np.linspace(0, size, side + 1).round().astype(int)
    canvas = np.zeros((size, size, 3), np.uint8)
    for k, c in enumerate(cells):
        if c == _EMPTY:
            continue
        pool = photos[c]
        photo = pool[rng.integers(len(pool))]
        colour = rng.integers(96, 256, 3).astype(np.float32) if tints is None else tints[which[k]]
        (y0, y1), (x0, x1) = edges[k // side: k // side + 2], edges[k % side: k % side + 2]
        big = np.asarray(Image.fromarray(photo).resize((x1 - x0, y1 - y0), Image.BICUBIC), np.float32)
        canvas[y0:y1, x0:x1] = (big[..., None] / 255 * colour).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(canvas, "RGB")


def tags_to_str(row, labels=CLASSES):
    """Space-separated names (`labels` order: CLASSES, then any colour tags) of one bool label row."""
    return " ".join(t for t, on in zip(labels, row) if on)


def _write_split(tmp, split, n, data, size, seed, colours=0):
    """Write tmp/split/*.png for n images; return the image_name,tags table."""
    x, y = data
    photos = [x[y == c] for c in range(len(CLASSES))]
    width = max(5, len(str(n)))
    names = [f"{split}_{i + 1:0{width}d}" for i in range(n)]
    label_rng = np.random.default_rng([seed, _SPLITS[split]])
    labels = sample_labels(n, label_rng)
    rgb = np.array([c for _, c in COLOURS[:colours]], np.float32)
    if colours:
        labels = np.concatenate([labels, sample_colours(n, label_rng, colours)], axis=1)
    (tmp / split).mkdir()
    for i, (name, row) in enumerate(tqdm(list(zip(names, labels)), desc=f"mosaic {split}", unit="img",
                                         leave=False)):
        tints = rgb[row[len(CLASSES):]] if colours else None
        draw_mosaic(row[:len(CLASSES)], photos, size, np.random.default_rng([seed, _SPLITS[split], i]),
                    tints).save(tmp / split / f"{name}.png")
    tags = mosaic_labels(colours)
    return pd.DataFrame({"image_name": names, "tags": [tags_to_str(r, tags) for r in labels]})


def make_mosaic(npz, out_dir, size=96, n_train=8000, n_test=2000, seed=0, force=False, colours=0):
    """Build the mosaic dataset from the Fashion-MNIST `npz` in `out_dir`; returns out_dir as a Path.

    Writes train.csv (image_name,tags; names without extension), train/*.png and
    test/*.png (size x size RGB), sample_submission.csv (test order, empty tags),
    labels.txt (mosaic_labels(colours): CLASSES, then colour_<name> of the first
    `colours` COLOURS) and test_labels.csv (the test answers). colours=0: random
    tints that are no tag (the same files as a call without colours);
    1..MAX_COLOURS: named tints that are tags (see the module's docstring). Same npz,
    seed, counts and colours give byte-identical files. Everything is built in a
    hidden sibling folder renamed to out_dir at the end, so an interrupted run leaves
    no half dataset. Raises DataError for a bad npz (see load_npz), invalid counts,
    size, seed or colours, or an out_dir that exists and is not empty (unless force,
    which replaces it).
    """
    if isinstance(colours, bool) or not isinstance(colours, (int, np.integer)) or not 0 <= colours <= MAX_COLOURS:
        raise DataError(f"invalid mosaic settings: colours must be an integer 0..{MAX_COLOURS}, got {colours!r}")
    colours = int(colours)
    out = check_settings("mosaic", out_dir, n_train, n_test, size, seed, force)
    data = load_npz(npz)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        train = _write_split(tmp, "train", n_train, data["train"], size, seed, colours)
        test = _write_split(tmp, "test", n_test, data["test"], size, seed, colours)
        atomic_write_csv(tmp / "train.csv", train)
        atomic_write_csv(tmp / "test_labels.csv", test)
        atomic_write_csv(tmp / "sample_submission.csv", test.assign(tags=""))
        atomic_write_text(tmp / "labels.txt", "\n".join(mosaic_labels(colours)) + "\n")
        move_into_place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("mosaic dataset: %d train + %d test images at %d px, %d labels (%d colours) in %s", n_train, n_test,
             size, len(CLASSES) + colours, colours, out)
    return Path(out_dir)


def mosaic_frequencies(data_dir):
    """Each label's target density and realised train/test frequency (see utils.data.demo.tag_frequencies).

    The labels are those of data_dir/labels.txt (garments, then any colour tags; CLASSES
    if there is none); a label that is neither a class nor a colour tag has density NaN.
    """
    labels_txt = Path(data_dir) / "labels.txt"
    tags = [t for t in read_text(labels_txt).split() if t] if labels_txt.is_file() else list(CLASSES)
    known = dict(zip(mosaic_labels(MAX_COLOURS), DENSITIES + colour_densities(MAX_COLOURS)))
    n_colours = sum(t.startswith("colour_") for t in tags)
    known.update(zip(colour_tags(n_colours), colour_densities(n_colours)))
    return tag_frequencies(data_dir, tags=tags, densities=[known.get(t, np.nan) for t in tags])
