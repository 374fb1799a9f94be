"""What a run was trained on: a fingerprint of its dataset, recorded in config.json and
checked wherever a trained run is reused.

config.json "dataset" = {"train_csv": sha256, "folds": sha256, "root": the data root's absolute
path}. Each sha256 is of the file's content as read (utils/common/text.py): train.csv's rows
(image name, its sorted tags) and the folds file's (image name, fold), sorted, so a BOM, line
ends, spaces, the rows' order or the tags' order within a row do not count, and any other
change does. scripts/cv.sh and tools/submit.py's grid (utils/runs/run_status.py), train.py
--resume, and predict.py, stack.py and tools/statistics.py, correlation.py and report.py given
--data compare it with the dataset at hand and refuse another one, naming both. Runs recorded before the fingerprint have none: accepted.
"""
import hashlib
from pathlib import Path

from utils.common.errors import DataError, report_problems
from utils.common.paths import native_rel
from utils.data.dataset import name_key, read_tags_csv, split_tags
from utils.data.folds_file import read_folds_file

KEY = "dataset"  # the config.json key


def _digest(lines):
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def train_csv_digest(root):
    """sha256 of root/train.csv's rows: 'name,tag tag' (name NFC, tags sorted), sorted."""
    df = read_tags_csv(Path(root) / "train.csv")
    return _digest(f"{name_key(n.strip())},{' '.join(sorted(set(split_tags(t))))}"
                   for n, t in zip(df["image_name"], df["tags"]))


def folds_digest(names, folds):
    """sha256 of the (image name, fold) pairs, sorted: names (NFC) and int fold ids, as
    utils.data.folds_file.read_folds_file reads them or utils.data.folds.plan_folds makes them."""
    return _digest(f"{n},{int(f)}" for n, f in zip(names, folds))


def dataset_fingerprint(root, names=None, folds=None, folds_file=None):
    """config.json's "dataset" dict for the data root `root`: train.csv's digest, the folds'
    (from names and folds in memory, else from folds_file when it exists; None without either)
    and the root's absolute path. Raises DataError when a file cannot be read."""
    if folds is not None:
        fold_digest = folds_digest(names, folds)
    elif folds_file is not None and Path(folds_file).is_file():
        stored = read_folds_file(folds_file)
        fold_digest = folds_digest(stored, stored.values())
    else:
        fold_digest = None
    return {"train_csv": train_csv_digest(root), "folds": fold_digest, "root": str(Path(root).resolve())}


def run_folds_file(config, root):
    """The folds file a run recorded (config.json folds_file, relative to the data root), under `root`."""
    rel = config.get("folds_file") or "folds.csv"
    path = Path(native_rel(rel))
    return path if path.is_absolute() else Path(root) / path


def dataset_problem(config, run_dir, root, now=None):
    """Why the run of `config` (its folder run_dir) was trained on another dataset than the one at
    `root`, naming both; None when the fingerprints agree or the run recorded none (an older run).
    now: the dataset's fingerprint when already computed (dataset_fingerprint)."""
    stored = config.get(KEY)
    if not isinstance(stored, dict) or not stored.get("train_csv"):
        return None
    try:
        now = now or dataset_fingerprint(root, folds_file=run_folds_file(config, root))
    except DataError:  # an unreadable train.csv or folds file: the caller's own checks say what is wrong
        return None
    differ = [what for what, key in (("train.csv", "train_csv"), ("folds file", "folds"))
              if stored.get(key) and now.get(key) and stored[key] != now[key]]
    if not differ:
        return None
    return (f"{run_dir} was trained on another dataset: {stored.get('root')} (train.csv {stored['train_csv'][:12]}, "
            f"folds {str(stored.get('folds'))[:12]}), not {now['root']} (train.csv {now['train_csv'][:12]}, folds "
            f"{str(now.get('folds'))[:12]}): their {' and '.join(differ)} differ")


def dataset_problems(runs, root):
    """dataset_problem of each Run (utils.runs.directory) against the dataset at `root`, the
    fingerprint computed once per folds file. Returns the problem lines (none: all agree)."""
    nows, out = {}, []
    for run in runs:
        folds_file = run_folds_file(run.config, root)
        if folds_file not in nows:
            try:
                nows[folds_file] = dataset_fingerprint(root, folds_file=folds_file)
            except DataError:
                nows[folds_file] = None
        if nows[folds_file] is not None and (problem := dataset_problem(run.config, run.dir, root, nows[folds_file])):
            out.append(problem)
    return out


def check_runs_dataset(runs, root):
    """Raise DataError listing dataset_problems (each run and both fingerprints) when any of the
    Runs was trained on another dataset than the one at `root`, given as --data."""
    report_problems(f"--data {root}: runs trained on another dataset; pass the dataset they were trained on, or "
                    f"leave --data out", dataset_problems(runs, root))


def check_same_dataset(config, run_dir, root, fix, now=None):
    """Raise DataError (dataset_problem's text, then `fix`: what to do) when the run was trained on
    another dataset than the one at `root`."""
    problem = dataset_problem(config, run_dir, root, now)
    if problem:
        raise DataError(f"{problem}; {fix}")
