"""From tools/submit.py --budget's flags to a plan: the preset with the command line's
overrides, the dataset's numbers, the speed probe, and the refusal of a budget too small.

Nothing here writes a file: a budget that fits nothing is refused (DataError, exit 2) before
the first job, naming the minimum budget on this device.
"""
import time
from dataclasses import replace
from pathlib import Path

import torch

from utils.common.errors import DataError
from utils.data.dataset import load_dataset, select_label_group
from utils.data.folds import folds_k_for
from utils.metrics.constraints import parse_constraints
from utils.grid.budget import (MARGIN, STARTS_PER_JOB, Facts, format_duration, make_plan, member_flags, minimum_seconds, parse_duration,
                               round_up_budget, speed_key)
from utils.grid.budget_costs import INTERIM_METHODS
from utils.grid.budget_presets import PRESETS, candidates, more_seeds
from utils.grid.budget_probe import has_weights, measure, usable_archs
from utils.grid.cluster import Cell, flag_value

SAFE_FACTOR = 1.25  # the budget a refusal suggests: its minimum, with room for the speeds to vary
MEASURE_SHARE = 0.06  # the networks' speeds measure larger sizes only while within this share of the budget


def budget_setup(args):
    """(budget seconds, the preset with --tta/--stack-method applied, the dataset's Facts, the
    command: the flags that define the plan, which a rerun must repeat to continue it).
    `--budget +DURATION` (time added to the plan in --out) sets args.budget_added to its seconds.

    args: tools/submit.py's parsed flags (data resolved). DataError for flags that do not apply
    (--folds, --grid) and for a dataset train.py would refuse."""
    text = str(args.budget).strip()
    args.budget_added = None
    if text.startswith("+"):
        try:
            args.budget_added = parse_duration(text[1:], "--budget")
        except DataError as e:
            raise DataError(f"--budget {text!r}: expected + and a duration more than 0, e.g. +30m (time added to "
                            "the plan in --out)") from e
    budget_s = args.budget_added or parse_duration(text)
    for flag, value in (("--folds", args.folds), ("--grid", args.grid)):
        if value is not None:
            raise DataError(f"{flag} and --budget: the budget plans its own grid (every fold); leave {flag} out")
    preset = PRESETS[args.preset]
    preset = replace(preset, tta=args.tta if args.tta_given else preset.tta,
                     stack_methods=tuple(args.stack_method or preset.stack_methods))
    spec = load_dataset(Path(args.data), flag_value(args.train_flags, "--images") or "train",
                        flag_value(args.train_flags, "--test-images") or "test", need_test=True)
    group = flag_value(args.train_flags, "--label-group")
    labels = [spec.labels[i] for i in select_label_group(spec.labels, spec.y, group)] if group else spec.labels
    parse_constraints(labels, args.exactly_one, args.at_most_one, args.min_tags, args.max_tags)  # DataError now
    n_labels = len(labels)
    k = folds_k_for(flag_value(args.train_flags, "--folds-file") or Path(args.data) / "folds.csv",
                    args.folds_k or preset.folds_k, args.folds_k is not None)
    facts = Facts(len(spec.names), len(spec.test_names), n_labels, k)
    args.spec = spec  # the rates are measured on its files (measure_rates)
    command = {"data": args.data, "budget": args.budget, "preset": args.preset, "arch": args.arch,
               "sizes": args.sizes, "seeds": args.seeds, "folds_k": k, "tta": preset.tta,
               "stack_methods": list(preset.stack_methods), "train_flags": args.train_flags}
    return budget_s, preset, facts, command


def budget_candidates(args, preset, facts):
    """The members the planner may take, in the preset's order (utils.grid.budget_presets)."""
    archs = usable_archs(args.arch or preset.archs, "--no-pretrained" not in args.train_flags)
    probe_archs = [a for a in preset.archs if has_weights(a)]
    bs = int(flag_value(args.train_flags, "--bs") or 32)
    sizes = args.sizes or preset.sizes
    seeds = args.seeds or more_seeds(preset.seeds, len(archs), preset.max_trained)
    return candidates(preset, archs, sizes, seeds, args.train_flags, probe_archs, bs)


def probe_configs(cands):
    """(arch, size, bs) of every size each candidate may run at, smallest first, so that a probe
    cut short by a small budget has measured the cheapest."""
    configs = {(m.arch, s, m.bs) for m in cands for s in (m.sizes or (m.size,))}
    return sorted(configs, key=lambda c: (c[1], [m.arch for m in cands].index(c[0])))


def measure_and_plan(args, budget_s, preset, facts, check_cells, t0):
    """Check every trained candidate the way train.py would (check_cells(cells), DataError),
    measure the candidates' speeds, and plan what is left of budget_s since t0
    (time.perf_counter() at the command's start). Returns (Plan, Measured). DataError naming
    the minimum budget when not even the cheapest model fits; nothing is written either way."""
    started = time.perf_counter() - t0   # this process's start-up, about what every job pays again
    floor = started + 3 * STARTS_PER_JOB * started / (1 - MARGIN)
    if floor > budget_s:                  # three jobs' start-ups alone overrun it: refuse before probing
        least = format_duration(round_up_budget(floor))
        raise DataError(f"--budget {args.budget}: too small: starting the jobs of the smallest plan (a model, the "
                        f"stack and the report) alone would take longer here: the minimum budget on this device is "
                        f"more than {least}, how much more is known once the models' speeds are measured; try "
                        f"--budget {format_duration(round_up_budget(4 * floor))} or more. Nothing was written.")
    cands = budget_candidates(args, preset, facts)
    configs = probe_configs(cands)
    check_cells([Cell(m.arch, 0, m.seed, member_flags(m, facts), "check") for m in cands if m.kind == "train"])
    first_sizes = len({m.arch for m in cands})   # probe_configs puts every network's smallest size first

    def stop(m):
        """Too small a budget for even three jobs' start-ups, or the measuring has had its share
        of it once every network's smallest size is measured (larger sizes then stay out)."""
        spent = time.perf_counter() - t0
        return (spent + 3 * m.job_start_s / (1 - MARGIN) > budget_s
                or (len(m.speeds) >= first_sizes and spent > MEASURE_SHARE * budget_s))

    measured = measure_all(args, facts, cands, preset, configs, stop)
    cands = [m for m in cands if speed_key(m.arch, m.size, m.bs) in measured.speeds]
    spent = time.perf_counter() - t0
    plan = make_plan(cands, measured, facts, budget_s - spent, preset)
    if not plan.members:
        # a larger budget lets the probe measure every configuration: count that time in
        unmeasured = len(configs) - len(measured.speeds)
        probe_more = unmeasured * measured.probe_s / max(1, len(measured.speeds))
        need, cheapest = minimum_seconds(cands, measured, facts, preset, spent + probe_more)
        refuse_budget(args.budget, need, cheapest, facts, spent)
    return plan, measured


def measure_all(args, facts, cands, preset, configs, stop):
    """The networks' speeds (utils/grid/budget_probe.py) and this dataset's rates (measure_rates),
    or the same measurement of this machine and dataset made within six hours
    (utils/grid/budget_memo.py: a dry run, then the run). Which caches exist is looked up anew."""
    from utils.common.cli import pick_device
    from utils.data.cache import default_cache_dir
    from utils.grid.budget_memo import memo_key, recall, remember

    cache_dir = flag_value(args.train_flags, "--cache-dir") or default_cache_dir(args.data)
    probe_archs = [m.arch for m in cands if m.kind == "probe"]
    key = memo_key(args.spec, str(pick_device("auto")), configs, probe_archs, preset.stack_methods, facts.folds_k,
                   facts.n_labels)
    partial_key = f"{key}-{args.budget}"   # cut short by its budget's share: reused by the same budget only
    measured, age = recall(cache_dir, key)
    if measured is None:
        measured, age = recall(cache_dir, partial_key)
    if measured is not None:
        print(f"reusing the speeds and rates measured on this machine and this data {format_duration(age)} ago "
              f"({cache_dir}); delete {cache_dir}/budget-measured.json to measure again", flush=True)
        measured.probe_s, measured.cached = 0.0, cached_caches(args, sorted({s for _, s, _ in configs}), cache_dir)
        return measured
    print(f"measuring the speed of {len(cands)} candidate(s) on this device ...", flush=True)
    measured = measure(configs, facts.n_labels, stop=stop)
    speeds_s = measured.probe_s
    measure_rates(measured, args, facts, cands, preset, sorted({size for _, size, _ in configs}))
    skipped = [f"{a} at {s} px" for a, s, b in dict.fromkeys(configs) if speed_key(a, s, b) not in measured.speeds]
    print(f"measured in {format_duration(measured.probe_s)}: the networks' speeds {format_duration(speeds_s)}, "
          f"decoding, the probe's fits and stack.py on this data {format_duration(measured.probe_s - speeds_s)}" +
          (f"; not measured within the measuring's share of the budget: {', '.join(skipped)}" if skipped else ""),
          flush=True)
    remember(cache_dir, partial_key if skipped else key, measured)
    return measured


def cached_caches(args, sizes, cache_dir):
    """The image caches of the dataset already on disk, as 'train@64', 'test@64'."""
    from utils.data.cache import is_cached

    spec, out = args.spec, []
    for size in sizes:
        for split, files, desc in (("train", spec.files, spec.images), ("test", spec.test_files, spec.test_images)):
            if is_cached(files, size, cache_dir, desc=desc):
                out.append(f"{split}@{size}")
    return out


def measure_rates(measured, args, facts, cands, preset, sizes):
    """The data-dependent rates (utils/grid/budget_rates.py) into `measured`: decoding this
    dataset's images at each size, which caches exist already, each probe architecture's
    logistic fit on features of its width, and stack.py's methods on a library of this
    dataset's shape. Records how long it took in measured.probe_s."""
    from utils.analysis.probe import feature_model
    from utils.data.cache import default_cache_dir
    from utils.grid.budget_rates import decode_rate, probe_fit_rate, stack_rate

    t0, spec = time.perf_counter(), args.spec
    cache_dir = flag_value(args.train_flags, "--cache-dir") or default_cache_dir(args.data)
    for size in sizes:
        measured.decode_ips[str(size)] = decode_rate(spec.files, size)
    measured.cached = cached_caches(args, sizes, cache_dir)
    fold_rows = facts.n_train * (facts.folds_k - 1) // facts.folds_k
    by_width = {}   # the fits' cost depends on the features' width, not on the network that made them
    for arch in dict.fromkeys(m.arch for m in cands if m.kind == "probe"):
        width = feature_model(arch, pretrained=False)(torch.zeros(1, 3, 32, 32)).shape[1]
        if width not in by_width:
            by_width[width] = probe_fit_rate(fold_rows, width, facts.n_labels)
        measured.fit_s[arch] = by_width[width]
    measured.stack_s = {"final": stack_rate(facts.n_train, facts.n_labels, facts.folds_k, preset.stack_methods),
                        "interim": stack_rate(facts.n_train, facts.n_labels, facts.folds_k, INTERIM_METHODS)}
    measured.probe_s += time.perf_counter() - t0


def refuse_budget(given, need, cheapest, facts, spent):
    """DataError: the budget `given` is under `need` seconds, what the cheapest member costs."""
    what = (f"a linear probe of {cheapest.arch} at {cheapest.size} px" if cheapest.kind == "probe" else
            f"{cheapest.arch} at {cheapest.size} px, {cheapest.epochs} epochs")
    minimum = format_duration(round_up_budget(need))
    safe = format_duration(round_up_budget(need * SAFE_FACTOR))
    raise DataError(f"--budget {given}: too small for even the cheapest model here ({what}, on every one of "
                    f"{facts.folds_k} folds, with its prediction, the stack and the report); the minimum budget on "
                    f"this device is about {minimum} (measuring the speeds took {format_duration(spent)}; speeds "
                    f"vary with the machine's load): pass --budget {safe} or more. Nothing was written.")
