"""Rewrite the stored paths in run records (config.json) for this machine.

    python tools/convert_paths.py --from 'D:\\kaggle' --to /home/me/kaggle        # dry run
    python tools/convert_paths.py --from 'D:\\kaggle' --to /home/me/kaggle --apply
    python tools/convert_paths.py --map paths.txt --apply      # lines OLD=NEW
    python tools/convert_paths.py --auto --apply               # to wherever the data is found here

Every absolute path string in config.json under an OLD prefix (Windows prefixes
match case-insensitively, '\\' and '/' alike) gets the NEW prefix; relative paths
with '\\' get '/'; when the data root's new absolute path exists here, its stored
relative path is recomputed. --auto takes each record whose stored data path does
not exist here but is found (relative path, MULTITAG_PATH_MAP / --path-map, or
re-rooting) and writes the found location.

Dry run by default: each change is printed, nothing is written. --apply writes each
changed config.json atomically after saving the previous version as config.json.bak.
Running the same conversion again changes nothing.
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

from utils.common.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from utils.common.errors import DataError, report_problems  # noqa: E402
from utils.common.text import read_text  # noqa: E402
from utils.common.paths import (is_foreign_abs, load_path_map, parse_path_map, portable_rel,  # noqa: E402
                         rewrite_record)
from utils.runs.directory import find_runs  # noqa: E402
from utils.common.cli import add_runs_argument, run_script  # noqa: E402

log = logging.getLogger("convert_paths")

RELATIVE_KEYS = ("data_root", "folds_file")  # stored relative to the run / the data root


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("runs")
    add_runs_argument(g)
    m = p.add_argument_group("conversion (at least one)")
    m.add_argument("--from", dest="old", metavar="PREFIX", help="stored path prefix to replace (with --to)")
    m.add_argument("--to", dest="new", metavar="PREFIX",
                   help="its replacement; a relative one is taken from the current directory")
    m.add_argument("--map", metavar="FILE", help="file of OLD=NEW lines (or a JSON object), longest prefix wins")
    m.add_argument("--auto", action="store_true",
                   help="rewrite each record whose stored data path is missing here to where it is found")
    m.add_argument("--path-map", metavar="FILE",
                   help="with --auto: path map used to find the data (added to MULTITAG_PATH_MAP)")
    a = p.add_argument_group("action")
    a.add_argument("--apply", action="store_true",
                   help="write the changes (atomically, previous file kept as config.json.bak); default: dry run")
    return p


def _absolute(prefix):
    """A --to prefix as an absolute path (foreign absolute prefixes stay as given)."""
    return prefix if is_foreign_abs(prefix) else str(Path(prefix).resolve())


def explicit_pairs(args):
    """(old, new) pairs from --from/--to and --map; DataError for a half-given pair."""
    if bool(args.old) != bool(args.new):
        raise DataError("--from and --to go together")
    pairs = [(args.old, _absolute(args.new))] if args.old else []
    if args.map:
        if not Path(args.map).is_file():
            raise DataError(f"{args.map}: map file not found")
        pairs += [(o, _absolute(n)) for o, n in parse_path_map(read_text(args.map))]
    if not pairs and not args.auto:
        raise DataError("nothing to convert: give --from PREFIX --to PREFIX, --map FILE or --auto")
    return pairs


def auto_pairs(run):
    """[(stored absolute data root, where it is here)] when the stored one is missing here."""
    stored = run.config.get("data_root_abs")
    if not stored or run.data_root is None or Path(stored).exists():
        return []
    return [(stored, str(run.data_root))]


def convert_config(config, run_dir, pairs):
    """(new config, changes [(key, old, new)]) for one record; the input is not modified."""
    new, changes = rewrite_record(config, pairs)
    for key in RELATIVE_KEYS:
        v = new.get(key)
        if isinstance(v, str) and "\\" in v and not is_foreign_abs(v):
            new[key] = portable_rel(v)
            changes.append((key, v, new[key]))
    abs_new = new.get("data_root_abs")
    if abs_new != config.get("data_root_abs") and abs_new and Path(abs_new).is_dir():
        rel = portable_rel(os.path.relpath(Path(abs_new).resolve(), Path(run_dir).resolve()))
        if rel != new.get("data_root"):
            changes.append(("data_root", new.get("data_root"), rel))
            new["data_root"] = rel
    return new, changes


def write_record(cfg_path, new_config):
    """Keep the current file as config.json.bak, then replace config.json atomically."""
    atomic_write_text(cfg_path.with_name(cfg_path.name + ".bak"), cfg_path.read_text())
    atomic_write_json(cfg_path, new_config)


def main(args):
    pairs = explicit_pairs(args)
    missing = [p for p in args.runs if not any(c in p for c in "*?[") and not Path(p).exists()]
    if missing:
        raise DataError(f"runs folder not found: {', '.join(missing)}")
    runs, bad = find_runs(args.runs, load_path_map(args.path_map) if args.auto else [])
    report_problems("unreadable run records (nothing was changed)", [f"{p}: {r.splitlines()[0]}" for p, r in bad])
    if not runs:
        raise DataError(f"no run records (config.json) under {' '.join(args.runs)}")
    changed = []
    for run in runs:
        cfg_path = run.dir / "config.json"
        new, changes = convert_config(run.config, run.dir, pairs + (auto_pairs(run) if args.auto else []))
        for key, old, value in changes:
            print(f"{cfg_path}: {key}: {old!r} -> {value!r}")
        if changes:
            changed.append((cfg_path, new))
    n_changes = len(changed)
    if not args.apply:
        print(f"{n_changes} of {len(runs)} record(s) would change; dry run, nothing written (pass --apply)")
        return changed
    for cfg_path, new in changed:
        write_record(cfg_path, new)
    print(f"rewrote {n_changes} of {len(runs)} record(s); previous versions in config.json.bak")
    return changed


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.WARNING)
