"""Optimizers by name: the stage key `opt=` and `--opt`, their options, and schedule-free weights.

Three names are built here from torch.optim, exactly as they always were: sgd (momentum,
nesterov), adam and adamw (betas=(momentum, 0.999)). `schedulefree_adamw` is the
schedule-free AdamW of the `schedulefree` package (Defazio et al. 2024, "The Road Less
Scheduled"). Every other name of `timm.optim.list_optimizers()` (lion, lamb, adan, adopt,
nadamw, muon, ...) is built by `timm.optim.create_optimizer_v2` over the same parameter
groups (utils/models/layer_groups.py: their lrs and weight decays are kept).

Options of an optimizer (`opt.betas=0.9/0.99` in a stage, `--opt lion:betas=0.9/0.99`,
`opt_args: {betas: [0.9, 0.99]}` in a config file) are its constructor's keywords; `/`
separates the numbers of a tuple.

A schedule-free optimizer keeps two copies of the weights: the ones gradients are taken at
(train mode) and their average (eval mode), the ones to validate and save. `weights_mode`
switches between them; `eval_weights` holds eval mode around a checkpoint write. Going to
eval mode keeps a copy of the train-mode weights in the optimizer's state (so in last.pt),
and going back restores that copy: the training trajectory is bit for bit the same however
often a run validates or checkpoints, and a resumed run continues from the same weights.
"""
import contextlib
import difflib
import functools
import inspect

import pandas as pd
from timm.optim import create_optimizer_v2, get_optimizer_class, list_optimizers
import torch

from utils.common.atomic import atomic_write_csv
from utils.common.errors import DataError
from utils.common.options import parse_item, parse_value
from utils.common.text import read_csv

OWN = ("sgd", "adam", "adamw")
SCHEDULE_FREE = ("schedulefree_adamw",)
_TRAIN_WEIGHTS = "train_weights"  # state key of the train-mode weights while in eval mode
_NOT_OPTIONS = ("self", "params", "lr", "weight_decay", "foreach")  # set by the stage, not opt.KEY


@functools.lru_cache(maxsize=None)
def optimizer_names():
    """Every valid `opt=` name (tuple of str): ours, then schedule-free, then timm's others."""
    return OWN + SCHEDULE_FREE + tuple(n for n in list_optimizers() if n not in OWN)


def _optimizer_class(name):
    """The class (or factory) behind `name`; DataError when its package is missing."""
    if name in OWN:
        return {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    if name in SCHEDULE_FREE:
        try:
            from schedulefree import AdamWScheduleFree  # lazy: an optional package, needed by this optimizer only
        except ImportError:
            raise DataError("opt=schedulefree_adamw needs the schedulefree package: pip install schedulefree") \
                from None
        return AdamWScheduleFree

    try:
        return get_optimizer_class(name, bind_defaults=False)
    except (ImportError, AssertionError, ValueError) as e:  # bitsandbytes ones: the package and CUDA
        raise DataError(f"opt={name} is not available on this machine: {e}") from None


def option_names(name):
    """The options `opt.KEY=` takes for optimizer `name` (tuple of str, its constructor's keywords)."""
    params = inspect.signature(_optimizer_class(name)).parameters
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(k for k, p in params.items() if k not in _NOT_OPTIONS and p.kind in kinds)


def option_value(value):
    """One optimizer option as typed or from JSON/YAML: `0.9/0.99` or a list -> a tuple of
    parse_value's values; anything else -> parse_value(value)."""
    if isinstance(value, str) and "/" in value:
        return tuple(parse_value(v) for v in value.split("/") if v.strip())
    if isinstance(value, (list, tuple)):
        return tuple(parse_value(v) for v in value)
    return parse_value(value)


def parse_opt_flag(text):
    """--opt `NAME[:key=value,...]` -> (name, {option: value}); DataError naming --opt when bad."""
    name, options = parse_item(text, "--opt")
    return name, {k: option_value(v) for k, v in options.items()}


def optimizer_problems(name, options):
    """What is wrong with optimizer `name` and its `options` (list of str, empty when fine).

    Builds the optimizer on one dummy parameter, so a bad value is found before a run starts.
    """
    if name not in optimizer_names():
        close = difflib.get_close_matches(str(name).lower(), optimizer_names(), n=3, cutoff=0.6)
        guess = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        return [f"opt={name!r} is not an optimizer{guess} (valid: {', '.join(optimizer_names())})"]
    try:
        valid = option_names(name)
    except DataError as e:
        return [str(e)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        close = {k: difflib.get_close_matches(k, valid, n=1) for k in unknown}
        guess = "".join(f"; {k}: did you mean {c[0]}?" for k, c in close.items() if c)
        return [f"opt={name}: unknown option(s) {', '.join(unknown)}{guess} (valid: {', '.join(valid) or 'none'})"]
    if wrong := value_problems(name, options):
        return wrong
    try:
        _construct(name, [{"params": [torch.nn.Parameter(torch.zeros(2, 2))]}], 1e-3, 0.0, 0.9, False, options)
    except (TypeError, ValueError, RuntimeError, ImportError, AssertionError) as e:
        return [f"opt={name} with {options or 'no options'}: {e}"]
    return []


def _shown(value):
    """An option value as typed: a tuple as 0.9/0.99."""
    return "/".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def value_problems(name, options):
    """Options of optimizer `name` whose value is text where the constructor's default is a number
    or a tuple of numbers (`betas=abc`): one line each, with the default as it is typed."""
    params = inspect.signature(_optimizer_class(name)).parameters
    out = []
    for key, value in options.items():
        default = params[key].default
        numeric = [default] if isinstance(default, (int, float)) and not isinstance(default, bool) else \
            list(default) if isinstance(default, (tuple, list)) and default and \
            all(isinstance(v, (int, float)) for v in default) else None
        got = list(value) if isinstance(value, (tuple, list)) else [value]
        if numeric is not None and any(isinstance(v, str) or v is None for v in got):
            what = f"{len(numeric)} numbers separated by /" if isinstance(default, (tuple, list)) else "a number"
            out.append(f"opt={name}: {key}={_shown(value)} is not {what} (default {_shown(default)}; e.g. "
                       f"{key}={_shown(default)})")
    return out


def _construct(name, groups, lr, wd, momentum, nesterov, options):
    """The optimizer `name` over `groups` (dicts, each with its own lr and weight_decay)."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=wd,
                               nesterov=nesterov and momentum > 0, **options)
    if name in ("adam", "adamw"):
        options = {"betas": (momentum, 0.999), **options}
        return _optimizer_class(name)(groups, lr=lr, weight_decay=wd, **options)
    if name in SCHEDULE_FREE:
        options = {"betas": (momentum, 0.999), **options}
        return _optimizer_class(name)(groups, lr=lr, weight_decay=wd, **options)

    return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=wd, momentum=momentum, **options)


def create_optimizer(stage, groups):
    """The optimizer of `stage` (its opt, opt_args, lr, wd, momentum, nesterov) over `groups`
    (dicts with params, lr, weight_decay). DataError for an unknown name or bad options."""
    problems = optimizer_problems(stage.opt, stage.opt_args)
    if problems:
        raise DataError("; ".join(problems))
    return _construct(stage.opt, groups, stage.lr, stage.wd, stage.momentum, stage.nesterov,
                      dict(stage.opt_args))


def has_weight_modes(optimizer):
    """Whether `optimizer` keeps train and eval weights (schedule-free)."""
    return callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))


def weights_mode(optimizer, train):
    """Put the model's weights of a schedule-free `optimizer` in train (True) or eval mode;
    nothing for other optimizers. Returns whether it was in train mode before.

    Eval mode keeps the train-mode weights in the state (key 'train_weights'); train mode
    copies them back when every stepped parameter has its copy (else the optimizer's train()).
    """
    if optimizer is None or not has_weight_modes(optimizer):
        return False
    was = bool(optimizer.param_groups[0].get("train_mode", False))
    if train == was:
        return was
    params = [p for g in optimizer.param_groups for p in g["params"] if "z" in optimizer.state[p]]
    if not train:
        for p in params:
            optimizer.state[p][_TRAIN_WEIGHTS] = p.detach().clone()
        optimizer.eval()
        return was
    saved = [optimizer.state[p].pop(_TRAIN_WEIGHTS, None) for p in params]
    if any(w is None for w in saved):
        optimizer.train()
        return was
    with torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)
    for g in optimizer.param_groups:
        g["train_mode"] = True
    return was


@contextlib.contextmanager
def eval_weights(optimizer):
    """Hold the eval-mode weights of a schedule-free `optimizer` inside (to validate or save),
    then return to the mode it was in; nothing for other optimizers."""
    was = weights_mode(optimizer, False)
    try:
        yield
    finally:
        if was:
            weights_mode(optimizer, True)


def param_group_rows(stage_number, optimizer):
    """One dict per optimizer group of stage `stage_number` (1-based), stem first, head last:
    stage, group (its name), lr_scale (its lr over the head's), lr, params (weights, count),
    tensors (count), weight_decay."""
    rows = []
    for i, g in enumerate(optimizer.param_groups):
        rows.append({"stage": stage_number, "group": g.get("name", f"group{i}"),
                     "lr_scale": float(g.get("lr_scale", 1.0)), "lr": float(g.get("base_lr", g["lr"])),
                     "params": sum(p.numel() for p in g["params"]), "tensors": len(g["params"]),
                     "weight_decay": float(g.get("weight_decay", 0.0))})
    return rows


def record_param_groups(path, stage_number, optimizer):
    """Write RUN/param_groups.csv (atomically): the rows of param_group_rows for this stage
    replace the stage's earlier rows (a resumed stage), the other stages' rows stay."""
    new = pd.DataFrame(param_group_rows(stage_number, optimizer))
    if path.exists():
        old = read_csv(path)
        new = pd.concat([old[old["stage"] != stage_number], new]).sort_values("stage", kind="stable")
    atomic_write_csv(path, new)
