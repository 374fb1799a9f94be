"""Which weights become checkpoints/best.pt: the raw model's or its EMA's, whichever validates better.

Every epoch the raw weights are validated, and with --ema the averaged weights too;
the better of the two (by F2 at its own greedy thresholds; a tie keeps the raw ones) is
the epoch's candidate. It replaces best.pt when its F2 beats the run's best so far (a
tie keeps the earlier epoch). best.pt records which weights it holds ("weights": "raw"
or "ema"), the epoch, the F2 and the thresholds.
"""
from dataclasses import dataclass

import numpy as np
import torch

from utils.metrics.threshold_search import greedy_thresholds
from utils.models.checkpoint import clean_state_dict, load_checkpoint, load_weights, save_checkpoint


@dataclass
class Candidate:
    """One set of weights with its validation score."""
    weights: str             # "raw" | "ema"
    module: torch.nn.Module  # the unwrapped model holding them
    f2: float                # validation F2 at `thr`
    thr: np.ndarray          # (L,) per-label thresholds

    @classmethod
    def scored(cls, weights, module, y_val, probs):
        """Score `module`'s validation probabilities probs (V, L) against y_val (V, L) 0/1."""
        thr, f2 = greedy_thresholds(y_val, probs)
        return cls(weights, module, f2, thr)


def choose(raw, ema=None):
    """The epoch's candidate: `ema` when given and strictly better than `raw`, else `raw`."""
    return ema if ema is not None and ema.f2 > raw.f2 else raw


def keep_if_best(path, state, candidate, epoch, meta):
    """Write `candidate` to best.pt at `path` when it beats state["best"]; True when written.

    state: the run's position dict, whose "best" (F2), "best_epoch" and "best_weights" are updated;
    epoch: the 1-based global epoch; meta: the checkpoint meta (utils.train.run_state.checkpoint_meta).
    """
    if not candidate.f2 > state["best"]:  # (a NaN score never wins)
        return False
    state["best"], state["best_epoch"], state["best_weights"] = candidate.f2, epoch, candidate.weights
    save_checkpoint(path, {"model": clean_state_dict(candidate.module.state_dict()), "meta": meta,
                           "epoch": epoch, "val_f2": candidate.f2, "thresholds": candidate.thr.tolist(),
                           "weights": candidate.weights})
    return True


def load_best(path, module):
    """Load best.pt at `path` into `module`; returns the checkpoint dict (its meta, epoch, val_f2,
    thresholds). Raises DataError when the file is missing or its weights do not fit."""
    best = load_checkpoint(path)
    load_weights(module, best["model"], path)
    return best
