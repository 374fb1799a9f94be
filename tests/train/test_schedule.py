"""Optimizers and lr schedules of a stage: shapes, plateau logic, exact resume, lr ratios."""
import dataclasses
import io
import math
import random

import pytest
import torch

from utils.common.errors import DataError
from utils.train.schedule import build_optimizer, build_scheduler, group_lrs, plateau_drops
from utils.train.recipes import RECIPES, get_recipe
from utils.train.stage import Stage


def tiny_groups(stage=None, with_lr=True):
    """Three layer groups of a tiny model, earliest first, the last named 'head'."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)]
    names = ["body0", "body1", "head"]
    groups = [{"params": list(m.parameters()), "name": n} for m, n in zip(layers, names)]
    if with_lr:
        for g, lr in zip(groups, group_lrs(stage, 3)):
            g["lr"] = lr
    return groups


def make(stage, spe):
    opt = build_optimizer(stage, tiny_groups(stage))
    return opt, build_scheduler(stage, opt, spe)


def lr_sequence(stage, spe, f2s=(), start=None, stop=None, all_groups=False):
    """The lr each optimizer step used (head, or every group), stepping like the trainer:
    step_batch after every step, step_epoch(F2) after every epoch."""
    opt, sched = make(stage, spe) if start is None else start
    out = []
    first = sched.steps
    for s in range(first, stage.epochs * spe if stop is None else stop):
        out.append([g["lr"] for g in opt.param_groups] if all_groups else sched.lr)
        opt.step()
        sched.step_batch()
        if (s + 1) % spe == 0:
            e = (s + 1) // spe - 1
            sched.step_epoch(f2s[e] if e < len(f2s) else 0.5)
    return out, (opt, sched)


# ----- optimizers -----------------------------------------------------------------------

@pytest.mark.parametrize("opt, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW)])
def test_build_optimizer(opt, cls):
    stage = Stage(opt=opt, lr=0.1, momentum=0.8, nesterov=True, wd=1e-3, lr_mult=0.5)
    groups = tiny_groups(stage)
    groups[0]["weight_decay"] = 0.0   # e.g. norms and biases: no decay
    o = build_optimizer(stage, groups)
    assert type(o) is cls
    assert [g["lr"] for g in o.param_groups] == pytest.approx([0.025, 0.05, 0.1])
    assert [g["weight_decay"] for g in o.param_groups] == [0.0, 1e-3, 1e-3]
    assert [g["name"] for g in o.param_groups] == ["body0", "body1", "head"]
    if opt == "sgd":
        assert all(g["momentum"] == 0.8 and g["nesterov"] for g in o.param_groups)
    else:
        assert all(g["betas"] == (0.8, 0.999) for g in o.param_groups)


def test_group_lrs_by_position_when_groups_have_none():
    stage = Stage(lr=1.0, lr_mult=0.3)
    o = build_optimizer(stage, tiny_groups(stage, with_lr=False))
    assert [g["lr"] for g in o.param_groups] == pytest.approx([0.09, 0.3, 1.0])
    groups = tiny_groups(stage, with_lr=False)
    groups[1]["lr"] = 0.7                       # a group's own lr wins; the others get stage.lr
    assert [g["lr"] for g in build_optimizer(stage, groups).param_groups] == [1.0, 0.7, 1.0]


def test_unknown_optimizer_and_schedule():
    stage = Stage()
    with pytest.raises(DataError, match="opt='rmsprob' is not an optimizer; did you mean 'rmsprop'.*[?] .valid: sgd, "
                                        "adam, adamw, schedulefree_adamw, .*rmsprop"):
        build_optimizer(dataclasses.replace(stage, opt="rmsprob"), tiny_groups(stage))
    opt = build_optimizer(stage, tiny_groups(stage))
    with pytest.raises(DataError, match="unknown schedule 'poly'"):
        build_scheduler(dataclasses.replace(stage, sched="poly"), opt, 3)


# ----- schedule shapes ------------------------------------------------------------------

def test_constant_with_linear_warmup():
    lrs, _ = lr_sequence(Stage(epochs=3, lr=0.4, sched="const", warmup=1), spe=4)
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4] + [0.4] * 8)


def test_resnet_steps_down_by_ten_every_third():
    (stage,) = get_recipe("resnet")(epochs=6, size=96)
    lrs, _ = lr_sequence(stage, spe=5)
    assert lrs == pytest.approx([0.1] * 10 + [0.01] * 10 + [0.001] * 10)


def test_densenet_divides_at_half_and_three_quarters():
    (stage,) = get_recipe("densenet")(epochs=8, size=96)
    lrs, _ = lr_sequence(stage, spe=3)
    assert lrs == pytest.approx([0.1] * 12 + [0.01] * 6 + [0.001] * 6)


def test_multistep_in_epochs_matches_torch():
    stage = Stage(epochs=9, lr=0.3, sched="multistep", milestones=(2 / 9, 5 / 9), gamma=0.5)
    lrs, _ = lr_sequence(stage, spe=1)
    o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    ref = torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5], gamma=0.5)
    want = []
    for _ in range(9):
        want.append(o.param_groups[0]["lr"])
        o.step()
        ref.step()
    assert lrs == pytest.approx(want)


def test_cosine_matches_torch_and_ends_at_min_lr():
    stage = Stage(epochs=4, lr=0.2, sched="cosine", min_lr=0.002)
    opt, sched = make(stage, 5)
    o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=0.002)
    for _ in range(20):
        assert sched.lr == pytest.approx(o.param_groups[0]["lr"])
        opt.step(); sched.step_batch(); o.step(); ref.step()
    assert sched.lr == pytest.approx(0.002)


def test_onecycle_warms_up_then_anneals():
    stage = Stage(epochs=10, lr=0.1, sched="onecycle", pct_start=0.3)
    lrs, (_, sched) = lr_sequence(stage, spe=10)
    peak = lrs.index(max(lrs))
    assert peak == 30 and lrs[peak] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.1 / 25)
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))
    assert all(a > b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert sched.lr == pytest.approx(0.1 / 25 / 1e4)
    # a floor given: it ends there
    lrs, (_, sched) = lr_sequence(dataclasses.replace(stage, min_lr=1e-3), spe=10)
    assert sched.lr == pytest.approx(1e-3) and min(lrs) > 1e-3


@pytest.mark.parametrize("total", [1, 2, 3, 4, 10])
def test_onecycle_tiny_stages(total):
    # torch's OneCycleLR divides by zero for some of these; ours stays finite and ends low
    lrs, (_, sched) = lr_sequence(Stage(epochs=total, lr=0.1, sched="onecycle", pct_start=0.1), spe=1)
    assert len(lrs) == total and all(0 < x <= 0.1 + 1e-12 for x in lrs)
    assert sched.lr < 1e-5


def test_plateau_drops_after_patience_epochs_and_at_most_max_drops():
    stage = Stage(epochs=12, lr=1.0, sched="plateau", patience=2, factor=0.1, max_drops=2)
    f2 = [0.5, 0.6, 0.6, 0.55, 0.7, 0.69, 0.65, 0.64, 0.63, 0.62, 0.61, 0.6]
    lrs, _ = lr_sequence(stage, spe=2, f2s=f2)
    per_epoch = lrs[::2]
    # no better F2 after epochs 2 and 3 (1-based) -> from epoch 5 at 0.1; epoch 5 improves;
    # epochs 6, 7 do not -> 0.01 from epoch 8; then max_drops is reached
    assert per_epoch == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01])


def test_plateau_matches_torch_reduce_on_plateau():
    # torch waits `patience` bad epochs and drops on the next one; ours drops on the
    # patience-th: same as torch with patience - 1. max_drops = a floor on torch's lr.
    rng = random.Random(0)
    for trial in range(50):
        patience, max_drops = rng.randint(1, 3), rng.randint(0, 3)
        f2 = [round(rng.random(), 1) for _ in range(15)]
        assert plateau_drops(f2, patience, max_drops) == _torch_drops(f2, patience, max_drops)


def _torch_drops(f2, patience, max_drops):
    o = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max", factor=0.5, patience=patience - 1,
                                                     threshold=0.0, threshold_mode="abs",
                                                     min_lr=0.5 ** max_drops, eps=0.0)
    for f in f2:
        ref.step(f)
    return round(-math.log2(o.param_groups[0]["lr"]))


def test_min_lr_floor_for_step_and_plateau():
    stage = Stage(epochs=6, lr=1.0, sched="step", step=1 / 3, gamma=0.1, min_lr=0.05)
    lrs, _ = lr_sequence(stage, spe=1)
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.05, 0.05])


# ----- discriminative lrs and resume ----------------------------------------------------

SCHEDULE_STAGES = [
    Stage(epochs=4, lr=0.1, sched="const", warmup=1, lr_mult=0.3),
    Stage(epochs=4, lr=0.1, sched="step", step=0.5, lr_mult=0.3),
    Stage(epochs=4, lr=0.1, sched="multistep", milestones=(0.25, 0.75), lr_mult=0.3, warmup=0.5),
    Stage(epochs=4, lr=0.1, sched="cosine", warmup=1, min_lr=1e-4, lr_mult=0.3),
    Stage(epochs=4, lr=0.1, sched="onecycle", lr_mult=0.3, opt="sgd"),
    Stage(epochs=4, lr=0.1, sched="plateau", patience=1, lr_mult=0.3, min_lr=2e-4, opt="adam"),
]
F2 = [0.5, 0.4, 0.6, 0.3]


@pytest.mark.parametrize("stage", SCHEDULE_STAGES, ids=lambda s: s.sched)
def test_discriminative_ratios_constant(stage):
    rows, _ = lr_sequence(stage, spe=3, f2s=F2, all_groups=True)
    for lo, mid, head in rows:
        assert lo / head == pytest.approx(0.09, rel=1e-12) and mid / head == pytest.approx(0.3, rel=1e-12)
    assert len({r[2] for r in rows}) > 1   # the schedule did move


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("stage", SCHEDULE_STAGES, ids=lambda s: s.sched)
@pytest.mark.parametrize("k", [0, 1, 3, 5, 6, 11])
@pytest.mark.parametrize("optimizer_first", [True, False])
def test_resume_gives_the_same_lr_sequence(stage, k, optimizer_first):
    spe = 3
    whole, _ = lr_sequence(stage, spe, f2s=F2, all_groups=True)
    part, (opt, sched) = lr_sequence(stage, spe, f2s=F2, stop=k, all_groups=True)
    saved = _roundtrip({"opt": opt.state_dict(), "sched": sched.state_dict()})
    opt2, sched2 = make(stage, spe)          # a fresh process: new optimizer and schedule
    if optimizer_first:                      # the trainer's order; the other must work too
        opt2.load_state_dict(saved["opt"])
        sched2.load_state_dict(saved["sched"])
    else:
        sched2.load_state_dict(saved["sched"])
        opt2.load_state_dict(saved["opt"])
    assert sched2.steps == k
    rest, _ = lr_sequence(stage, spe, f2s=F2, start=(opt2, sched2), all_groups=True)
    assert part + rest == whole              # exactly, not approximately


def test_load_refuses_another_epoch_length():
    stage = SCHEDULE_STAGES[1]
    _, sched = make(stage, 3)
    _, other = make(stage, 4)
    with pytest.raises(DataError, match="3 steps per epoch.*4 steps per epoch"):
        other.load_state_dict(sched.state_dict())


# ----- every recipe builds what it names ------------------------------------------------

@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_recipe_builds_its_optimizer_and_schedule(name):
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
    for stage in get_recipe(name)(epochs=6, size=96):
        opt, sched = make(stage, 4)
        assert type(opt) is cls[stage.opt]
        head = opt.param_groups[-1]
        assert head["weight_decay"] == stage.wd
        if stage.opt == "sgd":
            assert head["momentum"] == stage.momentum and head["nesterov"] == stage.nesterov
        start = stage.lr / 25 if stage.sched == "onecycle" else stage.lr
        assert sched.lr == pytest.approx(start)
        lrs, _ = lr_sequence(stage, 4, f2s=[0.5] * stage.epochs, start=(opt, sched))
        assert all(0 < x <= stage.lr * (1 + 1e-12) for x in lrs)
        if stage.sched in ("step", "multistep", "plateau", "onecycle"):
            assert sched.lr < stage.lr   # it decayed (plateau: F2 never improved)
