"""A library of models for stacking: every model's out-of-fold and test probabilities.

Runs (ARCHITECTURE.md, "Run directory") are grouped into *members*: the runs of one configuration
(utils.runs.directory.model_key) and one seed, one run per fold. A member's validation files
together cover the training set once; they are assembled into its full out-of-fold
(OOF) matrix in train.csv order, and its test files are averaged over the folds.
Repeats of a configuration (other seeds) are separate members that share a ``model``
id, so ``bag`` can average them.

Arrays are label-major, because every method works one label at a time:
``P[l, m, i]`` is member m's probability of label l for image i, float32. A member
trained on a subset of the tags (``--label-group``) has no opinion on the others:
those entries are NaN and ``mask[m, l]`` is False. Nothing is ever zero-filled.

A member missing a fold (no run, an unfinished run, no prediction file for the TTA)
is left out and reported; inconsistent inputs (label lists, folds, image names,
values) raise DataError naming the run and the file.
"""
import fnmatch
import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from utils.data import dataset as data
from utils.data.dataset import read_tags_csv
from utils.common.errors import DataError, preview, report_problems
from utils.runs.pred_files import read_preds
from utils.data.folds_file import read_folds_file
from utils.runs.directory import find_runs, model_names, no_run_message
from utils.runs.fingerprint import check_runs_dataset
from utils.runs.oof import assemble_oof
from utils.runs.run_status import diverged_summary
from utils.predict.tta_choice import AUTO, choose_tta, make_files_command
from utils.stack.left_out import left_out_lines, left_out_warnings

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One column block of the library: a configuration at one seed (or a bag of seeds).

    name: unique display name; model: configuration id shared by repeats; seed: the
    seed (None for a bag); group: layer group (``--groups``) or None; labels: the tags
    it predicts; runs: its run names, fold order; config: the first run's config.
    """
    name: str
    model: str
    seed: object
    labels: list
    runs: list = field(default_factory=list)
    group: str = None
    config: dict = field(default_factory=dict)


@dataclass
class Inputs:
    """What a combiner is fitted on or applied to.

    P: (L, M, N) float32 probabilities, NaN where mask is False; mask: (M, L) bool
    (member has an opinion on the label); members, models: M names and configuration
    ids; y: (N, L) uint8 truth and folds: (N,) fold ids (None when predicting).
    """
    P: np.ndarray
    mask: np.ndarray
    members: list
    models: list
    y: np.ndarray = None
    folds: np.ndarray = None

    @property
    def shape(self):
        """(L, M, N)."""
        return self.P.shape

    def rows(self, idx):
        """The same inputs restricted to images ``idx`` (index array or boolean mask)."""
        return replace(self, P=self.P[:, :, idx],
                       y=None if self.y is None else self.y[idx],
                       folds=None if self.folds is None else self.folds[idx])

    def columns(self, idx):
        """The same inputs restricted to members ``idx`` (index array)."""
        idx = np.asarray(idx)
        return replace(self, P=self.P[:, idx], mask=self.mask[idx],
                       members=[self.members[i] for i in idx], models=[self.models[i] for i in idx])


@dataclass
class Library:
    """Members' OOF and test probabilities aligned to one label order and one image order.

    labels: L tags; names: N training images (train.csv order); y: (N, L) uint8;
    folds: (N,) fold ids from folds.csv; test_names: T test images (sample_submission
    order) or []; members: M Member; oof: (L, M, N) float32; test: (L, M, T) float32
    or None; mask: (M, L) bool; notes: messages about runs left out or replaced.
    """
    labels: list
    names: list
    y: np.ndarray
    folds: np.ndarray
    members: list
    oof: np.ndarray
    mask: np.ndarray
    test_names: list = field(default_factory=list)
    test: np.ndarray = None
    notes: list = field(default_factory=list)
    left_out: list = field(default_factory=list)
    root: Path = None  # the data folder (train.csv, folds.csv, ...)
    tta: str = None  # the TTA of the prediction files read
    tta_line: str = None  # what --tta auto chose and why (None when --tta named it)
    model_names: dict = field(default_factory=dict)  # {model id: its name (utils.runs.directory.model_name)}

    def inputs(self):
        """Inputs for fitting: OOF probabilities with truth and folds."""
        return Inputs(self.oof, self.mask, [m.name for m in self.members],
                      [m.model for m in self.members], self.y, self.folds)

    def test_inputs(self):
        """Inputs for predicting the test set (raises DataError when there is none)."""
        if self.test is None:
            raise DataError("the library has no test predictions (run predict.py --split test)")
        return Inputs(self.test, self.mask, [m.name for m in self.members], [m.model for m in self.members])

    def subset(self, idx):
        """A library of the members ``idx`` only (index array)."""
        idx = np.asarray(idx, dtype=np.intp)
        return replace(self, members=[self.members[i] for i in idx], oof=self.oof[:, idx],
                       mask=self.mask[idx], test=None if self.test is None else self.test[:, idx])

    def bagged(self):
        """A library where the repeats (seeds) of each configuration are averaged into one member."""
        by_model = {}
        for i, m in enumerate(self.members):
            by_model.setdefault(m.model, []).append(i)
        members, oof, test = [], [], []
        for model, idx in by_model.items():
            first = self.members[idx[0]]
            seeds = [self.members[i].seed for i in idx]
            name = self.model_names.get(model, model) if len(idx) > 1 else first.name
            members.append(replace(first, name=name, seed=None if len(idx) > 1 else first.seed,
                                   runs=[r for i in idx for r in self.members[i].runs]))
            oof.append(self.oof[:, idx].mean(1))
            if self.test is not None:
                test.append(self.test[:, idx].mean(1))
            if len(idx) > 1:
                log.info("bagged %s: %d repeats (seeds %s)", name, len(idx), seeds)
        mask = np.stack([self.mask[idx[0]] for idx in by_model.values()])
        return replace(self, members=members, oof=np.stack(oof, 1).astype(np.float32), mask=mask,
                       test=np.stack(test, 1).astype(np.float32) if test else None)

    @classmethod
    def from_arrays(cls, oof, y, folds, mask=None, labels=None, members=None, models=None,
                    test=None, groups=None):
        """A library built from matrices (tests, benchmarks).

        oof: (L, M, N) probabilities (NaN allowed where ``mask`` is False); y (N, L);
        folds (N,); members/models: M names / configuration ids (default m0.. and the
        names); test: (L, M, T) or None; groups: M group names or None.
        """
        oof = np.asarray(oof, dtype=np.float32)
        L, M, N = oof.shape
        mask = np.isfinite(oof).all(2).T if mask is None else np.asarray(mask, bool)
        labels = list(labels) if labels is not None else [f"l{j}" for j in range(L)]
        names = list(members) if members is not None else [f"m{m}" for m in range(M)]
        models = list(models) if models is not None else names
        groups = list(groups) if groups is not None else [None] * M
        mem = [Member(names[m], models[m], 0, [labels[j] for j in range(L) if mask[m, j]], group=groups[m])
               for m in range(M)]
        return cls(labels, [f"i{i}" for i in range(N)], np.asarray(y, np.uint8), np.asarray(folds),
                   mem, oof, mask, [f"t{i}" for i in range(0 if test is None else np.shape(test)[2])],
                   None if test is None else np.asarray(test, np.float32))


# ----------------------------------------------------------------------------- checks on runs

def _all_labels(run):
    """The dataset's label order recorded by a run (its own labels when not recorded)."""
    return list(run.config.get("all_labels") or run.config["labels"])


def check_labels(runs):
    """The shared label order of ``runs``; DataError when runs disagree or a run's labels are not a subset."""
    ref = _all_labels(runs[0])
    problems = []
    for r in runs:
        al = _all_labels(r)
        if al != ref:
            problems.append(f"{r.dir / 'config.json'}: label order {al} differs from {ref} "
                            f"(run {runs[0].name})")
        extra = [t for t in r.labels if t not in ref]
        if extra:
            problems.append(f"{r.dir / 'config.json'}: labels {extra} are not among all_labels {ref}")
    report_problems("runs disagree on the labels; stack runs of one dataset only", problems)
    return ref


def _digest(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def data_root(runs, data=None):
    """The data directory holding train.csv and folds.csv for ``runs``.

    data: explicit directory (--data), else the runs' recorded data roots, which must
    be one directory or copies with identical train.csv and folds files.
    """
    if data is not None:
        root = Path(data)
        if not (root / "train.csv").is_file():
            raise DataError(f"{root}: no train.csv (--data must be the dataset directory)")
        check_runs_dataset(runs, root)
        return root
    roots = {}
    for r in runs:
        if r.data_root is not None:
            roots.setdefault(Path(r.data_root).resolve(), r)
    if not roots:
        raise DataError(f"the data directory of the runs is not found on this machine "
                        f"(run {runs[0].name} stores {runs[0].config.get('data_root_abs')!r}); pass --data DIR")
    items = list(roots.items())
    first_root, first_run = items[0]
    for root, r in items[1:]:
        for f in ("train.csv", r.config.get("folds_file", "folds.csv")):
            a, b = first_root / f, root / f
            if a.is_file() and b.is_file() and _digest(a) != _digest(b):
                raise DataError(f"runs {first_run.name} and {r.name} use different data: {a} and {b} differ")
    return first_root


def read_truth(root, labels):
    """(names, y (N, L) uint8) from root/train.csv in the library's label order."""
    return data.read_truth(Path(root) / "train.csv", labels)


def read_fold_ids(runs, root, names):
    """(N,) fold id per training image from the folds file the runs share.

    Each run's recorded folds file is compared with the first; every training image
    must have a fold. DataError names the runs and files that disagree.
    """
    default = Path(root) / runs[0].config.get("folds_file", "folds.csv")
    # who uses each folds file, as the message names it: the data folder's, or a run's
    paths = {default.resolve(): f"the data folder {Path(root)}"} if default.is_file() else {}
    for r in runs:
        p = r.folds_file() if r.data_root is not None else None
        if p is not None and Path(p).is_file():
            paths.setdefault(Path(p).resolve(), f"run {r.name}")
    if not paths:
        raise DataError(f"{default}: folds file not found (the runs' out-of-fold rows cannot be placed)")
    items = list(paths.items())
    path, first = items[0]
    for p, r in items[1:]:
        if _digest(p) != _digest(path):
            raise DataError(f"{first} and {r} use different folds files ({path} and {p}); "
                            f"their out-of-fold predictions do not line up")
    folds = read_folds_file(path)
    missing = [n for n in names if n not in folds]
    if missing:
        raise DataError(f"{path}: {len(missing)} training image(s) have no fold: {preview(missing)}")
    return np.array([folds[n] for n in names], np.int64), path


def read_test_names(root):
    """Test image names from root/sample_submission.csv, or None when the file is absent."""
    path = Path(root) / "sample_submission.csv"
    if not path.is_file():
        return None
    return read_tags_csv(path, need_tags=False)["image_name"].str.strip().tolist()


# ----------------------------------------------------------------------------- members

def _member_runs(runs, k, tta, need_test, names):
    """Runs grouped by (model, seed) with one usable run per fold; names: {model id: model name}.

    Returns (complete: dict (model, seed) -> list of k runs, left_out: list of dicts,
    notes: list of str). A run is usable when finished and its prediction files exist.
    A left-out dict holds model, name, seed, runs, missing_folds (every fold without a usable
    run), no_run_folds (folds without any run), reasons (one line per unusable run) and
    unusable (per unusable run: run, fold, dir, reason, fix: the command that makes it usable).
    """
    by_member = {}
    for r in runs:
        by_member.setdefault((r.model, r.seed), []).append(r)
    complete, left_out, notes = {}, [], []
    for (model, seed), rs in sorted(by_member.items()):
        per_fold, unusable = {}, []
        for r in sorted(rs, key=lambda r: r.name):
            reason, fix = _unusable(r, tta, need_test)
            if reason:
                unusable.append({"run": r.name, "fold": r.fold, "dir": str(r.dir), "reason": reason, "fix": fix})
                continue
            if r.fold in per_fold:
                notes.append(f"{names[model]} seed {seed}: fold {r.fold} has several runs; using {r.name}, "
                             f"not {per_fold[r.fold].name}")
            per_fold[r.fold] = r
        missing = [f for f in range(k) if f not in per_fold]
        if missing:
            have = {r.fold for r in rs}
            left_out.append({"model": model, "name": names[model], "seed": seed, "runs": [r.name for r in rs],
                             "missing_folds": missing, "no_run_folds": [f for f in missing if f not in have],
                             "reasons": [f"{u['run']} (fold {u['fold']}): {u['reason']}" for u in unusable],
                             "unusable": unusable})
        else:
            complete[(model, seed)] = [per_fold[f] for f in range(k)]
    return complete, left_out, notes


def _unusable(run, tta, need_test):
    """(why a run cannot be used, the command that fixes it), or (None, None); runs whose
    fix differs only by the run take one predict.py command together."""
    if diverged := diverged_summary(run.dir):
        return diverged, f"a new run of {run.name}'s flags with a lower --lr (another --name)"
    if not run.finished:
        return ("unfinished (no result.json with finished=true)",
                f"python train.py --resume --out {run.dir.parent} --name {run.name}")
    lacking = [s for s in (("val", "test") if need_test else ("val",)) if not run.preds_path(s, tta).is_file()]
    if not lacking:
        return None, None
    files = " and ".join(f"preds/{s}.{tta}.csv" for s in lacking)
    have = [f"{s}.{t}.csv" for s in ("val", "test") for t in run.tta_available(s)]
    split = lacking[0] if len(lacking) == 1 else "both"
    reason = f"lacks {files} (it has {', '.join(have) or 'no prediction files'})"
    return reason, make_files_command(run, tta, split)  # a linear probe: tools/linear_probe.py


def _place(path, names, labels, probs, run, want_names, want_labels):
    """Row order of a prediction file's rows in ``want_names``, after checking names and labels."""
    if labels != list(want_labels):
        raise DataError(f"{path}: label columns {labels} differ from run {run.name}'s labels "
                        f"{list(want_labels)} (config.json)")
    index = {n: i for i, n in enumerate(want_names)}
    unknown = [n for n in names if n not in index]
    if not names:
        raise DataError(f"{path}: has no rows (only a header); make it again for run {run.name}")
    if unknown or len(names) != len(want_names):
        have = set(names)
        missing = [n for n in want_names if n not in have]
        what = ([f"{len(missing)} of the {len(want_names)} expected missing: {preview(missing)}"] if missing else []) \
            + ([f"{len(unknown)} unexpected: {preview(unknown)}"] if unknown else [])
        raise DataError(f"{path}: image names do not match ({'; '.join(what) or 'duplicates'}); was run "
                        f"{run.name} made with another folds.csv or test set?")
    return np.array([index[n] for n in names], np.intp)


def _read_member(runs, tta, labels, names, folds, test_names, need_test):
    """(oof (L, N) float32 NaN-filled, test (L, T) or None, label mask (L,)) of one member."""
    L, N = len(labels), len(names)
    cols = [labels.index(t) for t in runs[0].labels]
    mask = np.zeros(L, bool)
    mask[cols] = True
    oof = np.full((L, N), np.nan, np.float32)
    test = np.zeros((L, len(test_names)), np.float64) if need_test else None
    parts = []  # each run's fold, checked against folds.csv, then one table (utils.runs.oof)
    for r in runs:
        if r.labels != runs[0].labels:
            raise DataError(f"{r.dir / 'config.json'}: labels {r.labels} differ from {runs[0].name}'s "
                            f"{runs[0].labels} within one model")
        path = r.preds_path("val", tta)
        pn, pl, pp = read_preds(path)
        _place(path, pn, pl, pp, r, [names[i] for i in np.flatnonzero(folds == r.fold)], r.labels)
        parts.append((pn, pp))
        if need_test:
            path = r.preds_path("test", tta)
            pn, pl, pp = read_preds(path)
            order = _place(path, pn, pl, pp, r, test_names, r.labels)
            test[np.ix_(cols, order)] += pp.T / len(runs)
    oof[cols] = assemble_oof(parts, names)[1].T
    if need_test:
        test[~mask] = np.nan
    return oof, None if test is None else test.astype(np.float32), mask


def _test_order(root, complete, tta):
    """Test names: sample_submission.csv order, else the first member's first test file."""
    names = read_test_names(root)
    if names is not None:
        return names
    first = next(iter(complete.values()))[0]
    return read_preds(first.preds_path("test", tta))[0]


def group_of(spec, member_config, run_names):
    """Group name of a member for ``--groups``.

    spec: a config key (e.g. 'images', 'arch', 'label_group'): the member's value of
    it; or 'NAME=GLOB[,GLOB];NAME=GLOB...': the group whose glob matches every one
    of the member's run names. Returns str; DataError for a key no run has or runs
    that match no group / several groups.
    """
    if "=" not in spec:
        if spec not in member_config:
            raise DataError(f"--groups {spec!r}: not a config.json key; e.g. images, arch, label_group, "
                            f"or NAME=GLOB;NAME=GLOB over run names")
        return str(member_config[spec])
    hits = set()
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, globs = part.partition("=")
        pats = [g.strip() for g in globs.split(",") if g.strip()]
        if all(any(fnmatch.fnmatch(r, p) for p in pats) for r in run_names):
            hits.add(name.strip())
    if len(hits) != 1:
        raise DataError(f"--groups {spec!r}: runs {run_names[:3]} match {len(hits)} groups "
                        f"({', '.join(sorted(hits)) or 'none'}); every model needs exactly one")
    return hits.pop()


def auto_tta_runs(runs, k):
    """The runs `--tta auto` looks at: the finished runs of each configuration and seed that has a
    finished run of every fold 0..k-1 (the others can never be members); all runs when none has."""
    by_member = {}
    for r in runs:
        if r.finished:
            by_member.setdefault((r.model, r.seed), []).append(r)
    usable = [r for rs in by_member.values() if {r.fold for r in rs} >= set(range(k)) for r in rs]
    return usable or runs


def load_library(patterns, tta=AUTO, data=None, need_test=True, groups=None, user="stacking"):
    """Gather runs into a Library.

    patterns: run folders or glob patterns (a folder of runs counts as all its runs);
    tta: which preds/<split>.<tta>.csv to read, or 'auto' (utils.predict.tta_choice: the TTA every
    run of a complete model has, most views first; DataError naming the runs when none is
    shared); data: dataset directory overriding the
    runs' recorded one; need_test: read test predictions too (members without them
    are left out); groups: ``--groups`` spec or None; user: who reads them, in messages (stacking, the
    explorer). Raises DataError for an empty
    library or inconsistent inputs (labels, folds, names, values), naming run and file.
    """
    runs, skipped = find_runs(patterns)
    notes = [f"skipped {p}: {why}" for p, why in skipped]
    if not runs:
        notes += [m for m in map(no_run_message, patterns) if m.endswith("no such file or folder")]
        raise DataError(f"no runs match {' '.join(map(str, patterns))}" + (f" ({'; '.join(notes)})" if notes else ""))
    labels = check_labels(runs)
    root = data_root(runs, data)
    names, y = read_truth(root, labels)
    folds, folds_path = read_fold_ids(runs, root, names)
    k = int(folds.max()) + 1
    bad_k = [r.name for r in runs if int(r.config.get("folds_k", k)) != k or not 0 <= r.fold < k]
    if bad_k:
        raise DataError(f"runs {preview(bad_k)} were made for another number of folds than {folds_path} (K={k})")
    choice = choose_tta(auto_tta_runs(runs, k), ("val", "test") if need_test else ("val",), tta)
    tta = choice.name
    named = model_names(runs)  # over every run of a model, as tools/statistics.py and the report name it
    complete, left_out, more = _member_runs(runs, k, tta, need_test, named)
    notes += more
    for line in left_out_warnings(left_out, k, runs, user, len(skipped)) if complete else []:  # else: the error
        log.warning("%s", line)
    if not complete:
        files = f"preds/val.{tta}.csv" + (f" and preds/test.{tta}.csv" if need_test else "")
        start = "empty library: stacking needs" if user == "stacking" else f"no model to show: {user} needs"
        raise DataError(f"{start} {files} from a run of every fold 0..{k - 1} of a model "
                        f"(one configuration and seed), and none of the {len(runs)} runs completes one:\n  - " +
                        "\n  - ".join("\n    ".join(left_out_lines(lo, k, user, len(skipped))) for lo in left_out[:10])
                        + "".join(f"\n  unreadable: {p}: {why}" for p, why in skipped))
    test_names = _test_order(root, complete, tta) if need_test else []
    seeds_per_model = {}
    for model, seed in complete:
        seeds_per_model.setdefault(model, []).append(seed)
    members, oofs, tests, masks = [], [], [], []
    for (model, seed), rs in complete.items():
        oof, test, mask = _read_member(rs, tta, labels, names, folds, test_names, need_test)
        run_names = [r.name for r in rs]
        name = named[model] + (f"-s{seed}" if len(seeds_per_model[model]) > 1 else "")
        members.append(Member(name, model, seed, rs[0].labels, run_names,
                              group_of(groups, rs[0].config, run_names) if groups else None, rs[0].config))
        oofs.append(oof)
        tests.append(test)
        masks.append(mask)
    mask = np.stack(masks)
    uncovered = [t for j, t in enumerate(labels) if not mask[:, j].any()]
    if uncovered:
        raise DataError(f"no complete model predicts label(s) {uncovered}; add runs that cover them")
    log.info("library: %d members (%d configurations) from %d runs, %d labels, %d images, %d folds; %d left out",
             len(members), len(seeds_per_model), len(runs), len(labels), len(names), k, len(left_out))
    return Library(labels, names, y, folds, members, np.stack(oofs, 1), mask, test_names,
                   np.stack(tests, 1) if need_test else None, notes, left_out, root, tta, choice.line, named)
