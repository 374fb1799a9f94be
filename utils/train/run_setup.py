"""From train.py's parsed flags to a run: the flags resolved, the run directory, its config.json.

resolve_flags never changes the parsed namespace: it returns a new one with what the run
adds (a resumed run's own flags, the demo data's defaults, the data and folds file of a
resumed run). build_config writes the flags the table in utils/runs/train_flags.py records.
"""
import argparse
import logging
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from utils.augment.transforms import OPS, parse_augment
from utils.common import distributed as dist
from utils.common.atomic import atomic_write_json
from utils.common.errors import DataError
from utils.common.paths import native_rel, portable
from utils.common.text import read_json
from utils.data.cache import default_workers as cores
from utils.data.dataset import check_test_images
from utils.data.demo import ensure_demo
from utils.models.factory import model_meta
from utils.models.fast_path import FP32, Setting, network_name, resolve
from utils.runs.directory import model_key
from utils.runs.run_guard import check_not_in_use
from utils.runs.run_name import default_run_name
from utils.runs.train_flags import recorded, stored_args
from utils.train.resume import data_of_run, modern_spelling, restore_flags

log = logging.getLogger("train")
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"
EXCLUDED_COPY = "excluded.csv"  # --exclude's images, copied into the run directory
# Without --data the demo trains in a few minutes on 2 CPU cores: the demo's image size
# and a short plan, unless the user sets them.
DEMO_DEFAULTS = {"size": 96, "epochs": 3}


def updated(flags, **changes):
    """A new namespace: `flags` with `changes` (flags itself unchanged)."""
    return argparse.Namespace(**{**vars(flags), **changes})


def resolve_flags(args, parse):
    """(the run's flags, the run directory to resume or None) from the parsed `args`.

    parse: argv -> namespace (train.py's parse_args), for runs that stored only their argv.
    Raises DataError when --resume finds nothing to resume or a flag differs from the run's.
    """
    run_dir, flags = None, args
    if args.resume:
        run_dir = find_run(args, Path(args.out))
        stored = modern_spelling(read_json(run_dir / "config.json"))
        flags = updated(args, **restored_values(args, stored, run_dir, parse))
    flags = updated(flags, **demo_values(flags))
    if args.resume and "folds_file" not in args._given and stored.get("folds_file"):
        flags = updated(flags, folds_file=str(data_root(flags) / native_rel(stored["folds_file"])))
    return flags, run_dir


def restored_values(args, stored, run_dir, parse):
    """{dest: value} a resumed run brings: its flags not given, and its data folder unless --data is."""
    values = restore_flags(args, stored, args._given, run_dir, parse=parse)
    if "data" not in args._given:
        root = data_of_run(run_dir).data_root
        if root.resolve() != DEMO.resolve():
            values["data"] = str(root)
    return values


def demo_values(flags):
    """Without --data (the demo), DEMO_DEFAULTS for --size/--epochs left unset by every plan source."""
    if flags.data or flags.stages or flags.config:
        return {}
    return {k: v for k, v in DEMO_DEFAULTS.items() if getattr(flags, k) is None}


def data_root(flags):
    """--data, or the demo dataset (generated on first use, by rank 0)."""
    if flags.data:
        return Path(flags.data)
    if not (DEMO / "train.csv").is_file():
        if dist.is_main():
            log.info("generating the demo dataset in %s (first use)", DEMO)
            ensure_demo(DEMO)
        dist.barrier()
    return DEMO


def find_run(flags, out):
    """The run directory to create or resume; raises DataError when that is impossible."""
    if flags.resume:
        return _run_to_resume(flags, out)
    name = flags.name or default_run_name(flags)
    if dist.world_size() > 1:  # every rank must use rank 0's name
        obj = [name]
        torch.distributed.broadcast_object_list(obj, src=0)
        name = obj[0]
    run = out / name
    if dist.is_main():  # a run of this name still training: say so, not "pass --resume" (rank 0 holds
        check_not_in_use(run)  # the lock of its own run once it has found it)
    if (run / "checkpoints" / "last.pt").is_file() or (run / "result.json").is_file():
        raise DataError(f"{run}: run exists; pass --resume to continue it or choose another --name")
    return run


def finished_result(run_dir):
    """The run's result.json dict when it says the run finished, else None (a run killed after
    its last checkpoint and before its result has none: --resume completes it)."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        return None
    result = read_json(path)
    return result if result.get("finished") and "best_val_f2" in result else None


def _run_to_resume(flags, out):
    """--name, or the newest unfinished run matching the given --arch, --fold, --images (any, when none is)."""
    if flags.name:
        run = out / flags.name
        if not run.is_dir():
            raise DataError(f"--resume --name {flags.name}: no run named {flags.name} in --out {out}; "
                            + _runs_in(out))
        if not (run / "checkpoints" / "last.pt").is_file():
            raise DataError(f"{run}: nothing to resume (no checkpoints/last.pt); run without --resume")
        return run
    want = {k: getattr(flags, k) for k in ("arch", "fold", "images") if k in getattr(flags, "_given", ())}
    cands = []
    for c in out.glob("*/config.json"):
        cfg = read_json(c)
        if all(cfg.get(k) == v for k, v in want.items()) \
                and not (c.parent / "result.json").is_file() and (c.parent / "checkpoints" / "last.pt").is_file():
            cands.append(c.parent)
    if not cands:
        what = " ".join(f"{k} {v}" for k, v in want.items()) or "any"
        raise DataError(f"{out}: no unfinished run ({what}) to resume; pass --name")
    return max(cands, key=lambda d: d.stat().st_mtime)


def _runs_in(out, n=5):
    """'its runs: a, b (+3 more)' / 'it holds no runs' (the folders of --out, names sorted)."""
    names = sorted(d.name for d in out.iterdir() if d.is_dir()) if out.is_dir() else []
    if not names:
        return "it holds no runs" if out.is_dir() else "that folder does not exist"
    return "its runs: " + ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def default_workers(device):
    """Loader workers: on CUDA most cores; on CPU one (the cores are busy computing)."""
    return min(8, cores()) if device.type == "cuda" else min(1, cores() - 1)


def warn_test_images(spec):
    """Say now, not after training, which test images predict.py will not be able to read."""
    problems = check_test_images(spec)
    if problems:
        log.warning("%d test image(s) in %s look damaged; predict.py will refuse them, so fix or replace them "
                    "while this trains:\n  %s", len(problems), spec.root / spec.test_images,
                    "\n  ".join(problems[:10]) + (f"\n  (+{len(problems) - 10} more)" if len(problems) > 10 else ""))


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def build_config(flags, spec, label_idx, plan, model, run_dir, root, folds_file, exclude=None):
    """The resolved configuration written to config.json: the flags the table records
    (utils/runs/train_flags.py), what they resolved to (labels, stages, head, paths) and the
    flags themselves ("args"). exclude: the --exclude list's SHA-1 (a model and resume key),
    with its path and count in exclude_file / exclude_n."""
    meta = model_meta(model)
    rel, absolute = portable(root, run_dir)
    cfg = {"name": run_dir.name, **recorded(vars(flags)),
           "labels": [spec.labels[i] for i in label_idx], "all_labels": spec.labels,
           "data_root": rel, "data_root_abs": absolute,
           "folds_file": portable(folds_file, root)[0] or str(Path(folds_file).resolve()),
           "head": meta.get("head_name"), "drop_rate": next((s.drop_rate for s in plan if s.drop_rate), None),
           "stages": [s.to_dict() for s in plan], "mean": list(meta["mean"]), "std": list(meta["std"]),
           "argv": sys.argv[1:], "args": stored_args(vars(flags)), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "git_commit": git_commit(), "versions": {"python": platform.python_version(), "torch": torch.__version__}}
    cfg.update(exclude or {"exclude": None})
    cfg["model_key"] = model_key(cfg)
    return cfg


def check_aug_static(flags):
    """--aug-static K needs K >= 0, an augmentation to copy and the per-image (cpu) path."""
    if flags.aug_static < 0:
        raise DataError(f"--aug-static {flags.aug_static}: give a number of copies >= 1, or 0 for dynamic")
    if flags.aug_static and not parse_augment(flags.aug):
        raise DataError(f"--aug-static {flags.aug_static} with --aug {flags.aug!r}: there is no augmentation "
                        "to pre-compute; drop --aug-static or give --aug")
    if flags.aug_static and flags.aug_device == "gpu":
        raise DataError("--aug-static makes its copies on the CPU; drop --aug-device gpu")


def check_channels(flags):
    """--channels: at least 1; colour augmentation needs R, G, B."""
    if flags.channels < 1:
        raise DataError(f"--channels {flags.channels}: must be at least 1")
    names = [name for name, _ in parse_augment(flags.aug)]
    colour = [name for name in names if not OPS[name].geometric]
    if flags.channels < 3 and colour:
        raise DataError(f"--aug {flags.aug}: colour steps {colour} need R, G, B; --channels {flags.channels} "
                        f"keeps fewer bands: drop them from --aug")
    # these draw geometric and colour ops together on an RGB image; the other bands would not move
    mixed = [name for name in names if name in ("randaug", "trivialaug", "autoaug")]
    if flags.channels != 3 and mixed:
        raise DataError(f"--aug {flags.aug}: {mixed} work on RGB images only; with --channels {flags.channels} "
                        f"use the geometric steps (hflip, rotate, shift, crop, rrc) and pca, colorswap, erase")


def run_setting(flags, device, plan, model, record=None):
    """The precision and memory format the run trains in: (fast_path Setting, how it was reached).

    A new run resolves --amp and --channels-last (utils/models/fast_path.py; on CPU, auto is
    measured at the plan's stage with the most epochs x pixels). A resumed run keeps the setting
    recorded in its config.json ("fast_path"; a run recorded before it trained fp32 contiguous
    on CPU), except for either flag given again. Measuring leaves the model and the random state
    as they were; under torchrun rank 0 measures first and the others read its cache entry.
    """
    amp, cl = flags.amp, flags.channels_last
    if flags.resume:
        kept = {"amp", "channels_last"} - set(flags._given)
        base = record or (FP32.record() if device.type == "cpu" else None)
        if base and kept == {"amp", "channels_last"}:
            return Setting.from_record(base), "the run's own" + ("" if record else " (recorded before the fast path)")
        if base:  # a flag given again replaces its half of the run's setting
            amp = base["amp"] if "amp" in kept else amp
            cl = base["channels_last"] if "channels_last" in kept else cl
    main = max(plan, key=lambda s: s.epochs * s.size ** 2)
    name = network_name(flags.arch, flags.head, flags.channels)
    return dist.main_first(lambda: resolve(device, amp, cl, model, name, main.size, "train", main.bs,
                                           flags.channels))


def record_setting(run_dir, stored, setting, how):
    """On resume, config.json's "fast_path" becomes `setting` when it is not the one recorded (a flag
    given again, or a run recorded before the key): the run goes on in it, and so would a later resume."""
    rec = stored.get("fast_path")
    if rec and Setting.from_record(rec) == setting:
        return
    raw = read_json(Path(run_dir) / "config.json")
    raw["fast_path"] = {**setting.record(), "chosen": how}
    atomic_write_json(Path(run_dir) / "config.json", raw)
