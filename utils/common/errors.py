"""The project's error type for bad input, and the helpers that word its messages.

A DataError is input the user must fix: the scripts catch it, print its message and exit
with code 2 (utils.common.cli). The message says what is wrong and where (file, row, flag).
"""


class DataError(Exception):
    """Bad input the user must fix (exit code 2). The message says what and where."""


def preview(items, n=5):
    """The first n items, repr'd and comma-joined, with how many more there are: "'a', 'b' (+3 more)"."""
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(repr(x) for x in items[:n]) + more


def report_problems(title, problems, limit=20):
    """Raise DataError listing the first `limit` of `problems` (strings) and their count.

    Does nothing when `problems` is empty.
    """
    if not problems:
        return
    lines = [f"{title}: {len(problems)} problem(s)"]
    lines += [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    raise DataError("\n".join(lines))
