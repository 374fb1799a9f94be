"""utils/grid/budget.py and budget_presets.py: the budget planner as pure functions of a fake
speed measurement (no model is built, nothing is timed)."""
import re
from dataclasses import replace

import pytest

from utils.common.errors import DataError
from utils.grid.budget import (MARGIN, Facts, Measured, Speed, format_duration, make_plan, plan_jobs,
                               minimum_seconds, parse_duration, round_up_budget, speed_key)
from utils.grid.budget_replan import complete_members, corrections, expected, extend, replan
from utils.grid.budget_presets import PRESETS, candidates, more_seeds
from utils.grid.plan_file import check_same_command, continuing_line, plan_table

FACTS = Facts(n_train=1000, n_test=200, n_labels=5, folds_k=3)
ARCHS = {"tf_efficientnet_lite0": [], "tf_efficientnet_lite1": []}


def measured(slow=1.0):
    """Lite1 half as fast as Lite0; `slow` divides every speed."""
    speeds = {}
    for arch, ips in (("tf_efficientnet_lite0", 200.0), ("tf_efficientnet_lite1", 100.0), ("tiny_cnn", 5000.0)):
        for size in (64, 128):
            scale = (128 / size) ** 2
            speeds[speed_key(arch, size, 32)] = Speed(ips * scale / slow, 4 * ips * scale / slow)
    return Measured(speeds, start_s=3.0, probe_s=10.0, decode_ips={"64": 400.0 / slow, "128": 200.0 / slow},
                    fit_s={"tf_efficientnet_lite0": (0.5 * slow, 2e-5 * slow)},
                    stack_s={"final": (0.01 * slow, 2e-5 * slow), "interim": (0.002 * slow, 4e-6 * slow)})


def preset(name="balanced", **kw):
    return replace(PRESETS[name], folds_k=FACTS.folds_k, **kw)


def cands(p, archs=ARCHS, sizes=(128,), seeds=(0,)):
    return candidates(p, archs, sizes, seeds, [], ["tf_efficientnet_lite0"])


@pytest.mark.parametrize("text,seconds", [("45s", 45), ("4m", 240), ("90m", 5400), ("2h", 7200), ("1d", 86400),
                                          ("1h30m", 5400), ("300", 300), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "4 minutes", "-5m", "0s", "5x"])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(DataError, match="--budget"):
        parse_duration(text)


def test_format_and_round_durations():
    assert [format_duration(s) for s in (44.2, 240, 250, 3900, 90000)] == ["45s", "4m", "4m10s", "1h05m", "1d01h"]
    assert round_up_budget(41) == 45 and round_up_budget(61) == 120


def test_plan_is_deterministic_and_fits_the_budget():
    p = preset()
    a = make_plan(cands(p), measured(), FACTS, 3600, p)
    b = make_plan(cands(p), measured(), FACTS, 3600, p)
    assert [j.id for j in a.jobs] == [j.id for j in b.jobs]
    assert [j.predicted_s for j in a.jobs] == [j.predicted_s for j in b.jobs]
    assert a.predicted_s == pytest.approx(sum(j.predicted_s for j in a.jobs))
    assert a.predicted_s <= 3600 * (1 - MARGIN)
    assert [j.kind for j in a.jobs[-2:]] == ["stack", "report"]
    # a probe first, then every fold of each trained member followed by its prediction
    kinds = [j.kind for j in a.jobs if j.member == a.members[1].id]
    assert a.members[0].kind == "probe" and kinds == ["train"] * FACTS.folds_k + ["predict"]


def test_more_budget_buys_more_members_then_more_epochs():
    p = preset()
    sizes = [(len(pl.members), max(m.epochs for m in pl.members)) for pl in
             (make_plan(cands(p), measured(), FACTS, s, p) for s in (150, 400, 3600))]
    assert sizes[0][0] < sizes[1][0] or sizes[0][1] < sizes[1][1]
    assert sizes[2] == (3, max(p.epochs))       # probe + Lite0 + Lite1 (max_trained 2), at the longest epochs
    assert sizes[0][1] == min(p.epochs)


def test_plans_never_exceed_the_budget_less_the_margin():
    p = preset("best")
    for budget in (60, 200, 900, 5000, 20000):
        plan = make_plan(cands(p, seeds=(0, 1)), measured(), FACTS, budget, p)
        assert plan.predicted_s <= budget * (1 - MARGIN) or not plan.members


def test_presets_favour_what_they_say():
    fast, best = preset("fast"), preset("best")
    f = make_plan(cands(fast), measured(), FACTS, 10 ** 6, fast)
    b = make_plan(cands(best, seeds=(0, 1)), measured(), FACTS, 10 ** 6, best)
    assert len(f.trained) == 1 and len(b.trained) == 4       # 2 archs x 2 seeds here
    assert not any(m.kind == "probe" for m in b.members)       # 10crop: a probe cannot make it
    assert all("--aug" in j.flags for j in b.jobs if j.kind == "train")
    for p in PRESETS.values():
        assert p.evidence and all("EXPERIMENTS.md" in v or "stack.py" in v for v in p.evidence.values())


def test_too_small_a_budget_plans_nothing_and_names_the_minimum():
    p = preset()
    c = cands(p)
    plan = make_plan(c, measured(), FACTS, 5, p)
    assert plan.members == []
    need, cheapest = minimum_seconds(c, measured(), FACTS, p, spent_s=10.0)
    assert cheapest.kind == "probe"
    assert make_plan(c, measured(), FACTS, need - 10.0 + 1e-6, p).members == [cheapest]
    assert make_plan(c, measured(), FACTS, need - 10.0 - 1.0, p).members == []


def test_replan_drops_the_members_that_would_overrun():
    p = preset()
    budget = make_plan(cands(p), measured(), FACTS, 10 ** 6, p).predicted_s / (1 - MARGIN) + 1  # a tight fit
    plan = make_plan(cands(p), measured(), FACTS, budget, p)
    jobs = plan.jobs
    first = next(j for j in jobs if j.kind == "probe")
    first.state, first.actual_s = "finished", first.predicted_s
    assert replan(jobs, budget - first.actual_s) == []          # on time: nothing dropped
    train = next(j for j in jobs if j.kind == "train")
    train.state, train.actual_s = "finished", train.predicted_s * 1.5  # training slower than measured
    left = budget - first.actual_s - train.actual_s
    dropped = replan(jobs, left)
    assert dropped == [plan.members[-1].id]                     # the last member goes, the earlier stays
    assert all(j.state == "dropped" and j.why for j in jobs if j.member == dropped[0])
    assert {j.state for j in jobs if j.member is None} == {"planned"}
    assert complete_members(jobs) == [plan.members[0].id]


def test_replan_with_no_time_left_keeps_only_the_finish():
    p = preset()
    jobs = make_plan(cands(p), measured(), FACTS, 3600, p).jobs
    assert len(replan(jobs, 0.0)) == 3
    assert [j.kind for j in jobs if j.state == "planned"] == ["stack", "report"]


def test_more_seeds_fill_the_members():
    assert more_seeds([0], 1, 3) == [0, 1, 2]
    assert more_seeds([0], 2, 2) == [0]


def test_plan_table_and_command_check():
    p = preset()
    plan = make_plan(cands(p), measured(), FACTS, 600, p)
    lines = plan_table(plan.jobs, 600, 12)
    assert len(lines) == len(plan.jobs) + 3 and "of a budget of 10m" in lines[-1]
    check_same_command({"command": {"budget": "4m"}}, {"budget": "4m"}, "plan.json")
    with pytest.raises(DataError, match="budget: '4m' then, '5m' now"):
        check_same_command({"command": {"budget": "4m"}}, {"budget": "5m"}, "plan.json")


def test_every_preset_cites_sections_the_page_has():
    from conftest import ROOT
    import re

    headings = [line.lstrip("#").strip() for line in (ROOT / "EXPERIMENTS.md").read_text().splitlines()
                if line.startswith("## ") or line.startswith("### ")]
    for p in PRESETS.values():
        for choice, why in p.evidence.items():
            letters = [x for m in re.findall(r"sections? ([a-z](?: and [a-z])?)\b", why) for x in m.split(" and ")]
            names = re.findall(r"'([^']+)'", why)
            assert letters or names or "stack.py" in why, (p.name, choice)
            assert all(any(h.startswith(f"{x}. ") for h in headings) for x in letters), (p.name, choice, letters)
            assert all(any(h.startswith(n) for h in headings) for n in names), (p.name, choice, names)


def test_a_small_budget_trains_small_before_it_drops_a_model():
    p = preset(sizes=(64, 128))
    ladder, only_large = cands(p, sizes=(64, 128)), cands(p, sizes=(128,))
    budget = next(b for b in range(60, 5000, 10)
                  if any(m.kind == "train" for m in make_plan(ladder, measured(), FACTS, b, p).members))
    assert not any(m.kind == "train" for m in make_plan(only_large, measured(), FACTS, budget, p).members)
    trained = make_plan(ladder, measured(), FACTS, budget, p).trained
    assert [m.size for m in trained] == [64] and trained[0].id.endswith("-64px-s0")


def test_members_grow_to_the_costliest_size_and_epochs_that_fit():
    p = preset(sizes=(64, 128))
    c = cands(p, sizes=(64, 128))
    assert {(m.size, m.epochs) for m in make_plan(c, measured(), FACTS, 10 ** 6, p).trained} == {(128, max(p.epochs))}
    for budget in range(300, 4000, 300):
        plan = make_plan(c, measured(), FACTS, budget, p)
        if not plan.trained:
            continue
        (size, epochs), = {(m.size, m.epochs) for m in plan.trained}
        assert all(f"-{size}px-" in m.id for m in plan.trained)
        assert all(f"--size {size} --epochs {epochs}" in " ".join(j.flags) for j in plan.jobs if j.kind == "train")
        # brute force: no costlier (size, epochs) of the same members fits the budget less the margin
        for s in (64, 128):
            for e in p.epochs:
                grown = [m.scaled(s, e) if m.kind == "train" else m for m in plan.members]
                cost = sum(j.predicted_s for j in plan_jobs(grown, measured(), FACTS, p))
                if s * s * e > size * size * epochs:
                    assert cost > budget * (1 - MARGIN), (budget, s, e)


def test_probe_measures_the_cheapest_size_first_and_evidence_names_the_folds():
    from utils.grid.budget_presets import evidence_for
    from utils.grid.budget_setup import probe_configs
    p = preset(sizes=(64, 96, 128))
    configs = probe_configs(cands(p, sizes=(128, 64, 96)))
    assert [c[1] for c in configs] == sorted(c[1] for c in configs) and configs[0][1] == 64
    assert {(a, s) for a, s, _ in configs} == {(a, s) for a in ARCHS for s in (64, 96, 128)}
    ev = evidence_for(PRESETS["balanced"], 3)
    assert "3 folds" in ev and "5 folds" not in ev and "folds.csv" in ev["3 folds"]
    assert evidence_for(PRESETS["balanced"], 5) == PRESETS["balanced"].evidence


def finish_at(jobs, kinds, pace):
    """Mark the first planned job of each kind in `kinds` finished in pace x its predicted time;
    returns the seconds they took."""
    spent = 0.0
    for kind in kinds:
        j = next(j for j in jobs if j.kind == kind and j.state == "planned")
        j.state, j.actual_s = "finished", j.predicted_s * pace
        spent += j.actual_s
    return spent


def open_seconds(jobs):
    factor = corrections(jobs)
    return sum(expected(j, factor) for j in jobs if j.state in ("planned", "running"))


def added(changes, how="new"):
    return [m for h, _, m in changes if h == how]


def test_extend_adds_candidates_when_the_plan_runs_ahead():
    p = preset(sizes=(64, 128), max_trained=4)
    c = cands(p, sizes=(64, 128), seeds=(0, 1))
    budget = 100
    plan = make_plan(c, measured(), FACTS, budget, p)
    jobs, before = plan.jobs, [m.id for m in plan.members]
    assert len(before) < len(c)
    on_time = [replace(j) for j in jobs]
    left = budget - finish_at(on_time, ("probe", "train"), 1.0)
    assert extend(on_time, c, measured(), FACTS, p, left) == []          # on time: nothing to add
    left = budget - finish_at(jobs, ("probe", "train"), 0.25)           # four times faster than measured
    stack_before = next(j for j in jobs if j.kind == "stack" and j.after is None).predicted_s
    new = added(extend(jobs, c, measured(), FACTS, p, left))
    assert new and not {m.id for m in new} & set(before)
    assert {m.size for m in new if m.kind == "train"} == {m.size for m in plan.trained}  # the plan's size first
    assert open_seconds(jobs) <= left * (1 - MARGIN) + 1e-6
    assert replan(jobs, left) == []                                       # what extend adds, replan keeps
    assert next(j for j in jobs if j.kind == "stack" and j.after is None).predicted_s > stack_before
    assert [j.kind for j in jobs[-2:]] == ["stack", "report"]            # new jobs go before the finish
    members = list(dict.fromkeys(j.member for j in jobs if j.member))
    assert members == before + [m.id for m in new]
    assert len({j.member for j in jobs if j.kind == "train"}) <= p.max_trained
    for _ in range(6):                                                    # then larger models while room is left
        extend(jobs, c, measured(), FACTS, p, left)
        assert open_seconds(jobs) <= left * (1 - MARGIN) + 1e-6
    assert extend(jobs, c, measured(), FACTS, p, left) == []              # until none fits
    keys = [(j.arch, j.seed, j.size) for j in jobs if j.kind == "train" and j.fold == 0]
    assert len(keys) == len(set(keys))                                    # no model twice


def test_extend_brings_back_dropped_members_and_keeps_their_finished_runs():
    p = preset(sizes=(64, 128), max_trained=4)
    c = cands(p, sizes=(64, 128), seeds=(0, 1))
    jobs = make_plan(c, measured(), FACTS, 200, p).jobs
    left = 200 - finish_at(jobs, ("probe", "train"), 3.0)               # slower: the last members go
    dropped = replan(jobs, left)
    assert dropped
    finished = [j.id for j in jobs if j.state == "finished"]
    tight = extend(jobs, c, measured(), FACTS, p, left)                   # still no room: they stay out
    assert not [h for h, _, _ in tight if h == "back"]                    # (a shorter new model may fit)
    finished = [j.id for j in jobs if j.state == "finished"]
    changes = extend(jobs, c, measured(), FACTS, p, 10 ** 5)              # room again
    assert sorted(m for h, m, _ in changes if h == "back") == sorted(dropped)
    assert all(j.state == "planned" and not j.why for j in jobs if j.member in dropped and j.id not in finished)
    assert [j.id for j in jobs if j.state == "finished"] == finished
    keys = [(j.arch, j.seed, j.size) for j in jobs if j.kind == "train" and j.fold == 0]
    assert len(keys) == len(set(keys))                                    # no model twice
    assert len({(a, s) for a, s, _ in keys}) <= p.max_trained


def test_extend_grows_larger_models_when_every_candidate_is_in():
    p = preset(sizes=(64, 128), max_trained=2)
    c = cands(p, sizes=(64, 128))
    budget = next(b for b in range(60, 5000, 10) if len(make_plan(c, measured(), FACTS, b, p).members) == len(c) - 1)
    jobs = make_plan(c, measured(), FACTS, budget, p).jobs
    assert {j.size for j in jobs if j.kind == "train"} == {64}
    left = budget * 6 - finish_at(jobs, ("probe", "train", "train"), 1.0)  # far more time than planned
    grown = []
    for _ in range(5):
        grown += added(extend(jobs, c, measured(), FACTS, p, left), "larger")
        assert open_seconds(jobs) <= left * (1 - MARGIN) + 1e-6
    assert grown and {m.size for m in grown} == {128}
    keys = [(j.arch, j.seed, j.size) for j in jobs if j.kind == "train" and j.fold == 0]
    assert len(keys) == len(set(keys))                                    # each size of a model once
    assert [j.kind for j in jobs[-2:]] == ["stack", "report"]


def test_a_refused_budget_suggests_room_above_its_minimum():
    from utils.grid.budget_setup import SAFE_FACTOR, refuse_budget
    cheapest = cands(preset())[0]
    with pytest.raises(DataError) as e:
        refuse_budget("1m", 250.0, cheapest, FACTS, 30.0)
    minimum = re.search(r"is about (\S+) \(", str(e.value)).group(1)
    suggested = re.search(r"pass --budget (\S+) or more", str(e.value)).group(1)
    assert parse_duration(minimum) == 300 and parse_duration(suggested) >= 250 * SAFE_FACTOR


# ----------------------------------------------------------------------------- costs from the data at hand

def plan_seconds(facts, kinds, p=None):
    """Predicted seconds by kind of a plan of every candidate, with no cache on disk."""
    p = p or preset()
    plan_ = make_plan(cands(p), measured(), facts, 10 ** 9, p)
    return {k: sum(j.predicted_s - j.fixed_s for j in plan_.jobs if j.kind == k) for k in kinds}


def test_every_term_grows_with_the_data_where_the_work_does():
    kinds = ("probe", "train", "predict", "stack")
    base = plan_seconds(FACTS, kinds)
    more_images = plan_seconds(replace(FACTS, n_train=4 * FACTS.n_train), kinds)
    more_labels = plan_seconds(replace(FACTS, n_labels=5 * FACTS.n_labels), kinds)
    more_test = plan_seconds(replace(FACTS, n_test=4 * FACTS.n_test), kinds)
    assert all(more_images[k] > 2 * base[k] for k in kinds)          # every kind's work scales with the images
    per_labels = 2e-5 * FACTS.n_train * (FACTS.folds_k - 1) / FACTS.folds_k * FACTS.n_labels * FACTS.folds_k
    assert more_labels["probe"] - base["probe"] == pytest.approx(4 * per_labels)   # a logistic fit per label
    assert more_labels["stack"] == pytest.approx(5 * base["stack"])  # every method works label by label
    assert more_labels["train"] == pytest.approx(base["train"])      # a network's step does not
    assert more_test["predict"] > base["predict"] and more_test["train"] == pytest.approx(base["train"])


def test_caches_are_costed_once_and_not_when_on_disk():
    p = preset()
    jobs = make_plan(cands(p), measured(), FACTS, 10 ** 9, p).jobs
    start = measured().job_start_s
    decode = {j.id: j.fixed_s - start for j in jobs if j.kind in ("probe", "train", "predict")}
    probe = next(j for j in jobs if j.kind == "probe")
    assert decode[probe.id] == pytest.approx((FACTS.n_train + FACTS.n_test) / 200.0)  # train and test at 128 px
    assert all(v == pytest.approx(0.0) for k, v in decode.items() if k != probe.id)   # the same caches after it
    on_disk = replace(measured(), cached=["train@128", "test@128"])
    jobs = make_plan(cands(p), on_disk, FACTS, 10 ** 9, p).jobs
    assert all(j.fixed_s == pytest.approx(start) for j in jobs if j.kind in ("probe", "train", "predict"))


def test_corrections_stay_with_their_kind_and_leave_start_ups_alone():
    p = preset()
    jobs = make_plan(cands(p), measured(), FACTS, 10 ** 9, p).jobs
    probe = next(j for j in jobs if j.kind == "probe")
    probe.state = "finished"
    probe.actual_s = probe.fixed_s + 4.7 * (probe.predicted_s - probe.fixed_s)
    factor = corrections(jobs)
    assert factor["probe"] == pytest.approx(4.7)
    assert factor["train"] == factor["predict"] == factor["stack"] == 1.0   # never lent to another kind
    train = next(j for j in jobs if j.kind == "train")
    train.fixed_s += 60.0                      # a cache build: slow, but paid once
    train.predicted_s += 60.0
    train.state, train.actual_s = "finished", train.predicted_s
    second = [j for j in jobs if j.kind == "train"][1]
    assert expected(second, corrections(jobs)) == pytest.approx(second.predicted_s)


def test_a_slow_probe_does_not_drop_the_trained_members_and_one_fold_measures_them():
    from utils.grid.budget_replan import keep_one_to_measure
    p = preset()
    budget = 3600
    jobs = make_plan(cands(p), measured(), FACTS, budget, p).jobs
    trained = list(dict.fromkeys(j.member for j in jobs if j.kind == "train"))
    spent = finish_at(jobs, ("probe",), 4.7)
    assert replan(jobs, budget - spent) == []           # the probe's pace is the probe's alone
    # so little time left that no trained member fits whole at the measured speeds, but one fold does
    first = next(j for j in jobs if j.kind == "train")
    finish = sum(j.predicted_s for j in jobs if j.member is None and j.after is None)
    left = (first.predicted_s + finish) / (1 - MARGIN) + 1.0
    dropped = replan(jobs, left)
    assert set(trained) <= set(dropped)
    kept = keep_one_to_measure(jobs, left)
    assert kept == trained[0]                           # the cheapest: Lite0 before Lite1
    planned = [j for j in jobs if j.member == kept and j.state == "planned"]
    assert len(planned) == 1 and planned[0].kind == "train" and planned[0].fold == 0   # its first fold alone
    assert replan(jobs, left) == []                     # which the next replan keeps
    assert keep_one_to_measure(jobs, left) is None       # one at a time
    finish_at(jobs, ("train",), 1.0)                    # measured: the next replan decides on real speeds
    for m in trained:
        for j in jobs:
            if j.member == m and j.state == "planned":
                j.state = "dropped"
    assert keep_one_to_measure(jobs, left) is None       # a train job has finished: no more measuring


def test_nothing_is_kept_to_measure_when_not_even_one_fold_fits():
    from utils.grid.budget_replan import keep_one_to_measure
    p = preset()
    jobs = make_plan(cands(p), measured(), FACTS, 3600, p).jobs
    finish_at(jobs, ("probe",), 1.0)
    replan(jobs, 20.0)
    assert keep_one_to_measure(jobs, 20.0) is None
    assert not [j for j in jobs if j.kind == "train" and j.state == "planned"]


def test_time_left_over_grows_a_new_seed_when_no_larger_model_is_on_the_ladder():
    p = preset(sizes=(64,), max_trained=1, epochs=(4,))
    c = cands(p, archs={"tf_efficientnet_lite0": []}, sizes=(64,))
    jobs = make_plan(c, measured(), FACTS, 10 ** 6, p).jobs
    changes = extend(jobs, c, measured(), FACTS, p, 10 ** 6)
    grown = added(changes, "larger")
    assert len(grown) == 1 and grown[0].seed == 1 and grown[0].size == 64 and grown[0].arch == "tf_efficientnet_lite0"
    keys = [(j.arch, j.seed, j.size) for j in jobs if j.kind == "train" and j.fold == 0]
    assert len(keys) == len(set(keys))


def test_a_short_budget_falls_back_to_the_smaller_probe_and_plans_one_probe_per_network():
    p = preset(sizes=(64, 128))
    c = cands(p, sizes=(64, 128))
    assert [m.size for m in c if m.kind == "probe"] == [128, 64]
    big = make_plan(c, measured(), FACTS, 10 ** 6, p)
    assert [m.size for m in big.members if m.kind == "probe"] == [128]
    probe128 = sum(j.predicted_s for j in plan_jobs([c[0]], measured(), FACTS, p))
    probe64 = sum(j.predicted_s for j in plan_jobs([c[1]], measured(), FACTS, p))
    assert probe64 < probe128
    short = make_plan(c, measured(), FACTS, (probe64 + probe128) / 2 / (1 - MARGIN), p)
    assert [m.size for m in short.members if m.kind == "probe"] == [64]
    need, cheapest = minimum_seconds(c, measured(), FACTS, p)
    assert cheapest.kind == "probe" and cheapest.size == 64
    assert extend(big.jobs, c, measured(), FACTS, p, 10 ** 6) and not any(
        j.kind == "probe" and j.size == 64 for j in big.jobs)        # never a second probe of one network


def test_cheapest_addition_says_what_did_not_fit():
    from utils.grid.budget_replan import cheapest_addition
    p = preset(sizes=(64, 128))
    c = cands(p, sizes=(64, 128))
    jobs = make_plan(c, measured(), FACTS, 300, p).jobs
    cost, what = cheapest_addition(jobs, c, measured(), FACTS, p)
    assert cost > 0 and "px" in what
    assert extend(jobs, c, measured(), FACTS, p, cost / (1 - MARGIN) * 0.5) == []


def test_interim_stacks_give_a_submission_after_each_member_and_go_with_their_member():
    p = preset()
    plan_ = make_plan(cands(p), measured(), FACTS, 10 ** 6, p)
    jobs = plan_.jobs
    interim = [j for j in jobs if j.kind == "stack" and j.after]
    assert [j.after for j in interim] == [m.id for m in plan_.members[:-1]]
    for j in interim:   # right after its member's last job
        i = jobs.index(j)
        assert jobs[i - 1].member == j.after and jobs[i + 1].member != j.after
    dropped = replan(jobs, 1.0)
    assert all(j.state == "dropped" for j in interim if j.after in dropped)


def test_added_time_reruns_the_final_stack_and_keeps_finished_runs():
    from utils.grid.plan_file import add_time, new_plan
    p = preset()
    made = make_plan(cands(p), measured(), FACTS, 900, p)
    plan_ = new_plan({"budget": "15m"}, 900, measured(), FACTS, p, made.members, made.jobs, 10.0, made.candidates)
    for j in plan_["jobs"]:
        j.state, j.actual_s = "finished", j.predicted_s
    plan_["used_s"] = 800.0
    add_time(plan_, 300)
    assert plan_["budget_s"] == 1200 and plan_["extensions"][0]["added_s"] == 300
    assert [j.kind for j in plan_["jobs"] if j.state == "planned"] == ["stack", "report"]
    assert all(j.state == "finished" for j in plan_["jobs"] if j.member is not None)
    changes = extend(plan_["jobs"], made.candidates, measured(), FACTS, p, 400)
    assert changes and all(h in ("new", "larger") for h, _, _ in changes)


def test_the_rung_trains_every_models_first_fold_first_and_promotion_orders_the_rest_by_f2():
    from utils.grid.budget_replan import promote, rung_ready
    p = preset()
    plan_ = make_plan(cands(p), measured(), FACTS, 10 ** 6, p)
    jobs = plan_.jobs
    trained = [m.id for m in plan_.trained]
    assert len(trained) == 2
    kinds = [(j.kind, j.fold) for j in jobs]
    first_other_fold = next(i for i, (k, f) in enumerate(kinds) if k == "train" and f != 0)
    rung = [i for i, (k, f) in enumerate(kinds) if k == "train" and f == 0]
    assert len(rung) == 2 and max(rung) < first_other_fold          # every first fold before any other fold
    assert not rung_ready(jobs)
    for j in jobs:
        if j.kind in ("probe",) or (j.kind == "train" and j.fold == 0):
            j.state, j.actual_s = "finished", j.predicted_s
    assert rung_ready(jobs)
    before = [j.id for j in jobs]
    order = promote(jobs, {trained[0]: 0.70, trained[1]: 0.80})      # the second did better on this data
    assert order == [trained[1], trained[0]]
    assert sorted(j.id for j in jobs) == sorted(before)              # the same jobs, reordered
    open_members = list(dict.fromkeys(j.member for j in jobs if j.state == "planned" and j.member))
    assert open_members == [trained[1], trained[0]]
    assert [j.kind for j in jobs[-2:]] == ["stack", "report"]
    for m in trained:                                                # each member's jobs stay in their order
        folds = [j.fold for j in jobs if j.member == m and j.kind == "train"]
        assert folds == sorted(folds)
        interim = [jobs.index(j) for j in jobs if j.after == m]
        assert all(i > max(jobs.index(j) for j in jobs if j.member == m) for i in interim)
    # short of time, replan now drops the weaker one first
    left = sum(j.predicted_s for j in jobs if j.state == "planned" and j.member != trained[0]
               and j.after != trained[0]) / (1 - MARGIN) + 1
    assert replan(jobs, left) == [trained[0]]


def test_a_plan_without_a_trained_model_measures_one_fold_and_then_takes_the_model_if_it_fits():
    from utils.grid.budget import MEASURE_WHY
    p = preset()
    c = cands(p)
    probe_only = sum(j.predicted_s for j in plan_jobs([c[0]], measured(), FACTS, p))
    budget = probe_only / (1 - MARGIN) + 40          # the probe fits, no trained model does at the probe's speeds
    plan_ = make_plan(c, measured(), FACTS, budget, p)
    jobs = plan_.jobs
    assert [m.kind for m in plan_.members] == ["probe"]
    first_fold = next(j for j in member_jobs_of(c, p) if j.kind == "train")
    assert first_fold.predicted_s < 40 * (1 - MARGIN)  # but one fold of the cheapest does
    changes = extend(jobs, c, measured(), FACTS, p, budget)
    assert [h for h, _, _ in changes] == ["measure"]
    m_id = changes[0][1]
    planned = [j for j in jobs if j.member == m_id and j.state == "planned"]
    assert len(planned) == 1 and planned[0].kind == "train" and planned[0].why == MEASURE_WHY
    assert replan(jobs, budget) == []                 # the measuring fold is kept
    assert extend(jobs, c, measured(), FACTS, p, budget) == []   # one measurement at a time
    fold = planned[0]
    fold.state, fold.actual_s = "finished", fold.fixed_s + 0.05 * (fold.predicted_s - fold.fixed_s)  # 20x faster
    changes = extend(jobs, c, measured(), FACTS, p, budget)
    assert ("back", m_id, None) in changes            # measured: the rest of the model fits now
    assert all(j.state == "planned" for j in jobs if j.member == m_id and j is not fold)


def member_jobs_of(c, p):
    from utils.grid.budget import member_jobs
    return member_jobs(next(m for m in c if m.kind == "train"), measured(), FACTS, p.tta)


def test_speeds_are_never_slower_at_a_smaller_size():
    from utils.grid.budget_probe import monotone
    noisy = {speed_key("a", 64, 32): Speed(7.0, 22.0), speed_key("a", 96, 32): Speed(60.0, 400.0),
             speed_key("a", 128, 32): Speed(12.0, 230.0), speed_key("b", 64, 32): Speed(50.0, 300.0)}
    fixed = monotone(noisy)
    assert fixed[speed_key("a", 64, 32)] == Speed(60.0, 400.0)     # raised to the larger size's
    assert fixed[speed_key("a", 96, 32)] == Speed(60.0, 400.0)
    assert fixed[speed_key("a", 128, 32)] == Speed(12.0, 230.0)    # a larger size is never raised
    assert fixed[speed_key("b", 64, 32)] == Speed(50.0, 300.0)     # other architectures untouched
    assert monotone(fixed) == fixed


def test_a_short_budget_trains_fewer_epochs_before_it_trains_nothing():
    from utils.grid.budget import shorter
    p = preset(sizes=(64,), epochs=(4, 8))
    c = cands(p, archs={"tf_efficientnet_lite0": []}, sizes=(64,))
    trained = next(m for m in c if m.kind == "train")
    assert [v.epochs for v in shorter(trained)] == [4, 2]                # train.py's recipe needs two
    assert [v.epochs for v in shorter(trained.scaled(64, 8))] == [8, 4, 2]
    cost = {v.epochs: sum(j.predicted_s for j in plan_jobs([c[0], v], measured(), FACTS, p)) for v in shorter(trained)}
    cost[0] = sum(j.predicted_s for j in plan_jobs([c[0]], measured(), FACTS, p))
    assert cost[0] < cost[2] < cost[4]
    plan_ = make_plan(c, measured(), FACTS, (cost[2] + cost[4]) / 2 / (1 - MARGIN), p)
    assert [(m.kind, m.epochs) for m in plan_.members] == [("probe", 0), ("train", 2)]
    plan_ = make_plan(c, measured(), FACTS, (cost[0] + cost[2]) / 2 / (1 - MARGIN), p)
    assert [m.kind for m in plan_.members] == ["probe"]
    plan_ = make_plan(c, measured(), FACTS, cost[4] / (1 - MARGIN) + 1, p)
    assert [(m.kind, m.epochs) for m in plan_.members] == [("probe", 0), ("train", 4)]
    grown = extend(make_plan(c, measured(), FACTS, (cost[2] + cost[4]) / 2 / (1 - MARGIN), p).jobs, c, measured(),
                   FACTS, p, 10 ** 6)
    assert [(h, m.epochs) for h, _, m in grown] == [("larger", 8)]   # time left grows it back, the longest first


def test_probes_of_the_other_networks_fill_time_no_trained_model_fits():
    """A second network's probe is the last candidate: taken when the plan has room for it, and the
    cheapest addition once every trained model is in (a minute where a five-fold model takes many)."""
    p = preset(sizes=(64, 128))
    probe_archs = ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
    c = candidates(p, ARCHS, (64, 128), (0,), [], probe_archs)
    m = measured()
    m.fit_s["tf_efficientnet_lite1"] = m.fit_s["tf_efficientnet_lite0"]
    assert [x.kind for x in c] == ["probe", "probe", "train", "train", "probe"]
    last = c[-1]
    assert (last.arch, last.size) == ("tf_efficientnet_lite1", 128)
    roomy = make_plan(c, m, FACTS, 3600, p)
    assert last.id in [x.id for x in roomy.members]
    # a plan made without it, then time left that fits the probe and no other model: extend adds the probe
    jobs = make_plan(c[:-1], m, FACTS, 3600, p).jobs
    probe_s = sum(j.predicted_s for j in plan_jobs([last], m, FACTS, p) if j.kind == "probe")
    left = (sum(j.predicted_s for j in jobs) + 2 * probe_s) / (1 - MARGIN)
    changes = extend(jobs, c, m, FACTS, p, left)
    assert [(how, mid) for how, mid, _ in changes] == [("new", last.id)]
    assert [j.kind for j in jobs if j.member == last.id] == ["probe"]


def test_a_rerun_says_what_earlier_attempts_used_of_the_budget():
    line = continuing_line({"used_s": 66.4, "budget_s": 300}, "out/plan.json")
    assert line == "continuing out/plan.json: earlier attempts used 1m07s of the 5m budget"
