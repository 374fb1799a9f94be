"""A whole competition within a time budget: the cost model and the plan (tools/submit.py --budget).

A plan is an ordered list of *members*, each a model that stack.py can use: a linear probe
(tools/linear_probe.py: one job writes a run per fold) or a trained configuration
(architecture, size, epochs, seed) over every fold (one train.py job per fold, then one
predict.py job over its runs with the plan's TTA). After the members come the stack
(stack.py) and the report. Every job's cost in seconds is predicted from the speeds measured
on the device (utils/grid/budget_probe.py: images/s of training and of prediction per
architecture and size, and the fixed cost of starting a job) and the dataset's numbers.

Everything here is a pure function of its inputs: the same measurement, dataset, preset and
budget give the same plan. `make_plan` fills the budget less a safety margin (MARGIN),
cheapest members first in the preset's order, then lengthens training while it still fits;
utils/grid/budget_replan.py changes the plan while it runs, at the speeds measured so far.
"""
import math
import re
from dataclasses import asdict, dataclass, field, fields

from utils.common.errors import DataError
from utils.grid.budget_costs import INTERIM_METHODS, predict_cost, probe_cost, report_cost, stack_cost, train_cost
from utils.grid.cluster import run_name

MARGIN = 0.15            # the plan fills (1 - MARGIN) of the time left; the rest absorbs estimation error
STARTS_PER_JOB = 2       # interpreters a job starts: the executor's worker, then the script
MIN_EPOCHS = 2           # the fewest a shortened member trains: train.py's default recipe has two stages
RUNG_FOLD = 0            # the fold every trained member trains first: the rung that orders the rest
MEASURE_WHY = "kept to measure"  # why a member that would be dropped runs one fold first (keep_one_to_measure)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
KINDS = ("probe", "train", "predict", "stack", "report")


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
    """What the speed probe found on this machine and this dataset. speeds: Speed by
    speed_key(arch, size, bs); start_s: seconds a fresh interpreter takes to import train.py;
    probe_s: how long the measurement took; decode_ips: {size (str): images/s decoding this
    dataset's files into the cache}; cached: the caches already on disk ('train@64',
    'test@64'); fit_s: {arch: [seconds per fold, seconds per training image x label] of its
    linear probe's fits}; stack_s: {'final' | 'interim': [stack.py's seconds per member x label,
    seconds per member x label x image]} for the plan's and the interim stack's methods
    (utils/grid/budget_rates.py measures the last three)."""
    speeds: dict
    start_s: float
    probe_s: float
    device: str = "cpu"
    decode_ips: dict = field(default_factory=dict)
    cached: list = field(default_factory=list)
    fit_s: dict = field(default_factory=dict)
    stack_s: dict = field(default_factory=dict)

    @property
    def job_start_s(self):
        """Seconds every job pays before its work: STARTS_PER_JOB interpreters."""
        return self.start_s * STARTS_PER_JOB

    def speed(self, arch, size, bs):
        return self.speeds[speed_key(arch, size, bs)]

    def to_json(self):
        return {"speeds": {k: asdict(v) for k, v in self.speeds.items()}, "start_s": self.start_s,
                "probe_s": self.probe_s, "device": self.device, "decode_ips": dict(self.decode_ips),
                "cached": list(self.cached), "fit_s": {k: list(v) for k, v in self.fit_s.items()},
                "stack_s": {k: list(v) for k, v in self.stack_s.items()}}

    @classmethod
    def from_json(cls, d):
        return cls({k: Speed(**v) for k, v in d["speeds"].items()}, d["start_s"], d["probe_s"], d.get("device", "cpu"),
                   dict(d.get("decode_ips", {})), list(d.get("cached", [])),
                   {k: tuple(v) if isinstance(v, (list, tuple)) else (0.0, float(v)) for k, v in d.get("fit_s", {}).items()},
                   {k: tuple(v) for k, v in dict(d.get("stack_s") or {}).items()})


def speed_key(arch, size, bs):
    """Key of a measured configuration: 'arch@SIZEpx/bBS'."""
    return f"{arch}@{size}px/b{bs}"


# ----------------------------------------------------------------------------- jobs

@dataclass
class Job:
    """One step of a plan. kind: probe, train, predict, stack or report. member: the member's
    id (None for stack and report). name: the run (train), the probe's run prefix, or the kind.
    runs: the run names a predict or probe job makes predictions for. predicted_s, actual_s:
    seconds; fixed_s: the one-time part of predicted_s (start-ups, cache decoding), which
    corrections leave alone. state: planned, running, finished, dropped or failed; why: the
    reason when dropped. job_id: the executor's id of its last submission (with --cluster
    local, the worker's pid). after: for a stack job run once a member has finished (a
    submission at every step), that member's id; None for the final stack."""
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
    fixed_s: float = 0.0
    after: str = None

    @classmethod
    def from_json(cls, d):
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def member_jobs(m, measured, facts, tta, decoded=None):
    """The jobs of member m, with their predicted seconds (utils/grid/budget_costs.py).
    decoded: the image caches ('train@64', ...) earlier jobs of the plan make; updated."""
    decoded = set() if decoded is None else decoded
    speed = measured.speed(m.arch, m.size, m.bs)
    if m.kind == "probe":
        runs = [f"{m.prefix}-f{k}" for k in range(facts.folds_k)]
        cost = probe_cost(m, speed, facts, measured, decoded)
        return [Job(f"probe:{m.prefix}", "probe", m.id, m.prefix, m.arch, m.size, 0, None, m.seed, list(m.flags),
                    runs, cost.total, fixed_s=cost.fixed)]
    flags = member_flags(m, facts)
    jobs = []
    for k, name in enumerate(member_runs(m, facts)):
        cost = train_cost(m, speed, facts, measured, decoded)
        jobs.append(Job(f"train:{name}", "train", m.id, name, m.arch, m.size, m.epochs, k, m.seed, flags, [name],
                        cost.total, fixed_s=cost.fixed))
    cost = predict_cost(m, speed, facts, measured, tta, decoded)
    jobs.append(Job(f"predict:{m.id}", "predict", m.id, m.id, m.arch, m.size, m.epochs, None, m.seed, [],
                    [j.name for j in jobs], cost.total, fixed_s=cost.fixed))
    return jobs


def interim_stack(member_id, n_members, facts, measured):
    """The stack of the members finished so far, run once member `member_id` has finished (a
    submission at every step): stack.py with the cheap methods only (INTERIM_METHODS)."""
    cost = stack_cost(n_members, "interim", facts, measured)
    return Job(f"stack:{member_id}", "stack", None, "stack.py", flags=["--method", *INTERIM_METHODS],
               predicted_s=cost.total, fixed_s=cost.fixed, after=member_id)


def member_flags(m, facts):
    """train.py flags of a trained member (its size and epochs last, so they win)."""
    return [*m.flags, "--folds-k", str(facts.folds_k), "--size", str(m.size), "--epochs", str(m.epochs)]


def member_runs(m, facts):
    """Run names of a member: the grid's names (utils.grid.cluster.run_name), one per fold."""
    if m.kind == "probe":
        return [f"{m.prefix}-f{k}" for k in range(facts.folds_k)]
    return [run_name(m.arch, member_flags(m, facts), m.seed, k) for k in range(facts.folds_k)]


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
    total with the stacks and report fits (1 - MARGIN) x left_s, at most preset.max_trained
    trained ones and one probe per network (the first that fits: the preset's size, else its
    smaller fallback); then every trained member grown together to the costliest (size, epochs) of
    its options (sizes x preset.epochs, cost ~ size^2 x epochs) that still fits.
    Returns a Plan (members may be empty: the budget fits nothing)."""
    fits_s = left_s * (1 - MARGIN)
    total = lambda ms: sum(j.predicted_s for j in plan_jobs(ms, measured, facts, preset))  # noqa: E731
    chosen = []
    for m in candidates:
        if m.kind == "train" and sum(c.kind == "train" for c in chosen) >= preset.max_trained:
            continue
        if m.kind == "probe" and any(c.kind == "probe" and c.arch == m.arch for c in chosen):
            continue  # a smaller probe of the same network is the fallback of a larger one that did not fit
        fitting = next((v for v in shorter(m) if total(chosen + [v]) <= fits_s), None)
        if fitting is not None:
            chosen.append(fitting)
    for size, epochs in growth_options(chosen, measured, preset.epochs):
        grown = [m.scaled(size, epochs) if m.kind == "train" else m for m in chosen]
        if total(grown) <= fits_s:
            chosen = grown
            break
    return Plan(chosen, plan_jobs(chosen, measured, facts, preset), total(chosen), fits_s, list(candidates))


def shorter(m):
    """m, then (a trained member) at half its epochs and half again, down to MIN_EPOCHS: what a
    short budget can still train; the plan grows it back (longer, larger) when time is left."""
    out = [m]
    while m.kind == "train" and m.epochs // 2 >= MIN_EPOCHS:
        m = m.scaled(m.size, m.epochs // 2)
        out.append(m)
    return out


def growth_options(members, measured, epochs):
    """(size, epochs) every trained member of `members` may grow to, costliest first: sizes
    that all of them offer and the probe measured, at least their current size and epochs."""
    trained = [m for m in members if m.kind == "train"]
    if not trained:
        return []
    sizes = set.intersection(*(set(m.sizes or (m.size,)) for m in trained))
    sizes = [s for s in sizes if s >= max(m.size for m in trained)
             and all(speed_key(m.arch, s, m.bs) in measured.speeds for m in trained)]
    options = [(s, e) for s in sizes for e in sorted({*epochs, *(m.epochs for m in trained)})
               if e >= max(m.epochs for m in trained)]
    return sorted(options, key=lambda o: (o[0] ** 2 * o[1], o[0]), reverse=True)


def plan_jobs(members, measured, facts, preset):
    """Every member's jobs in order, each member but the last followed by the stack of the
    members so far (interim_stack: a submission at every step), then the final stack and the
    report. The first fold of every trained member (RUNG_FOLD) comes first, after the probes:
    that rung measures each on this data, and utils.grid.budget_replan.promote then orders
    the remaining folds by its validation F2 (successive halving). Each image cache is costed
    once, in the first job that decodes it."""
    jobs, decoded, rung = [], set(), []
    blocks = []
    for i, m in enumerate(members):
        own = member_jobs(m, measured, facts, preset.tta, decoded)
        if m.kind == "train":
            rung.append(own.pop(0))
        blocks.append(own + ([interim_stack(m.id, i + 1, facts, measured)] if i < len(members) - 1 else []))
    probes = [b for b, m in zip(blocks, members) if m.kind != "train"]
    trained = [b for b, m in zip(blocks, members) if m.kind == "train"]
    jobs = [j for b in probes for j in b] + rung + [j for b in trained for j in b]
    return jobs + finish_jobs(len(members), facts, measured, preset)


def finish_jobs(n_members, facts, measured, preset):
    """The final stack (the preset's methods) and the report, for n_members members."""
    stack, report = stack_cost(n_members, "final", facts, measured), report_cost(n_members, measured)
    return [Job("stack", "stack", None, "stack.py", predicted_s=stack.total, fixed_s=stack.fixed),
            Job("report", "report", None, "report", predicted_s=report.total, fixed_s=report.fixed)]


def minimum_seconds(candidates, measured, facts, preset, spent_s=0.0):
    """The smallest budget whose plan holds one member: spent_s (what has run already) plus the
    cheapest candidate, the stack and the report, over (1 - MARGIN); and that member."""
    if not candidates:
        raise DataError("no model to plan: no architecture is available (see --arch)")
    costs = [(sum(j.predicted_s for j in plan_jobs([m], measured, facts, preset)), i) for i, m in enumerate(candidates)]
    need, i = min(costs)
    return spent_s + need / (1 - MARGIN), candidates[i]
