"""What every script's `__main__` shares: logging for people, bad input -> exit code 2,
a refused write -> exit code 1, Ctrl-C -> 130, SIGTERM -> 143, each as one line.

Ctrl-C while a script still imports its libraries (a second or more for torch) is caught by
`stop_on_ctrl_c`, which each script calls before its other imports; `exit_cleanly` hands
Ctrl-C back to Python's KeyboardInterrupt, so cleanup runs as before."""
import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from utils.common.errors import DataError, RunFailed
from utils.common.termination import Terminated, raise_on_sigterm
from utils.common.write_errors import fault_message

# train.py writes runs here unless told otherwise (--out); every tool reads them here.
DEFAULT_RUNS = str(Path(__file__).resolve().parents[2] / "runs")


def add_runs_argument(group):
    """--runs PATTERN...: run folders, folders of runs or glob patterns (default: the repository's runs/)."""
    group.add_argument("--runs", nargs="+", default=[DEFAULT_RUNS], metavar="PATTERN",
                       help="run folders, folders of runs or glob patterns (default: runs/ in the repository)")

def add_hidden_alias(parser, alias, flag):
    """Accept `alias`, a former spelling, for the option `flag` of `parser`, left out of --help.

    Flag names follow README "Option strings": --runs for the runs a script reads, --out for
    what it writes. A command written with the old name keeps working; messages name `flag`.
    """
    action = parser._option_string_actions[flag]  # argparse has no public way to alias an option
    parser._option_string_actions[alias] = action


def _stop_now(signum, frame):
    sys.stderr.write("stopped by Ctrl-C\n")
    sys.stderr.flush()
    os._exit(130)  # nothing is written while a script imports: no cleanup to run


def stop_on_ctrl_c(module_name="__main__"):
    """Ctrl-C from now until `exit_cleanly` starts: the line "stopped by Ctrl-C" and exit code 130 at once,
    without a traceback. A script calls it first thing, before its heavy imports, with its __name__:
    only a script run as the program does it (a module imported by another program leaves its Ctrl-C)."""
    if module_name == "__main__":
        signal.signal(signal.SIGINT, _stop_now)


VERBOSE = "%(asctime)s %(levelname)s %(message)s"
QUIET = "%(levelname)s: %(message)s"


def run_script(main, parse_args, level=logging.INFO):
    """Configure logging, parse the arguments and call main(args), under `exit_cleanly`."""
    logging.basicConfig(level=level, format=VERBOSE if level <= logging.INFO else QUIET, datefmt="%H:%M:%S")
    return exit_cleanly(lambda: main(parse_args()))


def exit_cleanly(call):
    """call() with the exits every script shares; returns what it returns.

    A DataError prints its message to stderr and exits with code 2, a RunFailed (a diverged
    training) with code 1. A write the machine
    refuses (full disk, quota, file size limit, read-only, permission:
    utils.common.write_errors) prints one line naming the file and exits with code 1.
    Ctrl-C exits with 130 and SIGTERM with 143 (utils.common.termination), each after one
    line, once every `finally` and cleanup on the way has run. Anything else is a bug and
    keeps its traceback.
    """
    raise_on_sigterm()
    if signal.getsignal(signal.SIGINT) is _stop_now:  # the imports are done: Ctrl-C raises KeyboardInterrupt again
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return call()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopped by Ctrl-C", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("stopped by SIGTERM", file=sys.stderr)
        sys.exit(143)
    except Exception as e:
        message = fault_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)


def refuse_idle_flags(args, needs, parser, given=(), values=True):
    """Refuse flags that act only together with another one (their partner) while it is unset.

    args: the parsed namespace; needs: {dest: (partner dest, the partner as typed, e.g.
    '--pseudo CSV')}; parser: the script's parser (its defaults and option strings);
    given: the dests typed on the command line (utils.train.resume.given_flags). A given flag is
    refused whatever its value, its default included: the command asks for something that
    would not happen. values: also refuse a value other than the parser's default that came
    from elsewhere (a --config file); off on --resume, whose values are the run's own.
    Raises DataError listing every such flag.
    """
    actions = {a.dest: a for a in parser._actions}  # argparse has no public way to list the actions
    problems = []
    for dest, (partner, typed) in needs.items():
        value = getattr(args, dest)
        if getattr(args, partner) is not None or not (dest in given or values and value != parser.get_default(dest)):
            continue
        action = actions[dest]
        if isinstance(action, argparse.BooleanOptionalAction):
            shown = action.option_strings[0 if value else 1]
        else:
            shown = f"{action.option_strings[0]} {value}"
        problems.append(f"{shown}: only used with {typed}; give {typed.split()[0]} or drop {shown.split()[0]}")
    if problems:
        raise DataError("\n".join(problems))


def pick_device(name):
    """--device value (auto | cpu | cuda | cuda:N) -> torch.device; DataError if CUDA is absent."""
    import torch  # lazy: every script imports this module; tools/make_demo.py and near_duplicates.py never load torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"--device {name}: CUDA is not available here; use --device cpu")
    return torch.device(name)


def add_truth_arguments(group):
    """--data and --path-map: where the runs' truth (train.csv) is found on this machine."""
    group.add_argument("--data", default=None, metavar="DIR",
                       help="data folder whose train.csv is the truth for every run (default: each run's data root)")
    group.add_argument("--path-map", default=None, metavar="FILE",
                       help="lines OLD=NEW rewriting stored path prefixes, added to those of the "
                            "MULTITAG_PATH_MAP environment variable (default: none)")


CACHE_HELP = ("uint8 image cache (default: DATA/.cache, or ~/.cache/multitag when DATA is read-only; "
              "env MULTITAG_CACHE)")


def add_cache_argument(group, what="uint8 image cache"):
    """--cache-dir: where decoded images (and derived arrays) are cached (utils.data.cache.default_cache_dir)."""
    group.add_argument("--cache-dir", default=None, help=CACHE_HELP.replace("uint8 image cache", what, 1))
