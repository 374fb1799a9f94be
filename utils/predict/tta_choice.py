"""`--tta auto`: which TTA's prediction files to read from a set of runs.

predict.py writes preds/<split>.<tta>.csv per run (scripts/cv.sh, zoo.sh and tools/submit.py
with 10crop; train.py itself only val.none.csv). The scripts that read several runs
(stack.py, tools/label_issues.py, tools/thresholds.py, tools/pseudo_label.py) take
`--tta auto` by default: the TTA whose files every run has, for every split the script
reads, the one with the most views first (PREFERENCE). Only plain TTA names count: files
of other checkpoints or sizes (`10crop-avg`, `hflip-96px`) are read when named with
`--tta`. A name given with `--tta` is used as given.

Also the commands that make missing prediction files (make_files_command): predict.py for a
trained run, tools/linear_probe.py for a linear probe, which has no checkpoint.
"""
from dataclasses import dataclass

from utils.common.errors import DataError
from utils.predict.tta_views import TTA_NAMES, TTA_VIEWS

AUTO = "auto"
VIEWS = TTA_VIEWS  # most views first (utils/predict/tta_views.py)
PREFERENCE = tuple(VIEWS)


@dataclass
class TTAChoice:
    """The TTA a script reads: name, and line (what `auto` chose and why; None when given)."""
    name: str
    line: str = None


def tta_help(what):
    """The --tta help of a script reading `what` (e.g. 'preds/val.<tta>.csv')."""
    return (f"which {what} to read: a TTA name (none, hflip, 10crop, ... or a variant such as 10crop-avg), or "
            f"auto: the one every run has, most views first ({' > '.join(PREFERENCE)}) (default: auto)")


def check_tta_name(name, flag="--tta"):
    """Raise DataError unless `name` is AUTO, a TTA name (utils/predict/tta_views.py TTA_NAMES) or a
    variant of one (10crop-avg, hflip-96px: the name, '-', predict.py's suffix). Returns name."""
    if name == AUTO or name in TTA_NAMES or name.split("-", 1)[0] in TTA_NAMES and "-" in name:
        return name
    raise DataError(f"{flag} {name}: unknown TTA {name!r}; give one of {', '.join((AUTO, *TTA_NAMES))} "
                    f"(or a variant of one predict.py wrote, such as 10crop-avg or hflip-96px)")


def _plain(run, split):
    return {t for t in run.tta_available(split) if t in VIEWS}


def _have(run, splits):
    """'val: 10crop, none; test: 10crop' for a run (every file, variants included)."""
    return "; ".join(f"{s}: {', '.join(run.tta_available(s)) or '-'}" for s in splits)


def _files(splits):
    return " and ".join(f"preds/{s}.<tta>.csv" for s in splits)


def choose_tta(runs, splits=("val",), requested=AUTO):
    """The TTA to read from ``runs`` for ``splits`` ('val', 'test' or both).

    runs: utils.runs.directory.Run list (non-empty); requested: a TTA name (returned as
    given) or AUTO: the name in PREFERENCE order whose preds/<split>.<tta>.csv exists in
    every run for every split. Returns a TTAChoice. Raises DataError, naming each run and
    the prediction files it has, when no TTA is shared by every run.
    """
    if requested != AUTO:
        return TTAChoice(requested)
    runs = list(runs)
    if not runs:
        raise DataError("--tta auto: no runs to choose a TTA from")
    shared = set(VIEWS)
    for r in runs:
        for s in splits:
            shared &= _plain(r, s)
    ranked = [t for t in PREFERENCE if t in shared]
    if ranked:
        best, also = ranked[0], ranked[1:]
        who = "the run" if len(runs) == 1 else f"every one of the {len(runs)} runs"
        return TTAChoice(best, f"--tta auto: {best} ({VIEWS[best]} view{'s' * (VIEWS[best] > 1)}): of the TTAs with "
                               f"{_files(splits)} in {who}, the one with the most views"
                               + (f" (also shared: {', '.join(also)})" if also else ""))
    raise DataError(no_shared_tta(runs, splits))


PROBE_TTAS = ("none", "hflip")  # what tools/linear_probe.py --tta offers


def make_files_command(run, tta, split, runs="{runs}"):
    """The command that makes ``run``'s preds/<split>.<tta>.csv (split: 'val', 'test' or 'both').

    predict.py for a trained run (``runs``: the run folders it names); for a linear probe
    (Run.is_linear_probe: no checkpoint) tools/linear_probe.py, which predicts every fold again
    and only with none or hflip.
    """
    if not run.is_linear_probe:
        return f"python predict.py --runs {runs} --tta {tta} --split {split}"
    images = run.config.get("images", "train")
    data = run.data_root or run.config.get("data_root_abs") or run.config.get("data_root")
    return (f"python tools/linear_probe.py --data {data} --arch {run.config.get('arch')}"
            + (f" --images {images}" if images != "train" else "")
            + f" --size {run.config.get('size')} --tta {tta if tta in PROBE_TTAS else 'hflip'} "
            f"(a linear probe has no checkpoint: its own tool predicts it again, with {' or '.join(PROBE_TTAS)})")


def make_files_commands(runs, tta, split):
    """The commands that make preds/<split>.<tta>.csv of every one of ``runs``: one predict.py command
    for the trained runs, one tools/linear_probe.py command per linear probe (make_files_command)."""
    trained = [r for r in runs if not r.is_linear_probe]
    fixes = [make_files_command(trained[0], tta, split, " ".join(str(r.dir) for r in trained))] if trained else []
    return fixes + list(dict.fromkeys(make_files_command(r, tta, split) for r in runs if r.is_linear_probe))


def no_shared_tta(runs, splits):
    """The message of choose_tta when no TTA is in every run: runs grouped by the files they
    have, and the predict.py command that completes them with the TTA most runs have."""
    groups = {}
    for r in runs:
        groups.setdefault(_have(r, splits), []).append(r)
    count = {t: sum(all(t in _plain(r, s) for s in splits) for r in runs) for t in PREFERENCE}
    common = max(PREFERENCE, key=lambda t: (count[t], VIEWS[t])) if any(count.values()) else "10crop"
    lacking = [r for r in runs if not all(common in _plain(r, s) for s in splits)]
    split = splits[0] if len(splits) == 1 else "both"
    lines = [f"--tta auto: no TTA has {_files(splits)} in every run; the runs have:"]
    lines += [f"  {', '.join(str(r.dir) for r in rs)}: {have}" for have, rs in groups.items()]
    lines.append("give --tta NAME to read that TTA, select runs that share one with --runs, or make the missing "
                 "files, e.g. " + "; ".join(make_files_commands(lacking, common, split)))
    return "\n".join(lines)
