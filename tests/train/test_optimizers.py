"""utils/train/optimizers.py: optimizers by name, their options, schedule-free weight modes,
and the layer-decay groups of utils/models/layer_groups.py."""
import dataclasses

import pytest
import torch

from utils.common.errors import DataError
from utils.models.factory import create_model
from utils.models.layer_groups import named_layer_groups, param_groups
from utils.train.optimizers import (eval_weights, optimizer_names, param_group_rows, parse_opt_flag,
                                    weights_mode)
from utils.train.stages import resolve_stages
from utils.train.schedule import build_optimizer, group_lrs
from utils.train.stage import Stage, parse_stages


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("tiny_cnn", 3, pretrained=False)


def _steps(model, optimizer, n=4, seed=1):
    """n optimizer steps on fixed random batches; the weights after them."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(4, 3, 16, 16, generator=g)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _previous(stage, groups):
    """The optimizer as build_optimizer made it before optimizers came by name, from torch.optim."""
    groups = [dict(g) for g in groups]
    if not any("lr" in g for g in groups):
        for g, lr in zip(groups, group_lrs(stage, len(groups))):
            g["lr"] = lr
    for g in groups:
        g.setdefault("lr", stage.lr)
        g["weight_decay"] = 0.0 if g.get("weight_decay") == 0 else stage.wd
    if stage.opt == "sgd":
        return torch.optim.SGD(groups, lr=stage.lr, momentum=stage.momentum, weight_decay=stage.wd,
                               nesterov=stage.nesterov and stage.momentum > 0)
    cls = torch.optim.Adam if stage.opt == "adam" else torch.optim.AdamW
    return cls(groups, lr=stage.lr, betas=(stage.momentum, 0.999), weight_decay=stage.wd)


@pytest.mark.parametrize("opt,nesterov", [("sgd", False), ("sgd", True), ("adam", False), ("adamw", False)])
def test_torch_optimizers_give_exactly_the_previous_numbers(opt, nesterov):
    stage = Stage(opt=opt, lr=0.05, wd=0.01, momentum=0.8, nesterov=nesterov, lr_mult=0.5)
    results = []
    for build in (build_optimizer, _previous):
        model = _model()
        groups = param_groups(model, "all", stage.lr, stage.lr_mult, stage.wd)
        results.append(_steps(model, build(stage, groups)))
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k
    assert any(not torch.equal(results[0][k], _model().state_dict()[k]) for k in results[0])  # it did learn


def test_timm_optimizer_keeps_the_groups_lrs_and_weight_decays():
    stage = Stage(opt="lion", lr=1e-3, wd=0.1, lr_mult=0.5, opt_args={"betas": (0.9, 0.95)})
    model = _model()
    optimizer = build_optimizer(stage, param_groups(model, "all", stage.lr, stage.lr_mult, stage.wd))
    assert type(optimizer).__name__ == "Lion"
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[-1] == pytest.approx(1e-3) and lrs[0] < lrs[-1]
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.1}
    assert all(g["betas"] == (0.9, 0.95) for g in optimizer.param_groups)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    after = _steps(model, optimizer, n=2)
    assert any(not torch.equal(before[k], after[k]) for k in after)


def test_every_timm_name_is_valid_and_options_are_checked():
    from timm.optim import list_optimizers

    assert set(list_optimizers()) | {"schedulefree_adamw"} <= set(optimizer_names())
    assert parse_opt_flag("lion:betas=0.9/0.99,caution=true") == ("lion", {"betas": (0.9, 0.99), "caution": True})
    (s,) = parse_stages("opt=adan,opt.no_prox=yes")
    assert s.opt == "adan" and s.opt_args == {"no_prox": True}
    with pytest.raises(DataError, match=r"--opt: opt=lion: unknown option\(s\) momentum .valid: betas"):
        resolve_stages(stages="epochs=1", opt="lion:momentum=0.9")
    with pytest.raises(DataError, match="opt='lionn' is not an optimizer"):
        resolve_stages(stages="epochs=1", opt="lionn")
    with pytest.raises(DataError, match="--layer-decay 0.0 must be in"):
        resolve_stages(stages="epochs=1", layer_decay=0.0)
    plan = resolve_stages(stages="epochs=1,opt=sgd,opt.dampening=0.1;epochs=1", opt="nadamw", layer_decay=0.7)
    assert [(s.opt, s.opt_args, s.layer_decay) for s in plan] == [("nadamw", {}, 0.7)] * 2
    # a stage naming another optimizer starts without the previous one's options
    a, b = parse_stages("opt=lion,opt.betas=0.9/0.99;opt=adamw")
    assert a.opt_args == {"betas": (0.9, 0.99)} and b.opt_args == {}
    assert Stage.from_dict(a.to_dict()) == a  # JSON lists back to tuples


def _schedule_free(model):
    stage = Stage(opt="schedulefree_adamw", lr=0.05, wd=0.0, sched="const")
    return build_optimizer(stage, param_groups(model, "all", stage.lr, 1.0, 0.0))


def test_schedule_free_eval_weights_leave_the_training_path_unchanged():
    plain, checked = _model(), _model()
    o1, o2 = _schedule_free(plain), _schedule_free(checked)
    weights_mode(o1, True)
    weights_mode(o2, True)
    for i in range(3):
        w1 = _steps(plain, o1, n=2, seed=i)
        _steps(checked, o2, n=2, seed=i)
        with eval_weights(o2):  # as a checkpoint write does
            averaged = {k: v.clone() for k, v in checked.state_dict().items()}
        weights_mode(o2, False)  # as validation does, then the next epoch
        weights_mode(o2, True)
    for k in w1:
        assert torch.equal(w1[k], checked.state_dict()[k]), k
    assert any(not torch.equal(averaged[k], w1[k]) for k in w1)  # eval mode: the averaged weights


def test_schedule_free_state_restores_train_weights_exactly():
    model = _model()
    opt = _schedule_free(model)
    weights_mode(opt, True)
    _steps(model, opt, n=3)
    train_w = {k: v.clone() for k, v in model.state_dict().items()}
    weights_mode(opt, False)
    saved_model, saved_opt = {k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()
    saved_opt = {"state": {k: dict(v) for k, v in saved_opt["state"].items()},
                 "param_groups": saved_opt["param_groups"]}
    fresh = _model(seed=5)
    fresh.load_state_dict(saved_model)
    opt2 = _schedule_free(fresh)
    opt2.load_state_dict(saved_opt)
    weights_mode(opt2, True)
    for k in train_w:
        assert torch.equal(fresh.state_dict()[k], train_w[k]), k


def test_layer_decay_groups_scale_per_block_and_keep_no_decay_rules():
    model = create_model("resnet18", 3, pretrained=False)
    groups = param_groups(model, "all", 1.0, lr_mult=0.1, weight_decay=0.05, layer_decay=0.5)
    scales = [g["lr_scale"] for g in groups]
    assert scales == sorted(scales) and scales[-1] == 1.0 and len(set(scales)) >= 8
    assert groups[-1]["name"].startswith("head")
    for g in groups:
        assert g["lr"] == pytest.approx(g["lr_scale"])
        assert g["weight_decay"] == (0.0 if g["name"].endswith(".no_wd") else 0.05)
        if g["name"].endswith(".no_wd"):
            assert all(p.ndim <= 1 for p in g["params"])
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))
    # train=head with layer decay: only the head trains, at lr
    head = param_groups(model, "head", 1.0, layer_decay=0.5)
    assert {g["lr_scale"] for g in head} == {1.0}
    assert sum(len(g["params"]) for g in head) == len(named_layer_groups(model)[-1])


def test_param_group_rows_stem_first_head_last():
    model = _model()
    stage = dataclasses.replace(Stage(), layer_decay=0.5, wd=0.01)
    optimizer = build_optimizer(stage, param_groups(model, "all", stage.lr, 1.0, stage.wd, stage.layer_decay))
    rows = param_group_rows(2, optimizer)
    assert [r["stage"] for r in rows] == [2] * len(rows)
    assert rows[-1]["group"].startswith("head") and rows[-1]["lr_scale"] == 1.0
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())


def test_a_misspelt_optimizer_or_option_gets_a_suggestion_and_a_text_value_a_clear_line():
    from utils.train.optimizers import optimizer_problems

    assert "opt='adamww' is not an optimizer; did you mean 'adamw'" in optimizer_problems("adamww", {})[0]
    assert "opt='Lion' is not an optimizer; did you mean 'lion'" in optimizer_problems("Lion", {})[0]
    assert "beta: did you mean betas?" in optimizer_problems("lion", {"beta": (0.9, 0.99)})[0]
    for value in ("abc", (0.9, "x"), None):
        assert optimizer_problems("lion", {"betas": value}) == [
            f"opt=lion: betas={'/'.join(map(str, value)) if isinstance(value, tuple) else value} is not 2 numbers "
            f"separated by / (default 0.9/0.99; e.g. betas=0.9/0.99)"]
    assert optimizer_problems("sgd", {"dampening": "x"}) == ["opt=sgd: dampening=x is not a number (default 0; e.g. "
                                                            "dampening=0)"]
    with pytest.raises(DataError, match="--opt: opt=lion: betas=abc is not 2 numbers"):
        resolve_stages(stages="epochs=1", opt="lion:betas=abc")
    assert optimizer_problems("lion", {"betas": (0.9, 0.99)}) == []
    assert optimizer_problems("adamw", {"amsgrad": True}) == []
