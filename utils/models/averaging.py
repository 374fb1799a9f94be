"""Checkpoint averaging: the weights of a run's last (or best) epochs, averaged.

    python train.py ... --keep-epochs 5            # keeps checkpoints/epoch_NNN.pt of the last 5 epochs
    python tools/average_checkpoints.py --runs runs/X --last 5 [--bn-recompute]
    python predict.py --runs runs/X --checkpoint avg

Files: checkpoints/epoch_NNN.pt = {"model": state dict, "meta": as in best.pt, "epoch": N
(1-based over the run), "val_f2": the epoch's validation F2 of these (raw) weights,
"weights": "raw"}; checkpoints/avg.pt = the same format as best.pt plus "averaged": which
epochs, how chosen, whether BatchNorm statistics were recomputed.

The average is uniform over the chosen checkpoints (the "checkpoint averaging" of
Vaswani et al. 2017 and of Izmailov et al. 2018's SWA evaluated at epoch ends). It is
computed in float64 over the stored state dicts at once; AveragedModel's running mean is
meant for streaming and rounds at every update. BatchNorm statistics of averaged weights
are not the average of the statistics; torch.optim.swa_utils.update_bn recomputes them
over the training images (`recompute_bn`), as the SWA paper does.

SWA itself (Izmailov et al. 2018: a final phase at a constant or cyclic lr, its epoch-end
weights averaged, BatchNorm recomputed) is this with a constant-lr last stage:

    python train.py --stages "...;epochs=5,sched=const,lr=1e-4" --keep-epochs 5
    python tools/average_checkpoints.py --runs runs/X --last 5 --bn-recompute
"""
import re
from pathlib import Path

import numpy as np
import torch
from torch.optim.swa_utils import update_bn
from tqdm import tqdm

from utils.models.checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from utils.common.errors import DataError
from utils.data.loader import CachedImages, make_loader, to_input

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def epoch_path(run_dir, epoch):
    """checkpoints/epoch_NNN.pt of a run for a 1-based epoch."""
    return Path(run_dir) / "checkpoints" / f"epoch_{int(epoch):03d}.pt"


def epoch_checkpoints(run_dir):
    """{epoch: path} of a run's kept epoch checkpoints, in epoch order."""
    found = {}
    for p in (Path(run_dir) / "checkpoints").glob("epoch_*.pt"):
        m = _EPOCH_FILE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def keep_epoch(run_dir, epoch, state_dict, meta, val_f2, keep):
    """Write epoch `epoch`'s checkpoint and delete those older than the last `keep` epochs.

    state_dict: the model's (clean) state dict; meta: best.pt's meta; val_f2: float.
    """
    save_checkpoint(epoch_path(run_dir, epoch), {"model": state_dict, "meta": meta, "epoch": int(epoch),
                                                 "val_f2": float(val_f2), "weights": "raw"})
    for e, p in epoch_checkpoints(run_dir).items():
        if e <= epoch - keep:
            p.unlink(missing_ok=True)


def choose(entries, last=None, top=None):
    """Epochs to average from {epoch: val_f2}: the `last` latest or the `top` best by F2
    (ties: the later epoch). Returns sorted epochs; DataError when too few are kept."""
    if (last is None) == (top is None):
        raise DataError("give one of --last K or --top K")
    k = last if last is not None else top
    if k < 1:
        raise DataError(f"--{'last' if last is not None else 'top'} {k}: must be >= 1")
    if len(entries) < k:
        raise DataError(f"{len(entries)} epoch checkpoint(s) kept, {k} asked; train with --keep-epochs {k} "
                        f"or ask for fewer")
    order = sorted(entries) if last is not None else sorted(entries, key=lambda e: (entries[e], e))
    return sorted(order[-k:])


def average_state_dicts(state_dicts):
    """Element-wise arithmetic mean of state dicts with the same keys and shapes.

    Floating tensors: the mean, computed in float64, cast back to their dtype. Integer
    tensors (BatchNorm's num_batches_tracked): the last state dict's value.
    Raises DataError when keys or shapes differ.
    """
    if not state_dicts:
        raise DataError("nothing to average")
    keys = list(state_dicts[0])
    out = {}
    for i, sd in enumerate(state_dicts[1:], 2):
        if list(sd) != keys or any(sd[k].shape != state_dicts[0][k].shape for k in keys):
            raise DataError(f"checkpoint {i} holds another model (keys or shapes differ from the first)")
    for k in keys:
        ref = state_dicts[0][k]
        if torch.is_floating_point(ref):
            out[k] = torch.stack([sd[k].double() for sd in state_dicts]).mean(0).to(ref.dtype)
        else:
            out[k] = state_dicts[-1][k].clone()
    return out


def average_run(run_dir, last=None, top=None):
    """Average a run's kept epoch checkpoints. Returns the avg.pt dict (not written)."""
    paths = epoch_checkpoints(run_dir)
    if not paths:
        raise DataError(f"{run_dir}: no checkpoints/epoch_*.pt; train with --keep-epochs K to keep them")
    ckpts = {e: load_checkpoint(p) for e, p in paths.items()}
    epochs = choose({e: c.get("val_f2", float("nan")) for e, c in ckpts.items()}, last, top)
    chosen = [ckpts[e] for e in epochs]
    model = average_state_dicts([clean_state_dict(c["model"]) for c in chosen])
    return {"model": model, "meta": chosen[-1]["meta"], "epoch": epochs[-1], "val_f2": None,
            "weights": "avg",
            "averaged": {"epochs": epochs, "how": f"last:{last}" if last is not None else f"top:{top}",
                         "val_f2": [float(c.get("val_f2", np.nan)) for c in chosen], "bn_recomputed": False}}


def has_batchnorm(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def recompute_bn(model, images, rows, mean, std, bs=64, device="cpu"):
    """BatchNorm running statistics of `model` recomputed over uint8 images[rows] (N, S, S, 3)
    with torch.optim.swa_utils.update_bn (a cumulative average over one pass, no augmentation).
    The model is changed in place and returned."""
    device = torch.device(device)
    ds = CachedImages(images, np.zeros((len(rows), 1), np.float32), rows)
    loader = make_loader(ds, range(len(rows)), bs, 0, device)
    batches = (to_input(xb, mean, std, device) for xb, _ in tqdm(loader, desc="BatchNorm statistics",
                                                                  leave=False))
    update_bn(batches, model.to(device))
    return model
