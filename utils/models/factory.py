"""Classifiers by name: `create_model`, and the facts that go with a model (`model_meta`).

`create_model("resnet50", num_labels=13, pretrained=True)` builds a torchvision or timm
classifier whose last layer has one output per label (multi-label logits, no sigmoid).
The model carries `model.meta`: the normalisation, native input size and interpolation
that go with its weights, so checkpoints can describe themselves.

Names: torchvision classification names first (resnet50, densenet201, vgg16_bn,
inception_v3, efficientnet_b0, convnext_tiny, ...), then timm names; a prefix picks the
library explicitly (`tv:resnet50`, `timm:resnet50`). `tiny_cnn` is a ~6k-parameter CNN
for tests and quick experiments.

Vision transformers (timm's ViT, DeiT, EVA02, DINOv2, SigLIP, ...) are built with timm's
dynamic_img_size, so they take any side that is a multiple of their patch;
check_input_sizes refuses the other sides before a script writes anything.

ImageNet weights are found (or downloaded) by utils.models.weights; layer groups, freezing
and per-group learning rates for transfer learning are in utils.models.layer_groups.
"""
import difflib
import functools
import logging

import timm
import torch
import torchvision
from torch import nn

from utils.common.errors import DataError
from utils.models.channels import adapt_channels
from utils.models.heads import attach_head, parse_head
from utils.models.weights import (LITE_ARCHS, damaged_weights, load_lite, local_timm_weights, local_torchvision_weights,
                                  offline, torchvision_weights_path)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREFIXES = {"tv": "torchvision", "torchvision": "torchvision", "timm": "timm"}


class TinyCNN(nn.Module):
    """Three conv-BN-ReLU stages (stride 2 each), global average pool, linear head.

    About 6k parameters plus 33 per class: fast enough to train many times in tests.
    """

    def __init__(self, num_classes=1000, width=8):
        super().__init__()

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.stem = stage(3, width)
        self.layer1 = stage(width, 2 * width)
        self.layer2 = stage(2 * width, 4 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


BUILTIN = {"tiny_cnn": TinyCNN}


# ---------------------------------------------------------------------------- names

@functools.lru_cache(maxsize=None)
def list_archs(source=None):
    """Valid architecture names: 'builtin', 'torchvision', 'timm' or all (None), sorted."""
    names = {"builtin": sorted(BUILTIN),
             "torchvision": sorted(torchvision.models.list_models(module=torchvision.models)),
             "timm": sorted(timm.list_models())}
    if source is not None:
        return tuple(names[source])
    return tuple(n for s in ("builtin", "torchvision", "timm") for n in names[s])


def resolve_arch(arch):
    """Map an --arch string to (source, name); source is 'builtin', 'torchvision' or 'timm'.

    Raises DataError listing the closest valid names when nothing matches.
    """
    prefix, _, name = arch.strip().rpartition(":")
    source = PREFIXES.get(prefix.lower()) if prefix else None
    if prefix and source is None:
        raise DataError(f"unknown architecture prefix {prefix!r} in {arch!r}: use tv: or timm:")
    if source in (None, "torchvision") and name in list_archs("builtin"):
        return "builtin", name
    if source in (None, "torchvision") and name in list_archs("torchvision"):
        return "torchvision", name
    if source in (None, "timm") and timm.is_model(name):  # accepts pretrained tags: name.tag
        return "timm", name
    pool = list_archs(source) if source else list_archs()
    lower = {n.lower(): n for n in reversed(pool)}
    close = [lower[n] for n in difflib.get_close_matches(name.lower(), list(lower), n=8, cutoff=0.6)]
    hint = f"closest: {', '.join(close)}" if close else "no close match"
    raise DataError(f"unknown architecture {arch!r} ({hint}). Valid names are torchvision's "
                    "classification models and timm's (timm.list_models()); prefix tv: or timm: "
                    "to choose the library.")


# ---------------------------------------------------------------------------- building

def create_model(arch, num_labels, pretrained=False, drop_rate=None, head=None, channels=3):
    """Build classifier `arch` with `num_labels` outputs (raw logits); return the nn.Module.

    num_labels=None keeps the original ImageNet head (1000 classes). pretrained=True loads
    ImageNet weights from local files only (DataError if missing). drop_rate sets the
    dropout right before the final linear layer (adding one when there is none); None
    keeps the architecture's default. head: None keeps the architecture's pooling and
    classifier; a --head spec (utils.models.heads: avg, max, avgmax, gem, csra, mldecoder)
    replaces both, giving a utils.models.heads.HeadNet (needs num_labels). forward() always
    returns one (B, num_labels) tensor, in train mode too (auxiliary heads of
    inception_v3/googlenet are removed). channels: input bands; other than 3, the first
    convolution is adapted and mean/std extended (utils.models.channels). The model gets
    `model.meta`, see model_meta().
    """
    head_spec = parse_head(head)
    if head_spec is not None and num_labels is None:
        raise ValueError("a --head needs num_labels")
    source, name = resolve_arch(arch)
    if source == "timm":
        model, weights = _build_timm(name, pretrained, None if head_spec else drop_rate)
        head = _timm_head(model)
        if num_labels is not None and head_spec is None:
            model.reset_classifier(num_labels)
    else:
        if source == "builtin":
            model, weights = BUILTIN[name](), None
            if pretrained:
                raise DataError(f"{name} has no pretrained weights; train it with --no-pretrained")
        else:
            model, weights = _build_torchvision(name, pretrained)
        head = [_find_classifier(model) if head_spec else
                _set_head(model, _find_classifier(model), num_labels, drop_rate)]
    meta = _meta(arch, source, name, model, weights, head, num_labels, drop_rate)
    if head_spec is not None:
        model = attach_head(model, source, head[0], head_spec, num_labels, drop_rate, meta)
        meta["head"] = ["head"]
    meta["head_name"] = head_spec
    model.meta = meta
    if channels != 3:
        adapt_channels(model, name, channels)
    return model


def model_meta(model):
    """Return the dict that goes with a model from create_model (a copy of `model.meta`).

    Keys: arch, source, num_labels, weights (what was loaded, or None), drop_rate,
    channels (input bands, 3 unless asked), mean and std (one float per band, for inputs
    scaled to [0, 1]), input_size (native side,
    px), resize_size (side before the centre crop at evaluation), interpolation
    ('bilinear', 'bicubic', ...), min_size (smallest side the network accepts, px),
    head (parameter-name prefixes of the classifier), head_name (the --head spec, None
    for the architecture's own), patch (a transformer's patch side, px; absent for
    networks without patches). For a timm model built elsewhere
    the values come from its pretrained_cfg.
    """
    model = unwrap_model(model)
    if hasattr(model, "meta"):
        return dict(model.meta)
    if hasattr(model, "pretrained_cfg"):
        arch = model.pretrained_cfg.get("architecture", type(model).__name__)
        model.meta = _meta(arch, "timm", arch, model, None, _timm_head(model),
                           model.num_classes, None)
        return dict(model.meta)
    raise ValueError(f"{type(model).__name__} was not built by create_model: no meta")


def unwrap_model(model):
    """Return the module inside DistributedDataParallel / DataParallel / torch.compile."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _build_torchvision(name, pretrained):
    """Return (torchvision model with its ImageNet head, Weights enum member or None)."""
    kwargs = {}
    if name in ("inception_v3", "googlenet"):
        # The ported Google weights expect inputs in [-1, 1]: transform_input converts
        # ImageNet-normalised input, so the model takes the same input with and without
        # weights. Auxiliary heads off: forward returns one tensor in train mode too.
        kwargs.update(aux_logits=False, transform_input=True)
        if not pretrained:
            kwargs["init_weights"] = True
    weights = local_torchvision_weights(name) if pretrained else None
    with offline(), damaged_weights(weights and torchvision_weights_path(weights)):
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
    if weights is not None:
        log.info("loaded %s from %s", weights, torchvision_weights_path(weights))
    return model, weights


def _build_timm(name, pretrained, drop_rate):
    """Return (timm model with its ImageNet head, description of the weights or None)."""
    kwargs = {} if drop_rate is None else {"drop_rate": drop_rate}
    base = name.split(".")[0]
    if not pretrained:
        return _create_timm(name, pretrained=False, **kwargs), None
    if base in LITE_ARCHS:
        model = _create_timm(name, pretrained=False, **kwargs)
        return model, load_lite(model, base)
    path, overlay = local_timm_weights(name)
    with offline(), damaged_weights(path):
        model = _create_timm(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    log.info("loaded timm weights for %s from %s", name, path)
    return model, f"timm:{path.name}"


def _create_timm(name, **kwargs):
    """timm.create_model with dynamic_img_size=True where the model takes it (ViT, DeiT, EVA02,
    DINOv2, SigLIP, Swin, ...): the position embeddings are resampled to each input's patch
    grid, so any side that the patches tile works, not only the pretrained one. Models
    without the option (CNNs take any size anyway) refuse it at once with a TypeError."""
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        if "dynamic_img_size" not in str(e):
            raise
    return timm.create_model(name, **kwargs)


# ---------------------------------------------------------------------------- input sizes

def patch_size(model):
    """Side in px of the patches of a transformer from create_model (timm's patch_embed, a
    --head's body too; torchvision's ViT), or None for a network without patches."""
    model = unwrap_model(model)
    model = getattr(model, "body", model)  # HeadNet
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "patch_size", None) is not None:
        return int(max(_pair(embed.patch_size)))
    if isinstance(model, torchvision.models.VisionTransformer):
        return int(model.patch_size)
    return None


def size_problem(model, size):
    """Why `model` cannot take (B, C, size, size) images (str), or None when it can.

    A timm transformer built with dynamic_img_size takes any multiple of its patch side
    (any side when it pads, as Swin does); one built for a fixed side (BEiT, torchvision's
    ViT) takes only that side. Networks without patches take any side.
    """
    arch, patch = model_meta(model)["arch"], patch_size(model)
    if patch is None:
        return None
    model = unwrap_model(model)
    model = getattr(model, "body", model)
    embed = getattr(model, "patch_embed", None)
    fixed = (int(model.image_size) if isinstance(model, torchvision.models.VisionTransformer)
             else int(max(_pair(embed.img_size))) if getattr(embed, "strict_img_size", False) else None)
    if fixed is not None:
        return None if size == fixed else (
            f"size {size}: {arch} takes only {fixed} px images (it is built for that size); use {fixed}, "
            f"or a timm ViT-family name, which takes any multiple of its patch")
    if size % patch == 0 or getattr(embed, "dynamic_img_pad", False):
        return None
    lower = size - size % patch
    use = f"{lower} or {lower + patch}" if lower else f"{patch}"
    return f"size {size} is not a multiple of {arch}'s patch {patch}; use {use}"


def check_input_sizes(model, sizes, where):
    """DataError (exit 2) naming `where` (the flag or file the sizes come from) when `model`
    cannot take one of the image sides `sizes` (px); see size_problem."""
    problems = [p for s in sorted(set(int(s) for s in sizes)) if (p := size_problem(model, s))]
    if problems:
        raise DataError(f"{where}: " + "; ".join(problems))


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _find_classifier(model):
    """Qualified name of the final 1000-way layer (Linear, or squeezenet's 1x1 Conv2d)."""
    found = [n for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == 1000)
             or (isinstance(m, nn.Conv2d) and m.out_channels == 1000)]
    if not found:
        raise RuntimeError(f"no 1000-way classifier found in {type(model).__name__}")
    return found[-1]


def _set_head(model, name, num_labels, drop_rate):
    """Replace layer `name` by a `num_labels`-way one, set the dropout before it; return its name."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, attr)
    new = old
    if num_labels is not None and isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_labels)
    elif num_labels is not None:
        new = nn.Conv2d(old.in_channels, num_labels, kernel_size=old.kernel_size)
        # squeezenet's ImageNet head is conv -> ReLU -> pool: a ReLU would clip the logits
        # of a sigmoid head at 0 (every probability >= 0.5).
        for i, m in enumerate(parent):
            if i > int(attr) and isinstance(m, nn.ReLU):
                parent[i] = nn.Identity()
    if drop_rate is not None:
        siblings = list(parent.children()) if isinstance(parent, nn.Sequential) else []
        before = siblings[int(attr) - 1] if siblings and int(attr) > 0 else None
        if isinstance(before, nn.Dropout):
            before.p = float(drop_rate)
        else:
            new = nn.Sequential(nn.Dropout(float(drop_rate)), new)
    setattr(parent, attr, new)
    return name


def _timm_head(model):
    """Parameter-name prefixes of a timm model's classifier."""
    names = model.pretrained_cfg.get("classifier") or "fc"
    names = [names] if isinstance(names, str) else list(names)
    return [n for n in names if _has_module(model, n)]


def _has_module(model, name):
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _meta(arch, source, name, model, weights, head, num_labels, drop_rate):
    """The normalisation, input size and provenance that go with a model (see model_meta)."""
    meta = dict(arch=arch.strip(), source=source, num_labels=num_labels, weights=None, channels=3,
                drop_rate=drop_rate, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224,
                resize_size=256, interpolation="bilinear", min_size=32, head=head)
    if source == "builtin":
        meta.update(input_size=64, resize_size=64, min_size=8)
    elif source == "torchvision":
        w = weights or torchvision.models.get_model_weights(name).DEFAULT
        t = w.transforms()
        meta.update(weights=None if weights is None else f"{type(w).__name__}.{w.name}",
                    mean=tuple(t.mean), std=tuple(t.std), input_size=int(t.crop_size[0]),
                    resize_size=int(t.resize_size[0]), interpolation=t.interpolation.value,
                    min_size=int(min(w.meta.get("min_size", (32, 32)))))
    else:
        cfg = timm.data.resolve_data_config({}, model=model)
        size = int(cfg["input_size"][-1])
        meta.update(weights=weights, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                    input_size=size, resize_size=int(round(size / cfg["crop_pct"])),
                    interpolation=cfg["interpolation"])
        min_input = getattr(model, "pretrained_cfg", {}).get("min_input_size")
        if min_input:
            meta["min_size"] = int(min_input[-1])
        if name.split(".")[0] in LITE_ARCHS:
            meta.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    patch = patch_size(model)
    if patch is not None:
        meta["patch"] = patch
        if getattr(model, "dynamic_img_size", False):  # the smallest side it takes: one patch
            meta["min_size"] = patch
    meta["mean"] = tuple(float(v) for v in meta["mean"])
    meta["std"] = tuple(float(v) for v in meta["std"])
    return meta


def in_head(param_name, head):
    """True when parameter `param_name` belongs to the classifier: equals or sits under one of
    the prefixes `head` (model_meta(model)["head"])."""
    return any(param_name == h or param_name.startswith(h + ".") for h in head)
