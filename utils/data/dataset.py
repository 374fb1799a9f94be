"""A dataset in the Kaggle/Planet layout: reading, validation, labels, ground truth.

DATA/train.csv (image_name,tags), DATA/<images>/ (default train/), DATA/test/,
optional sample_submission.csv, labels.txt; folds.csv is utils.data.folds'.

`load_dataset` finds every problem in one pass and raises one DataError listing
them; it only opens image headers (cheap). Pixels are decoded once, when the
uint8 cache is built (utils/data/cache.py), which reports undecodable files the same way.
"""
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from utils.data.bands import band_problems
from utils.common.errors import DataError, preview, report_problems
from utils.common.text import read_csv, read_lines, read_text
from utils.data.image_files import IMAGE_EXTS, ImageFolder, check_complete, check_header, name_key

log = logging.getLogger(__name__)

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


def case_variants(tags, known=()):
    """Problem strings for tags that differ only in case ('red', 'Red', 'RED'), one per group.

    tags: per row, the list of `split_tags`; known: labels.txt's labels (spellings it lists are
    meant as labels of their own). Each names the spellings with their rows (train.csv row
    numbers) and what to do: every spelling would otherwise train as a label of its own.
    """
    rows = {}
    for i, ts in enumerate(tags):
        for t in ts:
            rows.setdefault(t, []).append(i + 2)
    groups = {}
    for t in sorted(rows):
        groups.setdefault(t.casefold(), []).append(t)
    out = []
    for spellings in groups.values():
        if len(spellings) < 2 or all(t in known for t in spellings):
            continue
        main = max(spellings, key=lambda t: len(rows[t]))
        where = "; ".join(f"{t!r} in row {rows[t][0]}" if len(rows[t]) == 1 else
                          f"{t!r} in {len(rows[t])} rows ({', '.join(map(str, rows[t][:3]))}"
                          f"{', ...' if len(rows[t]) > 3 else ''})" for t in spellings)
        out.append(f"train.csv: tags that differ only in case would train as {len(spellings)} labels: {where}; "
                   f"write one spelling in every row (e.g. {main!r}), or list each spelling in labels.txt if "
                   f"they are different labels")
    return out


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


def check_test_images(spec):
    """Problems of the test images found by check_complete (header, and a full decode of a file
    whose end marker is missing)."""
    return [p for p in map(check_complete, (f for f in spec.test_files if f is not None)) if p]


def check_rows(spec, rows, channels=None):
    """Problems of the training images at `rows` (indices into spec.names) only: a missing
    file (and what is there instead), an unreadable or truncated one (check_complete), too few
    bands for `channels` (band_problems). For a dataset loaded without checking its training
    images (predict.py predicting one fold's validation images). Returns problem strings
    naming train.csv rows."""
    problems, folder = [], None
    for i in rows:
        f = spec.files[i]
        if f is None:
            folder = folder or ImageFolder(spec.root / spec.images)
            problems.append(f"train.csv row {i + 2}: {folder.why_missing(spec.names[i])}")
        elif p := check_complete(f):
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
    (row numbers 1-based + header); check: the per-file check (check_header, check_complete;
    None: the files are only looked up); report=False: no problem about these files is added."""
    if not folder.is_dir():
        if report:
            problems.append(f"{folder}: image folder not found")
        return [None] * len(names)
    index = ImageFolder(folder)
    files = []
    for i, name in enumerate(names):
        f = index.resolve(name)
        if not report:
            pass
        elif f is None:
            problems.append(f"{csv_name} row {i + 2}: " + index.why_missing(name))
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
    that each training image is complete (`check_complete`: a truncated PNG or JPEG whose
    header still reads is refused now, not when the cache is built);
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
        folded = {label.casefold(): label for label in labels}
        for i, ts in enumerate(tags):
            bad = [t for t in ts if t not in known]
            if bad:
                hint = [f"{t!r} is {folded[t.casefold()]!r}" for t in bad if t.casefold() in folded]
                problems.append(f"train.csv row {i + 2}: tag(s) {bad} not in labels.txt" +
                                (f" (only their case differs: {', '.join(hint)}?)" if hint else ""))
    else:
        labels = present
    if joined := joined_tags(tags, set(labels) if labels_file.is_file() else ()):
        problems.append(joined)
    problems += case_variants(tags, set(labels) if labels_file.is_file() else ())
    if not labels:
        problems.append("train.csv: no tags at all; a multi-label dataset needs at least one tag")

    files = _match_files(names, root / images, "train.csv", problems, check_complete if check else None,
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
        folder = ImageFolder(test_dir)  # refuses two names that are one after normalisation
        test_files = sorted(p for p in test_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        test_names = [p.stem for p in test_files]
        if test_check and "test" in splits:
            problems += [p for p in map(test_check, test_files) if p]
        nested = folder.nested_images() if "test" in splits or need_test else []
        if not test_files and ("test" in splits or need_test):
            problems.append(f"{test_dir}: test folder has no images ({', '.join(IMAGE_EXTS)})" + (
                f"; {len(nested)} lie in its subfolders ({preview(map(str, nested), 3)}): images must lie directly "
                f"in {test_dir}/ (move them up)" if nested else ""))
        elif nested:
            log.warning("%d image(s) in subfolders of %s are not predicted (%s): images must lie directly in %s/ "
                        "(move them up)", len(nested), test_dir, preview(map(str, nested), 3), test_dir)
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
