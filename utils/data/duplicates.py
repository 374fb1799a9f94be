"""Near-duplicate images by perceptual hashes: pairs, groups, leaks, group-aware folds.

Winners of image competitions look for copies before they train: the Human Protein
Atlas 2018 winner removed ~6,000 near-duplicates found by perceptual hashes and
copied the training labels of ~1,000 test images that had a training copy. Here:

- every train and test image gets a 64-bit pHash (DCT of a 32x32 grey image) and a
  64-bit dHash (signs of horizontal gradients of a 9x8 grey image), both from the
  `imagehash` package, and an 8x8 RGB thumbnail, each of the whole image and of its
  centre (4% cut from each side); computed from the decoded uint8 cache
  (utils/data/cache.py) and cached on disk under the same key;
- two images are near-duplicates when the summed Hamming distance of their pHashes
  and dHashes is at most `max_distance` (of 128 bits) and their colour difference at
  most `max_colour` (of 255): the mean absolute difference of their thumbnails' chroma
  (each pixel's R, G, B less its grey mean). Grey hashes alone pair a red and a blue
  version of one product photo; the chroma sees the colour and not the edges a crop
  moves. Each is the smallest over the views whole/whole, whole/centre and
  centre/whole, so a copy cropped by 3-5% per side still matches. This replaced a
  42-bit colour hash (hue/saturation bin fractions), which moved by 2-8 bits under a
  JPEG re-encode or a 1-px crop of a flat synthetic image and could not tell such
  copies from hue-rotated recolours; a plain RGB thumbnail difference could not either
  on high-contrast synthetic images, whose crops move it as much as a recolour
  (EXPERIMENTS.md "Near-duplicates beyond photos" measures planted copies, recolours
  and distinct images on photos and on synthetic images to choose the defaults);
- pairs become groups by connected components (scipy.sparse.csgraph);
- folds keep each group in one fold (`group_folds`), so a copy never sits on both
  sides of a validation split.

All pairs are compared exactly by a chunked, vectorised XOR + popcount over packed
hashes (numpy.bitwise_count), memory O(chunk x N); bench/duplicates.py measures the
time per pair. At a radius of ~10 bits of 128, a BK-tree or multi-index hashing
prunes little and adds Python-level bookkeeping.
"""
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from utils.common.atomic import atomic_write
from utils.common.errors import DataError, report_problems
from utils.common.text import read_csv
from utils.data.cache import cache_key, load_images
from utils.data.dataset import name_key

log = logging.getLogger(__name__)

HASH_VERSION = 2           # bump when the hashes or their source images change
HASH_SIZE = 64             # px: side of the cached image the hashes are computed from
VIEWS = (0.0, 0.04)        # fraction cut from each side: the whole image, and its centre
VIEW_PAIRS = ((0, 0), (0, 1), (1, 0))
DEFAULT_MAX_DISTANCE = 10  # bits of 128 (pHash + dHash); EXPERIMENTS.md "Near-duplicates"
DEFAULT_MAX_COLOUR = 4.0   # of 255: colour difference (colour_difference); EXPERIMENTS.md
THUMB = 8                  # px: side of the thumbnails
DUPLICATES_FILE = "duplicates.csv"
COLUMNS = ["image_a", "image_b", "split_a", "split_b", "distance"]  # then colour_difference


# ----------------------------------------------------------------------------- hashes

def _pack(h):
    """imagehash.ImageHash -> uint64 (bits beyond 64 are not used by the hashes here)."""
    bits = np.asarray(h.hash, bool).ravel()
    return np.packbits(np.pad(bits, (0, 64 - len(bits)))).view(">u8")[0]


@dataclass
class Hashes:
    """What two images are compared by: grey uint64 (N, 2, 2) hashes ([:, view, 0] pHash,
    [..., 1] dHash; view 0 the whole image, 1 its centre) and thumbs uint8 (N, 2, THUMB,
    THUMB, 3), the RGB thumbnails of the same views."""
    grey: np.ndarray
    thumbs: np.ndarray

    def __len__(self):
        return len(self.grey)

    @staticmethod
    def concat(parts):
        return Hashes(np.concatenate([p.grey for p in parts]), np.concatenate([p.thumbs for p in parts]))


def image_hashes(images):
    """Hashes of uint8 images (N, H, W, 3) of the views whole and centre (VIEWS[1] cut from
    each side): pHash and dHash from imagehash (github.com/JohannesBuchner/imagehash) and a
    THUMB x THUMB RGB thumbnail. pHash and dHash see grey levels only, so a red and a blue
    version of one product photo match; their thumbnails tell them apart. Returns Hashes.
    """
    import imagehash  # lazy: only tools/near_duplicates.py hashes images; reading duplicates.csv needs no imagehash

    lanczos = Image.Resampling.LANCZOS
    out = Hashes(np.zeros((len(images), len(VIEWS), 2), np.uint64),
                 np.zeros((len(images), len(VIEWS), THUMB, THUMB, 3), np.uint8))
    for i in tqdm(range(len(images)), desc="hashes", unit="img", leave=False, dynamic_ncols=True):
        im = Image.fromarray(np.asarray(images[i])).convert("RGB")
        w, h = im.size
        for c, f in enumerate(VIEWS):
            box = (f * w, f * h, w - f * w, h - f * h)  # sub-pixel crop while resizing
            small = im.resize((32, 32), lanczos, box=box)
            out.grey[i, c] = (_pack(imagehash.phash(small)),
                              _pack(imagehash.dhash(im.resize((9, 8), lanczos, box=box))))
            out.thumbs[i, c] = np.asarray(im.resize((THUMB, THUMB), Image.Resampling.BOX, box=box))
    return out


def cached_hashes(files, cache_dir, desc, size=HASH_SIZE):
    """Hashes (image_hashes) of image files, from DIR/hashes-<desc>-<size>px-<key>.npz.

    The key covers the hash version, the size and every file's path, byte size and
    mtime (utils.data.cache.cache_key); images come from the uint8 cache at `size` (built
    when missing). Raises DataError for undecodable images (from load_images).
    """
    cache_dir = Path(cache_dir)
    key = hashlib.sha1(f"h{HASH_VERSION}t{THUMB}|{cache_key(files, size)}".encode()).hexdigest()[:16]
    tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in desc)
    path = cache_dir / f"hashes-{tag}-{size}px-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return Hashes(z["grey"], z["thumbs"])
    hashes = image_hashes(load_images(files, size, cache_dir, desc=desc))
    for old in (*cache_dir.glob(f"hashes-{tag}-{size}px-*.npy"), *cache_dir.glob(f"hashes-{tag}-{size}px-*.npz")):
        old.unlink(missing_ok=True)
    atomic_write(path, lambda f: np.savez(f, grey=hashes.grey, thumbs=hashes.thumbs))
    return hashes


def hamming(a, b):
    """Hamming distances between hash rows: uint64 (..., H) x (..., H) -> int64 (...), summed over H."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(-1).astype(np.int64)


def distance(a, b):
    """pHash + dHash Hamming distance of grey hashes (..., 2, 2) x (..., 2, 2) -> int64 (...)
    (0..128 bits), the smallest over the view pairs whole/whole, whole/centre and
    centre/whole, so a copy cropped by a few percent per side meets its original's centre."""
    return np.min([hamming(a[..., p, :], b[..., q, :]) for p, q in VIEW_PAIRS], 0)


def colour_difference(thumbs, i, j, chroma=True):
    """Mean absolute difference (0..255) of the thumbnails of images i and j (int arrays (P,)),
    the smallest over the view pairs as `distance`: thumbs uint8 (N, 2, T, T, 3) -> float64 (P,).

    chroma: compare each pixel's R, G, B less its grey mean (the colour difference of the
    gate: planted re-encodes, resizes and crops moved it by at most 3.4, visible hue-rotated
    recolours by at least 5.6, on photos and synthetic images, EXPERIMENTS.md); False: plain RGB.
    """
    out = np.full(len(i), np.inf)
    for s in range(0, len(i), 4096):
        a, b = (np.asarray(thumbs[k[s:s + 4096]], np.float32) for k in (i, j))
        if chroma:
            a, b = a - a.mean(-1, keepdims=True), b - b.mean(-1, keepdims=True)
        out[s:s + 4096] = np.min([np.abs(a[:, p] - b[:, q]).mean((1, 2, 3)) for p, q in VIEW_PAIRS], 0)
    return out



def close_pairs(hashes, max_distance, max_colour=None, chunk=None):
    """Every pair (i < j) within max_distance of `distance` and max_colour of `colour_difference`.

    hashes: Hashes (image_hashes); max_colour None: no colour condition.
    Returns (i, j, grey int64, colour float64) arrays sorted by (i, j); see grey_pairs.
    """
    i, j, d = grey_pairs(hashes.grey, max_distance, chunk)
    t = colour_difference(hashes.thumbs, i, j)
    keep = t <= max_colour if max_colour is not None else np.ones(len(i), bool)
    return i[keep], j[keep], d[keep], t[keep]


def grey_pairs(grey, max_distance, chunk=None):
    """Every pair (i < j) whose grey hashes (N, 2, 2) are within max_distance of `distance`.

    chunk: rows per block (default: 2**24 // N within 64..512, ~11 bytes x chunk x N of
    buffers, ~200 MB at N = 100,000). Returns (i, j, grey) int64 arrays sorted by (i, j).
    Exact: chunk x N blocks of XOR + popcount (numpy.bitwise_count).
    """
    n = len(grey)
    chunk = chunk or int(np.clip(2**24 // max(n, 1), 64, 512))
    # one contiguous row per (view, hash): XOR over strided rows is an order of magnitude slower
    cols = np.ascontiguousarray(np.asarray(grey, np.uint64).transpose(1, 2, 0))  # (2, 2, N)
    upper = np.triu(np.ones((chunk, chunk), bool), k=1)
    # buffers reused across chunks: fresh chunk x N temporaries cost more in page faults than in XORs
    buf = {name: np.empty(min(chunk, n) * n, dtype) for name, dtype in
           (("xor", np.uint64), ("pop", np.uint8), ("d", np.uint8), ("best", np.uint8))}
    out = [[], [], []]
    for s in tqdm(range(0, n, chunk), desc="pairs", unit="chunk", leave=False, dynamic_ncols=True,
                  disable=n <= 4 * chunk):
        block, rest = cols[:, :, s:s + chunk], cols[:, :, s:]
        shape = (block.shape[2], rest.shape[2])
        x, pop, d, best = (buf[k][:shape[0] * shape[1]].reshape(shape) for k in ("xor", "pop", "d", "best"))
        for v, (p, q) in enumerate(VIEW_PAIRS):
            target = best if v == 0 else d
            target.fill(0)
            for h in (0, 1):
                np.bitwise_xor(block[p, h][:, None], rest[q, h][None, :], out=x)
                target += np.bitwise_count(x, out=pop)
            if v:
                np.minimum(best, d, out=best)
        ok = best <= max_distance
        m = min(chunk, ok.shape[0])
        ok[:, :m] &= upper[:m, :m]  # pairs i < j only: the chunk's diagonal block
        r, c = np.divmod(np.flatnonzero(ok), ok.shape[1])
        for lst, vals in zip(out, (r + s, c + s, best[r, c])):
            lst.append(vals.astype(np.int64))
    return tuple(np.concatenate(v) if v else np.zeros(0, np.int64) for v in out)


def components(n, i, j):
    """Group id (0..G-1) of each of n nodes given edges (i, j): connected components."""
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# ----------------------------------------------------------------------------- pairs of a dataset

@dataclass
class Duplicates:
    """Near-duplicate pairs of a dataset.

    names: train then test image names (N); split: 'train'/'test' per name; pairs:
    DataFrame with COLUMNS (one row per pair, image_a before image_b in `names`);
    group: (N,) connected-component id (singletons have their own id); i, j: int64
    positions in `names` of each pair's images (a train and a test image may share a name).
    """
    names: list
    split: list
    pairs: pd.DataFrame
    group: np.ndarray
    i: np.ndarray
    j: np.ndarray


def find_duplicates(spec, cache_dir, max_distance=DEFAULT_MAX_DISTANCE, max_colour=DEFAULT_MAX_COLOUR,
                    size=HASH_SIZE):
    """Near-duplicate pairs among a DataSpec's train and test images (see module doc and close_pairs)."""
    h = cached_hashes(spec.files, cache_dir, spec.images, size)
    if spec.test_files:
        h = Hashes.concat([h, cached_hashes(spec.test_files, cache_dir, spec.test_images, size)])
    names = list(spec.names) + list(spec.test_names)
    split = ["train"] * len(spec.names) + ["test"] * len(spec.test_names)
    i, j, d, t = close_pairs(h, max_distance, max_colour)
    pairs = pd.DataFrame({"image_a": [names[k] for k in i], "image_b": [names[k] for k in j],
                          "split_a": [split[k] for k in i], "split_b": [split[k] for k in j], "distance": d,
                          "colour_difference": t.round(2)})
    return Duplicates(names, split, pairs, components(len(names), i, j), i, j)


def read_duplicates(path):
    """duplicates.csv -> DataFrame with COLUMNS; DataError naming the file for wrong columns or values."""
    path = Path(path)
    try:
        df = read_csv(path, dtype={"image_a": str, "image_b": str, "split_a": str, "split_b": str},
                      keep_default_na=False)
    except DataError as e:  # empty or unparsable file
        raise DataError(f"{e}; rerun tools/near_duplicates.py") from e
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected {','.join(COLUMNS)} "
                        f"(rerun tools/near_duplicates.py)")
    bad = ~df["split_a"].isin(["train", "test"]) | ~df["split_b"].isin(["train", "test"])
    if bad.any():
        raise DataError(f"{path} row {int(np.flatnonzero(bad)[0]) + 2}: split must be train or test")
    return df


def train_groups(path, names):
    """Group id per training image from the train-train pairs of a duplicates.csv.

    names: the training image names (train.csv order). Returns int64 (N,): images in
    one connected component share an id; an image without a copy has its own id.
    Raises DataError naming the file and rows whose train images are not in `names`.
    """
    df = read_duplicates(path)
    tt = df[(df["split_a"] == "train") & (df["split_b"] == "train")]
    index = {name_key(n): k for k, n in enumerate(names)}
    problems = [f"row {r + 2}: train image {n!r} is not in train.csv"
                for r, a, b in zip(tt.index, tt["image_a"], tt["image_b"]) for n in (a, b) if name_key(n) not in index]
    report_problems(f"{path}: stale near-duplicate pairs; rerun tools/near_duplicates.py", problems)
    i = np.array([index[name_key(n)] for n in tt["image_a"]], np.int64)
    j = np.array([index[name_key(n)] for n in tt["image_b"]], np.int64)
    return components(len(names), i, j).astype(np.int64)


def group_folds(y, groups, k=5, seed=42):
    """Fold id per row such that rows sharing a group share a fold.

    y: (N, L) 0/1 labels; groups: (N,) group ids. The group-level label vector is the
    union (max) of its rows' labels; groups are split by iterative stratification
    (iterstrat MultilabelStratifiedKFold, Sechidis et al. 2011) and each row gets its
    group's fold. Raises DataError when there are fewer groups than folds.
    """
    from utils.data.folds import stratify_target  # here, not at the top: utils.data.folds imports this module

    uniq, inv = np.unique(groups, return_inverse=True)
    if len(uniq) < k:
        raise DataError(f"{len(uniq)} duplicate groups cannot be split into {k} folds")
    gy = np.zeros((len(uniq), np.shape(y)[1]), np.uint8)
    np.maximum.at(gy, inv, np.asarray(y, np.uint8))
    gfold = np.zeros(len(uniq), np.int64)
    mskf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for f, (_, val) in enumerate(mskf.split(np.zeros((len(uniq), 1)), stratify_target(gy))):
        gfold[val] = f
    return gfold[inv]


def split_groups(groups, folds):
    """Groups (ids) whose rows fall in more than one fold: list of (group id, sorted folds)."""
    df = pd.DataFrame({"g": groups, "f": folds})
    nf = df.groupby("g")["f"].nunique()
    return [(int(g), sorted(df.loc[df["g"] == g, "f"].unique().tolist())) for g in nf.index[nf > 1]]


# ----------------------------------------------------------------------------- reports

def group_table(dups, y_train, labels):
    """One row per group of two or more images: group, kind (train, test, train+test),
    size, images, and for groups with training images whether their tags agree.

    y_train: (N_train, L) labels of the train images (first N_train of dups.names).
    """
    n_train = len(y_train)
    labels = np.asarray(labels)
    rows = []
    ids, counts = np.unique(dups.group, return_counts=True)
    for g in ids[counts > 1]:
        members = np.flatnonzero(dups.group == g)
        tr = members[members < n_train]
        te = members[members >= n_train]
        tags = sorted({" ".join(labels[y_train[m].astype(bool)]) for m in tr})
        kind = "+".join(s for s, m in (("train", tr), ("test", te)) if len(m))
        rows.append({"group": int(g), "kind": kind, "size": len(members), "n_train": len(tr), "n_test": len(te),
                     "labels_agree": len(tags) <= 1 if len(tr) else None,
                     "train_tags": " / ".join(tags), "images": " ".join(dups.names[m] for m in members)})
    return pd.DataFrame(rows, columns=["group", "kind", "size", "n_train", "n_test", "labels_agree",
                                       "train_tags", "images"])


def leaked_labels(dups, y_train):
    """Test images with training copies and the mean of their copies' labels.

    Returns (test names, float64 (T, L)): one row per test image that is paired directly
    (not through a chain) with at least one training image; 1/0 when the copies agree.
    """
    n_train = len(y_train)
    partners = {}
    for a, b in zip(dups.i.tolist(), dups.j.tolist()):  # a < b: a train image comes first
        if a < n_train <= b:
            partners.setdefault(b, set()).add(a)
    order = sorted(partners)
    probs = np.array([np.asarray(y_train)[sorted(partners[t])].mean(0) for t in order], np.float64)
    return [dups.names[t] for t in order], probs.reshape(len(order), np.shape(y_train)[1])


def summary(dups, table):
    """Counts for the report: pairs by split kind, groups by kind, disagreeing train groups."""
    p = dups.pairs
    # astype(str): with no pairs the columns are empty float columns, which cannot be joined
    kinds = (p["split_a"].astype(str) + "-" + p["split_b"].astype(str)).replace({"test-train": "train-test"})
    return {"pairs": len(p), "train-train pairs": int((kinds == "train-train").sum()),
            "train-test pairs": int((kinds == "train-test").sum()),
            "test-test pairs": int((kinds == "test-test").sum()),
            "groups": len(table), "train groups with disagreeing labels": int(table["labels_agree"].eq(False).sum()),
            "test images with a train copy": int(((table["kind"] == "train+test") * table["n_test"]).sum()),
            "test-only groups": int((table["kind"] == "test").sum())}


def report_markdown(counts, table, max_distance, max_colour, top=30):
    """The report as markdown: counts, then the groups whose labels disagree, leaks and test groups."""
    lines = [f"# Near-duplicates (pHash + dHash distance <= {max_distance} of 128 bits, "
             f"colour difference <= {max_colour:g} of 255)", ""]
    lines += [f"- {k}: {v}" for k, v in counts.items()] + [""]
    sections = [("Training groups whose labels disagree (label noise)", table["labels_agree"].eq(False)),
                ("Train-test groups (leaks)", table["kind"] == "train+test"),
                ("Test-only groups", table["kind"] == "test")]
    for title, sel in sections:
        sub = table[sel]
        lines += [f"## {title}: {len(sub)}", ""]
        if len(sub):
            lines += ["| group | size | train tags | images |", "|---:|---:|---|---|"]
            lines += [f"| {r.group} | {r.size} | {r.train_tags} | {r.images} |" for r in sub.head(top).itertuples()]
            if len(sub) > top:
                lines.append(f"\n... and {len(sub) - top} more in the CSV")
        lines.append("")
    return "\n".join(lines)
