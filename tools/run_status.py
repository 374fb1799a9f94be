"""Say where run folders stand, as scripts/cv.sh and tools/submit.py decide: new, unfinished, finished, diverged.

    python tools/run_status.py --runs runs/resnet50-1a2b3c4d-f0 --data data/planet
    python tools/run_status.py --runs 'runs/*'

One line per run, its state and its folder (a folder that does not exist yet is `new`):
new (nothing trained), unfinished (checkpoints/last.pt: train.py --resume continues it),
finished (result.json), diverged (train.py stopped it because its loss or weights became NaN or
infinite; why is said on stderr). With --data, a run trained on another dataset than DIR (its
config.json's fingerprint of train.csv and folds.csv) is refused naming both, exit code 2:
scripts/cv.sh calls this before it skips or resumes a run.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import glob  # noqa: E402
import logging  # noqa: E402

from utils.common.cli import add_runs_argument, run_script  # noqa: E402
from utils.common.errors import DataError, report_problems  # noqa: E402
from utils.runs.run_status import diverged_problem, run_state  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runs_argument(p)
    p.add_argument("--data", default=None, metavar="DIR",
                   help="the dataset the runs are about to be trained or reused on: a run trained on another one "
                        "is refused (default: none, not checked)")
    p.add_argument("--fix", default="give this dataset its own runs folder, or move the run away",
                   help="what a refusal tells to do (default: give this dataset its own runs folder, or move the "
                        "run away)")
    return p


def run_folders(patterns):
    """Run folders for --runs: folders with config.json, every such folder inside a folder of runs,
    and a path that does not exist (yet) as itself."""
    out = []
    for pattern in patterns:
        hits = [Path(h) for h in sorted(glob.glob(str(pattern)))] or [Path(pattern)]
        for hit in hits:
            if hit.is_dir() and not (hit / "config.json").is_file() and list(hit.glob("*/config.json")):
                out += sorted(p.parent for p in hit.glob("*/config.json"))
            else:
                out.append(hit)
    return list(dict.fromkeys(out))


def main(args):
    states, problems = {}, []
    for run in run_folders(args.runs):
        try:
            states[run] = run_state(run, args.data, args.fix)
        except DataError as e:  # said for every run, then exit 2
            problems.append(str(e))
    report_problems("runs trained on another dataset", problems)
    for run, state in states.items():
        print(f"{state} {run}")
        if state == "diverged":
            print(diverged_problem(run), file=sys.stderr)
    return states


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
