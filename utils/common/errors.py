"""The project's error types, and the helpers that word their messages.

A DataError is input the user must fix: the scripts catch it, print its message and exit
with code 2 (utils.common.cli). The message says what is wrong and where (file, row, flag).
A RunFailed is a run that cannot go on although its input was fine (its loss became NaN):
exit code 1, its message one line saying where and what to try.
"""


class DataError(Exception):
    """Bad input the user must fix (exit code 2). The message says what and where."""


class RunFailed(Exception):
    """A run that had to stop for a reason of its own, not of its input (exit code 1), e.g. a
    diverged training (utils.train.divergence). The message says where and what to try."""


class NonFinite(RunFailed):
    """A value that must be finite is NaN or infinite: a training loss, a validation loss, weights
    about to be saved. what: what was found; step: the step of the epoch, lr: the learning rate
    (None where unknown). The trainer words it with the run's position (utils.train.divergence)."""

    def __init__(self, what, step=None, lr=None):
        super().__init__(what)
        self.what, self.step, self.lr = what, step, lr


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
