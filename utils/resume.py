"""Resume a run from the run alone: its config.json holds the flags it was started with.

`python train.py --resume --name R` continues R with the stored flags. A flag given on
the command line is checked against the stored value: equal is fine, different is
refused (the run would not continue exactly), except for the flags that only say how
or where to run (FREE). Which flags were given is found by parsing the command line a
second time with every default suppressed (argparse.SUPPRESS), so any flag the parser
has, now or later, takes part as long as train.py stores it in config.json ("args").
"""
import argparse
import json
import logging
import sys

from utils.io import DataError

log = logging.getLogger(__name__)

# Flags that say how or where to run, not what is learnt: never restored from the run,
# free to differ on resume (another machine, another device or loader setting).
FREE = frozenset({"resume", "name", "out", "data", "folds_file", "cache_dir", "device", "workers", "amp",
                  "channels_last", "compile", "ckpt_every", "ckpt_minutes", "plots", "tensorboard"})


def given_flags(make_parser, argv=None):
    """Destinations of the flags present on the command line (argv; default sys.argv[1:]).

    make_parser: a function returning a fresh ArgumentParser (its defaults get suppressed).
    """
    parser = make_parser()
    for action in parser._actions:  # argparse has no public way to list the actions
        action.default = argparse.SUPPRESS
    ns, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return set(vars(ns))


def _same(a, b):
    """Equal after a JSON round trip (tuples vs lists, ints vs floats stored as such)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def stored_flags(stored):
    """The flags a run was started with: config.json's "args", or for older runs its argv parsed now."""
    if isinstance(stored.get("args"), dict):
        return dict(stored["args"])
    return None


def _shown(value):
    """A flag value as a user reads it: JSON, or 'not set (default)' for None."""
    return "not set (default)" if value is None else json.dumps(value, default=str)


def restore_flags(args, stored, given, run_dir, parse=None):
    """Set every flag not given on the command line to the run's stored value, in place.

    args: the parsed namespace; stored: the run's config.json; given: given_flags();
    parse: argv -> namespace, used for runs written before flags were stored (their argv).
    Raises DataError listing, in full, every given flag whose value differs from the run's.
    Returns the names of the flags restored.
    """
    flags = stored_flags(stored)
    if flags is None:
        if parse is None or not isinstance(stored.get("argv"), list):
            return []
        flags = vars(parse(stored["argv"]))
    diff, restored = [], []
    for key, value in flags.items():
        if key in FREE or not hasattr(args, key):
            continue
        if key in given:
            if not _same(getattr(args, key), value):
                diff.append(f"  --{key.replace('_', '-')}: the run has {_shown(value)}, "
                            f"the command line {_shown(getattr(args, key))}")
        elif not _same(getattr(args, key), value):
            setattr(args, key, value)
            restored.append(key)
    if diff:
        raise DataError(f"{run_dir}: cannot resume exactly, flags differ from the run's:\n" + "\n".join(diff) +
                        "\ndrop them (the run's own values are used), or start a new run")
    if restored:
        log.info("resuming with the run's flags: %s",
                 ", ".join(f"--{k.replace('_', '-')} {json.dumps(flags[k], default=str)}" for k in restored))
    return restored


def data_of_run(run_dir):
    """The run's data directory on this machine (stored paths converted), or DataError."""
    from utils.runs import load_run

    run = load_run(run_dir)
    if run.data_root is None:
        raise DataError(f"{run_dir}: its data directory {run.config.get('data_root_abs')} is not found here; "
                        f"pass --data DIR")
    return run
