"""Checkpoints: atomic saving, loading with clear errors, self-describing models.

best.pt / last.pt hold {'model': state_dict, 'meta': {...}} and, for last.pt, the
full training state. 'meta' is enough to rebuild the model without the run's
config: arch, labels, size, mean, std, drop_rate, head (--head, None = the arch's own),
channels, band_scaling.
"""
from pathlib import Path

import torch

from utils.common.atomic import atomic_save_torch
from utils.common.errors import DataError, NonFinite, preview
from utils.models.factory import create_model

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile


def clean_state_dict(state_dict):
    """Strip DDP/compile wrapper prefixes from state-dict keys (the one place this is done)."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in _WRAPPER_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def nonfinite_tensors(state_dict):
    """Keys of a state dict's floating-point tensors holding NaN or inf (other values are skipped)."""
    if not isinstance(state_dict, dict):
        return []
    return [k for k, v in state_dict.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_checkpoint(path, state):
    """Write a checkpoint dict atomically (temp file, fsync, os.replace).

    Raises NonFinite (utils.common.errors; nothing written, the file as it was) when the weights
    in state["model"] hold NaN or inf: a diverged run never replaces good weights with those."""
    if bad := nonfinite_tensors(state.get("model")):
        raise NonFinite(f"the weights hold NaN or infinite values ({_some(bad, 3)}); {Path(path).name} was "
                        f"not written")
    return atomic_save_torch(path, state)


def _some(items, n=5):
    return preview(items, n).replace("'", "")


# what predict.py and every reader of best.pt use to rebuild and feed the model
META_KEYS = ("arch", "labels", "size", "mean", "std")


def load_checkpoint(path, map_location="cpu", need=("model", "meta")):
    """Load a checkpoint dict of this project; the one place every checkpoint is opened.

    need: keys the caller uses (last.pt for resume: also 'state' and 'rng').
    Raises DataError naming the file when it is missing, truncated or otherwise
    unreadable, not a dict, lacks a needed key, its meta lacks one of META_KEYS, or its
    weights hold NaN or inf (a diverged run).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        # our own files hold numpy RNG states, which weights_only=True refuses
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e}); the file is truncated, "
                        f"damaged or not a checkpoint; retrain the run or restore the file") from e
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: not a checkpoint of this project (holds a {type(ckpt).__name__}, "
                        f"expected a dict with {', '.join(need)})")
    missing = [k for k in need if k not in ckpt]
    if missing:
        raise DataError(f"{path}: not a usable checkpoint of this project: no {', '.join(map(repr, missing))} "
                        f"(found keys {_some(sorted(map(str, ckpt)))})")
    if "model" in need and (bad := nonfinite_tensors(ckpt["model"])):
        raise DataError(f"{path}: its weights hold NaN or infinite values ({len(bad)} tensor(s): {_some(bad, 3)}): "
                        f"the run diverged; train it again with a lower --lr")
    meta = ckpt.get("meta")
    if "meta" in need:
        if not isinstance(meta, dict):
            raise DataError(f"{path}: the checkpoint's 'meta' is a {type(meta).__name__}, not a dict; "
                            f"it was not written by train.py")
        lacks = [k for k in META_KEYS if k not in meta]
        if lacks:
            raise DataError(f"{path}: the checkpoint's 'meta' lacks {', '.join(lacks)}; the file is damaged or "
                            f"was not written by train.py; retrain the run or restore the file")
    return ckpt


def check_labels(meta, labels, path):
    """DataError naming the file when the checkpoint was made for other labels than `labels`."""
    have = list(meta.get("labels", []))
    if list(labels) != have:
        extra, lost = [l for l in have if l not in labels], [l for l in labels if l not in have]
        what = (f"it has {_some(extra) or 'no other'} not in the run, lacks {_some(lost) or 'none'}"
                if extra or lost else "the same labels in another order")
        raise DataError(f"{path}: made for other labels than this run's ({len(have)} vs {len(labels)}: {what}); "
                        f"the file belongs to another run")


def load_weights(model, state_dict, path):
    """Load a checkpoint's state dict into `model` exactly (strict), or raise DataError.

    The message names the file and every difference (missing and unexpected keys, shape
    changes, first few of each with counts), so a damaged or foreign file never leaves
    a model with random weights.
    """
    if not isinstance(state_dict, dict):
        raise DataError(f"{path}: 'model' holds a {type(state_dict).__name__}, not a state dict")
    sd = clean_state_dict(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} in the file, {tuple(own[k].shape)} in the model" for k in own
              if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = ([f"{len(missing)} missing key(s): {_some(missing)}"] if missing else []) + \
        ([f"{len(unexpected)} unexpected key(s): {_some(unexpected)}"] if unexpected else []) + \
        ([f"{len(shapes)} shape mismatch(es): {_some(shapes, 3)}"] if shapes else [])
    if problems:
        raise DataError(f"{path}: the weights do not fit the model ({type(model).__name__}):\n" +
                        "\n".join(f"  - {p}" for p in problems) +
                        "\nthe file is damaged or was made for another model; retrain the run or restore the file")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:  # e.g. a tensor that cannot be copied
        raise DataError(f"{path}: cannot load the weights ({e})") from e


def build_from_meta(meta):
    """A fresh model (no weights loaded) for a checkpoint's meta dict."""
    return create_model(meta["arch"], len(meta["labels"]), pretrained=False, drop_rate=meta.get("drop_rate"),
                        head=meta.get("head"), channels=meta.get("channels", 3))


def load_for_inference(path, device="cpu", labels=None):
    """Rebuild the model stored in a checkpoint; return (model in eval mode on device, meta).

    meta: arch, labels, size, mean, std, drop_rate (+ whatever the trainer stored).
    labels: the run's labels, when known: a checkpoint made for others is refused.
    Raises DataError naming the file for anything that makes it unusable.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    if labels is not None:
        check_labels(meta, labels, path)
    model = build_from_meta(meta)
    load_weights(model, ckpt["model"], path)
    return model.to(device).eval(), meta
