"""Selecting runs by --where KEY=PATTERN (tools/statistics.py, tools/correlation.py)."""
import fnmatch
import json

import pandas as pd

from utils.common.errors import DataError


def _value_str(v):
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, dict)):
        return json.dumps(v, sort_keys=True)
    return "" if v is None else str(v)


def parse_where(items):
    """['arch=resnet50', 'fold=0'] -> [(key, pattern)]; DataError for an item without '='."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise DataError(f"--where {item!r}: expected KEY=VALUE (e.g. arch=resnet50)")
        k, v = item.split("=", 1)
        out.append((k.strip(), v.strip()))
    return out


def config_value(run, key):
    """A run's value for a --where key: 'name', 'model', or a config key (dotted keys
    look inside dicts and lists, e.g. stages.0.size). None when absent."""
    if key == "name":
        return run.name
    if key == "model":
        return run.model
    if key in run.config:
        return run.config[key]
    v = run.config
    for part in key.split("."):
        if isinstance(v, dict) and part in v:
            v = v[part]
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            return None
    return v


def text_matches(value, pattern):
    """True when the value's text matches the shell-style pattern (case-insensitive;
    booleans as true/false, lists and dicts as JSON)."""
    return fnmatch.fnmatch(_value_str(value).lower(), pattern.lower())


def matches(run, where):
    """True when every (key, pattern) of `where` holds for the run (see config_value)."""
    return all(text_matches(config_value(run, k), p) for k, p in where)


def row_matches(row, where):
    """`matches` for a dict (a PRUNED.csv row): a key the row lacks does not match."""
    return all(k in row and not pd.isna(row[k]) and text_matches(row[k], p) for k, p in where)
