"""A whole competition within a time budget: the cost model and the plan (tools/submit.py --budget).

A plan is an ordered list of *members*, each a model that stack.py can use: a linear probe
(tools/linear_probe.py: one job writes a run per fold) or a trained configuration
(architecture, size, epochs, seed) over every fold (one train.py job per fold, then one
predict.py job over its runs with the plan's TTA). After the members come the stack
(stack.py) and the report. Every job's cost in seconds is predicted from the speeds measured
on the device (utils/runs/budget_probe.py: images/s of training and of prediction per
architecture and size, and the fixed cost of starting a job) and the dataset's numbers.

Everything here is a pure function of its inputs: the same measurement, dataset, preset and
budget give the same plan. `make_plan` fills the budget less a safety margin (MARGIN),
cheapest members first in the preset's order, then lengthens training while it still fits;
`replan` scales the remaining jobs by the speeds measured so far (actual / predicted seconds
of the finished jobs of each kind) and drops the members that would no longer finish in time;
`extend` adds the candidates left out when the plan runs ahead of its prediction.
"""
import math
import re
from dataclasses import asdict, dataclass, field, fields

from utils.common.errors import DataError
from utils.runs.cluster import run_name

MARGIN = 0.15            # the plan fills (1 - MARGIN) of the time left; the rest absorbs estimation error
STACK_COEF_S = 5e-6      # stack.py seconds per method x member x image x label (beyond the start-up)
REPORT_MEMBER_S = 2.0    # tools/report.py's library: seconds per member (figures), beyond the start-up
PROBE_FIT_S = 0.02       # a linear probe's logistic regression: seconds per label and fold
STARTS_PER_JOB = 2       # interpreters a job starts: the executor's worker, then the script
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
KINDS = ("probe", "train", "predict", "stack", "report")
TTA_VIEWS = {"none": 1, "hflip": 2, "vflip": 2, "d4": 8, "5crop": 5, "10crop": 10, "10crop+full": 11,
             "multiscale": 3}


# ----------------------------------------------------------------------------- durations

def parse_duration(text, flag="--budget"):
    """Seconds (float) of '45s', '4m', '90m', '2h', '1d', '1h30m' or a bare number of seconds.
    Raises DataError naming `flag` for anything else or a duration that is not positive."""
    s = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", s)
    if re.fullmatch(r"\d+(?:\.\d+)?", s):
        seconds = float(s)
    elif parts and re.fullmatch(r"(?:\s*\d+(?:\.\d+)?\s*[smhd])+", s):
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    else:
        raise DataError(f"{flag} {text!r}: expected a duration such as 45s, 4m, 90m, 2h, 1d or 1h30m")
    if not seconds > 0:
        raise DataError(f"{flag} {text!r}: must be more than 0 seconds")
    return seconds


def format_duration(seconds):
    """'45s', '4m10s', '1h05m', '2d03h' for a number of seconds (rounded up to the second)."""
    s = int(math.ceil(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def round_up_budget(seconds):
    """A budget a person would type, at least `seconds`: whole 5 s below a minute, whole minutes above."""
    return math.ceil(seconds / 5) * 5 if seconds < 60 else math.ceil(seconds / 60) * 60


# ----------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Facts:
    """The dataset's numbers the costs depend on: training and test images, labels, folds."""
    n_train: int
    n_test: int
    n_labels: int
    folds_k: int


@dataclass(frozen=True)
class Speed:
    """Measured speed of one configuration on the device, in images per second:
    train_ips of training steps (forward, backward, optimizer), predict_ips of inference."""
    train_ips: float
    predict_ips: float


@dataclass
class Measured:
    """What the speed probe found: speeds by speed_key(arch, size, bs), the seconds it takes to
    start a job (interpreter and imports), and how long the measurement itself took."""
    speeds: dict
    start_s: float
    probe_s: float
    device: str = "cpu"

    @property
    def job_start_s(self):
        """Seconds every job pays before its work: STARTS_PER_JOB interpreters."""
        return self.start_s * STARTS_PER_JOB

    def speed(self, arch, size, bs):
        return self.speeds[speed_key(arch, size, bs)]

    def to_json(self):
        return {"speeds": {k: asdict(v) for k, v in self.speeds.items()}, "start_s": self.start_s,
                "probe_s": self.probe_s, "device": self.device}

    @classmethod
    def from_json(cls, d):
        return cls({k: Speed(**v) for k, v in d["speeds"].items()}, d["start_s"], d["probe_s"], d.get("device", "cpu"))


def speed_key(arch, size, bs):
    """Key of a measured configuration: 'arch@SIZEpx/bBS'."""
    return f"{arch}@{size}px/b{bs}"


# ----------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One step of a plan. kind: probe, train, predict, stack or report. member: the member's
    id (None for stack and report). name: the run (train), the probe's run prefix, or the kind.
    runs: the run names a predict or probe job makes predictions for. predicted_s, actual_s:
    seconds. state: planned, running, finished, dropped or failed; why: the reason when dropped.
    job_id: the executor's id of its last submission (with --cluster local, the worker's pid)."""
    id: str
    kind: str
    member: str = None
    name: str = ""
    arch: str = ""
    size: int = 0
    epochs: int = 0
    fold: int = None
    seed: int = 0
    flags: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    predicted_s: float = 0.0
    actual_s: float = None
    state: str = "planned"
    why: str = ""
    job_id: str = ""

    @classmethod
    def from_json(cls, d):
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def train_seconds(m, speed, facts, start_s):
    """One fold of a trained member: start-up + epochs x (the fold's training images at the
    training speed + its validation images at the prediction speed)."""
    n_val = facts.n_train / facts.folds_k
    return start_s + m.epochs * ((facts.n_train - n_val) / speed.train_ips + n_val / speed.predict_ips)


def predict_seconds(m, speed, facts, start_s, tta):
    """predict.py over a member's runs: every run's validation fold and the test set, x TTA views."""
    images = facts.n_train + facts.folds_k * facts.n_test
    return start_s + images * TTA_VIEWS.get(tta, 10) / speed.predict_ips


def probe_seconds(m, speed, facts, start_s):
    """A linear probe: features of the train and test images (x 2 with hflip), then one
    logistic regression per label and fold."""
    views = TTA_VIEWS.get(m.tta, 2)
    return (start_s + (facts.n_train + facts.n_test) * views / speed.predict_ips
            + PROBE_FIT_S * facts.n_labels * facts.folds_k)


def stack_seconds(n_members, n_methods, facts, start_s):
    """stack.py, estimated from members x images x labels x methods."""
    images = facts.n_train + facts.n_test
    return start_s + STACK_COEF_S * n_methods * max(1, n_members) * images * facts.n_labels


def report_seconds(n_members, start_s):
    """The report, in this process: its imports (about one start-up) and figures per member."""
    return start_s + REPORT_MEMBER_S * max(1, n_members)


def finish_seconds(n_members, n_methods, facts, measured):
    """The stack and the report."""
    return (stack_seconds(n_members, n_methods, facts, measured.job_start_s)
            + report_seconds(n_members, measured.start_s))


def member_jobs(m, measured, facts, tta):
    """The jobs of member m, with their predicted seconds."""
    speed = measured.speed(m.arch, m.size, m.bs)
    if m.kind == "probe":
        runs = [f"{m.prefix}-f{k}" for k in range(facts.folds_k)]
        return [Job(f"probe:{m.prefix}", "probe", m.id, m.prefix, m.arch, m.size, 0, None, m.seed, list(m.flags),
                    runs, probe_seconds(m, speed, facts, measured.job_start_s))]
    flags = member_flags(m, facts)
    jobs = [Job(f"train:{name}", "train", m.id, name, m.arch, m.size, m.epochs, k, m.seed, flags, [name],
                train_seconds(m, speed, facts, measured.job_start_s))
            for k, name in enumerate(member_runs(m, facts))]
    jobs.append(Job(f"predict:{m.id}", "predict", m.id, m.id, m.arch, m.size, m.epochs, None, m.seed, [],
                    [j.name for j in jobs], predict_seconds(m, speed, facts, measured.job_start_s, tta)))
    return jobs


def member_flags(m, facts):
    """train.py flags of a trained member (its size and epochs last, so they win)."""
    return [*m.flags, "--folds-k", str(facts.folds_k), "--size", str(m.size), "--epochs", str(m.epochs)]


def member_runs(m, facts):
    """Run names of a member: the grid's names (utils.runs.cluster.run_name), one per fold."""
    if m.kind == "probe":
        return [f"{m.prefix}-f{k}" for k in range(facts.folds_k)]
    return [run_name(m.arch, member_flags(m, facts), m.seed, k) for k in range(facts.folds_k)]


def member_cost(m, measured, facts, tta):
    return sum(j.predicted_s for j in member_jobs(m, measured, facts, tta))


# ----------------------------------------------------------------------------- the plan

@dataclass
class Plan:
    """The members chosen and their jobs in running order (members, then stack and report),
    predicted seconds of all of it, the seconds it had to fit in, and the candidates it chose
    from (what `extend` may add later)."""
    members: list
    jobs: list
    predicted_s: float
    fits_s: float
    candidates: list = field(default_factory=list)

    @property
    def trained(self):
        return [m for m in self.members if m.kind == "train"]


def make_plan(candidates, measured, facts, left_s, preset):
    """The plan for `left_s` seconds: members of `candidates` (Member, in the preset's order,
    each trained one at its smallest size and the fewest of preset.epochs) taken while the
    total with the stack and report fits (1 - MARGIN) x left_s, at most preset.max_trained
    trained ones; then every trained member grown together to the costliest (size, epochs) of
    its options (sizes x preset.epochs, cost ~ size^2 x epochs) that still fits.
    Returns a Plan (members may be empty: the budget fits nothing)."""
    fits_s = left_s * (1 - MARGIN)
    n_methods = len(preset.stack_methods)
    total = lambda ms: (sum(member_cost(m, measured, facts, preset.tta) for m in ms)  # noqa: E731
                        + finish_seconds(len(ms), n_methods, facts, measured))
    chosen = []
    for m in candidates:
        if m.kind == "train" and sum(c.kind == "train" for c in chosen) >= preset.max_trained:
            continue
        if total(chosen + [m]) <= fits_s:
            chosen.append(m)
    for size, epochs in growth_options(chosen, measured, preset.epochs):
        grown = [m.scaled(size, epochs) if m.kind == "train" else m for m in chosen]
        if total(grown) <= fits_s:
            chosen = grown
            break
    return Plan(chosen, plan_jobs(chosen, measured, facts, preset), total(chosen), fits_s, list(candidates))


def growth_options(members, measured, epochs):
    """(size, epochs) every trained member of `members` may grow to, costliest first: sizes
    that all of them offer and the probe measured, at least their current size and epochs."""
    trained = [m for m in members if m.kind == "train"]
    if not trained:
        return []
    sizes = set.intersection(*(set(m.sizes or (m.size,)) for m in trained))
    sizes = [s for s in sizes if s >= max(m.size for m in trained)
             and all(speed_key(m.arch, s, m.bs) in measured.speeds for m in trained)]
    options = [(s, e) for s in sizes for e in epochs if e >= max(m.epochs for m in trained)]
    return sorted(options, key=lambda o: (o[0] ** 2 * o[1], o[0]), reverse=True)


def plan_jobs(members, measured, facts, preset):
    """Every member's jobs in order, then the stack and the report."""
    jobs = [j for m in members for j in member_jobs(m, measured, facts, preset.tta)]
    n = len(members)
    jobs.append(Job("stack", "stack", None, "stack.py",
                    predicted_s=stack_seconds(n, len(preset.stack_methods), facts, measured.job_start_s)))
    jobs.append(Job("report", "report", None, "report", predicted_s=report_seconds(n, measured.start_s)))
    return jobs


def minimum_seconds(candidates, measured, facts, preset, spent_s=0.0):
    """The smallest budget whose plan holds one member: spent_s (what has run already) plus the
    cheapest candidate, the stack and the report, over (1 - MARGIN); and that member."""
    if not candidates:
        raise DataError("no model to plan: no architecture is available (see --arch)")
    costs = [(member_cost(m, measured, facts, preset.tta), i) for i, m in enumerate(candidates)]
    cost, i = min(costs)
    need = cost + finish_seconds(1, len(preset.stack_methods), facts, measured)
    return spent_s + need / (1 - MARGIN), candidates[i]


# ----------------------------------------------------------------------------- while running

def corrections(jobs):
    """{kind: actual / predicted seconds} over the finished jobs of each kind (1.0 without any).
    A kind with no finished job borrows the mean factor of the others (the start-up is shared)."""
    out = {}
    for kind in KINDS:
        done = [j for j in jobs if j.kind == kind and j.state == "finished" and j.actual_s is not None]
        if done:
            out[kind] = sum(j.actual_s for j in done) / max(1e-9, sum(j.predicted_s for j in done))
    shared = sum(out.values()) / len(out) if out else 1.0
    return {kind: out.get(kind, shared) for kind in KINDS}


def expected(job, factor):
    """Predicted seconds of an unfinished job, scaled by the measured factor of its kind."""
    return job.predicted_s * factor[job.kind]


def replan(jobs, left_s):
    """Drop (state 'dropped', with why) the unfinished members that would no longer end in
    time: walking the members in plan order, a member stays when its unfinished jobs, those
    of the members kept before it, the stack and the report fit (1 - MARGIN) x left_s at the
    speeds measured so far. Returns the ids of the members dropped now. Jobs are changed in place."""
    factor = corrections(jobs)
    open_jobs = [j for j in jobs if j.state in ("planned", "running")]
    finish = sum(expected(j, factor) for j in open_jobs if j.member is None)
    budget = left_s * (1 - MARGIN) - finish
    dropped, used = [], 0.0
    for member in dict.fromkeys(j.member for j in open_jobs if j.member is not None):
        cost = sum(expected(j, factor) for j in open_jobs if j.member == member)
        if used + cost <= budget:
            used += cost
            continue
        dropped.append(member)
        for j in open_jobs:
            if j.member == member:
                j.state, j.why = "dropped", (f"would end {format_duration(used + cost + finish)} from now, "
                                             f"{format_duration(left_s)} left")
    return dropped


def extend(jobs, candidates, measured, facts, preset, left_s):
    """Grow the plan while it runs ahead of its prediction, so that the budget is used: at the
    speeds measured so far, each change's jobs (and what it adds to the stack and the report)
    must fit beside the open jobs in (1 - MARGIN) x left_s. In this order:

    1. 'back': a dropped member none of whose jobs failed comes back (its finished runs count);
    2. 'new': a candidate never in the plan (at most preset.max_trained trained members), a
       trained one at the size and epochs of the plan's trained members first, then its own;
    3. 'larger', when 1 and 2 changed nothing: one trained member's architecture and seed at a
       larger size of its ladder (a new model for the stack), the costliest size and epochs
       that fit (as make_plan grows members).

    New jobs go before the stack; the stack's and the report's predictions follow the members.
    Returns [(how, member id, Member or None for 'back')]; jobs is changed in place."""
    factor = corrections(jobs)
    free = left_s * (1 - MARGIN) - sum(expected(j, factor) for j in jobs if j.state in ("planned", "running"))
    changes = []

    def cost(new):
        n = len({j.member for j in jobs if j.member is not None and j.state != "dropped"})
        more = (stack_seconds(n + 1, len(preset.stack_methods), facts, measured.job_start_s)
                - stack_seconds(n, len(preset.stack_methods), facts, measured.job_start_s) + REPORT_MEMBER_S)
        return sum(expected(j, factor) for j in new) + more * factor["stack"]

    def add(how, member, new):
        nonlocal free
        c = cost(new)
        if c > free:
            return False
        free -= c
        if member is None:
            for j in new:
                j.state, j.why = "planned", ""
        else:
            at = next(i for i, j in enumerate(jobs) if j.member is None)
            jobs[at:at] = new
        changes.append((how, new[0].member, member))
        return True

    for m_id in dict.fromkeys(j.member for j in jobs if j.member is not None):
        own = [j for j in jobs if j.member == m_id]
        if any(j.state == "dropped" for j in own) and not any(j.state in ("planned", "running", "failed") for j in own):
            add("back", None, [j for j in own if j.state == "dropped"])
    for m in candidates:
        trained = {(j.arch, j.seed) for j in jobs if j.kind == "train" and j.state != "dropped"}
        if member_key(m) in {job_key(j) for j in jobs if j.member is not None} or (
                m.kind == "train" and len(trained) >= preset.max_trained):
            continue
        for member in _shapes(m, jobs, measured):
            if add("new", member, member_jobs(member, measured, facts, preset.tta)):
                break
    if not changes:
        for member in _larger(jobs, candidates, measured, preset.epochs):
            if add("larger", member, member_jobs(member, measured, facts, preset.tta)):
                break
    n = len({j.member for j in jobs if j.member is not None and j.state != "dropped"})
    for j in jobs:
        if j.state == "planned" and j.kind == "stack":
            j.predicted_s = stack_seconds(n, len(preset.stack_methods), facts, measured.job_start_s)
        elif j.state == "planned" and j.kind == "report":
            j.predicted_s = report_seconds(n, measured.start_s)
    return changes


def _shapes(m, jobs, measured):
    """Candidate m as it may join: a probe as it is; a trained one at the size and epochs of the
    plan's first trained member, then at its own (sizes the probe measured only)."""
    if m.kind != "train":
        return [m]
    trained = [j for j in jobs if j.kind == "train" and j.state != "dropped"]
    shapes = ([(trained[0].size, trained[0].epochs)] if trained else []) + [(m.size, m.epochs)]
    return [m.scaled(s, e) for s, e in dict.fromkeys(shapes) if speed_key(m.arch, s, m.bs) in measured.speeds]


def _larger(jobs, candidates, measured, epochs):
    """Larger versions of the plan's trained members, in plan order, the costliest first within a
    member: its architecture and seed at each size of its ladder above the largest it has in the
    plan, at each of the preset's epochs."""
    ladders = {(m.arch, m.seed): m for m in candidates if m.kind == "train"}
    out = []
    for arch, seed in dict.fromkeys((j.arch, j.seed) for j in jobs if j.kind == "train" and j.state != "dropped"):
        m = ladders.get((arch, seed))
        if m is None:
            continue
        top = max(j.size for j in jobs if j.kind == "train" and (j.arch, j.seed) == (arch, seed))
        options = [(s, e) for s in (m.sizes or (m.size,)) if s > top and speed_key(arch, s, m.bs) in measured.speeds
                   for e in epochs]
        out += [m.scaled(s, e) for s, e in sorted(options, key=lambda o: (o[0] ** 2 * o[1], o[0]), reverse=True)]
    return out


def member_key(m):
    """What identifies a member across sizes: ('probe', run prefix) or ('train', arch, seed)."""
    return ("probe", m.prefix) if m.kind == "probe" else ("train", m.arch, m.seed)


def job_key(job):
    """member_key of the member a probe, train or predict job belongs to."""
    return ("probe", job.name) if job.kind == "probe" else ("train", job.arch, job.seed)


def complete_members(jobs):
    """Member ids whose every job finished (what the stack can use), in plan order."""
    members = dict.fromkeys(j.member for j in jobs if j.member is not None)
    return [m for m in members if all(j.state == "finished" for j in jobs if j.member == m)]
