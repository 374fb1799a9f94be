"""Thresholds as a file: per-label thresholds chosen elsewhere, applied by predict.py and stack.py.

The format is the ``thresholds`` object of stack_report.json: a JSON file holding
``{"thresholds": {"<label>": <threshold>, ...}}`` (other keys are kept for people and
ignored), so a stack report itself is such a file. tools/explore.py's page saves the
thresholds moved there in this format; ``--thresholds FILE`` of predict.py and stack.py
reads it with ``read_thresholds_file``. A label is predicted when its probability is at
least its threshold (utils.metrics.thresholds.binarize).
"""
import math
from pathlib import Path

import numpy as np

from utils.common.errors import DataError
from utils.common.text import read_json

KEY = "thresholds"


def read_thresholds_file(path, labels, flag="--thresholds"):
    """(L,) float64 thresholds in `labels` order from a thresholds file (or a stack_report.json).

    Raises DataError naming `flag` and the file when it is missing or not JSON, has no
    ``thresholds`` object, lacks a label of `labels`, names a label not among them, or holds a
    value that is not a number in [0, 1] (or just above 1, where the searches put "never" when a
    probability is 1.0).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{flag} {path}: file not found")
    try:
        record = read_json(path)
    except DataError as e:
        raise DataError(f"{flag} {e}") from e
    table = record.get(KEY) if isinstance(record, dict) else None
    if not isinstance(table, dict):
        if not isinstance(record, dict) or KEY not in record:
            what = f'its "{KEY}" object is missing' if isinstance(record, dict) else f"holds {_kind(record)}, not an object"
        elif table is None:
            what = f'its "{KEY}" object is null (stack.py --threshold expected fits no thresholds)'
        else:
            what = f'its "{KEY}" is {_kind(table)}, not an object label -> number'
        raise DataError(f"{flag} {path}: {what}; expected "
                        f'{{"{KEY}": {{"<label>": <threshold>, ...}}}} (tools/explore.py saves one, '
                        f"stack.py's stack_report.json is one)")
    missing = [lab for lab in labels if lab not in table]
    unknown = [lab for lab in table if lab not in labels]
    problems = ([f"no threshold for {len(missing)} label(s): {_few(missing)}"] if missing else []) + \
               ([f"{len(unknown)} label(s) these predictions do not have: {_few(unknown)}"] if unknown else [])
    bad = [f"{lab}={table[lab]!r}" for lab in labels if lab in table and not _is_threshold(table[lab])]
    if bad:
        problems.append(f"not a number in [0, 1]: {_few(bad)}")
    if problems:
        raise DataError(f"{flag} {path}: " + "; ".join(problems) + f" (the labels: {_few(list(labels))})")
    return np.array([float(table[lab]) for lab in labels], np.float64)


def _kind(value):
    """A JSON value's type in words: 'a list', 'a string', 'a number', ..."""
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number",
            dict: "an object"}.get(type(value), type(value).__name__)


def _few(items, n=10):
    return ", ".join(map(str, items[:n])) + (f" and {len(items) - n} more" if len(items) > n else "")


def _is_threshold(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0 + 1e-9
