"""Layer groups for transfer learning: freezing, discriminative learning rates, frozen BatchNorm.

`layer_groups` splits the parameters of a model from utils.models.factory stem -> head into
a handful of groups; `set_trainable(model, "head" | "all" | N)` freezes all but the head and
the last N body groups; `param_groups` gives the optimizer discriminative learning rates
(lr * lr_mult**k for the group k steps before the head), or with a layer decay D per-block
rates (lr * D**k over `fine_blocks`: timm's fine group_matcher, else module order), with
no weight decay on biases and norm weights. After every `model.train()`, call `freeze_bn(model)` so frozen
BatchNorm layers keep their ImageNet running statistics.
"""
from timm.models._manipulate import group_parameters
from torch import nn

from utils.common.errors import DataError
from utils.models.factory import in_head, model_meta, unwrap_model
from utils.models.heads import HeadNet

BODY_GROUPS = 4  # layer groups before the head, when the network is deep enough
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def named_layer_groups(model):
    """Like layer_groups, with names: a list of lists of (name, Parameter), stem to head."""
    model = unwrap_model(model)
    head = model_meta(model)["head"]
    params = dict(model.named_parameters())
    units = _timm_units(model, head) if model_meta(model)["source"] == "timm" else None
    if units is None:
        units = _module_units(model, head)
    groups = [[(n, params[n]) for n in g] for g in _merge_units(units, BODY_GROUPS)]
    groups.append([(n, p) for n, p in params.items() if in_head(n, head)])
    seen = [n for g in groups for n, _ in g]
    if sorted(seen) != sorted(params):
        raise RuntimeError(f"layer groups of {model_meta(model)['arch']} do not cover every "
                           f"parameter exactly once")
    return groups


def layer_groups(model):
    """Split the parameters into groups from the stem (index 0) to the classifier (last).

    The last group is the classifier alone; before it come up to BODY_GROUPS (4) groups of
    consecutive network stages (resnet: stem+layer1, layer2, layer3, layer4). Every
    parameter is in exactly one group. Returns a list of lists of Parameters.
    """
    return [[p for _, p in g] for g in named_layer_groups(model)]


def _numel(names, params):
    return sum(params[n].numel() for n in names)


def _timm_units(model, head, coarse=True):
    """Ordered lists of parameter names from timm's coarse (or fine) group_matcher, or None."""
    # a timm model under a --head: its groups, named as HeadNet names them
    inner, prefix = (model.body, "body.") if isinstance(model, HeadNet) else (model, "")
    try:
        groups = group_parameters(inner, inner.group_matcher(coarse=coarse))
    except (AttributeError, NotImplementedError):
        return None
    units = [[prefix + n for n in names if not in_head(prefix + n, head)]
             for _, names in sorted(groups.items())]
    return [u for u in units if u]


def _children_units(module, prefix, head):
    """Split a module into ordered units (module or None, [param names]).

    Direct parameters form one unit; each child with children is a unit of its own; runs
    of leaf layers (conv, bn, ...) form one unit that closes after a pooling layer, so a
    flat VGG `features` splits into its five blocks.
    """
    def names_of(mod, pre):
        return [pre + n for n, _ in mod.named_parameters() if not in_head(pre + n, head)]

    units, run = [], []
    direct = [prefix + n for n, _ in module.named_parameters(recurse=False)
              if not in_head(prefix + n, head)]
    if direct:
        units.append((None, direct))
    for child_name, child in module.named_children():
        names = names_of(child, f"{prefix}{child_name}.")
        if next(child.children(), None) is None:  # a leaf layer
            run += names
            if run and isinstance(child, _POOLS):
                units.append((None, run))
                run = []
            continue
        if run:
            units.append((None, run))
            run = []
        if names:
            units.append(((child, f"{prefix}{child_name}."), names))
    if run:
        units.append((None, run))
    return units


def _module_units(model, head):
    """Ordered lists of parameter names for any nn.Module, found from its structure.

    Start from the top-level children; while there are fewer units than BODY_GROUPS, or
    one unit holds over 90% of the network and splits into at least BODY_GROUPS pieces (a
    transformer's block list), replace the largest splittable unit by its children.
    """
    params = dict(model.named_parameters())
    units = _children_units(model, "", head)
    total = sum(_numel(n, params) for _, n in units)
    while True:
        candidates = []
        for i, (mod, names) in enumerate(units):
            if mod is not None:
                parts = _children_units(mod[0], mod[1], head)
                while len(parts) == 1 and parts[0][0] is not None:  # a lone wrapper: look inside
                    parts = _children_units(*parts[0][0], head)
                if len(parts) >= 2:
                    candidates.append((_numel(names, params), i, parts))
        if not candidates:
            break
        size, i, parts = max(candidates, key=lambda c: c[0])
        if len(units) >= BODY_GROUPS and not (size > 0.9 * total and len(parts) >= BODY_GROUPS):
            break
        units[i:i + 1] = parts
    return [names for _, names in units]


def fine_blocks(model):
    """The blocks of layer decay: lists of (name, Parameter), stem first, the head last.

    timm models: one block per group of timm's fine group_matcher (a stem, each block of
    each stage, a final norm); other networks: their top-level layers, each split once into
    its children (resnet: stem, then every bottleneck). The head is its own last block;
    every parameter is in exactly one block.
    """
    model = unwrap_model(model)
    head = model_meta(model)["head"]
    params = dict(model.named_parameters())
    units = _timm_units(model, head, coarse=False) if model_meta(model)["source"] == "timm" else None
    if units is None:
        units = _module_blocks(model, head)
    blocks = [[(n, params[n]) for n in u] for u in units if u]
    blocks.append([(n, p) for n, p in params.items() if in_head(n, head)])
    if sorted(n for b in blocks for n, _ in b) != sorted(params):
        raise RuntimeError(f"blocks of {model_meta(model)['arch']} do not cover every parameter exactly once")
    return blocks


def _module_blocks(model, head):
    """Parameter names of any nn.Module in blocks: top-level units (inside a lone wrapper),
    each module unit split once into its own units."""
    units = _children_units(model, "", head)
    while len(units) == 1 and units[0][0] is not None:
        units = _children_units(*units[0][0], head)
    blocks = []
    for mod, names in units:
        parts = _children_units(mod[0], mod[1], head) if mod is not None else []
        blocks += [n for _, n in parts] if len(parts) >= 2 else [names]
    return blocks


def _merge_units(units, n_groups):
    """Merge ordered units into at most n_groups consecutive groups of near-equal count.

    With more units than groups, the first unit (the stem) joins the second and the last
    (a final norm or 1x1 conv) joins the one before, then the rest split evenly.
    """
    units = [list(u) for u in units if u]
    if len(units) > n_groups:
        units[0:2] = [units[0] + units[1]]
    if len(units) > n_groups:
        units[-2:] = [units[-2] + units[-1]]
    n = min(n_groups, len(units))
    sizes = [len(units) // n + (1 if i < len(units) % n else 0) for i in range(n)]
    groups, start = [], 0
    for s in sizes:
        groups.append([name for u in units[start:start + s] for name in u])
        start += s
    return groups


# ---------------------------------------------------------------------------- freezing

def parse_train(train, n_body):
    """Number of body groups that train for `train` = 'head', 'all', N or 'N' (clipped)."""
    if isinstance(train, str) and train.strip().lower() in ("head", "all"):
        return 0 if train.strip().lower() == "head" else n_body
    try:
        n = int(train)
        if n < 0 or isinstance(train, float) and n != train:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"train={train!r}: use 'head', 'all' or a number of layer groups "
                        f"0..{n_body} before the head") from None
    return min(n, n_body)


def set_trainable(model, train):
    """Freeze all but the head and the last N body groups; return the trainable groups.

    train: 'head' (the classifier only), 'all', or N / 'N' (the last N groups before the
    head, plus the head; N larger than the number of groups means all). Sets
    requires_grad on every parameter and returns the trainable groups as lists of
    Parameters, earliest first (the head last). Call freeze_bn after each model.train().
    """
    groups = layer_groups(model)
    first = len(groups) - 1 - parse_train(train, len(groups) - 1)
    for i, group in enumerate(groups):
        for p in group:
            p.requires_grad_(i >= first)
    return groups[first:]


def freeze_bn(model, trainable_groups=None, all_layers=False):
    """Put norm layers with running statistics whose weights are frozen into eval mode.

    A BatchNorm layer is frozen when none of its parameters requires grad (or, with
    `trainable_groups` given, none is in those groups), or always with all_layers=True
    (a stage's bn=frozen: statistics fixed, affine weights still trained); in eval mode its
    running mean and variance stop moving and batches are normalised with them. model.train()
    undoes this, so call freeze_bn(model) after every model.train(). Returns the number of
    layers put in eval mode.
    """
    trainable = None if trainable_groups is None else {id(p) for g in trainable_groups for p in g}
    count = 0
    for m in model.modules():
        params = list(m.parameters(recurse=False))
        if not isinstance(m, nn.modules.batchnorm._NormBase) or not params:
            continue
        frozen = all_layers or (not any(p.requires_grad for p in params) if trainable is None
                                 else not any(id(p) in trainable for p in params))
        if frozen:
            m.eval()
            count += 1
    return count


def _no_decay_names(model):
    """Parameters that take no weight decay: biases, norm weights, timm's no_weight_decay()."""
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}
    for mod_name, m in model.named_modules():
        if isinstance(m, _NORMS):
            names.update(f"{mod_name}.{n}" if mod_name else n
                         for n, _ in m.named_parameters(recurse=False))
    if hasattr(model, "no_weight_decay"):
        skip = model.no_weight_decay()
        names.update(n for n, _ in model.named_parameters() if n.split(".")[0] in skip or n in skip)
    return names


def param_groups(model, train, lr, lr_mult=1.0, weight_decay=0.0, layer_decay=None):
    """Apply set_trainable(model, train) and return optimizer param groups for it.

    The head trains at `lr`; the trainable body group k steps before it at
    lr * lr_mult**k (discriminative learning rates, lr_mult < 1 slows earlier layers).
    With `layer_decay` D the groups are fine_blocks instead (named 'block<i>'), block k
    steps before the head at lr * D**k, and lr_mult is not used.
    Each layer group gives up to two dicts: its weights with `weight_decay`, and its
    biases / norm weights / embeddings with none (name suffix '.no_wd'). Every dict has
    params, lr, initial_lr, lr_scale (lr / base lr, for schedulers) weight_decay and name
    ('head', 'group3', ...). Only trainable parameters appear; empty dicts are left out.
    """
    n_trainable = len(set_trainable(model, train))
    base = unwrap_model(model)
    groups = named_layer_groups(base)
    first, kind, mult = len(groups) - n_trainable, "group", lr_mult
    if layer_decay is not None:  # the same trainable parameters, in finer blocks
        groups, kind, mult, first = fine_blocks(base), "block", layer_decay, 0
    no_decay = _no_decay_names(base)
    out = []
    for i in range(first, len(groups)):
        k = len(groups) - 1 - i  # steps before the head
        scale = float(mult) ** k
        name = "head" if k == 0 else f"{kind}{i}"
        for suffix, wd, keep in (("", weight_decay, False), (".no_wd", 0.0, True)):
            params = [p for n, p in groups[i] if (n in no_decay) == keep and p.requires_grad]
            if params:
                out.append(dict(params=params, lr=lr * scale, initial_lr=lr * scale,
                                lr_scale=scale, weight_decay=float(wd), name=name + suffix))
    return out
