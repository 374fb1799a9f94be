"""Running a budgeted plan (tools/submit.py --budget): one job at a time through the grid's jobs.

Each job goes to the submitit executor of --cluster (slurm, local or debug) as the grid's
own jobs do (utils/grid/cluster.py: TrainJob, PredictJob, ProbeJob, StackJob), so a finished
run is skipped and an unfinished one resumes with train.py --resume. Before each job the plan
is re-planned with the speeds measured so far: members that would no longer finish are
dropped (utils.grid.budget.replan), and while the plan runs ahead of its prediction it grows
(utils.grid.budget.extend: dropped members come back, candidates left out join, then larger
models of the members); the stack uses the members that finished. A job still
running when its share of the budget is spent is stopped (not in --cluster debug, which runs
jobs in this process). plan.json records every state change and, every few seconds, the time
used, so that the same command continues after a kill within what is left.
"""
import fcntl
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from utils.analysis.report import build_context, render
from utils.common.atomic import atomic_write_text
from utils.common.temp_files import is_alive
from utils.common.errors import DataError
from utils.common.termination import Terminated
from utils.common.text import read_json
from utils.grid.budget import MARGIN, MEASURE_WHY, RUNG_FOLD, Facts, Measured, format_duration
from utils.grid.budget_replan import (cheapest_addition, complete_members, corrections, expected, extend,
                                      keep_one_to_measure, owner, promote, replan, rung_ready)
from utils.grid.budget_presets import member_from_json, plan_preset
from utils.grid.cluster import Cell, PredictJob, ProbeJob, StackJob, TrainJob, is_debug, job_error
from utils.runs.directory import find_runs
from utils.grid.plan_file import write_plan
from utils.grid.stopping import stop_jobs
from utils.analysis.scores import Truth

log = logging.getLogger(__name__)
LOCK_NAME = "run.lock"  # train.py's hold on its run folder (utils/runs/run_guard.py)
TICK_S = 0.5
SAVE_EVERY_S = 5.0
LOG_EVERY_S = 60.0  # how often the plan's bar is written to a log file (stderr not a terminal)


@dataclass
class Context:
    """What running a plan needs. plan: the plan.json dict (jobs as Job objects); plan_path;
    executor: a submitit executor; data, out: folders; submission, report: output files;
    stack_extra: stack.py flags besides --runs/--tta/--out/--report-dir; used_before: seconds
    spent by earlier attempts and this one before `t0` (time.perf_counter() at its start)."""
    plan: dict
    plan_path: Path
    executor: object
    data: str
    out: str
    submission: str
    report: str
    stack_extra: list
    used_before: float
    t0: float
    cluster: str = "local"
    lock: object = field(default_factory=threading.Lock)

    def used(self):
        return self.used_before + time.perf_counter() - self.t0

    def left(self):
        return self.plan["budget_s"] - self.used()

    def save(self):
        with self.lock:  # the progress thread saves too
            self.plan["used_s"] = round(self.used(), 2)
            self.plan["attempts"][-1]["used_s"] = round(time.perf_counter() - self.t0, 2)
            write_plan(self.plan_path, self.plan)


class Progress:
    """Two tqdm bars: the whole plan (jobs done / planned, time used / left) above the running
    job's (seconds elapsed of those predicted). A thread moves them and saves plan.json every
    SAVE_EVERY_S; `deadline` (perf_counter time) stops the running job when passed. When
    stderr is not a terminal (a log file), the job's bar is left out and the plan's bar is
    written once every LOG_EVERY_S and after each job, not redrawn every second."""

    def __init__(self, ctx):
        self.ctx, self.lock = ctx, threading.Lock()
        self.live = sys.stderr.isatty()
        self.overall = tqdm(total=sum(j.state != "dropped" for j in ctx.plan["jobs"]), position=0, desc="budget",
                            unit="job", dynamic_ncols=True, mininterval=0 if self.live else LOG_EVERY_S,
                            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} jobs{postfix}")
        self._logged = time.perf_counter()
        self.bar, self.job, self.handle, self.deadline, self.started = None, None, None, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def update_overall(self, force=False):
        jobs = self.ctx.plan["jobs"]
        self.overall.total = sum(j.state != "dropped" for j in jobs)
        self.overall.n = sum(j.state == "finished" for j in jobs)
        self.overall.set_postfix_str(f"used {format_duration(self.ctx.used())}, left "
                                     f"{format_duration(max(0.0, self.ctx.left()))}", refresh=False)
        if self.live or force or time.perf_counter() - self._logged >= LOG_EVERY_S:
            self.overall.refresh()
            self._logged = time.perf_counter()

    def start(self, job, predicted_s, handle, deadline):
        with self.lock:
            self.job, self.handle, self.deadline, self.started = job, handle, deadline, time.perf_counter()
            self.bar = tqdm(total=max(1, round(predicted_s)), position=1, leave=False, unit="s", dynamic_ncols=True,
                            desc=f"{job.kind} {job.name}"[:60], bar_format="{desc}: {n}/~{total} s |{bar}|",
                            disable=not self.live)
            if not self.live:
                tqdm.write(f"{job.kind} {job.name}: started, about {format_duration(predicted_s)}")

    def end(self):
        with self.lock:
            if self.bar is not None:
                self.bar.close()
            self.bar, self.job, self.handle, self.deadline = None, None, None, None
        self.update_overall(force=True)

    def write(self, text):
        tqdm.write(text)

    def _run(self):
        last_save = time.perf_counter()
        while not self._stop.wait(TICK_S):
            with self.lock:
                now = time.perf_counter()
                if self.bar is not None and self.live:
                    self.bar.n = min(self.bar.total, int(now - self.started))
                    self.bar.refresh()
                if (self.deadline is not None and now > self.deadline and self.handle is not None
                        and not is_debug(self.handle)):
                    self.deadline = None
                    tqdm.write(f"stopping {self.job.kind} {self.job.name}: its share of the budget is spent")
                    self.job.why = "stopped: its share of the budget was spent"
                    self.handle.cancel(check=False)
                if now - last_save > SAVE_EVERY_S:
                    self.ctx.save()
                    last_save = now
            self.update_overall()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.update_overall(force=True)
        self.overall.close()


def submit_job(ctx, job):
    """Submit one member job to the executor; returns the submitit job."""
    ex, plan = ctx.executor, ctx.plan
    if job.kind == "train":
        return ex.submit(TrainJob(ctx.data, ctx.out), Cell(job.arch, job.fold, job.seed, job.flags, job.name))
    if job.kind == "predict":
        return ex.submit(PredictJob(ctx.out, plan["tta"]), job.runs)
    if job.kind == "probe":
        argv = ["--arch", job.arch, "--size", str(job.size), "--folds-k", str(plan["facts"]["folds_k"])]
        return ex.submit(ProbeJob(ctx.data, ctx.out, job.name, plan["facts"]["folds_k"], plan["tta"], argv))
    if job.kind == "stack":  # a stack after a member runs its own (cheap) methods
        extra = [*job.flags, *plan["command"].get("rules", [])] if job.after else ctx.stack_extra
        return ex.submit(StackJob(ctx.out, stack_runs(plan["jobs"]), plan["tta"], ctx.submission, extra))
    raise ValueError(f"unknown job kind {job.kind}")


def stack_runs(jobs):
    """The runs of the members that finished, in plan order."""
    done = set(complete_members(jobs))
    return [r for j in jobs if j.member in done and j.kind in ("train", "probe") for r in j.runs]


def write_report(ctx):
    """The HTML report of the finished members' runs and the stack (tools/report.py's library)."""
    runs, _ = find_runs([str(Path(ctx.out) / r) for r in stack_runs(ctx.plan["jobs"])])
    context = build_context(runs, Truth(ctx.data), [Path(ctx.out)], ctx.plan["tta"],
                            [str(Path(ctx.submission).parent / "stack_report.json")], title="Budgeted competition")
    atomic_write_text(ctx.report, render(context))


def locked(run_dir):
    """Whether a process holds run_dir/run.lock (a train.py on the run)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:  # no locks on this file system
        return False
    finally:
        os.close(fd)


def wait_for_leftover(ctx, progress, job, seconds):
    """A job a killed earlier attempt left running on this machine (--cluster local: its
    worker's pid is job_id; any train.py holding the run's lock) does the job's own work:
    wait for it to end, at most `seconds`. Returns True when nothing is left running."""
    pid = int(job.job_id) if ctx.cluster == "local" and job.job_id.isdigit() else None

    def busy():
        return (pid is not None and is_alive(pid)) or (job.kind == "train" and locked(Path(ctx.out) / job.name))

    if not busy():
        return True
    progress.write(f"waiting for the {job.kind} job an earlier attempt left running ({job.name})")
    deadline = time.perf_counter() + seconds
    while busy():
        if time.perf_counter() > deadline:
            return False
        time.sleep(0.5)
    return True


def execute(ctx, progress, job, predicted_s, allowed_s):
    """Run `job` (the report here, the others through the executor, stopped after allowed_s);
    returns None or its error as text."""
    if job.kind == "report":
        progress.start(job, predicted_s, None, None)
        try:
            write_report(ctx)
        except Exception as e:  # the report is a view: the submission stands without it
            return f"{type(e).__name__}: {e}"
        return None
    wait_for_leftover(ctx, progress, job, allowed_s)
    handle = submit_job(ctx, job)
    job.job_id = str(handle.job_id)
    ctx.save()
    progress.start(job, predicted_s, handle, time.perf_counter() + allowed_s * 1.05)
    return job_error(handle)


def settle(ctx, progress, job, error):
    """The job's state from its error: finished, dropped (stopped at its share of the budget)
    or failed; the rest of a member that did not finish is dropped."""
    if error is None:
        job.state = "finished"
        return
    if job.why.startswith("stopped"):
        job.state, why = "dropped", f"{job.kind} {job.name} was stopped"
    else:
        job.state, why = "failed", f"{job.kind} {job.name} failed"
        job.why = job.why or ([line for line in error.splitlines() if line.strip()] or ["failed"])[-1][:300]
        progress.write(f"{job.kind} {job.name}: failed ({job.why})")
    for j in ctx.plan["jobs"]:
        if j.member is not None and j.member == job.member and j.state == "planned":
            j.state, j.why = "dropped", why


def run_one(ctx, progress, job):
    """Run `job` to its end with what is left of the budget (less the stack and report for a
    member's job); its state, actual seconds and why are set and saved."""
    factor = corrections(ctx.plan["jobs"])
    finish = sum(expected(j, factor) for j in ctx.plan["jobs"] if owner(j) is None and j.state == "planned")
    allowed = max(1.0, ctx.left() - (finish if job.member is not None else 0.0))
    job.state = "running"
    ctx.save()
    t = time.perf_counter()
    error = execute(ctx, progress, job, expected(job, factor), allowed)
    job.actual_s = round(time.perf_counter() - t, 2)
    progress.end()
    settle(ctx, progress, job, error)
    ctx.save()


def adjust(ctx, progress):
    """Re-plan before a job with the speeds measured so far: drop the members that would no
    longer finish (replan), but run one trained fold to measure before every trained member is
    given up (keep_one_to_measure); when none is dropped, grow the plan into the time it runs
    ahead by (extend). Says what changed above the bars."""
    jobs = ctx.plan["jobs"]
    dropped = replan(jobs, ctx.left())
    kept = keep_one_to_measure(jobs, ctx.left()) if dropped else None
    for m in dropped:
        if m != kept:
            progress.write(f"dropped {m}: {next(j.why for j in jobs if j.member == m and j.state == 'dropped')}")
    if kept is not None:
        first = next(j for j in jobs if j.member == kept and j.kind == "train" and j.state == "planned")
        progress.write(f"measuring: {first.name} runs first, to measure training on this data before {kept} is "
                       f"kept or dropped (predicted {format_duration(first.predicted_s)} for this fold)")
    if dropped or not ctx.plan.get("candidates"):
        return
    candidates = [member_from_json(d) for d in ctx.plan["candidates"]]
    measured, facts, preset = Measured.from_json(ctx.plan["measured"]), Facts(**ctx.plan["facts"]), plan_preset(ctx.plan)
    changes = extend(jobs, candidates, measured, facts, preset, ctx.left())
    for how, m_id, member in changes:
        if member is not None:
            ctx.plan["members"].append(asdict(member))
        if how == "measure":
            first = next(j for j in jobs if j.member == m_id and j.why == MEASURE_WHY)
            progress.write(f"measuring: {first.name} runs first, to measure training on this data (the speed probe "
                           f"predicts {format_duration(first.predicted_s)}); the rest of {m_id} follows if it fits")
            continue
        what = {"back": "brought back", "new": "added", "larger": "added a larger model,"}[how]
        progress.write(f"{what} {m_id}: the plan runs ahead of its prediction, {format_duration(ctx.left())} left")
    if not changes and all(owner(j) is None for j in jobs if j.state == "planned"):
        say_unused(ctx, progress, cheapest_addition(jobs, candidates, measured, facts, preset))


def say_unused(ctx, progress, cheapest):
    """When the members are done with more than MARGIN of the budget left and nothing more fits,
    say (and record in plan.json as 'unused') what did not fit and why, with the numbers."""
    left, budget = ctx.left(), ctx.plan["budget_s"]
    if left <= MARGIN * budget or ctx.plan.get("unused"):
        return
    factor = corrections(ctx.plan["jobs"])
    finish = sum(expected(j, factor) for j in ctx.plan["jobs"] if j.state == "planned")
    if cheapest is None:
        why = "every candidate and every larger model of the members is in the plan already"
    else:
        cost, what = cheapest
        why = (f"the cheapest addition, {what}, would take {format_duration(cost)} at the speeds measured, and "
               f"{format_duration(max(0.0, left * (1 - MARGIN) - finish))} fit beside the stack and the report "
               f"({format_duration(left)} left, {MARGIN:.0%} kept as a margin)")
    ctx.plan["unused"] = f"{format_duration(left)} of {format_duration(budget)} left unused: {why}"
    progress.write(f"nothing more fits: {ctx.plan['unused']}")


def run_f2(out, name):
    """A finished run's validation F2 (result.json best_val_f2), or None when unreadable."""
    try:
        return float(read_json(Path(out) / name / "result.json")["best_val_f2"])
    except (OSError, KeyError, TypeError, ValueError, DataError):
        return None


def close_rung(ctx, progress):
    """Once the first fold of every trained member has run (the rung), order their remaining
    folds by its validation F2, best first (utils.grid.budget_replan.promote), and record the
    rung in plan.json ('rungs': the fold, each member's F2, the order; the probe's F2 on the
    same fold beside them). Once per plan."""
    jobs = ctx.plan["jobs"]
    if ctx.plan.get("rungs") or not rung_ready(jobs):
        return
    first = [j for j in jobs if j.kind == "train" and j.fold == RUNG_FOLD and j.state == "finished"]
    scores = {j.member: f2 for j in first if (f2 := run_f2(ctx.out, j.name)) is not None}
    order = promote(jobs, scores)
    probes = {j.member: run_f2(ctx.out, j.runs[RUNG_FOLD]) for j in jobs if j.kind == "probe" and j.state == "finished"}
    ctx.plan["rungs"] = [{"rung": 1, "fold": RUNG_FOLD, "f2": scores, "order": order,
                          "reference": {m: f2 for m, f2 in probes.items() if f2 is not None}, "outcome": {}}]
    progress.write(f"rung 1, fold {RUNG_FOLD} of every trained model: " +
                   ", ".join(f"{m} F2 {scores[m]:.4f}" for m in order) +
                   "; their other folds run best first, and the last go first when time runs short")


def record_outcomes(plan):
    """Each rung member's fate in plan.json: went on to every fold, or stopped and why."""
    for rung in plan.get("rungs", []):
        for m in rung["order"]:
            own = [j for j in plan["jobs"] if j.member == m]
            dropped = next((j.why for j in own if j.state in ("dropped", "failed")), None)
            rung["outcome"][m] = ("went on: every fold finished" if all(j.state == "finished" for j in own) else
                                  f"stopped: {dropped}" if dropped else "going on")


def next_job(jobs):
    """The first planned job, or None."""
    return next((j for j in jobs if j.state == "planned"), None)


def run_plan(ctx):
    """Every planned job in order, re-planning before each (members dropped when they would
    overrun, added when the plan runs ahead); the stack and report when some member finished.
    Returns the ids of the members the stack used."""
    jobs = ctx.plan["jobs"]
    for j in jobs:
        if j.state == "running":  # a kill interrupted it: its run resumes, its files say what is done
            j.state = "planned"
    progress = Progress(ctx)
    try:
        while (job := next_job(jobs)) is not None:
            if job.kind != "report":
                adjust(ctx, progress)
                if (job := next_job(jobs)) is None:
                    break
            if job.member is None and not complete_members(jobs):
                job.state, job.why = "dropped", "no member finished"
                continue
            if job.after is not None and job.after not in complete_members(jobs):
                job.state, job.why = "dropped", f"{job.after} did not finish"
                continue
            if job.kind == "report" and not Path(ctx.submission).is_file():
                job.state, job.why = "dropped", "no submission"
                continue
            run_one(ctx, progress, job)
            close_rung(ctx, progress)
    except (KeyboardInterrupt, Terminated):  # the job this command started stops too (utils/grid/stopping.py)
        if progress.handle is not None:
            stop_jobs([(progress.handle, f"{progress.job.kind} {progress.job.name}")], ctx.cluster, progress.write)
        raise
    finally:
        progress.close()
        record_outcomes(ctx.plan)
        ctx.save()
    return complete_members(jobs)
