"""The fast path: the precision and memory format a network runs fastest in on this machine.

On a CPU, bf16 autocast and the channels_last memory format speed some networks up and slow
others down, depending on the network, the image size and the direction (training steps or
inference). `resolve` turns the flags `--amp auto|off|bf16|fp16` and `--channels-last` /
`--no-channels-last` (None: auto) into a `Setting`:
- CUDA, as always: bf16 autocast where supported (else fp16), channels_last on;
- CPU, auto: `choose` times a few steps of each candidate (fp32 or bf16 autocast, each
  contiguous or channels_last; bf16 only where the CPU computes it natively, avx512_bf16 or
  amx_bf16: emulated bf16 is never a candidate) and keeps the fastest. The choice is cached in
  a JSON file per (machine: CPU model, cores, torch threads; torch version; network; size;
  direction), so it is measured once. `--amp off --no-channels-last` is fp32 contiguous.
A measurement taken while the machine was busier than its cores (the 1-minute load average per
core, recorded with it) is taken again once the load has halved: the steps of a busy moment
can rank the settings wrongly, and the cache would keep that ranking for good.

The cache file is ~/.cache/multitag/fast_path.json; the environment variable
MULTITAG_FAST_PATH names another file, or `off`: auto then means fp32 contiguous without
measuring (a test suite that compares numbers with fp32 references).
"""
import copy
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from utils.common.atomic import atomic_write_json
from utils.common.errors import DataError
from utils.common.text import read_json

log = logging.getLogger(__name__)

WARMUP, TIMED = 1, 3   # steps per candidate: the first builds the kernels and is slow; the best of 3
MAX_BATCH = 16         # images per measured step (the run's batch when smaller)
MARGIN = 0.9           # another setting replaces the first candidate only when it takes at most 90% of its
                       # time: on a shared machine a 10% lead in a few steps was seen to reverse in the run
BUSY = 1.0             # load average per core above which a cached measurement is taken again when quieter
DIRECTIONS = ("train", "infer")
ENV = "MULTITAG_FAST_PATH"


@dataclass(frozen=True)
class Setting:
    """How a network runs: amp 'off' (fp32), 'bf16' or 'fp16' (CUDA) autocast; channels_last or not."""
    amp: str = "off"
    channels_last: bool = False

    @property
    def dtype(self):
        """The autocast dtype (None: full precision)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    @property
    def name(self):
        """'fp32 contiguous', 'bf16 channels_last', ... (log lines, history.csv, the cache)."""
        return f"{'fp32' if self.amp == 'off' else self.amp} {'channels_last' if self.channels_last else 'contiguous'}"

    def record(self):
        """The JSON record (config.json "fast_path")."""
        return {"amp": self.amp, "channels_last": self.channels_last}

    @classmethod
    def from_record(cls, rec):
        """The Setting of a record() (extra keys ignored)."""
        return cls(str(rec["amp"]), bool(rec["channels_last"]))

    @classmethod
    def of(cls, dtype, channels_last):
        """The Setting of an autocast dtype (None: fp32) and a memory format."""
        return cls({torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off"), bool(channels_last))


FP32 = Setting()


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (a set of words; empty where the file is not there)."""
    try:
        text = Path(path).read_bytes().decode(errors="replace")  # a kernel file, not a user's text
    except OSError:
        return set()
    return {w for line in text.splitlines() if line.split(":")[0].strip() in ("flags", "Features")
            for w in line.split(":", 1)[1].split()}


def native_bf16(flags=None):
    """Whether this CPU computes bf16 natively (x86 avx512_bf16 or amx_bf16, Arm bf16) and oneDNN uses it."""
    flags = cpu_flags() if flags is None else flags
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    return native and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def candidates(amp="auto", channels_last=None, native=None):
    """The CPU settings `auto` chooses among: amp auto|off|bf16 x channels_last None (both)|True|False.

    bf16 joins an `auto` choice only where native_bf16() (native: override); amp 'bf16' given is
    taken as given. Returns a list of Setting, fp32 contiguous first when it is one.
    """
    native = native_bf16() if native is None else native
    amps = {"auto": ["off"] + (["bf16"] if native else []), "off": ["off"], "bf16": ["bf16"], "fp16": ["off"]}[amp]
    layouts = [False, True] if channels_last is None else [bool(channels_last)]
    return [Setting(a, c) for a in amps for c in layouts]


def machine():
    """This machine as the cache keys it: CPU model, cores, torch threads."""
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return f"{model}; {os.cpu_count()} cores; {torch.get_num_threads()} threads"


def _cpuinfo_lines():
    try:
        return Path("/proc/cpuinfo").read_bytes().decode(errors="replace").splitlines()  # a kernel file
    except OSError:
        return []


def cache_file():
    """The JSON cache of choices: $MULTITAG_FAST_PATH, else ~/.cache/multitag/fast_path.json; None when 'off'."""
    value = os.environ.get(ENV, "")
    if value.lower() == "off":
        return None
    return Path(value) if value else Path.home() / ".cache" / "multitag" / "fast_path.json"


def network_name(arch, head=None, channels=3):
    """The network as the cache names it: the architecture, its --head and its bands when not 3."""
    return arch + (f"+{head}" if head else "") + (f"-{channels}ch" if channels != 3 else "")


def _key(name, size, direction):
    return json.dumps([machine(), torch.__version__, name, int(size), direction])


def time_candidates(model, settings, size, direction, bs, channels=3):
    """Seconds per image of `direction` steps of a copy of `model` in each setting, side by side.

    model: an nn.Module taking (B, channels, size, size); direction 'train' (forward, loss,
    backward) or 'infer' (forward under inference_mode); bs: images per step (at most MAX_BATCH).
    The model and the global random state are left as they were. Returns a list of floats.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    bs = max(2, min(int(bs), MAX_BATCH))  # training BatchNorm needs two images
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.randn(bs, channels, size, size)
        runs = [_stepper(model, s, x, direction) for s in settings]
        for run in runs:
            for _ in range(WARMUP):
                run()
        best = [float("inf")] * len(runs)
        for _ in range(TIMED):  # candidates in turn, so a busy moment of the machine hits them all
            for i, run in enumerate(runs):
                t0 = time.perf_counter()
                run()
                best[i] = min(best[i], time.perf_counter() - t0)
    return [t / bs for t in best]


def _stepper(model, setting, x, direction, compile=False):
    """A function running one step of a copy of `model` in `setting` on input x (the copy
    through torch.compile when `compile`: bench/cpu_fast_path.py measures that too)."""
    net = copy.deepcopy(model).cpu()
    fmt = torch.channels_last if setting.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt).train(direction == "train")
    net = torch.compile(net) if compile else net
    x = x.contiguous(memory_format=fmt)

    def step():
        with torch.inference_mode(direction == "infer"), torch.autocast("cpu", dtype=setting.dtype,
                                                                         enabled=setting.dtype is not None):
            out = net(x)
        if direction == "train":
            out.float().square().mean().backward()
            net.zero_grad(set_to_none=True)
    return step


def load_per_core():
    """The 1-minute load average divided by the cores (0.0 where the OS does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return 0.0


def stale(entry, settings, load):
    """Whether a cache entry must be measured again: it lacks one of `settings`, or it was
    measured busy (load per core above BUSY) and the load now is under half of that."""
    if not all(s.name in entry.get("seconds", {}) for s in settings):
        return True
    then = entry.get("load")
    return then is not None and then > BUSY and load < then / 2


def choose(name, size, direction, settings, measure, path="default", load=load_per_core):
    """The fastest of `settings` for network `name` at `size` px in `direction`, measured once.

    measure: settings -> seconds per image of each (time_candidates with its model bound);
    path: the cache file (default cache_file(); None: no cache). A cached entry that timed every
    one of `settings` is used as it is, unless it was measured busy and the machine is quieter now
    (stale; load: () -> load average per core); otherwise all are measured and the entry replaced.
    The first of `settings` (candidates() puts fp32 contiguous first) is kept unless another
    takes at most MARGIN of its time.
    Returns (Setting, {setting name: seconds per image}).
    """
    if len(settings) == 1:
        return settings[0], {}
    path = cache_file() if path == "default" else path
    key = _key(name, size, direction)
    cache = _read_cache(path)
    now = load()
    seconds = cache.get(key, {}).get("seconds", {})
    if stale(cache.get(key, {}), settings, now):
        t0 = time.perf_counter()
        seconds = dict(zip((s.name for s in settings), measure(settings)))
        log.info("fast path for %s at %d px (%s): measured %s in %.0f s (load %.1f per core)", name, size,
                 direction, ", ".join(f"{k} {1e3 * v:.1f} ms/img" for k, v in seconds.items()),
                 time.perf_counter() - t0, now)
        if path is not None:
            cache[key] = {"seconds": seconds, "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "load": round(now, 2)}
            _write_cache(path, cache)
    best = min(settings, key=lambda s: seconds[s.name])
    if seconds[best.name] > MARGIN * seconds[settings[0].name]:
        best = settings[0]  # not clearly faster than the first (fp32 contiguous where it is one): noise
    return best, {s.name: seconds[s.name] for s in settings}


def _read_cache(path):
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError, DataError):
        log.warning("fast path cache %s is unreadable: measuring again", path)
        return {}
    return data.get("entries", {}) if isinstance(data, dict) else {}


def _write_cache(path, entries):
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"version": 1, "entries": entries})
    except OSError as e:  # a cache that cannot be written costs a measurement next time, nothing else
        log.warning("fast path cache %s not written: %s", path, e)


def resolve(device, amp, channels_last, model, name, size, direction, bs, channels=3, measure=None):
    """The Setting a script runs `model` in, and how it was reached: (Setting, text for the log).

    device: torch.device; amp: 'auto' | 'off' | 'bf16' | 'fp16'; channels_last: True, False or None
    (auto); model, name ('resnet50', ...), size, direction ('train' | 'infer'), bs, channels:
    what is measured on CPU (see choose); measure: replaces time_candidates (tests).
    """
    if device.type == "cuda":
        bf16 = amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported())
        return Setting("off" if amp == "off" else "bf16" if bf16 else "fp16",
                       True if channels_last is None else bool(channels_last)), "CUDA default"
    if amp == "fp16":
        log.warning("--amp fp16 is for CUDA; on CPU: fp32")
    options = candidates(amp, channels_last)
    if len(options) > 1 and cache_file() is None:  # MULTITAG_FAST_PATH=off
        options = [s for s in options if s.amp == "off" and not s.channels_last] or options[:1]
        return options[0], f"{ENV}=off"
    measure = measure or (lambda s: time_candidates(model, s, size, direction, bs, channels))
    setting, seconds = choose(name, size, direction, options, measure)
    if not seconds:
        return setting, "as given"
    return setting, f"auto: fastest of {len(seconds)} measured at {size} px ({direction})"
