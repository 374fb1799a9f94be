"""Run directories: finding, reading, grouping into models.

A run is a folder with config.json. `load_run` resolves its stored data path on
this machine (utils/common/paths.py), so records written elsewhere read the same.
"""
import glob
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path


from utils.common.errors import DataError
from utils.common.text import read_json
from utils.common.paths import load_path_map, native_rel, resolve_stored
from utils.runs.run_status import diverged_problem
from utils.runs.train_flags import model_values

def model_key(config):
    """Short hash of the configuration that defines a model (fold and seed excluded): the keys
    train.py's flag table marks as defining one (utils/runs/train_flags.py model_values)."""
    blob = json.dumps(model_values(config), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


@dataclass
class Run:
    """One run directory: its config, where its data lives here, and how that was found."""
    dir: Path
    config: dict
    data_root: Path = None
    data_how: str = "missing"
    result: dict = field(default_factory=dict)

    @property
    def name(self):
        return self.dir.name

    @property
    def labels(self):
        return list(self.config["labels"])

    @property
    def fold(self):
        return int(self.config["fold"])

    @property
    def seed(self):
        return int(self.config.get("seed", 0))

    @property
    def model(self):
        """Model id: the config hash plus a readable prefix."""
        return f"{self.config.get('arch')}-{self.config.get('images', 'train')}-{model_key(self.config)}"

    @property
    def finished(self):
        return bool(self.result.get("finished"))

    @property
    def diverged(self):
        """A line refusing the run when train.py stopped it as diverged (diverged.json), else None."""
        return diverged_problem(self.dir)

    @property
    def is_linear_probe(self):
        """True for a run of tools/linear_probe.py (config.json: loss_spec logreg, a `probe` stage):
        it has no checkpoint, so predict.py cannot predict it."""
        stages = self.config.get("stages") or []
        return self.config.get("loss_spec") == "logreg" or any(isinstance(s, dict) and "probe" in s for s in stages)

    @property
    def converted(self):
        """True when the stored data path had to be converted to be found here."""
        return self.data_how in ("mapped", "rerooted")

    def preds_path(self, split, tta="none"):
        return self.dir / "preds" / f"{split}.{tta}.csv"

    def tta_available(self, split):
        """TTA names with a preds/<split>.<tta>.csv file, sorted."""
        return sorted(p.name[len(split) + 1:-4] for p in (self.dir / "preds").glob(f"{split}.*.csv"))

    def folds_file(self):
        """Path of the folds.csv this run used (None if the data root is not found here)."""
        if self.data_root is None:
            return None
        return self.data_root / native_rel(self.config.get("folds_file", "folds.csv"))


def load_run(run_dir, pairs=None, roots=None):
    """Read run_dir/config.json (+ result.json); resolve its data root on this machine.

    pairs: path map (list of (old, new)); roots: extra folders for re-rooting
    (default: the current directory and the parents of the run directory).
    Raises DataError when config.json is missing or unreadable.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise DataError(f"{run_dir}: not a run (no config.json)")
    config = read_json(cfg_path)
    if not isinstance(config, dict):
        raise DataError(f"{cfg_path}: expected a JSON object")
    for k in ("arch", "fold", "labels"):
        if k not in config:
            raise DataError(f"{cfg_path}: missing key {k!r}")
    result = {}
    if (run_dir / "result.json").is_file():
        try:
            result = read_json(run_dir / "result.json")
        except DataError:
            result = {}
    if pairs is None:
        pairs = load_path_map()
    if roots is None:
        r = run_dir.resolve()
        roots = [Path.cwd(), *list(r.parents)[:4]]
    root, how = resolve_stored(config.get("data_root"), config.get("data_root_abs"), run_dir, roots, pairs,
                               accept=lambda p: (p / "train.csv").is_file())
    return Run(run_dir, config, root, how, result)


def name_series(run_name):
    """A run's name without its fold part: 'resnet50-wbce' for resnet50-wbce-f0 (scripts/cv.sh),
    'resnet50-train-1a2b3c4d' for train.py's resnet50-train-1a2b3c4d-f0-20240101-120000-4242."""
    return re.sub(r"-f\d+(-\d{8}-\d{6}(-\d+)?)?$", "", run_name)


def display_name(model, run_names, images="train"):
    """A readable model name: the shared start of the runs' names without their fold part
    ('resnet50-wbce' for resnet50-wbce-f0..f4; 'resnet50-train' for train.py's default names of
    two seeds, whose tags differ), the image variant unless the name has it, and the first six
    digits of the configuration hash (model_key), which tell apart models that share the rest.
    The model id itself when a run's name has no fold part or the names share no start."""
    stems = [name_series(n).split("-") for n in run_names]
    if not stems or any(name_series(n) == n for n in run_names):
        return model
    shared = []
    for words in zip(*stems):
        if len(set(words)) > 1:
            break
        shared.append(words[0])
    if not "".join(shared):
        return model
    variant = "" if images == "train" or images in shared else f"-{images}"
    return f"{'-'.join(shared)}{variant}-{model.rsplit('-', 1)[-1][:6]}"


def model_name(runs):
    """The name every script shows for the model of `runs` (Runs of one model id: every run of
    it that the script was given, any fold and seed): display_name over their names."""
    return display_name(runs[0].model, [r.name for r in runs], runs[0].config.get("images", "train"))


def model_names(runs):
    """{model id: model_name} of the models of `runs` (any Run list)."""
    return {model: model_name(rs) for model, rs in group_models(runs).items()}


RUN_FILES = ("result.json", "history.csv", "preds", "checkpoints")  # a run folder holds some of these


def lost_record(folder):
    """Why `folder` is a run folder without its record (no config.json, but result.json, history.csv,
    preds/ or checkpoints/), naming the missing file; None when it has config.json or looks like no run."""
    folder = Path(folder)
    has = [f for f in RUN_FILES if (folder / f).exists()]
    if (folder / "config.json").exists() or not has:
        return None
    return (f"{folder / 'config.json'}: missing (the folder has {', '.join(has)}): the run's record is lost; "
            f"restore config.json or train the run again")


def find_runs(patterns, pairs=None, roots=None):
    """Runs matching glob patterns or folders (a folder of runs counts as all its runs).

    Returns (runs sorted by name, skipped: list of (path, reason)): a run whose config.json cannot be
    read, or a folder that holds a run's files but no config.json (lost_record), is skipped, not ignored.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    dirs, skipped = [], []
    for pat in patterns:
        hits = sorted(glob.glob(str(pat))) or []
        for h in hits:
            h = Path(h)
            if (h / "config.json").is_file():
                dirs.append(h)
            elif h.is_dir():
                dirs += sorted(p.parent for p in h.glob("*/config.json"))
                lost = [h] if lost_record(h) else sorted(p for p in h.iterdir() if p.is_dir() and lost_record(p))
                skipped += [(p, lost_record(p)) for p in lost if p not in {s for s, _ in skipped}]
    runs, seen = [], set()
    for d in dirs:
        key = d.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            runs.append(load_run(d, pairs, roots))
        except DataError as e:
            skipped.append((d, str(e)))
    return sorted(runs, key=lambda r: r.name), skipped


def group_models(runs):
    """dict model id -> list of runs (every fold and seed of one configuration)."""
    out = {}
    for r in runs:
        out.setdefault(r.model, []).append(r)
    return out


def no_run_message(pattern):
    """Why `pattern` matched no run: a path that does not exist, or no folder with config.json."""
    text = str(pattern)
    if not any(c in text for c in "*?[") and not Path(text).exists():
        return f"{text}: no such file or folder"
    return f"{text}: no run (a folder with config.json) matches"
