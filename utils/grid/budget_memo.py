"""A recent measurement of this machine and this dataset, kept for the next budgeted run.

`tools/submit.py --budget ... --dry-run` and the run after it, or a second competition on
the same data, would otherwise measure the same speeds and rates again. The measurement
(utils.grid.budget.Measured) is written beside the dataset's image caches
(`<cache dir>/budget-measured.json`) with a key naming the machine (host, processor,
cores, threads, torch version, device), the dataset (train.csv's and the test list's
contents and counts) and what was measured (configurations, probe architectures, stack
methods); a run within MAX_AGE_S (six hours) with the same key reuses it. Which caches are on disk is
never reused: it is looked up again each time.
"""
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from utils.common.atomic import atomic_write_json
from utils.common.errors import DataError
from utils.common.text import read_json
from utils.grid.budget import Measured

MEMO_FILE = "budget-measured.json"
MAX_AGE_S = 6 * 3600  # the machine's load changes; a measurement older than this is made again


def machine_key(device):
    """This machine as the speeds depend on it: host, processor, cores, threads, torch, device."""
    import torch

    return "|".join(map(str, (platform.node(), platform.processor() or platform.machine(), os.cpu_count(),
                              torch.get_num_threads(), torch.__version__, device)))


def data_key(spec):
    """The dataset as the rates depend on it: its train.csv's bytes and its image counts."""
    h = hashlib.sha256((Path(spec.root) / "train.csv").read_bytes())
    h.update(f"|{spec.images}|{len(spec.files)}|{spec.test_images}|{len(spec.test_files)}".encode())
    return h.hexdigest()[:16]


def memo_key(spec, device, configs, probe_archs, methods, folds_k, n_labels):
    """The key a reusable measurement must have (a hex digest)."""
    what = json.dumps([machine_key(device), data_key(spec), sorted(map(list, configs)), sorted(probe_archs),
                       sorted(methods), folds_k, n_labels])
    return hashlib.sha256(what.encode()).hexdigest()[:24]


def recall(cache_dir, key, now=None):
    """The Measured saved under `key` less than MAX_AGE_S ago, and its age in seconds; (None, None)
    when there is none (no file, another key, too old, or a file this version cannot read)."""
    path = Path(cache_dir) / MEMO_FILE
    try:
        d = read_json(path)
        age = (now or time.time()) - float(d["at"])
        if d.get("key") != key or not 0 <= age <= MAX_AGE_S:
            return None, None
        return Measured.from_json(d["measured"]), age
    except (OSError, ValueError, KeyError, TypeError, DataError):  # none, or unreadable: measure again
        return None, None


def remember(cache_dir, key, measured, now=None):
    """Save `measured` under `key` (atomically); a folder that cannot be written is skipped."""
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(cache_dir) / MEMO_FILE, {"key": key, "at": now or time.time(),
                                                        "measured": measured.to_json()})
    except OSError:
        pass  # a read-only place: the next run measures again
