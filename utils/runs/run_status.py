"""Where a run folder stands, as every script that skips, resumes or reuses runs sees it.

new (neither checkpoints/last.pt nor result.json), unfinished (last.pt: train.py --resume
continues it), finished (result.json), diverged (diverged.json: train.py stopped it because its
loss or weights became NaN or infinite, utils/train/divergence.py; its weights are not used).
`run_state` is what scripts/cv.sh (through tools/run_status.py) and tools/submit.py's grid
(utils/grid/cluster.py) decide by; given the dataset at hand it first refuses a run trained on
another one (utils/runs/fingerprint.py), so a runs folder reused for a second dataset never
passes the first one's runs off as trained.
"""
from pathlib import Path

from utils.common.atomic import atomic_write_json
from utils.common.errors import DataError
from utils.common.text import read_json
from utils.runs.fingerprint import check_same_dataset

DIVERGED_FILE = "diverged.json"
STATES = ("new", "unfinished", "finished", "diverged")


def write_diverged(run_dir, record):
    """Mark the run as diverged: run_dir/diverged.json holds `record` (what, where, lr, message)."""
    atomic_write_json(Path(run_dir) / DIVERGED_FILE, record)


def clear_diverged(run_dir):
    """Remove the mark (a resumed run that has finished after all)."""
    (Path(run_dir) / DIVERGED_FILE).unlink(missing_ok=True)


def diverged_record(run_dir):
    """The run's diverged.json dict, or None when the run has not diverged (a damaged file
    still marks it: {'message': ...})."""
    path = Path(run_dir) / DIVERGED_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except DataError as e:
        return {"message": str(e)}
    return record if isinstance(record, dict) else {"message": str(record)}


def diverged_summary(run_dir):
    """'diverged at stage 1, epoch 2, step 14 (the training loss is nan)' when the run diverged, else None."""
    record = diverged_record(run_dir)
    if record is None:
        return None
    at = f" at {record['where']}" if record.get("where") else ""
    what = f" ({record.get('what') or record.get('message')})" if record.get("what") or record.get("message") else ""
    return f"diverged{at}{what}"


def diverged_problem(run_dir):
    """A line refusing the run's weights when it diverged, naming it; None otherwise."""
    summary = diverged_summary(run_dir)
    if summary is None:
        return None
    return (f"{run_dir}: the run {summary}, so its weights are not used; train it again with a lower --lr under "
            f"another --name (train.py's message is in {Path(run_dir) / DIVERGED_FILE})")


def run_state(run_dir, data_root=None, fix="give this dataset its own runs folder"):
    """'new', 'unfinished', 'finished' or 'diverged' (STATES) of the run folder run_dir.

    data_root: the dataset the caller would train or reuse the run on; a run that is not new and
    was trained on another dataset raises DataError naming both, then `fix` (what to do).
    Runs recorded before the fingerprint are accepted.
    """
    run_dir = Path(run_dir)
    if (run_dir / "result.json").is_file():
        state = "finished"
    elif (run_dir / DIVERGED_FILE).is_file():
        state = "diverged"
    elif (run_dir / "checkpoints" / "last.pt").is_file():
        state = "unfinished"
    else:
        return "new"
    if data_root is not None and (run_dir / "config.json").is_file():
        config = read_json(run_dir / "config.json")
        if isinstance(config, dict):
            check_same_dataset(config, run_dir, data_root, fix)
    return state
