"""Near-duplicate and leaked images by perceptual hashes (pHash + dHash, and the colours of thumbnails).

    python tools/near_duplicates.py --data data/planet                  # DATA/duplicates.csv + report
    python tools/near_duplicates.py --data data/planet --leak-labels leaks.csv
    python tools/near_duplicates.py --data data/planet --check-folds    # groups an existing folds.csv splits

Writes DATA/duplicates.csv (image_a, image_b, split_a, split_b, distance, colour_difference), and beside
it duplicates_report.md and duplicates_groups.csv: training groups whose tags
disagree (label noise), train-test groups (leaks) and test-only groups. When
duplicates.csv exists before folds.csv is made, train.py and every tool make folds
that keep each group inside one fold. --leak-labels writes the training labels of
leaked test images as a prediction file (image_name, one probability per label).
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(REPO))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402

from utils.common.cli import add_cache_argument, run_script  # noqa: E402
from utils.common.errors import DataError, preview  # noqa: E402

log = logging.getLogger("near_duplicates")


def get_args_parser():
    from utils.data.duplicates import DEFAULT_MAX_DISTANCE, DEFAULT_MAX_COLOUR, HASH_SIZE, THUMB

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="dataset directory in the Planet layout")
    g.add_argument("--images", default="train", help="train image folder (variant) inside --data (default: train)")
    g.add_argument("--test-images", default="test", help="test image folder inside --data (default: test)")
    g.add_argument("--folds-file", default=None, help="folds file for --check-folds (default: DATA/folds.csv)")
    add_cache_argument(g, "uint8 image cache and hash cache")
    g = p.add_argument_group("matching")
    g.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                   help=f"largest pHash + dHash Hamming distance of a near-duplicate pair, in bits of 128 "
                        f"(default: {DEFAULT_MAX_DISTANCE}; measured in EXPERIMENTS.md)")
    g.add_argument("--max-colour-difference", type=float, default=DEFAULT_MAX_COLOUR,
                   help=f"largest colour difference of a pair: mean absolute difference of the chroma of "
                        f"{THUMB}x{THUMB} thumbnails, of 255; keeps a red and a blue version of one image apart "
                        f"(default: {DEFAULT_MAX_COLOUR:g}; measured in EXPERIMENTS.md)")
    g.add_argument("--size", type=int, default=HASH_SIZE,
                   help=f"side in px of the cached images the hashes are computed from (default: {HASH_SIZE})")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="pairs file; the report and groups go beside it; folds read it in "
                                               "DATA or beside the folds file (default: DATA/duplicates.csv)")
    g.add_argument("--leak-labels", default=None, metavar="FILE",
                   help="also write the training labels of test images that have a training copy, as "
                        "predictions (image_name + one probability per label; mean over copies) (default: off)")
    g.add_argument("--check-folds", action="store_true",
                   help="only count the duplicate groups (from the pairs file) that the folds file splits")
    return p


def check_writable(path, flag):
    """DataError naming `flag` when `path` cannot be written (before any work is done)."""
    parent = Path(path).resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise DataError(f"{flag} {path}: folder {parent} is not writable; pass {flag} with another path "
                        f"(folds use a duplicates.csv in DATA or beside --folds-file)")


def check_folds(args, spec, out):
    """Print how many duplicate groups the folds file splits; returns (split groups, all groups)."""
    import pandas as pd

    from utils.data.duplicates import split_groups, train_groups
    from utils.data.folds_file import read_folds_file

    folds_file = Path(args.folds_file) if args.folds_file else Path(args.data) / "folds.csv"
    if not out.is_file():
        raise DataError(f"{out}: no near-duplicate pairs yet; run tools/near_duplicates.py --data {args.data} first")
    if not folds_file.is_file():
        raise DataError(f"{folds_file}: no folds file to check (--folds-file)")
    groups = train_groups(out, spec.names)
    stored = read_folds_file(folds_file)  # every value checked, naming the rows
    missing = [n for n in spec.names if n not in stored]
    if missing:
        raise DataError(f"{folds_file}: {len(missing)} training image(s) have no fold: {preview(missing)}")
    folds = np.array([stored[n] for n in spec.names])
    split = split_groups(groups, folds)
    n_groups = int((pd.Series(groups).value_counts() > 1).sum())
    print(f"{folds_file}: {len(split)} of {n_groups} training duplicate groups are split across folds")
    names = np.asarray(spec.names)
    for g, fs in split[:20]:
        print(f"  group {g}: folds {fs}: {' '.join(names[groups == g])}")
    if split:
        print(f"to keep groups together, move {folds_file.name} away before the next run makes folds "
              f"(earlier runs' out-of-fold predictions will no longer line up)")
    return len(split), n_groups


def main(args):
    from utils.data.cache import default_cache_dir
    from utils.data.dataset import load_dataset
    from utils.data.duplicates import DUPLICATES_FILE

    if not 0 <= args.max_distance < 128:
        raise DataError(f"--max-distance {args.max_distance}: must be in 0..127 (bits of 128; 128 would pair "
                        f"every image)")
    if not 0 <= args.max_colour_difference < 255:
        raise DataError(f"--max-colour-difference {args.max_colour_difference:g}: must be in 0..254 (of 255; "
                        f"255 would pair every image the hashes pair)")
    if args.size < 16:
        raise DataError(f"--size {args.size}: must be at least 16 px")
    root = Path(args.data)
    out = Path(args.out) if args.out else root / DUPLICATES_FILE
    spec = load_dataset(root, args.images, args.test_images, check=False)
    if args.check_folds:
        return check_folds(args, spec, out)
    check_writable(out, "--out")
    from utils.data.output_paths import check_output_file

    for path in (out, out.with_name(f"{out.stem}_groups.csv"), out.with_name(f"{out.stem}_report.md")):
        check_output_file(path, "--out", [root], allow=(DUPLICATES_FILE,) if path == out else ())
    if args.leak_labels:
        if not spec.test_names:
            raise DataError(f"--leak-labels: {root} has no test images ({args.test_images}/ or "
                            f"sample_submission.csv), so no test image can leak; drop the flag")
        check_writable(args.leak_labels, "--leak-labels")
        check_output_file(args.leak_labels, "--leak-labels", [root])
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(root)
    return write_all(spec, cache_dir, args, out)


def write_all(spec, cache_dir, args, out):
    """Find the pairs, write the pairs file, report, groups and leak labels; print the report."""
    from utils.data.duplicates import find_duplicates, group_table, leaked_labels, report_markdown, summary
    from utils.common.atomic import atomic_write_csv, atomic_write_text
    from utils.runs.pred_files import write_preds

    dups = find_duplicates(spec, cache_dir, args.max_distance, args.max_colour_difference, args.size)
    table = group_table(dups, spec.y, spec.labels)
    counts = summary(dups, table)
    report = report_markdown(counts, table, args.max_distance, args.max_colour_difference)
    atomic_write_csv(out, dups.pairs)
    atomic_write_csv(out.with_name(f"{out.stem}_groups.csv"), table)
    atomic_write_text(out.with_name(f"{out.stem}_report.md"), report + "\n")
    if args.leak_labels:
        names, probs = leaked_labels(dups, spec.y)
        write_preds(args.leak_labels, names, spec.labels, probs)
        log.info("%d leaked test images -> %s", len(names), args.leak_labels)
    print(report)
    print(f"pairs: {out}\nreport: {out.with_name(out.stem + '_report.md')}")
    folds = Path(args.folds_file) if args.folds_file else Path(args.data) / "folds.csv"
    if folds.is_file() and counts["train-train pairs"]:
        log.warning("%s already exists; folds are grouped only when made: check them with --check-folds", folds)
    return counts


if __name__ == "__main__":
    run_script(main, lambda: get_args_parser().parse_args(), logging.INFO)
