"""train.py with the training ingredients on together (weight EMA, mixup/cutmix, gradient
accumulation): what they record, and exact resume after SIGKILL, mid-accumulation too."""
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_dataset
from helpers import same_run, train

# 38 training images in micro-batches of 4: 9 per epoch (drop_last), 5 optimizer steps of 2
# micro-batches, the last one partial; mixing off in the last epoch
PLAN = "epochs=2,size=32,bs=4,lr=2e-2,train=head;epochs=2,size=24,train=all,sched=cosine"
ARGS = ["--stages", PLAN, "--deterministic", "--ckpt-every", "1", "--ema", "0.9",
        "--mix", "mixup:0.4;cutmix:1.0;switch=0.5,off_epochs=1", "--accum", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n=48, size=32)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    train(data, out, *ARGS)
    return out / "r"


@pytest.mark.slow
def test_ema_run_validates_both_weights_and_keeps_the_better(reference):
    hist = pd.read_csv(reference / "history.csv")
    cols = list(hist.columns)
    assert cols.index("val_f2_ema") == cols.index("val_f2") + 1
    best = torch.load(reference / "checkpoints" / "best.pt", weights_only=False)
    both = np.maximum(hist["val_f2"], hist["val_f2_ema"])
    assert best["val_f2"] == pytest.approx(both.max(), abs=1e-12)
    row = hist.iloc[int(np.argmax(both.to_numpy()))]
    assert best["weights"] == ("ema" if row["val_f2_ema"] > row["val_f2"] else "raw")
    last = torch.load(reference / "checkpoints" / "last.pt", weights_only=False)
    steps = int(((hist["seen"] // 4 + 1) // 2).sum())  # optimizer steps: ceil(micro-batches / 2)
    assert steps == 4 * 5 and int(last["ema"]["n_averaged"]) == steps
    ema_w = {k[len("module."):]: v for k, v in last["ema"].items() if k.startswith("module.")}
    assert ema_w.keys() == last["model"].keys()
    assert any(not torch.equal(ema_w[k], last["model"][k]) for k in ema_w)


@pytest.mark.slow
def test_killed_and_resumed_equals_uninterrupted(data, reference, tmp_path):
    out = tmp_path / "runs"
    # micro-batch 3 and 23 (stage 2, epoch 1, micro-batch 6 of 9) are in the middle of an
    # accumulation group: the resumed run redoes the group from its start
    kills = ["step:3", "epoch_end:1", "step:23", "ckpt:14"]
    r = train(data, out, *ARGS, kill=kills[0], check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    for k in kills[1:]:
        r = train(data, out, *ARGS, "--resume", kill=k, check=False)
        assert r.returncode == -signal.SIGKILL, (k, r.stderr[-2000:])
    train(data, out, *ARGS, "--resume")
    same_run(reference, out / "r")
    ea = torch.load(reference / "checkpoints" / "last.pt", weights_only=False)["ema"]
    eb = torch.load(out / "r" / "checkpoints" / "last.pt", weights_only=False)["ema"]
    for k in ea:
        torch.testing.assert_close(ea[k], eb[k], atol=1e-6, rtol=0)


def test_recipe_flags_are_defaults_below_config_and_command_line(tmp_path):
    import train
    from utils.augment.mix import parse_mix
    from utils.train.recipes import get_recipe

    a = train.parse_args(["--recipe", "strong"])
    assert (a.ema, a.aug, a.loss, a.head) == (0.9997, "hflip;erase:1", "bce", "avgmax")
    assert parse_mix(a.mix).mixup == 0.1 and parse_mix(a.mix).cutmix == 1.0
    b = train.parse_args(["--recipe", "strong", "--ema", "0", "--mix", "none", "--head", "gem", "--loss", "asl"])
    assert (b.ema, b.mix, b.head, b.loss, b.aug) == (0.0, "none", "gem", "asl", "hflip;erase:1")
    cfg = tmp_path / "c.json"
    cfg.write_text('{"recipe": "strong", "aug": "light"}')
    c = train.parse_args(["--config", str(cfg)])
    assert (c.recipe, c.aug, c.ema) == ("strong", "light", 0.9997)
    assert train.parse_args(["--config", str(cfg), "--aug", "heavy"]).aug == "heavy"
    d = train.parse_args(["--recipe", "resnet", "--ema", "0.99", "--mix", "cutmix:1", "--accum", "2"])
    assert (d.ema, d.mix, d.accum, d.aug, d.head) == (0.99, "cutmix:1", 2, "hflip;crop:0.125", None)
    (s,) = get_recipe("strong")(epochs=4, size=64)
    assert (s.opt, s.lr, s.wd, s.sched, s.pct_start, s.bs, s.train) == ("adam", 1e-4, 1e-4, "onecycle", 0.2, 56, "all")


@pytest.mark.slow
def test_strong_recipe_trains_end_to_end(data, tmp_path):
    import json

    out = tmp_path / "runs"
    train(data, out, "--recipe", "strong", "--epochs", "2", "--size", "32", "--bs", "8", "--accum", "2")
    cfg = json.loads((out / "r" / "config.json").read_text())
    assert (cfg["ema"], cfg["aug"], cfg["loss_spec"], cfg["recipe"]) == (0.9997, "hflip;erase:1", "bce", "strong")
    assert cfg["mix"].startswith("mixup:0.1") and cfg["stages"][0]["accum"] == 2
    hist = pd.read_csv(out / "r" / "history.csv")
    assert len(hist) == 2 and hist["val_f2_ema"].notna().all()


@pytest.mark.slow
def test_torchrun_with_accumulation_ema_and_mix_resumes_exactly(data, tmp_path):
    # DistributedDataParallel: gradients all-reduced once per accumulation group (no_sync)
    from helpers import torchrun

    extra = ["--accum", "2", "--ema", "0.9", "--mix", "mixup:0.4;cutmix:1.0", "--ckpt-every", "1"]
    r = torchrun(data, tmp_path / "a", "--name", "ddp", *extra)
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun(data, tmp_path / "b", "--name", "ddp", *extra, kill="step:3")
    assert r.returncode != 0 and not (tmp_path / "b" / "ddp" / "result.json").exists()
    r = torchrun(data, tmp_path / "b", "--name", "ddp", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = tmp_path / "a" / "ddp", tmp_path / "b" / "ddp"
    for name in ("last.pt", "best.pt"):
        wa = torch.load(a / "checkpoints" / name, weights_only=False)
        wb = torch.load(b / "checkpoints" / name, weights_only=False)
        for k in wa["model"]:
            torch.testing.assert_close(wa["model"][k], wb["model"][k], atol=1e-6, rtol=0)
    pa, pb = (pd.read_csv(d / "preds" / "val.none.csv") for d in (a, b))
    np.testing.assert_allclose(pa.iloc[:, 1:].to_numpy(), pb.iloc[:, 1:].to_numpy(), atol=1e-6)
    # train_loss too, the interrupted epoch's included: the running totals in last.pt are
    # every rank's (rank 0's alone would count its part twice after the resume)
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    cols = ["train_loss", "val_f2", "val_f2_ema", "val_loss", "lr", "seen"]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=False, rtol=1e-6, atol=1e-8)
