"""Where a run stands, and checkpoints/last.pt that stores it for exact resume.

The position of a run is (stage, epoch within the stage, step within the epoch),
always meaning "the next thing to do". last.pt stores it together with the model,
optimizer, scheduler, AMP scaler, every RNG state, the partial epoch's totals, the
best score and the history, so a resumed run computes exactly what an
uninterrupted one would. Sample order and augmentation are pure functions of
(seed, epoch, index) (utils/data/loader.py), which is what makes mid-epoch resume exact.
"""
import logging
import random

import numpy as np
import torch

from utils.common import distributed as dist
from utils.common.errors import DataError
from utils.models.factory import unwrap_model as unwrap
from utils.models.checkpoint import check_labels, clean_state_dict, load_checkpoint, load_weights
from utils.runs.checkpoint_origin import ORIGIN_KEYS

log = logging.getLogger(__name__)


def new_state():
    """The position dict of a run that has not started.

    stage, epoch, step: the next thing to do (0-based); global_epoch, global_step: epochs
    and steps done over all stages; best, best_epoch: best.pt's F2 and 1-based epoch (-1:
    none yet); history: one dict per epoch (history.csv rows); stats: the partial epoch's
    totals (utils.train.loop.train_one_epoch) or None; train_seconds: time spent in epochs.
    """
    return {"stage": 0, "epoch": 0, "step": 0, "global_epoch": 0, "global_step": 0,
            "best": -1.0, "best_epoch": -1, "history": [], "stats": None, "train_seconds": 0.0}


def new_epoch_stats(seen, lr):
    """Running totals of an epoch (kept in last.pt, so a resumed epoch reports the same numbers).

    seen: items in the epoch; lr: the learning rate at its start. loss_sum and n (images)
    are summed over ranks; data_s and compute_s are seconds waiting for data and computing.
    """
    return {"loss_sum": 0.0, "n": 0, "steps": 0, "data_s": 0.0, "compute_s": 0.0, "seen": seen, "lr": lr}


def rng_state():
    """Every RNG this process uses, as a picklable dict."""
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s):
    """Restore what rng_state() returned."""
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed):
    """Seed Python's, numpy's and torch's global RNGs with the int `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def checkpoint_meta(config, stage):
    """A checkpoint's "meta": what predict.py needs to rebuild and feed the model.

    config: the run config (config.json); stage: the Stage whose image size the weights use.
    """
    return {"arch": config["arch"], "labels": config["labels"], "size": stage.size,
            "mean": config["mean"], "std": config["std"], "drop_rate": config.get("drop_rate"),
            "head": config.get("head"),
            "label_group": config.get("label_group"), "stages": config["stages"],
            "run": config.get("name"), "channels": config.get("channels", 3),
            "band_scaling": config.get("band_scaling"), "weights": config.get("weights"),
            # the fold split the weights held out: predict.py refuses them for any other fold
            **{k: config.get(k) for k in ORIGIN_KEYS}}


def last_path(run_dir):
    """checkpoints/last.pt of the run directory `run_dir` (a Path)."""
    return run_dir / "checkpoints" / "last.pt"


def last_checkpoint(model, meta, state, config_stages, optimizer=None, scheduler=None, scaler=None, ema=None):
    """The dict last.pt holds: weights, position, every RNG, and the optimizer, scheduler, AMP
    scaler and EMA states (None where absent; optimizer and scheduler are None at a stage
    boundary, where the next stage starts fresh ones)."""
    return {"model": clean_state_dict(unwrap(model).state_dict()), "meta": meta,
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(), "state": dict(state), "config_stages": config_stages,
            "ema": ema.state_dict() if ema is not None else None}


def resume(run_dir, model, config, scaler=None, ema=None):
    """Load run_dir's last.pt into `model` (and `scaler`, `ema`) and restore every RNG.

    Temp files of writes a kill interrupted are deleted first (never read, never kept).
    Returns (state, optimizer_sd, scheduler_sd): the stored position dict and the optimizer
    and scheduler state dicts (None at a stage boundary). Raises DataError when last.pt
    is missing or damaged, was made with another stage plan or labels than `config`, or
    holds no EMA weights while `ema` needs them.
    """
    if dist.is_main():
        for tmp in (run_dir / "checkpoints").glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    path = last_path(run_dir)
    ckpt = load_checkpoint(path, need=("model", "meta", "state", "rng"))
    if ckpt.get("config_stages") != config["stages"]:
        raise DataError(f"{run_dir}: the checkpoint was made with another stage plan; "
                        f"resume with the original flags or start a new run")
    check_labels(ckpt["meta"], config["labels"], path)
    load_weights(unwrap(model), ckpt["model"], path)
    set_rng_state(ckpt["rng"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None:
        _load_ema(ema, ckpt.get("ema"), run_dir, path)
    state = ckpt["state"]
    log.info("resuming %s at stage %d, epoch %d, step %d", run_dir.name, state["stage"] + 1, state["epoch"] + 1,
             state["step"])
    return state, ckpt.get("optimizer"), ckpt.get("scheduler")


def _load_ema(ema, state_dict, run_dir, path):
    """Restore the EMA weights; DataError when the checkpoint has none or they do not fit."""
    if state_dict is None:
        raise DataError(f"{run_dir}: the checkpoint holds no EMA weights; resume without --ema")
    try:
        ema.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: the EMA weights do not fit the model ({e}); the file is damaged; "
                        f"start a new run") from e


def restore_optimizer(optimizer, scheduler, opt_sd, sched_sd, path, where):
    """Load stored optimizer/scheduler state dicts (None: keep fresh); DataError naming `path`
    and `where` (e.g. "stage 2") when they do not fit."""
    try:
        if opt_sd is not None:
            optimizer.load_state_dict(opt_sd)
        if sched_sd is not None:
            scheduler.load_state_dict(sched_sd)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DataError(f"{path}: its optimizer or scheduler state does not fit {where} "
                        f"({type(e).__name__}: {e}); the file is damaged") from e
