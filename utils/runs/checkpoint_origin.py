"""Where a checkpoint's weights come from, so predict.py never scores a fold with weights trained on it.

A run's validation fold is out-of-fold only for its own weights and for those of any run
that held out the same fold of the same split (same fold, K and fold seed). Weights of
another fold were trained on these images: their "validation" probabilities are a leak.

best.pt / last.pt / avg.pt carry the training run's name and its fold split in their
meta (ORIGIN_KEYS, written by utils/train/run_state.py checkpoint_meta). Checkpoints written before that carry
only the run name; their origin is then read from the config.json of the run folder that
holds them (RUN/checkpoints/X.pt).
"""
import re
from pathlib import Path

from utils.common.errors import DataError
from utils.common.text import read_json

# the fold split a run's weights held out (config.json keys, copied into checkpoint meta)
ORIGIN_KEYS = ("fold", "folds_k", "folds_seed")


def run_folder_of(path):
    """The run folder holding a checkpoint file (RUN/checkpoints/X.pt with RUN/config.json), or None."""
    path = Path(path).resolve()
    run = path.parent.parent
    return run if path.parent.name == "checkpoints" and (run / "config.json").is_file() else None


def checkpoint_origin(path, meta):
    """The training run of a checkpoint: {"run": name or None, "fold", "folds_k", "folds_seed"
    (None where unknown)}, from its meta, else from the config.json of the run folder holding it."""
    origin = {"run": meta.get("run"), **{k: meta.get(k) for k in ORIGIN_KEYS}}
    folder = run_folder_of(path)
    if origin["fold"] is None and folder is not None:
        try:
            config = read_json(folder / "config.json")
        except DataError:
            config = {}
        origin.update({k: config.get(k) for k in ORIGIN_KEYS if isinstance(config, dict)})
        origin["run"] = origin["run"] or folder.name
    return origin


def check_val_origin(path, meta, run):
    """Problem string when the checkpoint at `path` (its `meta`) may have been trained on
    `run`'s validation fold (utils.runs.directory.Run); None when it held out the same fold split."""
    origin = checkpoint_origin(path, meta)
    who = f"run {origin['run']}" if origin["run"] else "an unknown run"
    if origin["fold"] is None:
        return (f"{path}: cannot tell which fold its weights held out (no fold in the checkpoint, no run "
                f"folder around it), so its predictions of {run.dir}'s validation fold {run.fold} may be a "
                f"leak; predict --split test only, or use the run's own checkpoint")
    differ = [k for k in ORIGIN_KEYS
              if origin[k] is not None and run.config.get(k) is not None and int(origin[k]) != int(run.config[k])]
    if not differ:
        return None
    split = ", ".join(f"{k} {origin[k]} vs {run.config[k]}" for k in differ)
    return (f"{path}: trained by {who} on fold {origin['fold']}'s training images, which include "
            f"{run.dir}'s validation fold {run.fold} ({split}); its validation predictions would be a leak. "
            f"Predict --split test only, or pass a checkpoint of a run of fold {run.fold} of the same folds file "
            f"(folds_k {run.config.get('folds_k')}, folds_seed {run.config.get('folds_seed')})")


def weights_tag(path, meta, run_dir):
    """The part of a prediction file name that says which weights made it, for a --checkpoint
    given as a file: '' for run_dir's own best.pt, '<stem>' for another of its own checkpoints
    (as --checkpoint avg), else 'from_<run>_<stem>' naming the run that trained the weights
    (the folder holding the file, or the run name stored in the checkpoint; 'file' if neither)."""
    path = Path(path)
    folder = run_folder_of(path)
    if folder is not None and folder == Path(run_dir).resolve():
        return "" if path.stem == "best" else _safe(path.stem)
    origin = folder.name if folder is not None else (meta.get("run") or "file")
    return f"from_{_safe(origin)}_{_safe(path.stem)}"


def _safe(text):
    """A file-name-safe version of a run or file name ('-' and '_' kept, '.' would end the tag)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(text))
