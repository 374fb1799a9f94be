"""One self-contained HTML report of a whole competition: leaderboard, models, correlation, stacking.

    python tools/report.py                                  # runs/ -> runs/report.html
    python tools/report.py --runs runs --out report.html
    python tools/report.py --runs runs_a runs_b --stack-report subs/stack_report.json --out all.html

The page holds the leaderboard of models and runs (click a column to sort; per-label F2
columns f2:LABEL), each model's per-label F2 bars, out-of-fold probability distributions
and its runs' training curves, the model-correlation heatmap, every stack report stack.py
wrote (stack_report*.json in the runs folder, its parent, or a folder below either, plus
--stack-report): each method's cross-fitted F2 with its spread over folds, and the
threshold table, with links between them (and to explore.html, tools/explore.py's page, when
it lies next to the report). Figures are embedded (base64 PNG): the file
opens from disk, needs no server, and can be mailed. Exit code 2 when no run is finished.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

from utils.common.cli import add_runs_argument, add_truth_arguments, run_script  # noqa: E402
from utils.common.atomic import atomic_write_text  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.common.paths import load_path_map  # noqa: E402
from utils.analysis.report import build_context, render, stack_section  # noqa: E402
from utils.runs.directory import find_runs  # noqa: E402
from utils.runs.fingerprint import check_runs_dataset  # noqa: E402
from utils.analysis.scores import Truth  # noqa: E402
from utils.metrics.threshold_search import FIXED_THRESHOLD  # noqa: E402

log = logging.getLogger("report")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("runs")
    add_runs_argument(g)
    g.add_argument("--tta", default=None, metavar="NAME",
                   help="score preds/val.NAME.csv (default: the best TTA predict.py made for each run; none only without one)")
    g.add_argument("--stack-report", nargs="+", default=[], metavar="FILE",
                   help="stack_report.json files to include besides those found next to the runs (default: none)")
    g.add_argument("--threshold", type=float, default=FIXED_THRESHOLD,
                   help=f"the fixed threshold of the f2@ column (default {FIXED_THRESHOLD})")
    add_truth_arguments(g)
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, metavar="FILE",
                   help="HTML file to write (default: report.html in the first runs folder)")
    o.add_argument("--title", default=None, help="page title (default: 'Report: <runs folders>')")
    return p


def main(args):
    missing = [p for p in args.runs if not any(c in p for c in "*?[") and not Path(p).exists()]
    missing += [p for p in args.stack_report if not Path(p).is_file()]
    if missing:
        raise DataError(f"not found: {', '.join(missing)}")
    if not 0 <= args.threshold <= 1:
        raise DataError(f"--threshold {args.threshold}: must be in [0, 1]")
    for p in args.stack_report:  # given by name: a file that is no stack report is an error, not a note
        stack_section(p, {}, {}, 0)
    runs, bad = find_runs(args.runs, load_path_map(args.path_map))
    for path, reason in bad:
        print(f"skipped {path}: {reason.splitlines()[0]}", file=sys.stderr)
    if args.data:
        check_runs_dataset(runs, Path(args.data))
    folders = sorted({r.dir.resolve().parent for r in runs}) or [Path(p) for p in args.runs]
    out = check_output_file(Path(args.out) if args.out else folders[0] / "report.html", "--out",
                            {r.data_root for r in runs} | ({Path(args.data)} if args.data else set()))
    explore = "explore.html" if (out.parent / "explore.html").is_file() else None  # tools/explore.py's page
    context = build_context(runs, Truth(args.data), folders, args.tta, args.stack_report, args.threshold,
                            args.title, explore)
    html = render(context)
    atomic_write_text(out, html)
    print(f"report: {out} ({len(html) / 2 ** 20:.1f} MB, {context['n_models']} models, "
          f"{len(context['stacks'])} stack report(s))")
    return out


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
