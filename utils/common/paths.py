"""Portable paths in run records (ARCHITECTURE.md, "Portable paths").

Records store paths relative to the run directory plus the absolute path as
written. On another machine the absolute path may not exist: `resolve_stored`
tries, in order, the relative path, the absolute path, a user path map (prefix
rewrites, from a file or MULTITAG_PATH_MAP="old=new;old2=new2"), and finally
re-rooting: the longest suffix of the stored path that exists under one of the
search roots. Windows (`D:\\kaggle\\data`) and POSIX paths are both understood.

`rewrite_record` rewrites the paths inside a record explicitly (prefix pairs, no
existence check), which is what tools/convert_paths.py applies to config.json.
"""
import json
import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from utils.common.errors import DataError
from utils.common.text import read_text

_WIN = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def split_parts(p):
    """Components of a stored path, Windows or POSIX, without the drive/root."""
    p = str(p)
    pure = PureWindowsPath(p) if (_WIN.match(p) or "\\" in p) else PurePosixPath(p)
    return [s for s in pure.parts if s not in (pure.anchor, "/", "\\")]


def is_foreign_abs(p):
    """True for an absolute path of either flavour."""
    p = str(p)
    return bool(_WIN.match(p)) or p.startswith("/")


def _norm_prefix(p):
    return str(p).replace("\\", "/").rstrip("/")


def parse_path_map(text):
    """'old=new;old2=new2' or lines of old=new (or a JSON object) -> list of (old, new)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("{"):
        return list(json.loads(text).items())
    pairs = []
    for item in re.split(r"[;\n]", text):
        if item.strip() and not item.strip().startswith("#"):
            if "=" not in item:
                raise DataError(f"path map entry {item.strip()!r}: expected OLD=NEW")
            old, new = item.split("=", 1)
            pairs.append((old.strip(), new.strip()))
    return pairs


def load_path_map(path=None):
    """Path map from a file (if given) plus the MULTITAG_PATH_MAP environment variable."""
    pairs = []
    if path:
        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: path map file not found")
        pairs += parse_path_map(read_text(p))
    pairs += parse_path_map(os.environ.get("MULTITAG_PATH_MAP", ""))
    return pairs


def apply_path_map(stored, pairs):
    """Rewrite the longest matching prefix of `stored` (separator- and case-insensitive
    for Windows prefixes); return the new path string or None."""
    s = _norm_prefix(stored)
    best = None
    for old, new in pairs:
        o = _norm_prefix(old)
        ci = bool(_WIN.match(old))
        a, b = (s.lower(), o.lower()) if ci else (s, o)
        if a == b or a.startswith(b + "/"):
            if best is None or len(o) > len(best[0]):
                best = (o, new)
    if best is None:
        return None
    rest = s[len(best[0]):].lstrip("/")
    return str(Path(best[1]) / rest) if rest else str(Path(best[1]))


def reroot(stored, roots, accept=None):
    """The longest suffix of `stored` that exists under one of `roots`, or None.

    'D:\\kaggle\\data\\apparel' with root /home/me/kaggle finds /home/me/kaggle/data/apparel.
    accept: predicate a candidate must also pass (default: it exists).
    """
    accept = accept or Path.exists
    parts = split_parts(stored)
    for k in range(len(parts)):  # longest suffix first
        suffix = parts[k:]
        for r in roots:
            cand = Path(r).joinpath(*suffix)
            if accept(cand):
                return cand
    return None


def resolve_stored(rel=None, abs_path=None, base=None, roots=(), pairs=(), accept=None):
    """Find a stored path on this machine.

    rel: path relative to `base` (the run directory); abs_path: absolute path as
    written; roots: folders for re-rooting; pairs: path map; accept: predicate every
    candidate must pass (default: it exists; a data root should hold train.csv, so
    that re-rooting on a generic suffix such as 'data' cannot pick a wrong folder).
    Returns (Path, how) with how in {'relative', 'absolute', 'mapped', 'rerooted'},
    or (None, 'missing').
    """
    accept = accept or Path.exists
    if rel is not None and base is not None:
        cand = Path(base) / native_rel(rel)
        if accept(cand):
            return cand.resolve(), "relative"
    if abs_path:
        if accept(Path(abs_path)):
            return Path(abs_path), "absolute"
        mapped = apply_path_map(abs_path, pairs)
        if mapped and accept(Path(mapped)):
            return Path(mapped), "mapped"
        found = reroot(abs_path, roots, accept)
        if found is not None:
            return found.resolve(), "rerooted"
    return None, "missing"


def portable(path, base):
    """(relative-to-base or None, absolute) strings for storing `path` in a record."""
    path = Path(path).resolve()
    try:
        rel = portable_rel(os.path.relpath(path, Path(base).resolve()))
    except ValueError:  # another drive on Windows
        rel = None
    return rel, str(path)


def native_rel(rel):
    """A stored relative path with either separator as a path for this machine.

    Records written on Windows store '..\\..\\data\\demo'; POSIX reads that as one
    file name, so backslashes become '/' here (Windows accepts '/' as well).
    """
    rel = str(rel)
    return rel.replace("\\", "/") if os.sep == "/" else rel


def portable_rel(rel):
    """A relative path as stored portably: '/' separators (both systems read them)."""
    return str(rel).replace("\\", "/")


def _under(s, prefix):
    """True when normalised path string `s` equals `prefix` or lies below it
    (case-insensitive for Windows prefixes)."""
    a, b = (s.lower(), prefix.lower()) if _WIN.match(prefix) else (s, prefix)
    return a == b or a.startswith(b + "/")


def rewrite_prefix(value, pairs):
    """`value` (an absolute path string) with its longest matching OLD prefix replaced
    by NEW, or None when no pair matches or `value` already lies under a pair's NEW
    prefix (so rewriting twice changes nothing, even when NEW lies under OLD).

    pairs: list of (old, new). No existence check: this is for rewriting records.
    """
    if not isinstance(value, str) or not is_foreign_abs(value):
        return None
    s = _norm_prefix(value)
    # A pair whose NEW lies under its OLD would rewrite its own output again.
    if any(_under(_norm_prefix(n), _norm_prefix(o)) and _under(s, _norm_prefix(n)) for o, n in pairs):
        return None
    new = apply_path_map(value, pairs)
    return None if new is None or new == value else new


def rewrite_record(obj, pairs, key=""):
    """Rewrite every absolute path string inside a JSON-like record with `pairs`.

    obj: dict / list / scalars (a parsed config.json). Returns (new object, changes)
    where changes is a list of (key path like 'argv[3]' or 'data_root_abs', old, new).
    The input is not modified.
    """
    if isinstance(obj, dict):
        out, changes = {}, []
        for k, v in obj.items():
            out[k], ch = rewrite_record(v, pairs, f"{key}.{k}" if key else str(k))
            changes += ch
        return out, changes
    if isinstance(obj, list):
        out, changes = [], []
        for i, v in enumerate(obj):
            nv, ch = rewrite_record(v, pairs, f"{key}[{i}]")
            out.append(nv)
            changes += ch
        return out, changes
    new = rewrite_prefix(obj, pairs)
    return (obj, []) if new is None else (new, [(key, obj, new)])
