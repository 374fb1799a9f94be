"""Checkpoints: atomic saving, loading with clear errors, self-describing models.

best.pt / last.pt hold {'model': state_dict, 'meta': {...}} and, for last.pt, the
full training state. 'meta' is enough to rebuild the model without the run's
config: arch, labels, size, mean, std, drop_rate.
"""
from pathlib import Path

import torch

from utils.io import DataError, atomic_save_torch

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


def save_checkpoint(path, state):
    """Write a checkpoint dict atomically (temp file, fsync, os.replace)."""
    return atomic_save_torch(path, state)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict; DataError naming the file when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        # our own files hold numpy RNG states, which weights_only=True refuses
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DataError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e}); "
                        f"it may be corrupt or from an incompatible version") from e


def build_from_meta(meta):
    """A fresh model (no weights loaded) for a checkpoint's meta dict."""
    from utils.models import create_model

    return create_model(meta["arch"], len(meta["labels"]), pretrained=False, drop_rate=meta.get("drop_rate"))


def load_for_inference(path, device="cpu"):
    """Rebuild the model stored in a checkpoint; return (model in eval mode on device, meta).

    meta: arch, labels, size, mean, std, drop_rate (+ whatever the trainer stored).
    """
    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "meta" not in ckpt:
        raise DataError(f"{path}: not a checkpoint of this project (no 'model'/'meta')")
    meta = ckpt["meta"]
    model = build_from_meta(meta)
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    return model.to(device).eval(), meta
