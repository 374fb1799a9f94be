"""Grids of runs on a cluster with submitit: the grid, its run names, and the jobs (tools/submit.py).

A grid is architectures x folds x seeds, each architecture with its own train.py flags.
Each cell is one run whose name is a pure function of the cell (architecture, a hash of
its flags, seed, fold), so a job that is requeued, or a second submission of the same
grid, finds the run again: finished runs (result.json) are skipped, unfinished ones
continue with `train.py --resume`, once the run is known to be of the grid's dataset
(utils/runs/run_status.py); a diverged one is refused.

Jobs run train.py, predict.py and stack.py as child processes (the scripts' own flags,
logs and exit codes; a CUDA context never outlives its job). TrainJob is submitit
Checkpointable: on preemption or time-out (SIGUSR2 from Slurm, or the local executor)
its checkpoint() sends the child Ctrl-C, which makes train.py finish the current step and
write checkpoints/last.pt, then resubmits itself; the requeued job resumes exactly.
PredictJob predicts one run or several in one predict.py; ProbeJob runs tools/linear_probe.py
(a run per fold). tools/submit.py --budget submits the same jobs one at a time
(utils/grid/budget_run.py).
"""
import hashlib
import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.local.debug import DebugJob
import yaml

from utils.common.errors import DataError, report_problems
from utils.common.text import read_text
from utils.runs.run_status import diverged_problem, run_state
from utils.runs.train_flags import configuration_argv

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
STOP_WAIT_S = 60   # how long a preempted train.py may take to write its checkpoint


# ----------------------------------------------------------------------------- the grid

@dataclass
class Cell:
    """One run of a grid: train.py --arch arch --fold fold --seed seed --name name *flags."""
    arch: str
    fold: int
    seed: int
    flags: list = field(default_factory=list)
    name: str = ""


def flags_from(value, where):
    """train.py flags from a grid entry: a list of strings ('--bs', '16') or a mapping
    {flag: value} (true -> --flag, false -> --no-flag, a list -> several values).
    Raises DataError naming `where` for anything else."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a list of train.py flags or a mapping flag: value, got {value!r}")
    out = []
    for k, v in value.items():
        flag = "--" + str(k).lstrip("-").replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is False:
            out.append("--no-" + flag[2:])
        elif isinstance(v, (list, tuple)):
            out += [flag, *map(str, v)]
        elif v is not None:
            out += [flag, str(v)]
    return out


def grid_problems(problems, n_cells, shown=3):
    """One line per problem (at most 20), the cells it stops named before it: every cell, up to
    `shown` of them by name, or the first ones and how many others. problems: {message: [cell
    names]} (an empty list: a problem of the dataset, not of a cell)."""
    lines = []
    for message, where in list(problems.items())[:20]:
        if not where:
            lines.append(message)
        elif len(where) == n_cells > 1:
            lines.append(f"every cell ({n_cells}): {message}")
        elif len(where) <= shown:
            lines.append(f"{', '.join(where)}: {message}")
        else:
            lines.append(f"{', '.join(where[:shown - 1])} and {len(where) - shown + 1} other cells: {message}")
    return lines


def run_name(arch, flags, seed, fold):
    """Deterministic run name of a cell: <arch>-<hash of the flags>-s<seed>-f<fold>
    (':' of tv:/timm: replaced), so resubmitting finds the same run. train.py's how-to-run flags
    (--amp, --workers, --device, ...: the flag table's) are not hashed, so cells differing only in
    them share their runs; flags without them hash as they always did."""
    tag = hashlib.sha1(json.dumps([arch, configuration_argv(list(flags))]).encode()).hexdigest()[:8]
    return f"{arch.replace(':', '_')}-{tag}-s{seed}-f{fold}"


def read_grid(path):
    """A grid file (YAML or JSON): {archs: {ARCH: flags} or [ARCH, ...], folds: [...],
    seeds: [...], flags: common train.py flags}. Every key optional. Raises DataError."""
    try:
        grid = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: cannot read the grid ({e})") from e
    if not isinstance(grid, dict):
        raise DataError(f"{path}: a grid is a mapping with keys archs, folds, seeds, flags")
    unknown = sorted(set(grid) - {"archs", "folds", "seeds", "flags"})
    if unknown:
        raise DataError(f"{path}: unknown key(s) {unknown}; a grid has archs, folds, seeds, flags")
    archs = grid.get("archs") or {}
    if isinstance(archs, (list, tuple)):
        archs = {a: None for a in archs}
    if not isinstance(archs, dict):
        raise DataError(f"{path}: 'archs' must be a list of names or a mapping name: flags")
    for key in ("folds", "seeds"):
        if key in grid and not (isinstance(grid[key], list) and all(isinstance(v, int) for v in grid[key])):
            raise DataError(f"{path}: '{key}' must be a list of integers")
    return {"archs": {str(a): flags_from(f, f"{path}: archs.{a}") for a, f in archs.items()},
            "folds": grid.get("folds"), "seeds": grid.get("seeds"),
            "flags": flags_from(grid.get("flags"), f"{path}: flags")}


def make_cells(archs, folds, seeds, common):
    """Cells of archs ({arch: its flags}) x seeds x folds; common flags come after each
    architecture's own (argparse: the last value wins, so the command line overrides the grid)."""
    cells = []
    for arch, own in archs.items():
        flags = list(own) + list(common)
        for seed in seeds:
            for fold in folds:
                cells.append(Cell(arch, fold, seed, flags, run_name(arch, flags, seed, fold)))
    return cells


OTHER_DATA_FIX = "give each dataset its own --out folder, or move the run away"


def cell_state(out, cell, data=None):
    """'finished' (result.json), 'unfinished' (checkpoints/last.pt), 'diverged' or 'new'
    (utils.runs.run_status.run_state). data: the grid's dataset; a run trained on another one
    raises DataError naming both."""
    return run_state(Path(out) / cell.name, data, OTHER_DATA_FIX)


def grid_states(out, cells, data):
    """{run name: cell_state} of every cell of a grid, before anything is submitted. One DataError
    names every run trained on another dataset than `data` and every diverged run (the same
    flags would diverge again: another --lr gives other run names)."""
    states, problems = {}, []
    for cell in cells:
        try:
            states[cell.name] = cell_state(out, cell, data)
        except DataError as e:
            problems.append(str(e))
            continue
        if states[cell.name] == "diverged":
            problems.append(diverged_problem(Path(out) / cell.name))
    report_problems("the grid cannot run; nothing was submitted", problems)
    return states


def flag_value(argv, flag):
    """The value of `flag` in an argument list (`--f V` or `--f=V`, the last one wins), else None."""
    value = None
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def train_argv(data, out, cell, resume=False):
    """train.py arguments of a cell (without the interpreter and script)."""
    return ["--data", str(data), "--out", str(out), "--arch", cell.arch, "--fold", str(cell.fold),
            "--seed", str(cell.seed), "--name", cell.name, *cell.flags, *(["--resume"] if resume else [])]


# ----------------------------------------------------------------------------- jobs

class JobFailed(RuntimeError):
    """A script run by a job exited with an error (its output is in the job's log)."""


def is_debug(job):
    """Whether job is a --cluster debug job (submitit's DebugJob: run in this process when waited for)."""
    return isinstance(job, DebugJob)


def job_error(job):
    """Wait for a job; None when it succeeded, else its error as text (the last line says
    what failed: the job's traceback on the local executor, 'ExcType: message' in debug mode).

    Never job.result() on a debug job: submitit's DebugJob.results() meets an error with
    pdb.post_mortem(), a debugger prompt that waits on stdin (a shell without a terminal
    or a CI job hangs); DebugJob.exception() runs the job and returns the error instead.
    """
    try:
        err = job.exception()
    except UncompletedJobError as e:  # the job never finished (killed, cancelled, out of time)
        return str(e)
    if err is None:
        return None
    if is_debug(job):
        return f"{type(err).__name__}: {err}"
    parts = str(err).split("-" * 22 + "\n")
    # FailedJobError: a header, the job's traceback between two rules, then the log paths
    return parts[1] if isinstance(err, FailedJobError) and len(parts) == 3 else str(err)


def _script(name, argv):
    cmd = [sys.executable, str(REPO / name), *map(str, argv)]
    log.info("running %s", " ".join(cmd))
    return cmd


class TrainJob(submitit.helpers.Checkpointable):
    """Train one cell: skip it when finished, resume it when it has a checkpoint, else start it.

    data, out: dataset and runs folders. Called with the Cell; returns the run directory.
    """

    def __init__(self, data, out):
        self.data, self.out = str(data), str(out)
        self._proc = None

    def __call__(self, cell):
        run = Path(self.out) / cell.name
        state = cell_state(self.out, cell, self.data)
        if state == "finished":
            return str(run)
        if state == "diverged":
            raise JobFailed(diverged_problem(run))
        cmd = _script("train.py", train_argv(self.data, self.out, cell, resume=state == "unfinished"))
        # its own session: signals meant for this job (Slurm's, a terminal's) do not reach
        # train.py directly; checkpoint() stops it in order
        proc = self._proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            # poll, not wait(): checkpoint() runs in a signal handler meanwhile and must be
            # able to reap the process itself (Popen.wait holds a lock the handler would need)
            while (rc := proc.poll()) is None:
                time.sleep(1.0)
        finally:
            self._stop_child()
        if rc != 0:
            raise JobFailed(f"train.py exited with code {rc} for {cell.name}: {' '.join(cmd)}")
        return str(run)

    def _stop_child(self):
        """Ctrl-C to a running train.py (it checkpoints at the end of its step), then wait;
        SIGKILL after STOP_WAIT_S (the run then resumes from its previous checkpoint)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.2)

    def checkpoint(self, cell):
        """Preempted or timed out: let train.py write its checkpoint, then requeue this cell
        (the requeued job sees checkpoints/last.pt and passes --resume)."""
        self._stop_child()
        return submitit.helpers.DelayedSubmission(TrainJob(self.data, self.out), cell)

    def __getstate__(self):
        return {"data": self.data, "out": self.out, "_proc": None}  # a process does not pickle


class PredictJob:
    """predict.py --runs RUN... --tta TTA --split both for the runs (one name or a list) that
    lack either prediction file; nothing when every run has both."""

    def __init__(self, out, tta, extra=()):
        self.out, self.tta, self.extra = str(out), tta, list(extra)

    def __call__(self, names):
        runs = [Path(self.out) / n for n in ([names] if isinstance(names, str) else names)]
        todo = [r for r in runs if not all((r / "preds" / f"{s}.{self.tta}.csv").is_file() for s in ("val", "test"))]
        if todo:
            cmd = _script("predict.py", ["--runs", *todo, "--tta", self.tta, "--split", "both", *self.extra])
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                raise JobFailed(f"predict.py exited with code {rc} for {', '.join(r.name for r in todo)}: "
                                f"{' '.join(cmd)}")
        return str(runs[0]) if isinstance(names, str) else [str(r) for r in runs]


class ProbeJob:
    """tools/linear_probe.py over every fold (runs OUT/PREFIX-f<k>), unless each of them has
    result.json and both prediction files. argv: the probe's flags besides --data, --out, --name."""

    def __init__(self, data, out, prefix, folds_k, tta, argv=()):
        self.data, self.out, self.prefix = str(data), str(out), prefix
        self.folds_k, self.tta, self.argv = int(folds_k), tta, list(argv)

    def runs(self):
        return [Path(self.out) / f"{self.prefix}-f{k}" for k in range(self.folds_k)]

    def __call__(self):
        done = [(r / "result.json").is_file() and all((r / "preds" / f"{s}.{self.tta}.csv").is_file()
                                                      for s in ("val", "test")) for r in self.runs()]
        if not all(done):
            cmd = _script("tools/linear_probe.py", ["--data", self.data, "--out", self.out, "--name", self.prefix,
                                                    "--tta", self.tta, *self.argv])
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                raise JobFailed(f"tools/linear_probe.py exited with code {rc}: {' '.join(cmd)}")
        return [str(r) for r in self.runs()]


class StackJob:
    """stack.py over the grid's runs: submission, and stack_report.md/.json, stack_oof.csv and
    stack_test.csv next to it (--report-dir, so that a grid's stack stays in its own folder)."""

    def __init__(self, out, names, tta, submission, extra=()):
        self.out, self.names, self.tta = str(out), list(names), tta
        self.submission, self.extra = str(submission), list(extra)

    def __call__(self):
        runs = [str(Path(self.out) / n) for n in self.names]
        cmd = _script("stack.py", ["--runs", *runs, "--tta", self.tta, "--out", self.submission,
                                   "--report-dir", Path(self.submission).parent, *self.extra])
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            raise JobFailed(f"stack.py exited with code {rc}: {' '.join(cmd)}")
        return self.submission
