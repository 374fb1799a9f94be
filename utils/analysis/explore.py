"""The error explorer's inputs (tools/explore.py): models' out-of-fold probabilities, their
thresholds, the truth, the image files and the images tools/label_issues.py flagged.

A *model* here is what stack.py stacks: the runs of one configuration and seed, one run per fold
(utils/stack/library.py `load_library`), its out-of-fold probabilities assembled in train.csv
order and named as every script names it (utils/runs/directory.py `model_name`). A model starts
at the thresholds the greedy search fits on its out-of-fold predictions
(utils/metrics/thresholds.py `fit_thresholds`), the ones predict.py and stack.py apply to its
test predictions. A stack's output folder (stack_oof.csv, stack_report.json) adds the stack as a
model that starts at the thresholds stack.py chose. utils/analysis/explore_page.py turns an
`Explorer` into the HTML page.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common.errors import DataError, preview
from utils.common.text import read_csv, read_json
from utils.data.dataset import image_stem, load_dataset, name_key
from utils.metrics.thresholds import fit_thresholds
from utils.runs.pred_files import read_preds

log = logging.getLogger(__name__)
STACK_FILES = ("stack_oof.csv", "stack_report.json")


@dataclass
class Model:
    """One model's out-of-fold predictions on the explorer's images.

    name: shown in the page; probs: (N, L) float64 in [0, 1] (0 where the model has no opinion);
    thresholds: (L,) float64 it starts at; covered: (L,) bool, False for labels it does not
    predict (a --label-group run); source: where the thresholds come from, in words.
    """
    name: str
    probs: np.ndarray
    thresholds: np.ndarray
    covered: np.ndarray
    source: str


@dataclass
class Explorer:
    """Everything the page shows.

    labels: L tags; names: N training images (train.csv order); y: (N, L) uint8 given tags;
    folds: (N,) int fold ids or None; models: Model list (at least one); files: N image paths
    (None where the image is missing); flagged: {row: [tags to check]} of the images
    tools/label_issues.py flagged; root: the data folder; notes: lines for the user.
    """
    labels: list
    names: list
    y: np.ndarray
    folds: np.ndarray
    models: list
    files: list
    flagged: dict = field(default_factory=dict)
    root: Path = None
    notes: list = field(default_factory=list)


def greedy_start(y, probs, folds=None):
    """(L,) float64: the greedy thresholds fitted on all out-of-fold rows, as predict.py fits them
    for a submission. y: (N, L) 0/1; probs: (N, L); folds: (N,) or None."""
    return np.asarray(fit_thresholds(y, probs, "greedy", folds=folds), np.float64)


def library_models(lib):
    """Model list of a utils.stack.library.Library: each member's OOF (N, L) and its greedy thresholds."""
    models = []
    for m, member in enumerate(lib.members):
        covered = lib.mask[m].copy()
        probs = np.nan_to_num(lib.oof[:, m, :].T.astype(np.float64), nan=0.0)
        thresholds = greedy_start(lib.y, probs, lib.folds)
        thresholds[~covered] = 1.0  # a label the model does not predict stays off
        models.append(Model(member.name, probs, thresholds, covered,
                            "greedy thresholds fitted on its out-of-fold predictions"))
    return models


def stack_files(folder):
    """(stack_oof.csv, stack_report.json) of a stack's output folder (or of the folder of a given
    stack_report.json); DataError naming --stack and what is missing."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"--stack {folder}: no such folder (give the folder where stack.py wrote stack_oof.csv "
                        f"and stack_report.json: its --report-dir, by default the folder that holds the runs)")
    paths = [folder / f for f in STACK_FILES]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"--stack {folder}: no {' and no '.join(missing)} there; stack.py writes both "
                        f"(python stack.py --runs 'RUNS/*' --report-dir {folder})")
    return paths


def _differ(have, want):
    """'a, b only in the stack; c only in the dataset' for two label (or name) lists."""
    only_have = [t for t in have if t not in set(want)]
    only_want = [t for t in want if t not in set(have)]
    return "; ".join(part for part in (f"{preview(only_have)} only in the stack" if only_have else "",
                                       f"{preview(only_want)} only in the dataset" if only_want else "") if part)


def stack_runs(report, folder, runs=()):
    """The run folders of a stack report's members (stack_report.json members[].runs): each name found
    among `runs` (utils.runs.directory.Run list) or as a folder with config.json in the stack's folder.
    Returns [(run folder, config dict)]; names found nowhere are skipped (nothing to check)."""
    from utils.runs.directory import load_run

    known = {r.name: r for r in runs}
    found = []
    names = {n for m in report.get("members") or [] if isinstance(m, dict) for n in m.get("runs") or []}
    for name in sorted(map(str, names)):
        if name in known:
            found.append((known[name].dir, known[name].config))
        elif (Path(folder) / name / "config.json").is_file():
            try:
                found.append((Path(folder) / name, load_run(Path(folder) / name).config))
            except DataError:
                continue  # an unreadable record: nothing to compare
    return found


def check_stack_dataset(report, folder, root, runs=()):
    """Raise DataError when the stack's member runs (stack_runs) were trained on another dataset than
    the one at `root` (utils/runs/fingerprint.py, as predict.py and stack.py check --data), naming both."""
    from utils.runs.fingerprint import dataset_problem

    problems = [p for d, config in stack_runs(report, folder, runs) if (p := dataset_problem(config, d, root))]
    if problems:
        raise DataError(f"--stack {folder}: the stack was made from runs of another dataset than {root}: "
                        f"{problems[0]}" + (f" (and {len(problems) - 1} more run(s))" if len(problems) > 1 else "")
                        + "; give the --data (or --runs) the stack was made on, or stack these runs again")


def stack_thresholds(report, report_path, labels):
    """((L,) thresholds, source in words) of stack_report.json, checked as predict.py and stack.py
    check a thresholds file (utils/metrics/threshold_file.py); (None, None) when it holds none."""
    from utils.metrics.threshold_file import KEY, read_thresholds_file

    if not isinstance(report, dict) or report.get(KEY) is None:
        return None, None
    thresholds = read_thresholds_file(report_path, labels, flag="--stack")
    given = (report.get("settings") or {}).get("thresholds_file") if isinstance(report.get("settings"), dict) else None
    if given:
        return thresholds, f"the thresholds of {given} (applied by stack.py --thresholds)"
    return thresholds, "the thresholds stack.py chose"


def stack_model(folder, names, labels, y, folds=None, root=None, runs=()):
    """The stack of a stack.py output folder as a Model: stack_oof.csv aligned to `names` and
    `labels`, starting at stack_report.json's thresholds (the greedy search on its out-of-fold
    probabilities when the report has none: --threshold expected). DataError names the file
    whose images or labels do not match the dataset's train.csv (every image once, no other),
    a threshold out of [0, 1], or member runs trained on another dataset than `root`."""
    oof_path, report_path = stack_files(folder)
    file_names, file_labels, probs = read_preds(oof_path)
    if sorted(file_labels) != sorted(labels):
        raise DataError(f"--stack {oof_path}: its labels differ from the dataset's ({_differ(file_labels, labels)}); "
                        f"was it made on another --data?")
    index = {name_key(n): i for i, n in enumerate(file_names)}
    missing = [n for n in names if n not in index]
    extra = sorted(set(index) - set(names))
    if missing or extra:
        what = ([f"{len(missing)} of the dataset's {len(names)} training images have no row: {preview(missing)}"]
                if missing else []) + ([f"{len(extra)} row(s) name images that are not in its train.csv: "
                                        f"{preview(extra)}"] if extra else [])
        raise DataError(f"--stack {oof_path}: its rows are not the dataset's training images ({'; '.join(what)}); "
                        f"was it made on another --data?")
    probs = probs[np.ix_([index[n] for n in names], [file_labels.index(t) for t in labels])]
    report = read_json(report_path)
    if root is not None and isinstance(report, dict):
        check_stack_dataset(report, Path(report_path).parent, root, runs)
    chosen = report.get("chosen") if isinstance(report, dict) else None
    thresholds, source = stack_thresholds(report, report_path, labels)
    if thresholds is None:
        thresholds = greedy_start(y, probs, folds)
        source = "greedy thresholds fitted on its out-of-fold predictions (stack_report.json has none)"
    name = f"stack ({chosen})" if chosen else "stack"
    return Model(name, probs, thresholds, np.ones(len(labels), bool), source)


def read_flagged(path, names):
    """{row: [tags]} of the images a tools/label_issues.py table flags (its `issue` column true; every
    row of a list without that column, such as an --exclude list cut from it). names: N training
    images. DataError names --label-issues for a file without image_name or with unknown images."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--label-issues {path}: is a folder; give the file in it (tools/label_issues.py writes "
                        f"label_issues.csv{', found there' if (path / 'label_issues.csv').is_file() else ''})")
    if not path.is_file():
        raise DataError(f"--label-issues {path}: file not found (tools/label_issues.py writes label_issues.csv)")
    try:
        df = read_csv(path, dtype=str, keep_default_na=False)
    except DataError as e:
        raise DataError(f"--label-issues {e}") from e
    if "image_name" not in df.columns:
        raise DataError(f"--label-issues {path}: no image_name column (found {preview(list(df.columns))}); "
                        f"expected tools/label_issues.py's label_issues.csv")
    if "issue" in df.columns:
        df = df[df["issue"].str.strip().str.lower().isin(("true", "1", "yes"))]
    exact = {name_key(n): i for i, n in enumerate(names)}
    stems = {image_stem(n): i for i, n in enumerate(names)}
    flagged, unknown = {}, []
    for r in df.itertuples(index=False):
        n = str(r.image_name).strip()
        i = exact.get(name_key(n), stems.get(image_stem(n)))
        if i is None:
            unknown.append(n)
            continue
        tag = str(getattr(r, "tag", "") or "").strip()
        flagged.setdefault(i, [])
        if tag and tag not in flagged[i]:
            flagged[i].append(tag)
    if unknown:
        raise DataError(f"--label-issues {path}: {len(unknown)} image(s) are not training images of the data: "
                        f"{preview(unknown)}; was it made for another --data?")
    return flagged


def image_files(root, images, names):
    """N image paths (None where missing) of `names` in the data folder's `images` variant."""
    spec = load_dataset(root, images, check=False)
    where = dict(zip(spec.names, spec.files))
    return [where.get(n) for n in names]


def load_explorer(runs=None, stack=None, data=None, tta="auto", label_issues=None):
    """An Explorer from runs (patterns, grouped into models as stack.py groups them; --tta as
    stack.py reads it), a stack's output folder, or both.

    runs: list of patterns or None; stack: folder or None; data: dataset folder (needed when only a
    stack is given); label_issues: tools/label_issues.py's CSV or None. Raises DataError for inputs
    that do not fit together, naming the flag.
    """
    from utils.runs.directory import find_runs
    from utils.stack.library import load_library

    notes, models, folds, found = [], [], None, []
    if runs:
        lib = load_library(runs, tta, data, need_test=False, user="the explorer")
        found = find_runs(runs)[0]
        if lib.tta_line:
            notes.append(lib.tta_line)
        notes += lib.notes
        labels, names, y, folds, root = list(lib.labels), list(lib.names), lib.y, lib.folds, Path(lib.root)
        images = lib.members[0].config.get("images", "train")
        models = library_models(lib)
    else:
        if data is None:
            raise DataError("--stack without --runs needs --data DIR: the dataset whose train.csv the stack was "
                            "made on (its truth and images)")
        root, images = Path(data), "train"
        spec = load_dataset(root, images, check=False)
        labels, names, y = list(spec.labels), list(spec.names), spec.y
    if stack:
        models.append(stack_model(stack, names, labels, y, folds, root, found))
    flagged = read_flagged(label_issues, names) if label_issues else {}
    files = image_files(root, images, names)
    absent = sum(f is None for f in files)
    if absent:
        notes.append(f"{absent} training image(s) not found in {root / images}: shown without a picture")
    return Explorer(labels, names, np.asarray(y, np.uint8), folds, models, files, flagged, root, notes)
