"""A budgeted plan while it runs (tools/submit.py --budget): re-planned before every job.

`corrections` compares the finished jobs of each kind with their predictions (the work
only, never the one-time start-ups and cache decoding); `replan` drops the members that
would no longer finish in time at those speeds; `keep_one_to_measure` runs one trained fold
before every trained member is given up on a prediction no training job has checked;
`extend` grows the plan into time it runs ahead by (members back, candidates left out,
larger models, more seeds), and `cheapest_addition` says what did not fit when nothing more
does. Pure functions of the jobs (utils.grid.budget.Job), changed in place.
"""
from dataclasses import replace

from utils.grid.budget import (KINDS, MARGIN, MEASURE_WHY, RUNG_FOLD, finish_jobs, format_duration, member_jobs,
                               shorter, speed_key)
from utils.grid.budget_costs import report_cost, stack_cost


def corrections(jobs):
    """{kind: factor} for the work of each kind of job (its predicted seconds less the one-time
    part, fixed_s): the finished jobs' actual work over their predicted work. A kind with no
    finished job keeps 1.0: its rate was measured on its own and is never scaled by another
    kind's (one slow probe does not make training look slow)."""
    out = {}
    for kind in KINDS:
        done = [j for j in jobs if j.kind == kind and j.state == "finished" and j.actual_s is not None]
        predicted = sum(max(0.0, j.predicted_s - j.fixed_s) for j in done)
        if done and predicted > 0:
            actual = sum(max(0.0, j.actual_s - j.fixed_s) for j in done)
            out[kind] = max(0.05, actual / predicted)
    return {kind: out.get(kind, 1.0) for kind in KINDS}


def expected(job, factor):
    """Predicted seconds of an unfinished job: its one-time part, and its work scaled by the
    measured factor of its kind."""
    return job.fixed_s + max(0.0, job.predicted_s - job.fixed_s) * factor[job.kind]


def owner(job):
    """The member a job belongs to: its own, or for a stack run after a member, that member."""
    return job.member if job.member is not None else job.after


def replan(jobs, left_s):
    """Drop (state 'dropped', with why) the unfinished members that would no longer end in
    time: walking the members in plan order, a member stays when its unfinished jobs (its
    stack after it included), those of the members kept before it, the final stack and the
    report fit (1 - MARGIN) x left_s at the speeds measured so far. Returns the ids of the
    members dropped now. Jobs are changed in place."""
    factor = corrections(jobs)
    open_jobs = [j for j in jobs if j.state in ("planned", "running")]
    finish = sum(expected(j, factor) for j in open_jobs if owner(j) is None)
    budget = left_s * (1 - MARGIN) - finish
    dropped, used = [], 0.0
    for member in dict.fromkeys(j.member for j in open_jobs if j.member is not None):
        cost = sum(expected(j, factor) for j in open_jobs if owner(j) == member)
        if used + cost <= budget:
            used += cost
            continue
        dropped.append(member)
        for j in open_jobs:
            if owner(j) == member:
                j.state, j.why = "dropped", (f"would end {format_duration(used + cost + finish)} from now, "
                                             f"{format_duration(left_s)} left")
    return dropped


def keep_one_to_measure(jobs, left_s):
    """Before every trained member is given up on a prediction no training job has checked,
    run one fold to measure: when no train job has finished or is open, and a dropped trained
    member's first fold (with the final stack and report) fits (1 - MARGIN) x left_s, that fold of the member
    whose jobs cost least comes back alone (why: MEASURE_WHY). Once it has run, with training's
    speed on this data measured, extend brings the rest of the member back if it fits.
    Returns the member's id or None."""
    if not measuring_open(jobs):
        return None
    factor = corrections(jobs)
    finish = sum(expected(j, factor) for j in jobs if j.state == "planned" and owner(j) is None)
    options = []
    for member in dict.fromkeys(j.member for j in jobs if j.kind == "train" and j.state == "dropped"):
        own = [j for j in jobs if owner(j) == member]
        if any(j.state in ("failed", "finished") for j in own if j.kind == "train"):
            continue
        first = next(j for j in own if j.kind == "train")
        if expected(first, factor) + finish <= left_s * (1 - MARGIN):
            options.append((sum(expected(j, factor) for j in own), member, first))
    if not options:
        return None
    _, member, first = min(options, key=lambda o: o[0])
    first.state, first.why = "planned", MEASURE_WHY
    return member


def measuring_open(jobs):
    """Whether training is still unmeasured on this data: no train job finished, none open."""
    return not any(j.kind == "train" and j.state in ("finished", "planned", "running") for j in jobs)


def measure_first(jobs, new):
    """A new member's jobs set to measure first: its first train job planned (why MEASURE_WHY),
    the rest dropped until that fold has run (extend's 'back' then brings them when they fit)."""
    first = next(j for j in new if j.kind == "train")
    for j in new:
        j.state, j.why = ("planned", MEASURE_WHY) if j is first else ("dropped", f"waits for {first.name}'s speed")
    return new


def rung_ready(jobs):
    """Whether the rung is complete: no first fold (RUNG_FOLD) of a trained member is still to
    run, and at least one has finished."""
    first = [j for j in jobs if j.kind == "train" and j.fold == RUNG_FOLD]
    return bool(first) and not any(j.state in ("planned", "running") for j in first) and any(
        j.state == "finished" for j in first)


def promote(jobs, scores):
    """Successive halving's promotion: the open jobs of the trained members scored at the rung
    (scores: {member id: validation F2 on fold RUNG_FOLD}) are put in the order of their score,
    best first, where the first of them stood; replan then drops from the end when the time
    runs short, so the members that did best on this data go on to their remaining folds (and
    to growth) first. Returns the member ids best first. Jobs are changed in place.
    Source: Li et al., "A System for Massively Parallel Hyperparameter Tuning" (ASHA), 2020."""
    order = sorted(scores, key=lambda m: (-scores[m], list(scores).index(m)))
    moving = [j for j in jobs if j.state == "planned" and owner(j) in scores]
    if not moving:
        return order
    ids = {id(j) for j in moving}
    at = sum(1 for j in jobs[:next(i for i, j in enumerate(jobs) if id(j) in ids)] if id(j) not in ids)
    rest = [j for j in jobs if id(j) not in ids]
    jobs[:] = rest[:at] + [j for m in order for j in moving if owner(j) == m] + rest[at:]
    return order


def extend(jobs, candidates, measured, facts, preset, left_s):
    """Grow the plan while it runs ahead of its prediction, so that the budget is used: at the
    speeds measured so far, each change's jobs (and what it adds to the stack and the report)
    must fit beside the open jobs in (1 - MARGIN) x left_s. In this order:

    1. 'back': a dropped member none of whose jobs failed comes back (its finished runs count);
    2. 'new': a candidate never in the plan (at most preset.max_trained trained members), a
       trained one at the size and epochs of the plan's trained members first, then its own;
    3. 'larger', when 1 and 2 changed nothing: one trained member's architecture and seed at a
       costlier size or more epochs of its ladder (a new model for the stack), the costliest
       that fits (as make_plan grows members);
    4. 'measure', when nothing changed and no trained model is in the plan: the trained
       candidate whose first fold costs least, that fold alone (measure_first), when it fits:
       the speed probe may be wrong about this data, a finished fold is not.

    New jobs go before the final stack; the final stack's and the report's predictions follow
    the members. Returns [(how, member id, Member or None for 'back')]; jobs is changed in place."""
    factor = corrections(jobs)
    free = left_s * (1 - MARGIN) - sum(expected(j, factor) for j in jobs if j.state in ("planned", "running"))
    changes = []

    def add(how, member, new, costed=None):
        nonlocal free
        c = addition_cost(jobs, new if costed is None else costed, facts, measured, preset, factor)
        if c > free:
            return False
        free -= c
        if member is None:
            for j in new:
                j.state, j.why = "planned", ""
        else:
            at = next(i for i, j in enumerate(jobs) if j.member is None and j.after is None)
            jobs[at:at] = new
        changes.append((how, new[0].member, member))
        return True

    for m_id in dict.fromkeys(j.member for j in jobs if j.member is not None):
        own = [j for j in jobs if j.member == m_id]
        if any(j.state == "dropped" for j in own) and not any(j.state in ("planned", "running", "failed") for j in own):
            add("back", None, [j for j in jobs if owner(j) == m_id and j.state == "dropped"])
    for m in candidates:
        trained = {(j.arch, j.seed) for j in jobs if j.kind == "train" and j.state != "dropped"}
        if member_key(m) in {job_key(j) for j in jobs if j.member is not None} or (
                m.kind == "train" and len(trained) >= preset.max_trained) or has_probe(jobs, m):
            continue
        for member in _shapes(m, jobs, measured):
            if add("new", member, member_jobs(member, measured, facts, preset.tta, decoded_by(jobs))):
                break
    if not changes:
        for member in _larger(jobs, candidates, measured, preset.epochs):
            if add("larger", member, member_jobs(member, measured, facts, preset.tta, decoded_by(jobs))):
                break
    if not changes and measuring_open(jobs):   # 4. 'measure': no trained model in the plan yet
        for m in sorted((v for c in candidates if c.kind == "train" and member_key(c) not in
                         {job_key(j) for j in jobs if j.member is not None} for v in shorter(c)),
                        key=lambda c: sum(j.predicted_s for j in member_jobs(c, measured, facts, preset.tta))):
            new = measure_first(jobs, member_jobs(m, measured, facts, preset.tta, decoded_by(jobs)))
            if add("measure", m, new, [j for j in new if j.state == "planned"]):
                break
    refresh_finish(jobs, facts, measured, preset)
    return changes


def has_probe(jobs, m):
    """Whether m is a probe of a network the plan already probes (at another size: the fallback
    of a larger probe adds little beside it)."""
    return m.kind == "probe" and any(j.kind == "probe" and j.arch == m.arch and j.state != "dropped" for j in jobs)


def addition_cost(jobs, new, facts, measured, preset, factor):
    """Seconds that jobs `new` (one member's) add to the plan at the speeds measured: their own,
    and what one more member adds to the final stack and the report."""
    n = len({j.member for j in jobs if j.member is not None and j.state != "dropped"})
    more = stack_cost(n + 1, "final", facts, measured).total - stack_cost(n, "final", facts, measured).total
    report = report_cost(n + 1, measured).total - report_cost(n, measured).total
    return sum(expected(j, factor) for j in new) + more * factor["stack"] + report * factor["report"]


def decoded_by(jobs):
    """The image caches the plan's kept jobs decode ('train@64', ...): a new job does not pay them again."""
    out = set()
    for j in jobs:
        if j.state != "dropped" and j.kind in ("train", "probe", "predict"):
            out.add(f"train@{j.size}")
            if j.kind != "train":
                out.add(f"test@{j.size}")
    return out


def refresh_finish(jobs, facts, measured, preset):
    """The planned final stack's and report's predictions for the members kept now."""
    n = len({j.member for j in jobs if j.member is not None and j.state != "dropped"})
    stack, report = finish_jobs(n, facts, measured, preset)
    for j in jobs:
        if j.state == "planned" and j.after is None and j.kind in ("stack", "report"):
            new = stack if j.kind == "stack" else report
            j.predicted_s, j.fixed_s = new.predicted_s, new.fixed_s


def cheapest_addition(jobs, candidates, measured, facts, preset):
    """What extend would add next if time allowed: (seconds at the speeds measured, a few words)
    for the cheapest candidate left out or larger model of a member; None when there is none."""
    factor = corrections(jobs)
    have = {job_key(j) for j in jobs if j.member is not None and j.state != "dropped"}
    options = [m for c in candidates if member_key(c) not in have and not has_probe(jobs, c)
               for m in _shapes(c, jobs, measured)]
    options += _larger(jobs, candidates, measured, preset.epochs)
    costs = [(addition_cost(jobs, member_jobs(m, measured, facts, preset.tta, decoded_by(jobs)), facts, measured,
                            preset, factor), describe(m)) for m in options]
    return min(costs) if costs else None


def describe(m):
    """A member in a few words: 'a linear probe of ARCH at S px' or 'ARCH at S px, E epochs, seed N'."""
    if m.kind == "probe":
        return f"a linear probe of {m.arch} at {m.size} px"
    return f"{m.arch} at {m.size} px, {m.epochs} epochs, seed {m.seed}"


def _shapes(m, jobs, measured):
    """Candidate m as it may join: a probe as it is; a trained one at the size and epochs of the
    plan's first trained member, then at its own, then shorter (sizes the probe measured only)."""
    if m.kind != "train":
        return [m]
    trained = [j for j in jobs if j.kind == "train" and j.state != "dropped"]
    shapes = ([(trained[0].size, trained[0].epochs)] if trained else []) + [(v.size, v.epochs) for v in shorter(m)]
    return [m.scaled(s, e) for s, e in dict.fromkeys(shapes) if speed_key(m.arch, s, m.bs) in measured.speeds]


def _larger(jobs, candidates, measured, epochs):
    """Growth of the plan's trained members, in plan order: first each one's architecture and
    seed at a costlier (size, epochs) of its ladder than the costliest it has (a larger size or
    more epochs; cost ~ size^2 x epochs), the costliest first; then another seed of each at its
    costliest shape in the plan (a new model for the stack, bagged by stack.py)."""
    ladders = {(m.arch, m.seed): m for m in candidates if m.kind == "train"}
    kept = [j for j in jobs if j.kind == "train" and j.state != "dropped"]
    ids = {j.member for j in jobs if j.member is not None}
    out, seeds = [], []
    for arch, seed in dict.fromkeys((j.arch, j.seed) for j in kept):
        m = ladders.get((arch, seed)) or next((c for c in candidates if c.kind == "train" and c.arch == arch), None)
        if m is None:
            continue
        m = replace(m, seed=seed)
        have = {(j.size, j.epochs) for j in kept if (j.arch, j.seed) == (arch, seed)}
        top = max(s * s * e for s, e in have)
        options = [(s, e) for s in (m.sizes or (m.size,)) for e in epochs
                   if s * s * e > top and speed_key(arch, s, m.bs) in measured.speeds]
        out += [_unique(m.scaled(s, e), ids) for s, e in sorted(options, key=lambda o: (o[0] ** 2 * o[1], o[0]),
                                                                reverse=True)]
        s, e = max(have, key=lambda o: (o[0] ** 2 * o[1], o[0]))
        new_seed = max(j.seed for j in kept if j.arch == arch) + 1
        seeds.append(_unique(replace(m, seed=new_seed).scaled(s, e), ids))
    return out + [m for m in seeds if ("train", m.arch, m.seed) not in {job_key(j) for j in jobs}]


def _unique(m, ids):
    """m with an id no member of the plan has (the epochs added when its size is taken)."""
    return m if m.id not in ids else replace(m, id=f"{m.id}-e{m.epochs}")


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
