"""Per-label probability histograms, images with the tag vs without, for one or several
prediction sets side by side (e.g. a run with and one without oversampling).

    python tools/plot_probs.py --runs runs/A                       # runs/A/plots/probs_val.png
    python tools/plot_probs.py --runs runs/A runs/B --out cmp.png  # A and B side by side
    python tools/plot_probs.py --preds x.csv y.csv --truth data/demo/train.csv --out cmp.png
    python tools/plot_probs.py --runs runs/A --split test --out test.png   # no truth: one colour

--runs takes the run's preds/<split>.<tta>.csv (the best TTA for val, else 'none' or
the only one, unless --tta) and, for val, the truth in its data root. --preds takes
any prediction file (image_name, then one probability column per label), with
--truth for the two colours. With truth the red line is the greedy threshold, with the
F2 at it, and each panel's title gives the label's share of that set's images with the
tag (d=) and their number (n=), as the figure's key says. One set alone gets the panel
grid of the training plots; several get a block per label, one panel per set side by side
(each column headed by its set's title), the blocks in a grid as wide as suits a screen.
The PNG is written at 100 dpi, its smallest text 10 px.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

from utils.common.errors import DataError  # noqa: E402
from utils.runs.pred_files import read_preds  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.common.paths import load_path_map  # noqa: E402
from utils.analysis.plots import plot_prob_comparison, plot_prob_distributions  # noqa: E402
from utils.analysis.scores import Truth, load_oof  # noqa: E402
from utils.runs.directory import load_run  # noqa: E402
from utils.metrics.threshold_search import greedy_thresholds  # noqa: E402
from utils.common.cli import add_hidden_alias, run_script  # noqa: E402

log = logging.getLogger("plot_probs")
DPI = 100  # the panels' smallest text, 7.5 pt, is 10 px at this resolution


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("inputs (one or more, in this order)")
    g.add_argument("--runs", dest="run", nargs="+", default=[], metavar="DIR", help="run folders")
    add_hidden_alias(p, "--run", "--runs")
    g.add_argument("--preds", nargs="+", default=[], metavar="FILE", help="prediction CSV files")
    g.add_argument("--truth", default=None, metavar="CSV",
                   help="image_name,tags file colouring --preds files (default: none, one colour)")
    g.add_argument("--split", choices=("val", "test"), default="val", help="--runs predictions to plot (default val)")
    g.add_argument("--tta", default=None, metavar="NAME", help="TTA name of --runs predictions (default: see above)")
    g.add_argument("--titles", nargs="+", default=None, metavar="TEXT",
                   help="column titles, one per input (default: run folder or file name)")
    g.add_argument("--labels", nargs="+", default=None, metavar="NAME", help="plot these labels only (default: all)")
    g.add_argument("--path-map", default=None, metavar="FILE",
                   help="lines OLD=NEW rewriting stored path prefixes of --runs records")
    o = p.add_argument_group("output")
    o.add_argument("--out", default=None, metavar="PNG",
                   help="PNG to write (default with --runs: <first run>/plots/probs_<split>.png)")
    o.add_argument("--bins", type=int, default=40, help="histogram bins over [0, 1] (default 40)")
    return p


def check_out(args, pairs):
    """The PNG to write, refused (DataError) when it is a file of a dataset the inputs come from (a run's
    folder is where its plots go by default: allowed)."""
    data_roots = [load_run(r, pairs).data_root for r in args.run] + ([Path(args.truth).parent] if args.truth else [])
    default = Path(args.run[0]) / "plots" / f"probs_{args.split}.png" if args.run else None
    return check_output_file(Path(args.out) if args.out else default, "--out", data_roots, in_runs=True)


def run_source(path, args, truth, pairs):
    """(title, labels, probs, y or None) of one run's val or test predictions."""
    run = load_run(path, pairs)
    if args.split == "val":
        try:
            oof = load_oof(run, truth, args.tta)
        except DataError as e:
            raise DataError(f"{run.dir}: {e}") from None
        return f"{run.name} ({oof.tta})", oof.labels, oof.probs, oof.y
    available = run.tta_available("test")
    if not available:
        raise DataError(f"{run.dir}: no preds/test.*.csv (run predict.py)")
    tta = args.tta or ("none" if "none" in available else available[-1])
    if tta not in available:
        raise DataError(f"{run.dir}: no preds/test.{tta}.csv (available: {', '.join(available)})")
    _, labels, probs = read_preds(run.preds_path("test", tta))
    return f"{run.name} (test, {tta})", labels, probs, None


def file_source(path, truth_csv):
    """(title, labels, probs, y or None) of a prediction file, coloured by --truth if given."""
    names, labels, probs = read_preds(path)
    if truth_csv is None:
        return Path(path).name, labels, probs, None
    return Path(path).name, labels, probs, Truth().matrix(truth_csv, names, labels, f"{path} vs {truth_csv}")


def select_labels(source, wanted):
    title, labels, probs, y = source
    if not wanted:
        return source
    keep = [j for j, lab in enumerate(labels) if lab in wanted]
    if not keep:
        raise DataError(f"{title}: none of --labels {wanted} among its labels {labels}")
    return title, [labels[j] for j in keep], probs[:, keep], None if y is None else y[:, keep]


def main(args):
    if not args.run and not args.preds:
        raise DataError("give --runs DIR... and/or --preds FILE...")
    if args.out is None and not args.run:
        raise DataError("--preds needs --out PNG")
    pairs, truth = load_path_map(args.path_map), Truth()
    out = check_out(args, pairs)
    sources = [run_source(r, args, truth, pairs) for r in args.run]
    sources += [file_source(p, args.truth) for p in args.preds]
    sources = [select_labels(s, args.labels) for s in sources]
    if args.titles:
        if len(args.titles) != len(sources):
            raise DataError(f"{len(args.titles)} --titles for {len(sources)} inputs")
        sources = [(t, *s[1:]) for t, s in zip(args.titles, sources)]
    full = [(t, labs, p, y, None if y is None else greedy_thresholds(y, p)[0]) for t, labs, p, y in sources]
    if len(full) == 1 and full[0][3] is not None:
        title, labels, probs, y, thr = full[0]
        plot_prob_distributions(y, probs, labels, out, thresholds=thr, title=title, bins=args.bins, dpi=DPI)
    else:
        plot_prob_comparison(full, out, bins=args.bins, dpi=DPI)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
