"""Rank training images whose tags disagree with the out-of-fold predictions of a set of runs.

    python tools/label_issues.py --runs 'runs/*' --top 48
    python tools/label_issues.py --runs 'runs/probe-*' --tta hflip --out runs/label_issues

The runs' out-of-fold probabilities (preds/val.<tta>.csv, every fold of each model; by
default the TTA every run has, most views first, as stack.py reads them) are averaged per image and ranked with cleanlab's multi-label scores (utils/analysis/label_issues.py).
Writes OUT/label_issues.csv (every training image, most suspicious first: rank,
image_name, tag, given, probability, tag_score, score, issue, given_tags) and
OUT/label_issues.png, a contact sheet of the top N with the tag to check in red.
The CSV's first rows are an --exclude list for train.py:

    head -n 51 runs/label_issues/label_issues.csv > drop50.csv
    python train.py --exclude drop50.csv ...
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

from utils.common.cli import add_runs_argument, run_script  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.predict.tta_choice import AUTO, tta_help  # noqa: E402

log = logging.getLogger("label_issues")


def get_args_parser():
    from utils.analysis.label_issues import AGGREGATES, METHODS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input")
    add_runs_argument(g)
    g.add_argument("--tta", default=AUTO, help=tta_help("preds/val.<tta>.csv"))
    g.add_argument("--data", default=None, metavar="DIR",
                   help="dataset directory (default: the runs' recorded data root)")
    g = p.add_argument_group("ranking")
    g.add_argument("--method", default="self_confidence", choices=METHODS,
                   help="cleanlab per-tag quality score (default: self_confidence)")
    g.add_argument("--aggregate", default="softmin", choices=list(AGGREGATES),
                   help="how the tags' scores make an image's score: softmin, ema (cleanlab's default) or worst "
                        "(default: softmin; measured in EXPERIMENTS.md)")
    g = p.add_argument_group("output")
    g.add_argument("--top", type=int, default=48, help="images on the contact sheet and printed (default: 48)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: label_issues/ beside the runs, in the folder that holds them: "
                   "DIR/label_issues for --runs 'DIR/*', runs/label_issues in the repository for the default --runs)")
    g.add_argument("--size", type=int, default=160, help="thumbnail side on the contact sheet in px (default: 160)")
    return p


def image_files(library, runs, data):
    """name -> image file of the library's training images (the runs' image variant)."""
    from utils.data.dataset import load_dataset
    from utils.stack.library import data_root

    root = data_root(runs, data)
    spec = load_dataset(root, library.members[0].config.get("images", "train"), check=False)
    return dict(zip(spec.names, spec.files))


def beside(runs):
    """The default output folder: label_issues/ in the folder that holds the runs (their
    parents' common folder when they lie in several)."""
    return Path(os.path.commonpath([str(r.dir.resolve().parent) for r in runs])) / "label_issues"


def main(args):
    from utils.data.cache import decode_image
    from utils.common.atomic import atomic_write_csv
    from utils.analysis.label_issues import contact_sheet, mean_oof, rank_label_issues
    from utils.stack.library import load_library
    from utils.runs.directory import find_runs

    if args.top < 1:
        raise DataError(f"--top {args.top}: must be at least 1")
    if args.size < 16:
        raise DataError(f"--size {args.size}: must be at least 16 px")
    library = load_library(args.runs, args.tta, args.data, need_test=False)
    if library.tta_line:
        print(library.tta_line, file=sys.stderr)
    probs = mean_oof(library)
    table = rank_label_issues(library.y, probs, library.names, library.labels, args.method, args.aggregate)
    runs, _ = find_runs(args.runs)
    files = image_files(library, runs, args.data)
    top = table.head(args.top)
    images = [decode_image(files[n], args.size) for n in top["image_name"]]
    out = Path(args.out) if args.out else beside(runs)
    atomic_write_csv(out / "label_issues.csv", table, float_format="%.6g")
    contact_sheet(top, images, out / "label_issues.png",
                  title=f"most suspicious labels of {len(table)} images, {len(library.members)} model(s)")
    print(top.drop(columns=["issue"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{int(table['issue'].sum())} of {len(table)} images flagged by cleanlab.find_label_issues\n"
          f"table: {out / 'label_issues.csv'}\ncontact sheet: {out / 'label_issues.png'}")
    return table


if __name__ == "__main__":
    run_script(main, lambda: get_args_parser().parse_args(), logging.INFO)
