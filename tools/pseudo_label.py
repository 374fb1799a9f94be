"""Pseudo-labels for train.py --pseudo: the test images a set of models is surest about.

    python tools/pseudo_label.py --runs 'runs/resnet50-*' --tta hflip --out pseudo.csv
    python tools/pseudo_label.py --probs runs/stack_test.csv --mode hard --quantile 0.7 --out pseudo.csv
    python train.py --pseudo pseudo.csv --pseudo-weight 0.5 ...

Reads the runs' test probabilities (preds/test.<tta>.csv, averaged over the runs; by
default the TTA every run has, most views first) or a stack's (--probs stack_test.csv), keeps the images whose confidence, the mean over
labels of |p - 0.5|, is at or above the --quantile of it (the iMet 2019 winner's
selection), and writes their targets in the preds format (image_name, one column per
label): the probabilities (--mode soft) or 0/1 tags (--mode hard) at per-label
thresholds: the runs' best.pt thresholds averaged, the stack report's, or one value.
"""
import sys
from pathlib import Path

# tools/statistics.py would shadow the standard library's `statistics` (which triton imports
# while torchvision loads): keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

import numpy as np  # noqa: E402

from utils.common.cli import run_script  # noqa: E402
from utils.common.errors import DataError, report_problems  # noqa: E402
from utils.common.text import read_json  # noqa: E402
from utils.runs.pred_files import write_preds  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.runs.prob_file import read_probs  # noqa: E402
from utils.runs.directory import find_runs, no_run_message  # noqa: E402
from utils.predict.tta_choice import AUTO, choose_tta, tta_help  # noqa: E402

MODES = ("soft", "hard")  # utils.train.pseudo.MODES, which imports torch: the flags parse without it

log = logging.getLogger("pseudo_label")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input (one of)")
    g.add_argument("--runs", nargs="+", action="extend", metavar="PATTERN",
                   help="run folders or glob patterns (quote them); their preds/test.<tta>.csv are averaged")
    g.add_argument("--probs", metavar="CSV", help="a test probability file instead: image_name, then one column "
                   "per label with probabilities in [0, 1], as stack.py's stack_test.csv or predict.py's "
                   "preds/test.<tta>.csv")
    g.add_argument("--tta", default=AUTO, help=tta_help("preds/test.<tta>.csv of the runs"))
    s = p.add_argument_group("selection")
    s.add_argument("--mode", default="soft", choices=MODES,
                   help="soft: targets are the probabilities; hard: 0/1 tags at the thresholds (default: soft)")
    s.add_argument("--quantile", type=float, default=0.5,
                   help="keep images whose confidence (mean |p - 0.5| over labels) is at or above this "
                        "quantile of it; 0 keeps all (default: 0.5, the surer half)")
    s.add_argument("--thresholds", default=None, metavar="auto|X|X,X,...",
                   help="hard mode's thresholds: auto = the runs' best.pt thresholds averaged (or the "
                        "stack_report.json next to --probs), one value for every label, or one per label "
                        "(default: auto)")
    p.add_argument("--out", required=True, help="pseudo-label CSV to write")
    return p


def runs_test_probs(patterns, tta):
    """(names, labels, mean test probabilities (T, L), runs) over the runs' preds/test.<tta>.csv."""
    runs, skipped = find_runs(patterns)
    problems = [f"{p}: {why}" for p, why in skipped]
    if not runs and not skipped:
        problems += [no_run_message(p) for p in patterns]
    report_problems("cannot read the runs", problems)
    choice = choose_tta(runs, ("test",), tta)
    if choice.line:
        print(choice.line, file=sys.stderr)
    tta = choice.name
    tables = []
    for r in runs:
        path = r.preds_path("test", tta)
        if not path.is_file():
            problems.append(f"{path}: missing (python predict.py --runs {r.dir} --tta {tta} --split test)")
            continue
        tables.append(read_probs(path, f"--runs {r.dir}:"))
    report_problems("cannot make pseudo-labels", problems)
    names, labels, _ = tables[0]
    for (n, l, _), r in zip(tables, runs):
        if sorted(n) != sorted(names) or l != labels:
            problems.append(f"{r.dir}: its test file has other images or labels than {runs[0].dir}'s")
    report_problems("the runs' test predictions do not line up", problems)
    probs = np.mean([p[np.argsort(n)][np.argsort(np.argsort(names))] for n, _, p in tables], axis=0)
    return names, labels, probs, runs


def hard_thresholds(text, labels, runs, probs_path):
    """(L,) thresholds for --mode hard from --thresholds (see its help)."""
    if text not in (None, "auto"):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise DataError(f"--thresholds {text!r}: expected auto, a number, or one number per label")
        if len(values) not in (1, len(labels)):
            raise DataError(f"--thresholds: {len(values)} values for {len(labels)} labels")
        bad = [f"{labels[i] if len(values) > 1 else 'every label'} = {v}"
               for i, v in enumerate(values) if not 0 <= v <= 1]
        if bad:
            raise DataError(f"--thresholds: must be in [0, 1]: {', '.join(bad)}")
        return np.broadcast_to(np.array(values), (len(labels),)).copy()
    if probs_path:
        report = Path(probs_path).parent / "stack_report.json"
        thr = read_json(report).get("thresholds") if report.is_file() else None
        if not thr or set(thr) < set(labels):
            raise DataError(f"--mode hard: no per-label thresholds in {report}; give --thresholds")
        return np.array([thr[l] for l in labels])
    import torch

    found = []
    for r in runs:
        best = r.dir / "checkpoints" / "best.pt"
        if best.is_file():
            ck = torch.load(best, map_location="cpu", weights_only=False)
            if ck.get("thresholds") is not None and list(ck["meta"]["labels"]) == list(labels):
                found.append(ck["thresholds"])
    if not found:
        raise DataError("--mode hard: none of the runs has thresholds in checkpoints/best.pt; give --thresholds")
    return np.mean(found, axis=0)


def main(args):
    from utils.train.pseudo import confidence, pseudo_labels

    if bool(args.runs) == bool(args.probs):
        raise DataError("give either --runs or --probs")
    if args.thresholds is not None and args.mode != "hard":
        raise DataError(f"--thresholds {args.thresholds}: only used with --mode hard; add it or drop the flag")
    if not 0 <= args.quantile < 1:
        raise DataError(f"--quantile {args.quantile}: must be in [0, 1)")
    if args.runs:
        names, labels, probs, runs = runs_test_probs(args.runs, args.tta)
    else:
        (names, labels, probs), runs = read_probs(args.probs, "--probs", test_only=True), []
    thr = hard_thresholds(args.thresholds, labels, runs, args.probs) if args.mode == "hard" else 0.5
    keep, targets = pseudo_labels(probs, args.mode, args.quantile, thr)
    conf = confidence(probs)
    check_output_file(args.out, "--out", {r.data_root for r in runs})
    path = write_preds(args.out, [names[i] for i in keep], labels, targets)
    print(f"{path}: {len(keep)} of {len(names)} test images ({args.mode}), confidence >= "
          f"{conf[keep].min() if len(keep) else float('nan'):.3f} (median {np.median(conf):.3f})")
    return path


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
