"""Tolerant text reading: every text file the project reads goes through `read_text`.

CSV, labels.txt, folds, configs, prediction files and path maps are read with `read_text`
(or `read_csv` / `read_lines` / `read_json` built on it), so all of them tolerate the same
things: a UTF-8 byte-order mark (Excel, Notepad), Windows (CRLF) or old Mac (CR) line ends,
and whitespace around names and values.
"""
import io
import json
from pathlib import Path

import pandas as pd

from utils.common.errors import DataError


def read_text(path):
    """The text of a UTF-8 file: BOM dropped, CRLF and CR line ends turned into LF.

    Raises DataError naming the file when it is missing, unreadable or not UTF-8.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: cannot read, file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}, line {line}); save it as UTF-8") from e
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path):
    """Non-empty lines of a text file (read_text), each stripped of surrounding whitespace."""
    return [s.strip() for s in read_text(path).split("\n") if s.strip()]


def read_json(path):
    """A JSON file read through read_text; DataError naming the file and position when invalid."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: unreadable, not valid JSON ({e})") from e


def read_csv(path, **kwargs):
    """pandas.read_csv of a file read through read_text; column names and text cells stripped.

    kwargs go to pandas (dtype, keep_default_na, ...). Raises DataError naming the file
    when it is missing, empty (no header) or not parsable as CSV.
    """
    text = read_text(path)
    try:
        df = pd.read_csv(io.StringIO(text), **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header line)") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path}: cannot parse as CSV ({e})") from e
    df.columns = [c.strip() if isinstance(c, str) else c for c in df.columns]
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].map(lambda v: v.strip() if isinstance(v, str) else v)
    return df
