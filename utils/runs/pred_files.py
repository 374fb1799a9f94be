"""The prediction-file format: image_name, then one probability column per label.

predict.py and stack.py write probabilities in this format (write_preds) and every reader
of them parses it with read_preds; submission_frame turns 0/1 decisions into the
image_name,tags submission table.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from utils.common.atomic import atomic_write_csv
from utils.common.errors import DataError, preview, report_problems
from utils.common.text import read_csv


def write_preds(path, names, labels, probs):
    """Write probabilities in the preds format: image_name, then one column per label.

    names: N image names; labels: L label names; probs: (N, L) array in [0, 1].
    Values keep 7 significant digits. Written atomically.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != (len(names), len(labels)):
        raise ValueError(f"probs shape {probs.shape} != ({len(names)}, {len(labels)})")
    df = pd.DataFrame(probs, columns=list(labels))
    df.insert(0, "image_name", list(names))
    return atomic_write_csv(path, df, float_format="%.7g")


def read_preds(path):
    """Read a preds file; return (names: list[str], labels: list[str], probs: float64 (N, L)).

    Raises DataError naming the file for a missing image_name column, duplicate or
    empty names, non-numeric, NaN or out-of-range [0, 1] values.
    """
    path = Path(path)
    df = read_csv(path, dtype={"image_name": str}, keep_default_na=False)
    if df.columns.size < 2 or df.columns[0] != "image_name":
        raise DataError(f"{path}: expected columns image_name,<label>...; got {list(df.columns)[:5]}")
    names = df["image_name"].astype(str).tolist()
    problems = []
    dup = df["image_name"][df["image_name"].duplicated()].tolist()
    if dup:
        problems.append(f"{len(dup)} duplicate image name(s): {preview(dup)}")
    if any(n == "" for n in names):
        problems.append("empty image names")
    try:
        probs = df.iloc[:, 1:].apply(pd.to_numeric, errors="raise").to_numpy(np.float64)
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: non-numeric probability ({e})") from e
    bad = ~np.isfinite(probs) | (probs < 0) | (probs > 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        problems.append(f"{int(bad.sum())} NaN or out-of-range values (first: row {r + 2}, "
                        f"column {df.columns[c + 1]!r} = {probs[r, c]})")
    report_problems(f"{path}: bad prediction file", problems)
    return names, [str(c) for c in df.columns[1:]], probs


def submission_frame(names, labels, decisions):
    """image_name,tags DataFrame (tags space-separated, in label order) from (N, L) 0/1 decisions."""
    labels = np.asarray(labels)
    tags = [" ".join(labels[np.asarray(row).astype(bool)]) for row in decisions]
    return pd.DataFrame({"image_name": list(names), "tags": tags})
