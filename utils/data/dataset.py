"""A dataset in the Kaggle/Planet layout: reading, validation, labels, ground truth.

DATA/train.csv (image_name,tags), DATA/<images>/ (default train/), DATA/test/,
optional sample_submission.csv, labels.txt; folds.csv is utils.data.folds'.

`load_dataset` finds every problem in one pass and raises one DataError listing
them; it only opens image headers (cheap). Pixels are decoded once, when the
uint8 cache is built (utils/data/cache.py), which reports undecodable files the same way.
"""
import logging
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.data.bands import band_problems, check_tiff_header, is_tiff
from utils.common.errors import DataError, preview, report_problems
from utils.common.text import read_csv, read_lines, read_text

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif")
# Images this large are almost always a mistake or an attack; PIL warns then errors.
Image.MAX_IMAGE_PIXELS = 20_000 * 20_000


@dataclass
class DataSpec:
    """Everything a script needs to know about a dataset, validated.

    root: data directory; images: train image folder (the image *variant*);
    labels: label order; names/files/y: train images, their files and (N, L) uint8
    multi-hot tags; test_names/test_files: images to predict (may be empty).
    """
    root: Path
    images: str
    labels: list
    names: list
    files: list
    y: np.ndarray
    test_images: str = "test"
    test_names: list = field(default_factory=list)
    test_files: list = field(default_factory=list)


def name_key(name):
    """An image name as a person sees it: Unicode NFC. macOS writes file names decomposed
    (NFD, 'e' + combining accent) while a CSV typed elsewhere holds them composed (NFC);
    every match of an image name against a file or another list goes through this."""
    return unicodedata.normalize("NFC", name)


def split_tags(s):
    """'a b  c' -> ['a', 'b', 'c']; NaN/empty -> []."""
    if not isinstance(s, str):
        return []
    return s.split()


TAG_SEPARATORS = "|,;"  # what other tools join tags with; tags here are separated by spaces


def joined_tags(tags, known=()):
    """A problem string when tags look joined by a separator other than space, else None.

    tags: per row, the list of `split_tags`; known: labels.txt's labels (a tag listed there is
    meant). Names the separator, how many rows and the first of them (train.csv row numbers),
    and what to do: every joined string would otherwise train as one label of its own.
    """
    for sep in TAG_SEPARATORS:
        rows = [i for i, ts in enumerate(tags) if any(sep in t and t not in known for t in ts)]
        if rows:
            example = next(t for t in tags[rows[0]] if sep in t)
            return (f"train.csv: tags joined by {sep!r} in {len(rows)} row(s) (rows {preview([r + 2 for r in rows])}; "
                    f"e.g. {example!r}): tags are separated by spaces here, so each joined string would train as "
                    f"one label; replace {sep!r} by a space in the tags column (e.g. {example.replace(sep, ' ')!r})")
    return None


def read_tags_csv(path, need_tags=True):
    """Read an image_name,tags CSV; return the DataFrame (strings, no NaN).

    Raises DataError for a missing, empty or unparsable file or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        if (path.parent / "config.json").is_file():
            raise DataError(f"{path}: file not found; {path.parent} is a run folder (it has config.json), not a "
                            f"dataset: pass the dataset folder, the one the run's config.json names as data_root")
        raise DataError(f"{path}: file not found")
    if not read_text(path).strip():
        raise DataError(f"{path}: the file is empty; expected a header 'image_name,tags' and one row per image")
    df = read_csv(path, dtype=str, keep_default_na=False)
    cols = ["image_name", "tags"] if need_tags else ["image_name"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {list(df.columns)}; "
                        f"expected header 'image_name,tags'")
    if len(df) == 0:
        raise DataError(f"{path}: no rows; expected one row per image")
    return df


def index_folder(folder):
    """Map file names in `folder` to Paths: by name and by stem (image files only), both keyed
    by `name_key` (NFC).

    Returns (by_name, by_stem); a stem shared by several files maps to None (ambiguous).
    Raises DataError naming both files when two names are equal after normalisation.
    """
    by_name, by_stem = {}, {}
    with os.scandir(folder) as it:
        for e in it:
            if not e.is_file():
                continue
            key = name_key(e.name)
            if key in by_name:
                raise DataError(f"{folder}: files {by_name[key].name!r} and {e.name!r} have the same name once "
                                f"Unicode-normalised (NFC; they differ only in how accents are encoded); "
                                f"rename or remove one of them")
            stem, ext = os.path.splitext(key)
            by_name[key] = Path(e.path)
            if ext.lower() in IMAGE_EXTS:
                by_stem[stem] = None if stem in by_stem else Path(e.path)
    return by_name, by_stem


def resolve_file(name, by_name, by_stem):
    """The file for an image_name with or without extension (matched by `name_key`), or None."""
    name = name_key(name)
    if name in by_name:
        return by_name[name]
    stem, ext = os.path.splitext(name)
    if ext.lower() in IMAGE_EXTS:  # a name like 'a.jpg' whose file is 'a.png'
        return by_stem.get(stem)
    return by_stem.get(name)


def files_by_stem(by_name):
    """stem -> sorted file names (image files only) of an index_folder by_name map."""
    out = {}
    for n in sorted(by_name):
        stem, ext = os.path.splitext(n)
        if ext.lower() in IMAGE_EXTS:
            out.setdefault(stem, []).append(n)
    return out


def missing_file(name, folder, same_stem):
    """Why image_name `name` has no file in `folder`: none at all, or several candidates
    (same stem, other extensions; same_stem from files_by_stem) that it does not tell apart."""
    stem, ext = os.path.splitext(name_key(name))
    cands = same_stem.get(stem if ext.lower() in IMAGE_EXTS else name, [])
    if len(cands) > 1:
        return (f"{len(cands)} candidate files for {name!r} in {folder}: {', '.join(cands)}; keep one of them, or "
                f"write the extension in image_name (e.g. {cands[0]})")
    return f"no image file for {name!r} in {folder}"


def check_header(path):
    """Open an image's header only (no pixel decode). Returns a problem string or None."""
    try:
        if os.path.getsize(path) == 0:
            return f"{path}: empty file"
        if is_tiff(path):  # PIL cannot open many multi-band or 16-bit TIFFs; tifffile reads them
            return check_tiff_header(path)
        with Image.open(path) as im:
            w, h = im.size
        if w == 0 or h == 0:
            return f"{path}: image has zero size"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return f"{path}: not a readable image ({type(e).__name__}: {e})"
    return None


# What a complete file of each format ends with (after any zero/whitespace padding): a
# file cut short by an interrupted copy or download lacks it. Other formats: not checked.
_ENDINGS = {"JPEG": (b"\xff\xd9",), "PNG": (b"IEND\xaeB`\x82",), "GIF": (b";",)}


def check_tail(path):
    """A cheap completeness check (the header and the last bytes, no pixel decode).

    Returns a problem string for a file whose header is unreadable or whose format's end
    marker (JPEG EOI, PNG IEND, GIF trailer) is missing, i.e. a truncated file; else None.
    """
    problem = check_header(path)
    if problem or is_tiff(path):  # a TIFF has no end marker (and PIL cannot open many)
        return problem
    try:
        with Image.open(path) as im:
            fmt = im.format
        ends = _ENDINGS.get(fmt)
        if not ends:
            return None
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            tail = f.read().rstrip(b"\x00 \r\n\t")
    except OSError as e:
        return f"{path}: cannot read ({e})"
    if not tail.endswith(ends):
        return f"{path}: truncated {fmt} (the file ends before its end marker)"
    return None


def check_test_images(spec):
    """Problems of the test images found by check_tail (header and end marker of each file)."""
    return [p for p in map(check_tail, (f for f in spec.test_files if f is not None)) if p]


def check_rows(spec, rows, channels=None):
    """Problems of the training images at `rows` (indices into spec.names) only: a missing
    file, an unreadable or truncated one (check_tail), too few bands for `channels`
    (band_problems). For a dataset loaded without checking its training images (predict.py
    predicting one fold's validation images). Returns problem strings naming train.csv rows."""
    problems, folder = [], spec.root / spec.images
    for i in rows:
        f = spec.files[i]
        if f is None:
            problems.append(f"train.csv row {i + 2}: no image file for {spec.names[i]!r} in {folder}")
        elif p := check_tail(f):
            problems.append(f"train.csv row {i + 2}: {p}")
    if channels and not problems:
        bad, notes = band_problems([spec.files[i] for i in rows], channels, "train.csv")
        problems += bad
        for note in notes:
            log.warning("%s", note)
    return problems


def read_labels_txt(path):
    """One label per line (blank lines ignored) -> list; DataError on duplicates."""
    labels = read_lines(path)
    dup = sorted({s for s in labels if labels.count(s) > 1})
    if not labels:
        raise DataError(f"{path}: no labels")
    if dup:
        raise DataError(f"{path}: duplicate labels {dup}")
    return labels


def _match_files(names, folder, csv_name, problems, check=check_header, report=True):
    """Resolve image names to files in `folder` (None where there is none), appending problems
    (row numbers 1-based + header); check: the per-file check (check_header, check_tail; None:
    the files are only looked up); report=False: no problem about these files is added."""
    if not folder.is_dir():
        if report:
            problems.append(f"{folder}: image folder not found")
        return [None] * len(names)
    by_name, by_stem = index_folder(folder)
    files, same_stem = [], None
    for i, name in enumerate(names):
        f = resolve_file(name, by_name, by_stem)
        if not report:
            pass
        elif f is None:
            same_stem = same_stem or files_by_stem(by_name)
            problems.append(f"{csv_name} row {i + 2}: " + missing_file(name, folder, same_stem))
        elif check and (p := check(f)):
            problems.append(f"{csv_name} row {i + 2}: {p}")
        files.append(f)
    return files


def _duplicates(names, csv_name, problems):
    stems = [image_stem(n) for n in names]
    seen = {}
    for i, s in enumerate(stems):
        if s in seen:
            problems.append(f"{csv_name} row {i + 2}: duplicate image name {names[i]!r} (first at row {seen[s] + 2})")
        else:
            seen[s] = i


def load_dataset(root, images="train", test_images="test", check=True, need_test=False, channels=None,
                 splits=("train", "test"), warn_test=False):
    """Read and validate a dataset directory; return a DataSpec.

    root: data directory; images: train image folder name (variant);
    test_images: folder of images to predict; check: open every image header, and check
    that each training image ends with its format's end marker (`check_tail`: a truncated
    PNG or JPEG whose header still reads is refused now, not when the cache is built);
    need_test: a missing test set is a problem (predict.py); channels: the bands a model
    takes (--channels): images with fewer are problems, images whose band count differs
    from the rest are logged (utils.data.bands.band_problems); None: band counts unchecked.
    splits: whose image files are checked ("train", "test"); the files of a split left out
    are only looked up (None where missing), e.g. predict.py --split test needs no
    training image, and checks one fold's with `check_rows`.
    warn_test: damaged test images are not problems here (train.py warns about them with
    `check_test_images`, predict.py refuses them); missing ones still are.
    Raises one DataError listing every problem found (first 20 and a count).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found (expected train.csv, train/, test/ inside)")
    problems = []
    df = read_tags_csv(root / "train.csv")
    names = [name_key(n) for n in df["image_name"].str.strip()]
    tags = [split_tags(t) for t in df["tags"]]
    for i, n in enumerate(names):
        if not n:
            problems.append(f"train.csv row {i + 2}: empty image_name")
    _duplicates(names, "train.csv", problems)

    labels_file = root / "labels.txt"
    present = sorted({t for ts in tags for t in ts})
    if labels_file.is_file():
        labels = read_labels_txt(labels_file)
        known = set(labels)
        for i, ts in enumerate(tags):
            bad = [t for t in ts if t not in known]
            if bad:
                problems.append(f"train.csv row {i + 2}: tag(s) {bad} not in labels.txt")
    else:
        labels = present
    if joined := joined_tags(tags, set(labels) if labels_file.is_file() else ()):
        problems.append(joined)
    if not labels:
        problems.append("train.csv: no tags at all; a multi-label dataset needs at least one tag")

    files = _match_files(names, root / images, "train.csv", problems, check_tail if check else None,
                         report="train" in splits)
    test_check = check_header if check and not warn_test else None

    test_names, test_files = [], []
    test_dir = root / test_images
    sub = root / "sample_submission.csv"
    if sub.is_file():
        sdf = read_tags_csv(sub, need_tags=False)
        test_names = sdf["image_name"].str.strip().tolist()
        _duplicates(test_names, "sample_submission.csv", problems)
        test_files = _match_files(test_names, test_dir, "sample_submission.csv", problems, test_check,
                                  report="test" in splits)
    elif test_dir.is_dir():
        index_folder(test_dir)  # refuses two names that are one after normalisation
        test_files = sorted(p for p in test_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        test_names = [p.stem for p in test_files]
        if test_check and "test" in splits:
            problems += [p for p in map(test_check, test_files) if p]
        if not test_files and ("test" in splits or need_test):
            problems.append(f"{test_dir}: test folder has no images ({', '.join(IMAGE_EXTS)})")
    elif need_test:
        problems.append(f"{root}: no test set (neither sample_submission.csv nor {test_images}/)")

    if check and channels and not problems:
        for what, fs in (("train.csv", files), ("test images", test_files)):
            if ("train" if what == "train.csv" else "test") not in splits:
                continue
            if warn_test and what == "test images":  # an unreadable one is warned about, not counted
                fs = [f for f in fs if f is not None and not check_header(f)]
            bad, notes = band_problems(fs, channels, what)
            problems += bad
            for note in notes:
                log.warning("%s", note)
    report_problems(f"{root}: the dataset has problems; fix them and run again", problems)
    index = {l: j for j, l in enumerate(labels)}
    y = np.zeros((len(names), len(labels)), np.uint8)
    for i, ts in enumerate(tags):
        for t in ts:
            y[i, index[t]] = 1
    return DataSpec(root, images, labels, names, files, y, test_images, test_names, test_files)


def unlisted_test_images(spec):
    """File names in the test folder that sample_submission.csv does not list (sorted); [] when
    there is no sample_submission.csv (then every test image is predicted)."""
    folder = spec.root / spec.test_images
    if not (spec.root / "sample_submission.csv").is_file() or not folder.is_dir():
        return []
    listed = {name_key(os.path.basename(str(f))) for f in spec.test_files if f is not None}
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and os.path.splitext(e.name)[1].lower()
                  in IMAGE_EXTS and name_key(e.name) not in listed)


def select_label_group(labels, y, group):
    """Column indices of the labels a model trains on.

    group: None/'' (all labels), 'a,b,c' (named tags, kept in dataset order), or
    'auto:K/i' (the i-th, 0-based, of K groups of tags with similar frequency,
    rarest first; contiguous in frequency order). Raises DataError for unknown tags
    or a malformed spec.
    """
    if not group:
        return list(range(len(labels)))
    group = str(group).strip()
    if group.startswith("auto:"):
        try:
            k, i = (int(v) for v in group[5:].split("/"))
        except ValueError:
            raise DataError(f"--label-group {group!r}: expected auto:K/i, e.g. auto:3/0")
        if not (1 <= k <= len(labels) and 0 <= i < k):
            raise DataError(f"--label-group {group!r}: need 1 <= K <= {len(labels)} and 0 <= i < K")
        order = np.argsort(np.asarray(y).mean(0), kind="stable")
        return sorted(int(j) for j in np.array_split(order, k)[i])
    names = [s.strip() for s in group.split(",") if s.strip()]
    unknown = [s for s in names if s not in labels]
    if unknown or not names:
        raise DataError(f"--label-group: unknown tag(s) {unknown}; valid tags: {', '.join(labels)}")
    return sorted(labels.index(s) for s in names)


def image_stem(name):
    """An image name (NFC, `name_key`) without its image extension (any case); other names unchanged."""
    stem, ext = os.path.splitext(name_key(name))
    return stem if ext.lower() in IMAGE_EXTS else name


def align_names(names, ref_names, what):
    """Row of `ref_names` for each of `names`: the same name (after `name_key`), else the same
    name without an image extension. Returns int64 (len(names),); one DataError (naming `what`)
    lists names that are missing or match several rows."""
    exact = {name_key(n): i for i, n in enumerate(ref_names)}
    stems = {}
    for i, n in enumerate(ref_names):
        stems.setdefault(image_stem(n), []).append(i)
    index, problems = [], []
    for n in names:
        i = exact.get(name_key(n))
        if i is None:
            hits = stems.get(image_stem(n), [])
            if len(hits) != 1:
                problems.append(f"{n!r} {'matches several rows' if hits else 'is missing'}")
            i = hits[0] if len(hits) == 1 else -1
        index.append(i)
    report_problems(f"{what}: images that cannot be matched", problems)
    return np.asarray(index, dtype=np.int64)


def read_truth(path, labels, strict=True):
    """An image_name,tags file -> (names, y uint8 (N, L) in `labels` order).

    strict: a tag outside `labels` is a DataError naming the file and row (else ignored).
    """
    df = read_tags_csv(path)
    names = [name_key(n) for n in df["image_name"].str.strip()]
    col = {t: j for j, t in enumerate(labels)}
    y = np.zeros((len(names), len(labels)), np.uint8)
    problems = []
    for i, tags in enumerate(df["tags"]):
        for t in split_tags(tags):
            if t in col:
                y[i, col[t]] = 1
            elif strict:
                problems.append(f"row {i + 2}: tag {t!r} is not among the labels {list(labels)}")
    report_problems(f"{path}: tags do not match the predictions' labels", problems)
    return names, y
