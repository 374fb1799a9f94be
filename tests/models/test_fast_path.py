"""The fast path: candidates, the measured choice, its cache, and the flags that bypass it."""
import json

import pytest
import torch
from torch import nn

from utils.models import fast_path as F
from utils.models.fast_path import FP32, Setting

CPU = torch.device("cpu")
BF16_CL, BF16, FP32_CL = Setting("bf16", True), Setting("bf16", False), Setting("off", True)


class Timer:
    """A measure function: fixed seconds per image by setting name, counting its calls."""

    def __init__(self, **seconds):
        self.seconds, self.calls = seconds, []

    def __call__(self, settings):
        self.calls.append([s.name for s in settings])
        return [self.seconds[s.name.replace(" ", "_")] for s in settings]


TIMES = dict(fp32_contiguous=4.0, fp32_channels_last=3.0, bf16_contiguous=2.0, bf16_channels_last=2.5)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "fast_path.json"
    monkeypatch.setenv(F.ENV, str(path))
    return path


def tiny():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 2))


def test_auto_picks_the_fastest_of_the_measured_candidates(cache, monkeypatch):
    monkeypatch.setattr(F, "native_bf16", lambda flags=None: True)
    timer = Timer(**TIMES)
    setting, how = F.resolve(CPU, "auto", None, None, "net", 64, "train", 32, measure=timer)
    assert setting == BF16 and "fastest of 4 measured" in how
    assert timer.calls == [["fp32 contiguous", "fp32 channels_last", "bf16 contiguous", "bf16 channels_last"]]
    # one flag given: the other is chosen among what is left
    assert F.resolve(CPU, "off", None, None, "net", 64, "train", 32, measure=timer)[0] == FP32_CL
    assert F.resolve(CPU, "auto", True, None, "net", 64, "train", 32, measure=timer)[0] == BF16_CL


def test_a_cached_choice_is_not_measured_again(cache, monkeypatch):
    monkeypatch.setattr(F, "native_bf16", lambda flags=None: True)
    first = Timer(**TIMES)
    assert F.resolve(CPU, "auto", None, None, "net", 64, "infer", 16, measure=first)[0] == BF16
    again = Timer(**{k: 1.0 for k in TIMES})
    assert F.resolve(CPU, "auto", None, None, "net", 64, "infer", 16, measure=again)[0] == BF16
    assert again.calls == []
    entries = json.loads(cache.read_text())["entries"]
    (key, entry), = entries.items()
    machine, version, name, size, direction = json.loads(key)
    assert (name, size, direction, version) == ("net", 64, "infer", torch.__version__) and F.machine() == machine
    assert entry["seconds"]["bf16 contiguous"] == 2.0
    # another size, direction or network is measured on its own
    for args in [("net", 96, "infer"), ("net", 64, "train"), ("other", 64, "infer")]:
        F.resolve(CPU, "auto", None, None, *args, 16, measure=again)
    assert len(again.calls) == 3 and len(json.loads(cache.read_text())["entries"]) == 4


def test_an_unreadable_cache_is_measured_again(cache, monkeypatch):
    monkeypatch.setattr(F, "native_bf16", lambda flags=None: True)
    cache.write_text("{not json")
    timer = Timer(**TIMES)
    assert F.resolve(CPU, "auto", None, None, "net", 64, "train", 8, measure=timer)[0] == BF16
    assert len(timer.calls) == 1 and json.loads(cache.read_text())["version"] == 1


def test_emulated_bf16_is_never_chosen(cache, monkeypatch):
    assert not F.native_bf16({"avx512f", "avx512bw", "avx512_vnni"})  # bf16 through avx512 emulation
    assert F.native_bf16({"avx512f", "avx512_bf16"}) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
    monkeypatch.setattr(F, "native_bf16", lambda flags=None: False)
    timer = Timer(**TIMES)  # bf16 would be fastest
    setting, _ = F.resolve(CPU, "auto", None, None, "net", 64, "train", 8, measure=timer)
    assert setting == FP32_CL and timer.calls == [["fp32 contiguous", "fp32 channels_last"]]
    assert all(s.amp == "off" for s in F.candidates(native=False))
    assert F.candidates("bf16", False, native=False) == [BF16]  # asked for by name: taken as given


def test_off_is_fp32_contiguous_without_measuring(cache):
    def refuse(settings):
        raise AssertionError("measured")
    assert F.resolve(CPU, "off", False, None, "net", 64, "train", 8, measure=refuse) == (FP32, "as given")
    assert FP32.dtype is None and FP32.name == "fp32 contiguous"


def test_environment_off_makes_auto_fp32_contiguous(monkeypatch):
    monkeypatch.setenv(F.ENV, "off")
    assert F.cache_file() is None

    def refuse(settings):
        raise AssertionError("measured")
    assert F.resolve(CPU, "auto", None, None, "net", 64, "train", 8, measure=refuse)[0] == FP32
    assert F.resolve(CPU, "bf16", None, None, "net", 64, "train", 8, measure=refuse)[0] == BF16


def test_cuda_keeps_bf16_and_channels_last(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert F.resolve(cuda, "auto", None, None, "net", 64, "train", 8)[0] == BF16_CL
    assert F.resolve(cuda, "off", False, None, "net", 64, "train", 8)[0] == FP32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert F.resolve(cuda, "auto", None, None, "net", 64, "train", 8)[0] == Setting("fp16", True)


def test_measuring_leaves_the_model_and_the_random_state_alone():
    torch.manual_seed(1)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    settings = F.candidates(native=False) + [BF16]
    seconds = F.time_candidates(model, settings, 16, "train", 4)
    assert len(seconds) == 3 and all(s > 0 for s in seconds)
    assert F.time_candidates(model, [FP32], 16, "infer", 4)[0] > 0
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.training and next(model.parameters()).grad is None
    with pytest.raises(ValueError, match="direction"):
        F.time_candidates(model, [FP32], 16, "backward", 4)


def test_a_real_measurement_is_cached_with_its_choice(cache):
    setting, how = F.resolve(CPU, "auto", None, tiny(), F.network_name("tiny", "gem", 4), 16, "infer", 4, channels=3)
    entry, = json.loads(cache.read_text())["entries"].values()
    assert setting in F.candidates() and set(entry["seconds"]) == {s.name for s in F.candidates()}
    assert F.network_name("tiny", "gem", 4) == "tiny+gem-4ch" and F.network_name("tiny") == "tiny"


def test_records_round_trip():
    for s in (FP32, BF16_CL, Setting("fp16", True)):
        assert Setting.from_record({**s.record(), "chosen": "x"}) == s
        assert Setting.of(s.dtype, s.channels_last) == s


def test_a_lead_inside_the_margin_keeps_fp32_contiguous(cache, monkeypatch):
    monkeypatch.setattr(F, "native_bf16", lambda flags=None: True)
    near = Timer(fp32_contiguous=1.0, fp32_channels_last=0.95, bf16_contiguous=0.92, bf16_channels_last=1.1)
    assert F.resolve(CPU, "auto", None, None, "net", 64, "train", 8, measure=near)[0] == FP32
    clear = Timer(fp32_contiguous=1.0, fp32_channels_last=0.95, bf16_contiguous=0.85, bf16_channels_last=1.1)
    assert F.resolve(CPU, "auto", None, None, "net", 96, "train", 8, measure=clear)[0] == BF16
    # the first candidate is the reference: bf16 given, channels_last must beat bf16 contiguous clearly
    assert F.resolve(CPU, "bf16", None, None, "net", 64, "infer", 8, measure=near)[0] == BF16


def test_a_measurement_taken_busy_is_taken_again_once_quieter(cache, monkeypatch):
    monkeypatch.setattr(F, "native_bf16", lambda flags=None: True)
    settings = F.candidates("auto", None, native=True)
    busy = Timer(fp32_contiguous=4.0, fp32_channels_last=4.0, bf16_contiguous=4.0, bf16_channels_last=1.0)
    assert F.choose("net", 64, "train", settings, busy, path=cache, load=lambda: 3.0)[0] == BF16_CL
    assert json.loads(cache.read_text())["entries"][F._key("net", 64, "train")]["load"] == 3.0
    quiet = Timer(**TIMES)
    # still busy (2.0 is not under half of 3.0): the cached ranking is kept
    assert F.choose("net", 64, "train", settings, quiet, path=cache, load=lambda: 2.0)[0] == BF16_CL
    assert quiet.calls == []
    # quieter: measured again, and the new ranking replaces the old one for good
    assert F.choose("net", 64, "train", settings, quiet, path=cache, load=lambda: 0.5)[0] == BF16
    assert len(quiet.calls) == 1
    assert F.choose("net", 64, "train", settings, quiet, path=cache, load=lambda: 0.1)[0] == BF16
    assert len(quiet.calls) == 1


def test_a_quiet_or_older_entry_is_kept_whatever_the_load(cache):
    settings = F.candidates("off", None, native=True)
    entry = {"seconds": {s.name: 1.0 for s in settings}}
    assert not F.stale(entry, settings, 0.0)                    # written before loads were recorded
    assert not F.stale({**entry, "load": 0.8}, settings, 0.1)   # measured quiet
    assert F.stale({**entry, "load": 4.0}, settings, 1.9)
    assert F.stale({"seconds": {settings[0].name: 1.0}}, settings, 0.0)  # a setting it never timed
