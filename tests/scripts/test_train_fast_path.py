"""train.py and predict.py on the CPU fast path: the setting chosen, recorded, kept on resume, exact."""
import json
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import script_argv, write_dataset
from utils.models import fast_path as F

PLAN = "epochs=1,size=32,bs=8,lr=2e-2,train=head;epochs=2,size=32,train=all,sched=cosine"
BF16_FASTEST = {"fp32 contiguous": 4.0, "fp32 channels_last": 3.0, "bf16 contiguous": 2.5, "bf16 channels_last": 2.0}


def run(script, *argv, cache="off", kill=None, check=True):
    """Run a script with the fast-path cache `cache` (a file, or 'off': auto is fp32 contiguous)."""
    env = dict(__import__("os").environ, **{F.ENV: str(cache)})
    r = subprocess.run([sys.executable, "-W", "ignore", *script_argv(script, kill), *map(str, argv)],
                       capture_output=True, text=True, timeout=300, env=env)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def train(data, out, *extra, **kw):
    return run("train.py", "--data", data, "--out", out, "--arch", "tiny_cnn", "--no-pretrained", "--name", "r",
               "--plots", "none", "--stages", PLAN, "--deterministic", "--ckpt-every", "2", *extra, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n=40, size=32)


@pytest.fixture
def cache(tmp_path):
    """A cache in which bf16 channels_last trained and predicted tiny_cnn at 32 px fastest."""
    path = tmp_path / "fast_path.json"
    F._write_cache(path, {F._key("tiny_cnn", 32, d): {"seconds": BF16_FASTEST} for d in F.DIRECTIONS})
    return path


def expected_auto():
    """What auto takes from that cache here: bf16 only where this CPU computes it natively."""
    return F.Setting("bf16", True) if F.native_bf16() else F.Setting("off", True)


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]


def assert_bit_identical(a, b):
    wa, wb = weights(a), weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    pa, pb = (pd.read_csv(r / "preds" / "val.none.csv") for r in (a, b))
    assert pa.equals(pb)
    ha, hb = (pd.read_csv(r / "history.csv") for r in (a, b))
    cols = [c for c in ha.columns if c not in ("seconds", "img_per_s", "data_wait")]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=True)


def test_auto_run_records_its_setting_and_a_resume_keeps_it(data, cache, tmp_path):
    want = expected_auto()
    ref = tmp_path / "ref"
    r = train(data, ref, cache=cache)
    assert want.name in r.stderr
    cfg = json.loads((ref / "r" / "config.json").read_text())
    assert F.Setting.from_record(cfg["fast_path"]) == want and "auto" in cfg["fast_path"]["chosen"]
    assert set(pd.read_csv(ref / "r" / "history.csv")["precision"]) == {want.name}
    # killed mid-run, then resumed where auto would now mean fp32 contiguous: the run's own setting, bit for bit
    out = tmp_path / "runs"
    assert train(data, out, cache=cache, kill="step:3", check=False).returncode == -signal.SIGKILL
    r = train(data, out, "--resume", cache="off")
    assert "the run's own" in r.stderr
    assert_bit_identical(ref / "r", out / "r")


@pytest.mark.parametrize("flags", [["--amp", "bf16", "--no-channels-last"], ["--amp", "bf16", "--channels-last"]],
                         ids=["bf16", "bf16-channels-last"])
def test_killed_and_resumed_bf16_run_equals_uninterrupted(data, tmp_path, flags):
    train(data, tmp_path / "ref", *flags)
    out = tmp_path / "runs"
    assert train(data, out, *flags, kill="step:5", check=False).returncode == -signal.SIGKILL
    assert train(data, out, "--resume", kill="epoch_end:2", check=False).returncode == -signal.SIGKILL
    train(data, out, "--resume")
    assert_bit_identical(tmp_path / "ref" / "r", out / "r")
    assert set(pd.read_csv(out / "r" / "history.csv")["precision"]) == {F.Setting("bf16", "--channels-last" in flags).name}


def test_off_is_fp32_contiguous_and_a_flag_given_on_resume_wins(data, cache, tmp_path):
    out = tmp_path / "runs"
    assert train(data, out, "--amp", "off", "--no-channels-last", cache=cache, kill="stage_end:0",
                 check=False).returncode == -signal.SIGKILL
    cfg = json.loads((out / "r" / "config.json").read_text())
    assert F.Setting.from_record(cfg["fast_path"]) == F.FP32
    train(data, out, "--resume", "--amp", "bf16", cache=cache)   # e.g. to speed up the rest of a run
    cfg = json.loads((out / "r" / "config.json").read_text())
    assert F.Setting.from_record(cfg["fast_path"]) == F.Setting("bf16", False)
    assert list(pd.read_csv(out / "r" / "history.csv")["precision"]) == ["fp32 contiguous"] + ["bf16 contiguous"] * 2


def test_predict_auto_and_off(data, cache, tmp_path):
    out = tmp_path / "runs"
    train(data, out, "--amp", "off", "--no-channels-last")
    own = pd.read_csv(out / "r" / "preds" / "val.none.csv").iloc[:, 1:].to_numpy()  # train.py's, fp32
    r = run("predict.py", "--runs", out / "r", "--split", "val", "--tta", "none", cache=cache)
    assert expected_auto().name in r.stderr
    auto = pd.read_csv(out / "r" / "preds" / "val.none.csv").iloc[:, 1:].to_numpy()
    assert np.abs(auto - own).max() < 0.02   # bf16 rounding, not another model
    r = run("predict.py", "--runs", out / "r", "--split", "val", "--tta", "none", "--amp", "off",
            "--no-channels-last", cache=cache)
    assert "fp32 contiguous (as given)" in r.stderr
    np.testing.assert_allclose(pd.read_csv(out / "r" / "preds" / "val.none.csv").iloc[:, 1:].to_numpy(), own,
                               atol=1e-6)
