"""plan.json: a budgeted competition's plan, its jobs' states and the time spent (tools/submit.py --budget).

    {"version": 1, "command": {...the flags that define the plan...}, "budget_s": 240,
     "used_s": 131.5, "attempts": [{"started": "...", "used_s": 100.2}, ...],
     "measured": {...utils.grid.budget.Measured...}, "facts": {...}, "preset": "balanced",
     "tta": "hflip", "stack_methods": [...], "members": [...], "candidates": [...],
     "jobs": [{"id", "kind", "member", "name", "predicted_s", "actual_s", "state", "why", ...}]}

The budget is the total over attempts: a rerun of the same command reads used_s and
continues with what is left; a different command on the same folder is refused. Written
atomically at every change of a job's state and every few seconds while a job runs.
Also the terminal tables: the plan (`plan_table`) and the final leaderboard (`leaderboard_table`).
"""
import time
from dataclasses import asdict
from pathlib import Path

from utils.common.atomic import atomic_write_json
from utils.common.errors import DataError
from utils.common.text import read_json
from utils.grid.budget import Job, format_duration

PLAN_FILE = "plan.json"
VERSION = 1


def new_plan(command, budget_s, measured, facts, preset, members, jobs, used_s, candidates=()):
    """The plan.json dict of a first attempt (jobs as Job objects, as read_plan gives them);
    candidates: the members the plan may add while it runs ahead (utils.grid.budget.extend)."""
    return {"version": VERSION, "command": command, "budget_s": budget_s, "used_s": used_s, "attempts": [],
            "measured": measured.to_json(), "facts": asdict(facts), "preset": preset.name, "tta": preset.tta,
            "stack_methods": list(preset.stack_methods), "evidence": dict(preset.evidence),
            "members": [asdict(m) for m in members], "candidates": [asdict(m) for m in candidates],
            "jobs": list(jobs)}


def read_plan(path):
    """The plan.json at `path` with its jobs as Job objects (key 'jobs'), or None when there is none.
    Raises DataError when the file cannot be read as a plan."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        plan = read_json(path)
    except DataError as e:  # not valid JSON: say what to do as for any other unreadable plan
        raise DataError(f"{e}; move it away (or delete it) to plan again, or pass another --out") from e
    try:
        plan["jobs"] = [Job.from_json(j) for j in plan["jobs"]]
        plan["used_s"], plan["budget_s"] = float(plan["used_s"]), float(plan["budget_s"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a plan written by tools/submit.py --budget ({e}); move it away to plan "
                        "again") from e
    return plan


def write_plan(path, plan):
    """Write plan (jobs as Job objects or dicts) atomically."""
    out = dict(plan, jobs=[asdict(j) if isinstance(j, Job) else j for j in plan["jobs"]])
    atomic_write_json(path, out)


def add_time(plan, seconds):
    """`--budget +DURATION`: `seconds` more for the plan. The budget grows, the addition is
    recorded (plan['extensions']), and the final stack and report run again (a new submission
    with what the added time trains); finished runs stay as they are."""
    plan["budget_s"] += seconds
    plan.setdefault("extensions", []).append({"added_s": seconds, "at_used_s": round(plan["used_s"], 2),
                                              "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    plan.pop("unused", None)
    for j in plan["jobs"]:
        if j.member is None and j.after is None:
            j.state, j.actual_s, j.why = "planned", None, ""


def continuing_line(plan, path):
    """'continuing OUT/plan.json: earlier attempts used 1m07s of the 5m budget' (a rerun's first line)."""
    return (f"continuing {path}: earlier attempts used {format_duration(plan['used_s'])} of the "
            f"{format_duration(plan['budget_s'])} budget")


def check_same_command(plan, command, path):
    """DataError naming the flags that differ when plan.json was made by another command."""
    old = plan.get("command", {})
    diff = sorted(k for k in set(old) | set(command) if old.get(k) != command.get(k))
    if diff:
        said = "; ".join(f"{k}: {old.get(k)!r} then, {command.get(k)!r} now" for k in diff)
        raise DataError(f"{path} holds the plan of another command ({said}); rerun the same command to continue "
                        "it, or pass another --out")


# ----------------------------------------------------------------------------- tables

def _row(cells, widths, left):
    return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def table(header, rows, left=1):
    """Rows as aligned text columns (the first `left` left-aligned), header and a rule first."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return [_row(header, widths, left), "  ".join("-" * w for w in widths), *(_row(r, widths, left) for r in rows)]


def plan_table(jobs, budget_s, used_s):
    """The plan as text lines: each job with its predicted (and actual) seconds and state."""
    rows, total = [], 0.0
    for i, j in enumerate(jobs, 1):
        if j.state != "dropped":
            total += j.actual_s if j.actual_s is not None else j.predicted_s
        what = {"train": f"fold {j.fold}, seed {j.seed}, {j.epochs} epochs", "probe": f"{len(j.runs)} folds",
                "predict": f"{len(j.runs)} runs", "stack": f"after {j.after}" if j.after else "final"}.get(j.kind, "")
        rows.append([f"{i}", j.kind, j.arch or "-", what, f"{j.size or '-'}", format_duration(j.predicted_s),
                     "-" if j.actual_s is None else format_duration(j.actual_s),
                     format_duration(total) if j.state != "dropped" else "-", j.state])
    header = ["#", "job", "arch", "what", "px", "predicted", "actual", "cumulative", "state"]
    lines = table(header, rows, left=4)
    kept = [j for j in jobs if j.state != "dropped"]
    lines.append(f"{len(kept)} job(s) planned, {sum(j.state == 'finished' for j in kept)} finished, "
                 f"{len(jobs) - len(kept)} dropped; jobs' total {format_duration(total)}; "
                 f"{format_duration(used_s)} used of a budget of {format_duration(budget_s)}")
    return lines


def leaderboard_table(report):
    """stack_report.json's methods and members as text lines, best cross-fitted F2 first."""
    rows = []
    for name, r in report.get("methods", {}).items():
        if isinstance(r, dict) and r.get("f2_cross_fitted") is not None:
            rows.append([name, "method", f"{r['f2_cross_fitted']:.4f}", f"{r.get('std') or 0:.4f}"])
    for m in report.get("members", []):
        if m.get("f2_cross_fitted") is not None:
            rows.append([m.get("name", "?"), "model", f"{m['f2_cross_fitted']:.4f}", f"{m.get('std') or 0:.4f}"])
    rows.sort(key=lambda r: -float(r[2]))
    chosen = report.get("chosen")
    rows = [[f"{r[0]}{' (chosen)' if r[0] == chosen else ''}", *r[1:]] for r in rows]
    return table(["model or method", "kind", "F2 cross-fitted", "std"], rows, left=2)
