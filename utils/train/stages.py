"""The run's stages: one source, then the flags that adjust them.

The stages come from exactly one source:

    --recipe NAME     a named plan from the papers (utils/train/recipes.py), a function of (epochs, size)
    --stages SPEC     `;`-separated stages of `,`-separated key=value, e.g.
                      "epochs=2,size=128,lr=1e-3,train=head;epochs=8,size=224,lr=3e-4,train=all"
                      (keys: utils/train/stage.py)
    --config FILE     JSON or YAML: {"stages": [{...}, ...]} or a bare list of stage dicts
                      (a mapping may also hold a "recipe" name instead, or other settings;
                      utils/train/config_file.py)

Then the flags --epochs, --size, --bs, --lr, --accum, --opt and --layer-decay adjust the plan (see `resolve_stages`;
utils/train/stage_scaling.py). Precedence: Stage defaults < caller defaults < config file <
--recipe or --stages < flags.
"""
import dataclasses

from utils.common.errors import DataError, report_problems
from utils.common.options import as_float, as_int
from utils.train.config_file import file_stages, read_config_file
from utils.train.optimizers import optimizer_problems, parse_opt_flag
from utils.train.stage_scaling import scale_bs, scale_epochs, scale_lr, scale_sizes
from utils.train.recipes import DEFAULT_RECIPE, get_recipe
from utils.train.stage import build_stages, split_spec

# flag -> (converter, test, what the value must be)
_FLAG_RULES = {
    "epochs": (as_int, lambda v: v >= 1, ">= 1"),
    "size": (as_int, lambda v: v >= 8, ">= 8 px"),
    "bs": (as_int, lambda v: v >= 1, ">= 1"),
    "lr": (as_float, lambda v: v > 0, "> 0"),
    "accum": (as_int, lambda v: v >= 1, ">= 1"),
    "layer_decay": (as_float, lambda v: 0 < v <= 1, "in (0, 1]"),
}


def _check_flag(name, value):
    """--name's value converted and checked (None stays None); DataError saying what it must be."""
    if value is None:
        return None
    convert, ok, rule = _FLAG_RULES[name]
    flag = "--" + name.replace("_", "-")
    v = convert(value, f"{flag} {value!r}")
    if not ok(v):
        raise DataError(f"{flag} {value!r} must be {rule}")
    return v


def _raw_source(recipe, stages, config_file):
    """(raw stage dicts, where they come from, recipe name): raw is None for a recipe."""
    data = read_config_file(config_file) if config_file is not None else {}
    if "stages" in data:
        from_file = file_stages(config_file, data)  # checks it is a list, without 'recipe'
    if stages is not None:
        raw, problems = split_spec(stages)
        report_problems("bad stage plan in --stages", problems)
        return raw, "--stages", recipe
    if recipe is None and "stages" in data:
        return from_file, str(config_file), None
    return None, None, data.get("recipe") if recipe is None else recipe


def resolve_stages(recipe=None, stages=None, config_file=None, bs=None, size=None, epochs=None,
                 lr=None, defaults=None, accum=None, opt=None, layer_decay=None):
    """The run's list of Stages from one plan source and the override flags.

    Source: recipe: a RECIPES name, built for `epochs` and `size` (its own defaults when
    None); stages: a --stages string; config_file: a JSON/YAML file whose 'stages' list
    is used when neither recipe nor stages is given (the command line wins over the file;
    a file without 'stages' only holds the caller's other settings). Nothing given: the
    recipe 'finetune'. defaults: {field: value} the first stage of --stages/--config
    starts from (recipes ignore it).
    Flags (None = not given), applied in this order after the source:
      epochs: the total; --stages/--config plans are redistributed in proportion to their
        stages' epochs, at least 1 each (step/milestones are fractions, so they follow;
        warm-up is cut to the stage's length).
      size: the final stage's size; earlier stages scale in proportion, rounded to a
        multiple of 32 (min 32), and a stage smaller than the final one stays no larger.
        Applies to every source, explicit sizes in --stages included (flags win).
      bs: the largest batch in the plan becomes bs and every stage's batch scales by the
        same factor, its lr and min_lr linearly with it (Goyal et al. 2017). A
        --stages/--config plan that sets no bs anywhere just takes bs, lrs unchanged.
      lr: the last stage's lr becomes lr exactly; the others keep their ratio to it.
      accum: every stage's gradient accumulation (micro-batches per optimizer step).
      opt: every stage's optimizer, 'NAME[:key=value,...]' (its options replace the stages').
      layer_decay: every stage's layer-wise lr decay (utils/train/stage.py).
    Precedence: Stage defaults < `defaults` < config file < --recipe or --stages < flags.
    Raises DataError for --recipe with --stages, an unknown recipe or any malformed value.
    """
    if recipe is not None and stages is not None:
        raise DataError("give one stage plan source, not --recipe and --stages")
    epochs, size, bs = _check_flag("epochs", epochs), _check_flag("size", size), _check_flag("bs", bs)
    lr, accum = _check_flag("lr", lr), _check_flag("accum", accum)
    layer_decay = _check_flag("layer_decay", layer_decay)
    opt = None if opt is None else parse_opt_flag(opt)
    raw, where, recipe = _raw_source(recipe, stages, config_file)
    if raw is not None:
        if bs is not None and not any(isinstance(r, dict) and "bs" in r for r in raw):
            defaults, bs = {**(defaults or {}), "bs": bs}, None  # nothing to scale from
        plan = build_stages(raw, where, defaults)
        plan = plan if epochs is None else scale_epochs(plan, epochs)
        plan = plan if size is None else scale_sizes(plan, size)
    else:
        plan = get_recipe(recipe or DEFAULT_RECIPE)(epochs, size)
    if bs is not None:
        plan = scale_bs(plan, bs)
    if lr is not None:
        plan = scale_lr(plan, lr)
    if accum is not None:
        plan = [dataclasses.replace(s, accum=accum) for s in plan]
    if layer_decay is not None:
        plan = [dataclasses.replace(s, layer_decay=layer_decay) for s in plan]
    if opt is not None:
        plan = _set_optimizer(plan, *opt)
    return plan


def _set_optimizer(plan, name, options):
    """Every stage with optimizer `name` and its `options` (from --opt); DataError naming --opt."""
    problems = optimizer_problems(name, options)
    if problems:
        raise DataError(f"--opt: {'; '.join(problems)}")
    return [dataclasses.replace(s, opt=name, opt_args=dict(options)) for s in plan]
