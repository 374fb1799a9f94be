"""Look at what the models get wrong: one offline HTML page of their out-of-fold mistakes.

    python tools/explore.py --runs 'runs/*'                          # -> runs/explore.html
    python tools/explore.py --runs 'runs/*' --stack runs --label-issues runs/label_issues/label_issues.csv
    python tools/explore.py --stack subs --data data/planet --out errors.html

The runs are grouped into models as stack.py groups them (a configuration and seed, one run
per fold; --tta auto reads the TTA every run has); --stack adds a stack's output folder
(stack_oof.csv, stack_report.json) as one more model. Per label the page gives precision,
recall and F2 at its threshold, and galleries of false positives and false negatives of the
out-of-fold predictions, most confident first. A slider per label moves its threshold (from
the greedy thresholds fitted on the model's out-of-fold predictions, or the stack's own) and
recomputes the F2 averaged over images; "Save thresholds" writes thresholds.json for
predict.py and stack.py --thresholds. A matrix shows which labels were predicted on each
label's false negatives, and two models can be set side by side. Marked images download as
an --exclude list for train.py and as a relabel list. Thumbnails and data are embedded: the
file opens from disk in a browser and loads nothing. report.html links to an explore.html
next to it.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402

from utils.common.atomic import atomic_write_text, write_target  # noqa: E402
from utils.common.cli import DEFAULT_RUNS, run_script  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.data.output_paths import check_can_write, check_output_file  # noqa: E402
from utils.predict.tta_choice import AUTO, check_tta_name, tta_help  # noqa: E402

log = logging.getLogger("explore")


def get_args_parser():
    from utils.analysis.explore_page import FORMATS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input")
    g.add_argument("--runs", nargs="+", action="extend", metavar="PATTERN",
                   help="run folders, folders of runs or glob patterns (quote them); each model's preds/val.<tta>.csv "
                        "of every fold (default: runs/ in the repository, unless --stack is given alone)")
    g.add_argument("--stack", metavar="DIR",
                   help="a stack.py output folder (stack_oof.csv and stack_report.json: its --report-dir, by default "
                        "the folder holding the runs); the stack becomes one more model (default: none)")
    g.add_argument("--tta", default=AUTO, help=tta_help("preds/val.<tta>.csv"))
    g.add_argument("--data", default=None, metavar="DIR",
                   help="dataset directory: truth and images (default: the runs' recorded data root; needed with "
                        "--stack alone)")
    g.add_argument("--label-issues", default=None, metavar="FILE",
                   help="tools/label_issues.py's label_issues.csv: the images it flagged carry a mark (default: none)")
    g = p.add_argument_group("page")
    g.add_argument("--gallery", type=int, default=50,
                   help="images per gallery, the most confident mistakes first (default: 50)")
    g.add_argument("--margin", type=float, default=0.1,
                   help="thumbnails are made for what the galleries show while a threshold stays within this of "
                        "its start; further on, images are shown by name and tags (default: 0.1)")
    g.add_argument("--thumb-size", type=int, default=80, metavar="PX", help="thumbnail side in px (default: 80)")
    g.add_argument("--thumb-format", default="jpeg", choices=list(FORMATS),
                   help="thumbnail encoding (default: jpeg)")
    g.add_argument("--title", default=None,
                   help="page title (default: 'Errors: <the folder that holds the runs>', with --stack alone its folder)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="FILE",
                   help="HTML file to write (default: explore.html in the folder that holds the runs, where "
                        "tools/report.py's report.html links to it; with --stack alone, in that folder)")
    return p


def check_args(args):
    """DataError for values that cannot work, before anything is read."""
    if args.gallery < 1:
        raise DataError(f"--gallery {args.gallery}: must be at least 1")
    if not 16 <= args.thumb_size <= 512:
        raise DataError(f"--thumb-size {args.thumb_size}: give a side between 16 and 512 px (64-96 keeps the file small)")
    if not 0 <= args.margin <= 1:
        raise DataError(f"--margin {args.margin}: must be in [0, 1]")
    check_tta_name(args.tta)
    if args.runs is None and args.stack is None:
        args.runs = [DEFAULT_RUNS]
    missing = [p for p in args.runs or [] if not any(c in p for c in "*?[") and not Path(p).exists()]
    if missing:
        raise DataError(f"--runs: not found: {', '.join(missing)}")


def source_folder(args):
    """The folder the page is about: the one that holds the runs, else the --stack folder."""
    from utils.runs.directory import find_runs

    runs, _ = find_runs(args.runs) if args.runs else ([], [])
    if runs:
        return Path(os.path.commonpath([str(r.dir.resolve().parent) for r in runs]))
    stack = Path(args.stack) if args.stack else Path(args.runs[0])
    return stack.parent if stack.is_file() else stack


def default_out(args):
    """explore.html beside the runs (the folder that holds them), else in the --stack folder."""
    return source_folder(args) / "explore.html"


def inputs(args):
    """The files the command reads besides the runs' (which lie in run folders, refused anyway) and the
    dataset's: the stack's files and the --label-issues file."""
    from utils.analysis.explore import STACK_FILES

    stack = Path(args.stack) if args.stack else None
    folder = stack.parent if stack is not None and stack.is_file() else stack
    return ([folder / f for f in STACK_FILES] if folder else []) + ([args.label_issues] if args.label_issues else [])


def main(args):
    from utils.analysis.explore import load_explorer
    from utils.analysis.explore_page import build_page

    check_args(args)
    reads = inputs(args)
    out = check_output_file(args.out or default_out(args), "--out", [args.data] if args.data else [], inputs=reads)
    check_can_write(write_target(out).parent, "--out")
    ex = load_explorer(args.runs, args.stack, args.data, args.tta, args.label_issues)
    for note in ex.notes:
        print(note, file=sys.stderr)
    check_output_file(out, "--out", [ex.root], inputs=reads)
    folder = source_folder(args)
    title = args.title or f"Errors: {folder.name or folder.resolve().name}"
    html, summary = build_page(ex, title, args.gallery, args.thumb_size, args.thumb_format, args.margin)
    atomic_write_text(out, html)
    scores = ", ".join(f"{name} {f:.4f}" for name, f in summary["f2"].items())
    print(f"explorer: {out} ({summary['bytes'] / 2 ** 20:.1f} MB, {len(ex.names)} images, {len(ex.labels)} labels, "
          f"{len(ex.models)} model(s), {summary['thumbnails']} thumbnails)\nF2 at the starting thresholds: {scores}")
    return out


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
