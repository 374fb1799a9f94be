"""Many runs -> ensemble / stacking -> thresholds -> submission.csv, scored without leakage.

    python stack.py --runs 'runs/*' --out submission.csv
    python stack.py --runs 'runs/*' --tta hflip --method select select-bag lr --out sub.csv
    python stack.py --runs 'runs/*' --groups images --top select --out sub.csv
    python stack.py --runs 'runs/*' --exactly-one clear,cloudy,haze,partly_cloudy --min-tags 1 --out sub.csv
    python stack.py --runs 'runs/*' --thresholds thresholds.json --out sub.csv   # tools/explore.py's thresholds

Gathers the runs' out-of-fold (preds/val.<tta>.csv) and test (preds/test.<tta>.csv)
probabilities into a library of models (--tta auto, the default: the TTA every run of a
complete model has, most views first, e.g. scripts/cv.sh's 10crop), scores every method
by cross-fitting over the folds of folds.csv (combiner and thresholds fitted on K-1
folds, scored on the held-out fold), writes stack_report.md/.json, and a submission made
by the method with the best cross-fitted F2, refitted on all out-of-fold data.
"""
from utils.common.cli import stop_on_ctrl_c  # the repository is sys.path[0]: this script's folder

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from utils.metrics.constraints import (ablation, add_constraint_arguments, check_constraint_args, constrained_decisions,
                               parse_constraints, render_ablation)
from utils.common.atomic import atomic_write_csv, atomic_write_json, atomic_write_text, write_target
from utils.common.cli import exit_cleanly
from utils.common.errors import DataError
from utils.runs.pred_files import submission_frame, write_preds
from utils.stack.library import load_library
from utils.runs.directory import find_runs
from utils.predict.tta_choice import AUTO, check_tta_name, tta_help
from utils.data.output_paths import check_can_write, check_output_dir, check_output_file, write_together
from utils.stack.evaluation import choose, evaluate, member_scores
from utils.stack.methods import METHODS, parse_method, split_methods
from utils.stack.stack_report import build_report, render_report
from utils.metrics.threshold_file import read_thresholds_file
from utils.metrics.thresholds import STRATEGIES

log = logging.getLogger("stack")
OUTPUTS = ("stack_test.csv", "stack_oof.csv", "stack_report.json", "stack_report.md")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    g = p.add_argument_group("inputs")
    g.add_argument("--runs", nargs="+", action="extend", required=True, metavar="PATTERN",
                   help="run folders or glob patterns (quote them), e.g. 'runs/*'; a folder of runs counts as all of them")
    g.add_argument("--tta", default=AUTO, help=tta_help("preds/val.<tta>.csv and, with --out, preds/test.<tta>.csv"))
    g.add_argument("--data", help="dataset directory (train.csv, folds.csv, sample_submission.csv); "
                                  "default: the one the runs recorded")
    m = p.add_argument_group("methods")
    m.add_argument("--method", nargs="+", action="extend", metavar="NAME[:k=v,...]",
                   help=f"methods to score, any of {', '.join(METHODS)}, with options such as "
                        f"select:bags=20,frac=0.3; several as separate words or ';'-separated (README "
                        f"\"Option strings\") (default: all). The submission uses the best by cross-fitted F2")
    m.add_argument("--threshold", default="greedy", choices=STRATEGIES,
                   help="threshold strategy, fitted inside every fold and for the submission (default greedy)")
    m.add_argument("--thresholds", metavar="FILE",
                   help="apply these per-label thresholds to the submission instead of the fitted ones: JSON "
                        "{\"thresholds\": {label: value}}, as tools/explore.py saves them (a stack_report.json is one); "
                        "the cross-fitted scores are unchanged (default: none)")
    m.add_argument("--groups", metavar="KEY|NAME=GLOB;...",
                   help="stack groups of models separately first, then stack the groups: a config key "
                        "(images, arch, label_group) or NAME=GLOB[,GLOB];NAME=GLOB over run names (default: none)")
    m.add_argument("--top", metavar="NAME[:k=v,...]",
                   help="method across groups with --groups (default: the same method as inside the groups)")
    m.add_argument("--bag", action="store_true",
                   help="average the repeats (seeds) of each configuration before any method (default off)")
    m.add_argument("--logits", action="store_true", help="level-2 stackers read logits, not probabilities (default off)")
    m.add_argument("--beta", type=float, default=2.0, help="beta of the F-beta score (default 2)")
    m.add_argument("--zero-division", type=float, default=1.0,
                   help="score of an image with no true and no predicted tag (default 1.0)")
    m.add_argument("--seed", type=int, default=0, help="seed of bagged selection, restarts and stackers (default 0)")
    m.add_argument("--threads", type=int, default=1,
                   help="BLAS/OpenMP threads; the many small per-label fits run fastest on one (default 1)")
    c = p.add_argument_group("constraints", "rules every image's tag set obeys; applied to every method's "
                              "decisions, and each scored alone in the report's Constraints table")
    add_constraint_arguments(c)
    o = p.add_argument_group("outputs")
    o.add_argument("--out", help="submission CSV to write (image_name,tags); the report goes beside the runs (or "
                                 "--report-dir). Give --out, --report-dir, or both: --report-dir alone writes the "
                                 "report only")
    o.add_argument("--report-dir", help="folder for stack_report.md/.json, stack_oof.csv, stack_test.csv "
                                        "(default: the folder that holds the runs, e.g. runs/)")
    return p


def check_args(parser, args):
    """Fail early, with argparse's exit code 2, on options that cannot work."""
    if not args.out and not args.report_dir:
        parser.error("give --out (submission) or --report-dir (report only)")
    args.method = split_methods(args.method) if args.method else [s for s in METHODS if s != "prior"]
    for spec in args.method + ([args.top] if args.top else []):
        try:
            parse_method(spec)
        except DataError as e:
            parser.error(str(e))
    if args.top and not args.groups:
        parser.error("--top needs --groups")
    try:
        check_tta_name(args.tta)
    except DataError as e:
        parser.error(str(e))
    if args.thresholds and not args.out:
        parser.error("--thresholds decides the submission's tags: give --out")
    if args.thresholds and args.threshold in ("expected", "prevalence"):
        parser.error(f"--thresholds gives thresholds; --threshold {args.threshold} decides without them")
    check_constraint_args(parser, args)


def group_indices(lib):
    """{group: member indices} from the members' groups, or None with fewer than two groups."""
    groups = {}
    for i, m in enumerate(lib.members):
        groups.setdefault(m.group, []).append(i)
    if len(groups) < 2:
        log.warning("--groups gives a single group (%s); stacking without layers", next(iter(groups)))
        return None
    return groups


def predict_test(lib, scored, args, constraints=None, thresholds=None):
    """(test probabilities (T, L), submission DataFrame) of a method fitted on all out-of-fold data;
    thresholds: (L,) from --thresholds, else the method's fitted ones."""
    probs = scored.model.predict(lib.test_inputs().P)
    thresholds = scored.thresholds if thresholds is None else thresholds
    decisions = constrained_decisions(probs, thresholds, args.threshold, constraints, args.beta,
                                      args.zero_division)
    return probs, submission_frame(lib.test_names, lib.labels, decisions)


def report_folder(args):
    """--report-dir, else the folder that holds the runs (their common parent, e.g. runs/); None without runs."""
    if args.report_dir:
        return Path(args.report_dir)
    runs, _ = find_runs(args.runs)
    if not runs:
        return None  # load_library says that no run matches
    return Path(os.path.commonpath([str(r.dir.resolve().parent) for r in runs]))


def _report_flag(args):
    return "--report-dir" if args.report_dir else "--report-dir (default: the runs' folder)"


def check_writable(args):
    """Before any work: refuse (DataError) an output that is a folder, or a folder no file can be created in."""
    if args.report_dir:
        check_output_dir(args.report_dir, "--report-dir")
    if args.out:
        check_can_write(write_target(check_output_file(args.out, "--out", inputs=[args.thresholds])).parent, "--out")
    out_dir = report_folder(args)
    if out_dir is not None:
        check_can_write(out_dir, _report_flag(args))


def check_outputs(args, data_root):
    """The report folder, after refusing (DataError) outputs that would replace the dataset's files or a folder."""
    if args.out:
        check_output_file(args.out, "--out", [data_root], inputs=[args.thresholds])
    out_dir = report_folder(args)
    for name in OUTPUTS:
        check_output_file(out_dir / name, _report_flag(args), [data_root])
    return out_dir


def write_outputs(out_dir, args, lib, oof, report, md, test_probs=None, sub=None):
    """Every output at once (utils.data.output_paths.write_together): a failed write leaves none
    of them new and the previous ones intact."""
    writers = {}
    if args.out:
        writers[out_dir / "stack_test.csv"] = lambda p: write_preds(p, lib.test_names, lib.labels,
                                                                    np.clip(test_probs, 0, 1))
        writers[Path(args.out)] = lambda p: atomic_write_csv(p, sub)
    writers[out_dir / "stack_oof.csv"] = lambda p: write_preds(p, lib.names, lib.labels, np.clip(oof, 0, 1))
    writers[out_dir / "stack_report.json"] = lambda p: atomic_write_json(p, report)
    writers[out_dir / "stack_report.md"] = lambda p: atomic_write_text(p, md)
    write_together(writers)


def say_written(out_dir, args, rows):
    """Print what was written where."""
    lines = [f"wrote, next to the runs, into {out_dir}:" if not args.report_dir else f"wrote into {out_dir}:",
             "  stack_report.md, stack_report.json   the report (each method's cross-fitted F2, per label)",
             "  stack_oof.csv                        the chosen method's out-of-fold probabilities"]
    if args.out:
        lines += ["  stack_test.csv                       its test probabilities",
                  f"and the submission {args.out} ({rows} rows)"]
    print("\n" + "\n".join(lines))


def main(args):
    check_writable(args)
    lib = load_library(args.runs, args.tta, args.data, need_test=bool(args.out), groups=args.groups)
    if lib.tta_line:
        print(lib.tta_line, file=sys.stderr)
    out_dir = check_outputs(args, lib.root)
    given = read_thresholds_file(args.thresholds, lib.labels) if args.thresholds else None
    if args.bag:
        lib = lib.bagged()
    groups = group_indices(lib) if args.groups else None
    constraints = parse_constraints(lib.labels, args.exactly_one, args.at_most_one, args.min_tags, args.max_tags)
    members = member_scores(lib, args.threshold, args.beta, args.zero_division)
    results = evaluate(lib, args.method, args.threshold, args.seed, args.logits, groups, args.top,
                       args.beta, args.zero_division, constraints)
    explicit = len(args.method) == 1
    chosen = args.method[0] if explicit else choose(results, args.method)
    settings = {"command": "python stack.py " + shlex.join(sys.argv[1:]), "tta": lib.tta,
                "threshold": args.threshold, "beta": args.beta, "zero_division": args.zero_division,
                "groups": args.groups, "top": args.top, "bag": args.bag, "logits": args.logits, "seed": args.seed,
                "constraints": list(constraints.names), "thresholds_file": args.thresholds}
    report = build_report(lib, results, members, chosen, "--method" if explicit else "best cross-fitted F2", settings)
    if constraints:
        r = results[chosen]
        report["constraints"] = ablation(lib.y, r.oof, r.extra["fold_thresholds"], lib.folds, args.threshold,
                                         constraints, args.beta, args.zero_division)
    test_probs, sub = None, None
    if args.out:
        test_probs, sub = predict_test(lib, results[chosen], args, constraints, given)
        if given is not None:  # what the submission applied
            report["thresholds"] = {lab: float(t) for lab, t in zip(lib.labels, given)}
        report["submission"] = {"path": str(args.out), "rows": len(sub),
                                "mean_tags": float(sub["tags"].str.split().str.len().mean())}
    md = render_report(report)
    if constraints:
        md += "\n".join(render_ablation(report["constraints"], chosen)) + "\n"
    # Everything is computed; only now is anything written.
    write_outputs(out_dir, args, lib, results[chosen].oof, report, md, test_probs, sub)
    print(md.split("## Per-label")[0].rstrip())
    if constraints:
        print("\n".join(render_ablation(report["constraints"], chosen)))
    say_written(out_dir, args, len(sub) if args.out else 0)
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    parser = get_args_parser()
    args = parser.parse_args()
    check_args(parser, args)
    with threadpool_limits(limits=args.threads):
        exit_cleanly(lambda: main(args))
