"""Resume a run from the run alone: its config.json holds the flags it was started with.

`python train.py --resume --name R` continues R with the stored flags. A flag given on
the command line is checked against the stored value: equal is fine, different is
refused (the run would not continue exactly), except for the flags that only say how
or where to run (role=HOW in the table of utils/runs/train_flags.py). Which flags were given
is found by parsing the command line a second time with every default suppressed
(argparse.SUPPRESS), so any flag the parser has, now or later, takes part as long as
train.py stores it in config.json ("args").
"""
import argparse
import json
import logging
import sys

from utils.common.errors import DataError
from utils.runs.directory import load_run
from utils.runs.train_flags import HOW_TO_RUN, LEGACY_ARGS, RESUME_KEYS, legacy_config

log = logging.getLogger(__name__)

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
    """The flags a run was started with: config.json's "args" (a flag of configuration it lacks, being
    newer than the run, at the table's legacy value), or None for older runs (their argv parsed now)."""
    if isinstance(stored.get("args"), dict):
        return {**LEGACY_ARGS, **stored["args"]}
    return None


def _shown(value):
    """A flag value as a user reads it: JSON, or 'not set (default)' for None."""
    return "not set (default)" if value is None else json.dumps(value, default=str)


def _run_side(key, value, defaults):
    """What the run was started with, for a flag that differs: its value, or for one left
    at its default (stored None) what that default came to (defaults[key]) when known."""
    flag = f"--{key.replace('_', '-')}"
    if value is None:
        return f"the run was started with {flag} at its default ({defaults.get(key, 'not set')})"
    return f"the run was started with {flag} {json.dumps(value, default=str)}"


def plan_defaults(stored):
    """What --lr, --size, --bs and --epochs left at their default came to in a run, from the
    stage plan in its config.json: {flag: text} ({} without a plan)."""
    stages = [s for s in stored.get("stages") or [] if isinstance(s, dict)]
    if not stages:
        return {}
    last = stages[-1]
    out = {"lr": f"{last.get('lr'):g}, the final stage's" if isinstance(last.get("lr"), (int, float)) else None,
           "size": f"{last.get('size')} px, the final stage's" if last.get("size") else None,
           "bs": f"{max(int(s.get('bs') or 0) for s in stages)}, the plan's largest" if last.get("bs") else None,
           "epochs": f"{sum(int(s.get('epochs') or 0) for s in stages)} in all" if last.get("epochs") else None}
    return {k: v for k, v in out.items() if v}


def restore_flags(args, stored, given, run_dir, parse=None, defaults=None):
    """The run's stored value of every flag not given on the command line: {dest: value} of
    those that differ from `args` (args itself is left as it is).

    args: the parsed namespace; stored: the run's config.json; given: given_flags();
    parse: argv -> namespace, used for runs written before flags were stored (their argv);
    defaults: {flag: text} what a flag stored as None (left at its default) came to in the
    run, for the message (default: plan_defaults(stored)). Flags that say how or where to
    run (HOW_TO_RUN) are never restored; a flag newer than the run counts as its legacy value.
    Raises DataError listing, in full, every given flag whose value differs from the run's.
    """
    flags = stored_flags(stored)
    if flags is None:
        if parse is None or not isinstance(stored.get("argv"), list):
            return {}
        flags = vars(parse(stored["argv"]))
    diff, restored = [], {}
    defaults = plan_defaults(stored) if defaults is None else defaults
    for key, value in flags.items():
        if key in HOW_TO_RUN or not hasattr(args, key) or _same(getattr(args, key), value):
            continue
        if key in given:
            diff.append(f"  --{key.replace('_', '-')}: {_run_side(key, value, defaults)}, "
                        f"the command line gives {_shown(getattr(args, key))}")
        else:
            restored[key] = value
    if diff:
        raise DataError(f"{run_dir}: cannot resume exactly, flags differ from the run's:\n" + "\n".join(diff) +
                        "\ndrop them (the run's own values are used), or start a new run")
    if restored:
        log.info("resuming with the run's flags: %s",
                 ", ".join(f"--{k.replace('_', '-')} {json.dumps(v, default=str)}" for k, v in restored.items()))
    return restored


def check_same_config(stored, cfg, run_dir):
    """Refuse (DataError) to resume when the config.json keys a run must keep (the table's
    checked flags, the labels and the stage plan) differ between the run's and the new one;
    a key a run recorded before it existed counts as its legacy value."""
    legacy = legacy_config()
    diff = [k for k in RESUME_KEYS if stored.get(k, legacy.get(k)) != cfg.get(k)]
    if diff:
        lines = [f"  {k}: run has {json.dumps(stored.get(k))}, now {json.dumps(cfg.get(k))}" for k in diff]
        raise DataError(f"{run_dir}: cannot resume exactly, the configuration changed:\n" + "\n".join(lines) +
                        "\nresume with the run's original flags, or start a new run")


def modern_spelling(stored):
    """A run's config.json with --aug and --mix written in the former spelling (`,` between
    items) turned into today's, in a copy, so that older runs resume and train the same.

    A value valid in both spellings means the same in both and is left as it is.
    """
    from utils.augment.mix import modern_mix  # torch: not needed to parse flags
    from utils.augment.transforms import modern_aug

    out = dict(stored)
    places = [out]
    if isinstance(out.get("args"), dict):
        out["args"] = dict(out["args"])
        places.append(out["args"])
    for place in places:
        if isinstance(place.get("aug"), str):
            place["aug"] = modern_aug(place["aug"])
        if isinstance(place.get("mix"), str):
            place["mix"] = modern_mix(place["mix"])
    return out


def data_of_run(run_dir):
    """The run's data directory on this machine (stored paths converted), or DataError."""
    run = load_run(run_dir)
    if run.data_root is None:
        raise DataError(f"{run_dir}: its data directory {run.config.get('data_root_abs')} is not found here; "
                        f"pass --data DIR")
    return run
