"""Train a grid of runs on a Slurm cluster (or here), then predict every run and stack them.

    python tools/submit.py --data data/planet --out runs --arch resnet50 densenet201 -- --epochs 20
    python tools/submit.py --cluster slurm --partition gpu --timeout-min 720 --grid grid.yaml --data data/planet
    python tools/submit.py --cluster local --data data/demo --arch tiny_cnn -- --no-pretrained --epochs 2
    python tools/submit.py --cluster local --data data/planet --budget 2h --preset balanced --exactly-one clear,haze

The grid is architectures x seeds x folds (--arch/--seeds/--folds, or a YAML --grid;
the command line wins). Flags after `--` go to every train.py run. A grid file:

    archs:                      # architecture: its own train.py flags (mapping or list)
      resnet50: {bs: 16, lr: 3e-4}
      densenet201: ["--bs", "8"]
    folds: [0, 1, 2, 3, 4]
    seeds: [0]
    flags: {epochs: 20}         # train.py flags for every run

On Slurm the training runs are one job array; each run's predict.py job starts when that
run has finished (a second array, dependency aftercorr), and a final stack.py job when
every prediction is done (afterok). A job that is preempted or reaches its time limit
lets train.py write its checkpoint and is requeued; the requeued job continues with
--resume. Run names are fixed by the grid cell (<arch>-<flags hash>-s<seed>-f<fold>),
so submitting the same grid again skips finished runs (result.json) and resumes the
others; a run of OUT trained on another dataset (config.json's fingerprint of train.csv and
folds.csv) or a diverged one is refused before anything is submitted. --cluster local runs
the same jobs on this machine through submitit's LocalExecutor (--array-parallelism runs at
a time), --cluster debug in this process. Every cell is checked the way train.py checks its
flags before anything is submitted.
stack.py needs every fold of a model: a grid of some folds only (--folds 0 1 of K=5)
trains and predicts, and says that it makes no stack job and which folds to add. On
this machine each job is reported as it is submitted, finishes or fails. Job logs:
OUT/.submitit/.

With --budget DURATION (45s, 4m, 90m, 2h, 1d) the grid is planned for the time: a short
probe measures each candidate's speed on the device, then linear probes and trained models
(architectures with weights here, sizes, epochs, seeds: --preset fast|balanced|best, whose
choices cite EXPERIMENTS.md) are taken while their predicted time fits the budget less a
safety margin; the plan is printed (--dry-run stops there), then run one job at a time,
re-planned after each job with the measured speeds (members that would overrun are
dropped), predicted with the preset's TTA, stacked (with the decision rules given) and
reported: OUT/plan.json (each job's predicted and actual seconds and state), the
submission, OUT/report.html. Killed, the same command continues within what is left of
the budget. A budget too small for the cheapest model exits 2 naming the minimum.
"""
import argparse
import contextlib
import io
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

T0 = time.perf_counter()  # a budget counts from the start of the command

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(REPO))

from utils.common.cli import DEFAULT_RUNS, run_script  # noqa: E402
from utils.grid.cluster import (PredictJob, StackJob, TrainJob, flag_value, grid_states, is_debug,  # noqa: E402
                                grid_problems, job_error, make_cells, read_grid, train_argv)
from utils.data.folds import folds_k_for  # noqa: E402
from utils.data.output_paths import check_output_file  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.common.termination import Terminated  # noqa: E402
from utils.metrics.constraints import add_constraint_arguments, check_constraint_args  # noqa: E402
from utils.grid.budget_presets import PRESETS  # noqa: E402

log = logging.getLogger("submit")
CLUSTERS = ("slurm", "local", "debug")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="%(prog)s [options] [-- train.py flags]")
    g = p.add_argument_group("grid")
    g.add_argument("--data", required=True, metavar="DIR", help="dataset directory in the Planet layout (required)")
    g.add_argument("--out", default=DEFAULT_RUNS, metavar="DIR", help="folder of runs (default: runs/ in the repository)")
    g.add_argument("--arch", nargs="+", action="extend", default=[], metavar="NAME",
                   help="architectures (repeatable; added to the grid file's) (default: the grid file's)")
    g.add_argument("--folds", nargs="+", type=int, default=None, metavar="K",
                   help="validation folds to train (default: the grid file's, else 0..folds-k-1)")
    g.add_argument("--folds-k", type=int, default=None, metavar="K",
                   help="number of folds, passed to train.py (default: the existing folds file's K, else 5)")
    g.add_argument("--seeds", nargs="+", type=int, default=None, metavar="S",
                   help="seeds (default: the grid file's, else 0)")
    g.add_argument("--grid", default=None, metavar="FILE", help="YAML grid: archs (with their flags), folds, seeds, "
                   "flags (default: none)")
    g = p.add_argument_group("prediction and stacking")
    # EXPERIMENTS.md#d-which-augmentations-are-unnecessary: 10 crops on a model trained with crops
    g.add_argument("--tta", default="10crop", metavar="NAME",
                   help="predict.py TTA of every run (default: 10crop, the test of train.py's default --aug; "
                        "evidence: EXPERIMENTS.md sections d, s)")
    g.add_argument("--submission", default=None, metavar="FILE",
                   help="stack.py submission; stack_report.* are written beside it (default: OUT/stack/submission.csv)")
    g.add_argument("--stack-method", nargs="+", default=None, metavar="NAME",
                   help="stack.py --method values (default: stack.py's, every method; with --budget the preset's)")
    add_constraint_arguments(p.add_argument_group("decision rules", "passed to stack.py (README \"A tour\")"))
    g = p.add_argument_group("budget", "a whole competition within a time budget (README \"A whole competition "
                             "in one command\")")
    g.add_argument("--budget", default=None, metavar="DURATION",
                   help="plan the grid to end within this wall time, e.g. 45s, 4m, 90m, 2h, 1d; +DURATION (e.g. "
                        "+30m) adds time to the plan already in --out: finished runs are kept, the plan grows into "
                        "the time and a new submission is made (default: off)")
    g.add_argument("--preset", default="balanced", choices=sorted(PRESETS),
                   help="with --budget: fast (fewer, smaller models), balanced, best (more folds, seeds and "
                        "members) (default: balanced)")
    g.add_argument("--sizes", nargs="+", type=int, default=None, metavar="PX",
                   help="with --budget: image sizes to plan (default: the preset's)")
    g.add_argument("--dry-run", action="store_true", help="with --budget: print the plan and stop (default: off)")
    g = p.add_argument_group("cluster")
    g.add_argument("--cluster", default="slurm", choices=CLUSTERS,
                   help="slurm: submit and return; local: run the jobs on this machine; debug: in this process "
                   "(default: slurm)")
    g.add_argument("--partition", default=None, help="Slurm partition (default: the cluster's default)")
    g.add_argument("--gpus-per-task", type=int, default=1, help="GPUs per job (default: 1)")
    g.add_argument("--cpus-per-task", type=int, default=8, help="CPU cores per job (default: 8)")
    g.add_argument("--mem-gb", type=float, default=None, help="memory per job in GB (default: the cluster's default)")
    g.add_argument("--timeout-min", type=int, default=24 * 60,
                   help="time limit of a job in minutes; a run that needs longer is requeued and resumes "
                   "(default: 1440)")
    g.add_argument("--array-parallelism", type=int, default=None,
                   help="training runs at a time (default: 16 on Slurm, 1 with --cluster local)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="more #SBATCH options, e.g. account=myproj or constraint=a100 (repeatable) (default: none)")
    g.add_argument("--logs", default=None, metavar="DIR", help="job logs (default: OUT/.submitit)")
    return p


def parse_args(argv=None):
    """Own flags before `--`, train.py flags after it (args.train_flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    tail = []
    if "--" in argv:
        i = argv.index("--")
        argv, tail = argv[:i], argv[i + 1:]
    parser = get_args_parser()
    # '--budget -5m': argparse takes a value starting with '-' for a flag; joined, it is refused below
    for i in reversed([i for i, a in enumerate(argv[:-1]) if a == "--budget" and re.match(r"-[\d.]", argv[i + 1])]):
        argv[i:i + 2] = [f"--budget={argv[i + 1]}"]
    args = parser.parse_args(argv)
    if args.budget and args.budget.strip().startswith("-"):
        raise DataError(f"--budget {args.budget.strip()}: the budget must be positive; to add time to the plan in "
                        f"--out pass +DURATION (e.g. --budget +{args.budget.strip()[1:]})")
    check_constraint_args(parser, args)
    args.train_flags = tail
    args.tta_given = any(a == "--tta" or a.startswith("--tta=") for a in argv)
    return args


# ----------------------------------------------------------------------------- the grid

def build_cells(args):
    """The grid's cells from --grid and the command line (DataError when it is empty)."""
    grid = read_grid(args.grid) if args.grid else {"archs": {}, "folds": None, "seeds": None, "flags": []}
    archs = dict(grid["archs"])
    for a in args.arch:
        archs.setdefault(a, [])
    if not archs:
        raise DataError("no architecture: pass --arch NAME or a --grid file with archs")
    k = folds_k_for(flag_value(grid["flags"] + args.train_flags, "--folds-file") or Path(args.data) / "folds.csv",
                    args.folds_k or 5, args.folds_k is not None)
    folds = args.folds if args.folds is not None else grid["folds"] if grid["folds"] is not None else list(range(k))
    seeds = args.seeds if args.seeds is not None else grid["seeds"] or [0]
    common = grid["flags"] + (["--folds-k", str(args.folds_k)] if args.folds_k else []) + args.train_flags
    return make_cells(archs, folds, seeds, common)


def cell_folds_k(a, data):
    """K of a cell's parsed train.py flags `a`, as train.py resolves it: the folds file's own
    K unless --folds-k was given (DataError when a given one disagrees with the file)."""
    path = Path(a.folds_file) if a.folds_file else Path(data) / "folds.csv"
    given = "folds_k" in a._given
    k_file = folds_k_for(path, None, False)
    if given and k_file is not None and k_file != a.folds_k:
        raise DataError(f"--folds-k {a.folds_k}: {path} has K={k_file} folds; leave --folds-k out "
                        f"(the file's K is used) or pass --folds-k {k_file}")
    return folds_k_for(path, a.folds_k, given)


def check_cells(cells, data, out):
    """Every cell through train.py's own checks (utils/train/parse.py: flags, stage plan, and
    check_flags' loss, augmentation, mix, EMA, head, idle flags; the architecture, the fold,
    the dataset and its folds file) before anything is submitted; one DataError listing every
    problem once, with the cells it stops (grid_problems)."""
    from utils.data.dataset import load_dataset, select_label_group
    from utils.data.folds import plan_folds
    from utils.models.factory import resolve_arch
    from utils.train.parse import check_flags, flags_stages, parse_args

    problems, specs = {}, {}  # problem -> the cells it stops (none: the dataset's, said once)
    for cell in cells:
        where = f"{cell.arch} fold {cell.fold} seed {cell.seed}"
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                a = parse_args(train_argv(data, out, cell))
            resolve_arch(a.arch)
            plan = flags_stages(a)
            k = cell_folds_k(a, data)
            if not 0 <= a.fold < k:
                raise DataError(f"--fold {a.fold}: must be in 0..{k - 1}")
            key = (a.images, a.test_images)
            if key not in specs:
                specs[key] = None
                try:  # train.py's own image and folds-file checks: a damaged image or fold stops the grid now
                    spec = load_dataset(Path(data), a.images, a.test_images, need_test=True, warn_test=True)
                    if (folds_file := Path(a.folds_file or Path(data) / "folds.csv")).is_file():
                        plan_folds(spec, k, a.folds_seed, folds_file)
                    specs[key] = spec
                except DataError as e:  # said once, in full (it names the files and rows), not per cell
                    problems.setdefault(str(e), [])
            if specs[key] is None:
                continue
            spec = specs[key]
            check_flags(a, spec, plan, select_label_group(spec.labels, spec.y, a.label_group))
        except SystemExit:  # argparse has said what is wrong on stderr
            msg = err.getvalue().strip().splitlines()
            why = msg[-1].split(": error: ", 1)[-1] if msg else "see above"  # argparse's prog here is submit.py
            problems.setdefault(f"train.py refuses its flags: {why}", []).append(where)
        except (DataError, ValueError) as e:
            problems.setdefault(str(e).splitlines()[0], []).append(where)
    if problems:
        raise DataError("the grid cannot run; nothing was submitted:\n  " + "\n  ".join(grid_problems(problems,
                                                                                                     len(cells))))


def check_cluster(args):
    """Slurm reachable, --slurm-extra and --stack-method well formed (DataError otherwise)."""
    bad = [kv for kv in args.slurm_extra if "=" not in kv or not kv.split("=", 1)[0].strip()]
    if bad:
        raise DataError(f"--slurm-extra {' '.join(bad)}: expected KEY=VALUE, e.g. --slurm-extra account=myproj")
    slurm = args.cluster == "slurm" and not args.dry_run  # a dry run only plans
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None] if slurm else []
    if missing:
        raise DataError(f"Slurm is not reachable from here (no {' or '.join(missing)} on PATH): run on the "
                        f"cluster's login node, or run the grid on this machine with --cluster local")
    if args.stack_method:
        from utils.stack.methods import parse_method
        for spec in args.stack_method:
            try:
                parse_method(spec)
            except ValueError as e:
                raise DataError(f"--stack-method {spec}: {e}") from e


# ----------------------------------------------------------------------------- submission

def make_executor(args):
    import submitit

    folder = Path(args.logs) if args.logs else Path(args.out) / ".submitit"
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=args.cluster)
    params = {"timeout_min": args.timeout_min, "name": "multitag"}
    if args.cluster == "slurm":
        extra = dict(kv.split("=", 1) for kv in args.slurm_extra)
        params.update(cpus_per_task=args.cpus_per_task, slurm_array_parallelism=args.array_parallelism or 16,
                      slurm_additional_parameters=extra)
        if args.gpus_per_task:
            params["slurm_gpus_per_task"] = args.gpus_per_task
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.mem_gb:
            params["mem_gb"] = args.mem_gb
    ex.update_parameters(**params)
    return ex


def _array_id(jobs):
    return str(jobs[0].job_id).split("_")[0]


def submit_slurm(ex, args, cells, todo, predict, stack):
    """One training array; a predict array whose task i waits for training task i
    (aftercorr); predictions of runs trained earlier; the stack job after all of them."""
    extra = dict(kv.split("=", 1) for kv in args.slurm_extra)
    train_jobs = ex.map_array(TrainJob(args.data, args.out), todo) if todo else []
    pred_jobs = []
    if train_jobs:
        ex.update_parameters(slurm_additional_parameters={**extra, "dependency": f"aftercorr:{_array_id(train_jobs)}"})
        pred_jobs += ex.map_array(predict, [c.name for c in todo])
    earlier = [c.name for c in cells if c not in todo and not predicted(args, c)]
    if earlier:
        ex.update_parameters(slurm_additional_parameters=extra)
        pred_jobs += ex.map_array(predict, earlier)
    waits = sorted({_array_id([j]) for j in pred_jobs})
    ex.update_parameters(slurm_additional_parameters={**extra, **({"dependency": "afterok:" + ":".join(waits)}
                                                                  if waits else {})})
    stack_job = ex.submit(stack) if stack else None
    print(f"submitted: {len(todo)} training runs (array {_array_id(train_jobs) if train_jobs else '-'}), "
          f"{len(pred_jobs)} predictions, " +
          (f"stack job {stack_job.job_id} -> {args.submission}" if stack_job else "no stack job"))
    print(f"follow with: squeue --me; logs in {Path(args.logs or Path(args.out) / '.submitit')}")
    return train_jobs, pred_jobs, stack_job


def submit_here(ex, args, cells, todo, predict, stack):
    """The same jobs on this machine, each stage after the previous one (the local
    executor has no dependencies); --array-parallelism training runs at a time. Stopped
    (Ctrl-C, SIGTERM), it stops the jobs it started first (utils/grid/stopping.py)."""
    started = []
    try:
        return _run_here(ex, args, cells, todo, predict, stack, started)
    except (KeyboardInterrupt, Terminated):
        from utils.grid.stopping import stop_jobs
        stop_jobs(started, args.cluster, lambda text: print(text, flush=True))
        raise


def _run_here(ex, args, cells, todo, predict, stack, started):
    width = args.array_parallelism or 1
    train_jobs = []
    for i in range(0, len(todo), width):
        names = [c.name for c in todo[i:i + width]]
        chunk = ex.map_array(TrainJob(args.data, args.out), todo[i:i + width])
        started += zip(chunk, (f"training of {n}" for n in names))
        wait(chunk, "training", names)
        train_jobs += chunk
    names = [c.name for c in cells if not predicted(args, c)]
    pred_jobs = ex.map_array(predict, names) if names else []
    started += zip(pred_jobs, (f"prediction of {n}" for n in names))
    wait(pred_jobs, "prediction", names)
    stack_job = ex.submit(stack) if stack else None
    if stack_job:
        started.append((stack_job, "stack.py"))
        wait([stack_job], "stack.py", [f"{len(cells)} run(s)"])
    print(f"done: {len(todo)} run(s) trained, {len(pred_jobs)} predicted, " +
          (f"submission {args.submission}, stack report beside it" if stack_job else
           "no stack job (see above why)"))
    return train_jobs, pred_jobs, stack_job


def wait(jobs, what, names):
    """Wait for local jobs, saying when each is submitted and when it finishes; a failed one
    stops everything with its error and where its output is."""
    if jobs:
        print(f"{what}: submitted {len(jobs)} job(s): {', '.join(names)}", flush=True)
    for job, name in zip(jobs, names):
        err = job_error(job)
        if err is not None:
            last = [line for line in err.splitlines() if line.strip()][-1:]
            where = (f"log: {job.paths.stdout} and {job.paths.stderr}" if not is_debug(job) else
                     "its output is above: --cluster debug runs every job in this process")
            print(f"{what} of {name}: failed", flush=True)
            raise JobError(f"{what} of {name} failed ({' '.join(last)}); {where}")
        print(f"{what} of {name}: finished", flush=True)


class JobError(Exception):
    """A job of the grid failed (exit code 1)."""


def predicted(args, cell):
    run = Path(args.out) / cell.name
    return all((run / "preds" / f"{s}.{args.tta}.csv").is_file() for s in ("val", "test"))


def folds_of(cells, cell):
    """The folds the grid trains for cell's architecture and seed, sorted."""
    return sorted(c.fold for c in cells if (c.arch, c.seed) == (cell.arch, cell.seed))


def grid_folds_k(cells, data):
    """K of the grid's runs (the first cell's; every cell shares one folds file)."""
    from utils.train.parse import parse_args
    return cell_folds_k(parse_args(train_argv(data, ".", cells[0])), data)


def any_model_complete(cells, k):
    """Whether some architecture and seed of the grid has every fold 0..k-1, which stack.py
    needs (a grid of fold 0 only trains and predicts, with no stack job)."""
    return any(folds_of(cells, c) == list(range(k)) for c in cells)


def rule_flags(args):
    """stack.py's decision-rule flags as given to this command."""
    out = [f for spec in args.exactly_one for f in ("--exactly-one", spec)]
    out += [f for spec in args.at_most_one for f in ("--at-most-one", spec)]
    out += ["--min-tags", str(args.min_tags)] if args.min_tags else []
    return out + (["--max-tags", str(args.max_tags)] if args.max_tags is not None else [])


# ----------------------------------------------------------------------------- --budget

def budget_plan(args):
    """plan.json's plan: the one in OUT (the same command continues it) or a new one, measured
    and planned here (DataError naming the minimum budget when nothing fits). Printed."""
    from utils.grid.budget_presets import evidence_for
    from utils.grid.budget_setup import budget_setup, measure_and_plan
    from utils.grid.budget import format_duration
    from utils.grid.plan_file import (PLAN_FILE, add_time, check_same_command, continuing_line, new_plan, plan_table,
                                      read_plan)

    budget_s, preset, facts, command = budget_setup(args)
    command["rules"] = rule_flags(args)
    plan_path = Path(args.out) / PLAN_FILE
    plan = read_plan(plan_path)
    if plan is None and args.budget_added:
        raise DataError(f"--budget {args.budget}: adds time to the plan in --out, and {plan_path} does not exist; "
                        f"pass --budget {args.budget.strip()[1:]} to plan anew (or the --out that holds the plan)")
    if plan is not None:
        if args.budget_added:
            command["budget"] = plan["command"].get("budget")
        check_same_command(plan, command, plan_path)
        if args.budget_added:
            add_time(plan, args.budget_added)
            print(f"added {format_duration(args.budget_added)} to {plan_path}: a budget of "
                  f"{format_duration(plan['budget_s'])} in all; finished runs are kept, the plan grows into the time")
        print(continuing_line(plan, plan_path))
    else:
        made, measured = measure_and_plan(args, budget_s, preset, facts,
                                          lambda cells: check_cells(cells, args.data, args.out), T0)
        plan = new_plan(command, budget_s, measured, facts, preset, made.members, made.jobs, time.perf_counter() - T0,
                        made.candidates)
        print(f"preset {preset.name}; TTA {preset.tta}; stack methods {' '.join(preset.stack_methods)}; evidence:")
        print("\n".join(f"  {k}: {v}" for k, v in evidence_for(preset, facts.folds_k, args.sizes).items()))
    print("\n".join(plan_table(plan["jobs"], plan["budget_s"], plan["used_s"])), flush=True)
    return plan, plan_path


def budget_main(args):
    """Plan (or continue) a budgeted competition, run it, print the plan and the leaderboard."""
    from utils.common.text import read_json
    from utils.grid.budget_run import Context, run_plan
    from utils.grid.plan_file import leaderboard_table, plan_table

    plan, plan_path = budget_plan(args)
    if args.dry_run:
        return plan
    used_before = plan["used_s"] if plan["attempts"] else 0.0  # a first attempt counts from T0
    plan["attempts"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "used_s": 0.0})
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    report = str(Path(args.out) / "report.html")
    ctx = Context(plan, plan_path, make_executor(args), args.data, args.out, args.submission, report,
                  ["--method", *plan["stack_methods"], *plan["command"]["rules"]], used_before, T0, args.cluster)
    members = run_plan(ctx)
    print("\n".join(plan_table(plan["jobs"], plan["budget_s"], plan["used_s"])))
    stack_report = Path(args.submission).parent / "stack_report.json"
    if not (stack_report.is_file() and Path(args.submission).is_file()):
        print("error: no submission was made (see the plan above)", file=sys.stderr)
        sys.exit(1)
    print("\n".join(leaderboard_table(read_json(stack_report))))
    print(f"wrote: {args.submission} ({len(members)} member(s)), {plan_path}" +
          (f", {report}" if Path(report).is_file() else ""))
    return plan


def main(args):
    args.data, args.out = str(Path(args.data).resolve()), str(Path(args.out).resolve())
    args.submission = str(Path(args.submission).resolve() if args.submission
                          else Path(args.out) / "stack" / "submission.csv")
    check_output_file(args.submission, "--submission", [args.data])  # the stack job writes it, much later
    check_cluster(args)
    if args.budget:
        return budget_main(args)
    idle = [f for f, v in (("--dry-run", args.dry_run), ("--sizes", args.sizes)) if v]
    if idle or args.preset != "balanced":
        raise DataError(f"{' and '.join(idle) or '--preset'}: only with --budget DURATION")
    cells = build_cells(args)
    check_cells(cells, args.data, args.out)
    states = grid_states(args.out, cells, args.data)  # refuses runs of another dataset, and diverged ones
    todo = [c for c in cells if states[c.name] != "finished"]
    for state in ("finished", "unfinished", "new"):
        n = sum(s == state for s in states.values())
        if n:
            print(f"{n} run(s) {state}" + {"finished": " (skipped)", "unfinished": " (resumed)", "new": ""}[state])
    # the jobs unpickle utils.grid.cluster: make the repository importable wherever they run
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    ex = make_executor(args)
    predict = PredictJob(args.out, args.tta)
    stack = StackJob(args.out, [c.name for c in cells], args.tta, args.submission,
                     (["--method", *args.stack_method] if args.stack_method else []) + rule_flags(args))
    k = grid_folds_k(cells, args.data)
    if not any_model_complete(cells, k):
        stack = None
        print(f"no stack job: stack.py needs every fold 0..{k - 1} of a model (architecture and seed), and this "
              "grid has " + ", ".join(sorted({f"{c.arch} seed {c.seed} folds {folds_of(cells, c)}" for c in cells})) +
              f"; to get a submission, train every fold: --folds {' '.join(map(str, range(k)))} (or leave --folds "
              "out)", flush=True)
    go = submit_slurm if args.cluster == "slurm" else submit_here
    try:
        return go(ex, args, cells, todo, predict, stack)
    except JobError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_script(main, parse_args, logging.WARNING)
