"""train.py with optimizers by name (--opt, opt=), schedule-free weights and layer decay:
exact resume after SIGKILL, and RUN/param_groups.csv."""
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import write_dataset
from helpers import train_run

PLAN = "epochs=2,size=32,bs=4,lr=1e-2,train=head,sched=const;epochs=1,size=24,train=all,lr=3e-3"
KILLS = ["step:3", "epoch_end:1", "ckpt:9", "step:21"]  # ckpt:9: a torn write mid-epoch 2
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n=48, size=32)


def _same(a, b):
    """Same validation predictions, history and last.pt (weights and optimizer state)."""
    pa, pb = pd.read_csv(a / "preds" / "val.none.csv"), pd.read_csv(b / "preds" / "val.none.csv")
    np.testing.assert_array_equal(pa.iloc[:, 1:].to_numpy(), pb.iloc[:, 1:].to_numpy())
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    cols = [c for c in ha.columns if c not in ("seconds", "img_per_s", "data_wait")]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], check_exact=True)
    for name in ("last.pt", "best.pt"):
        wa = torch.load(a / "checkpoints" / name, weights_only=False)["model"]
        wb = torch.load(b / "checkpoints" / name, weights_only=False)["model"]
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (name, k)


@pytest.mark.parametrize("opt", ["lion:betas=0.9/0.95", "schedulefree_adamw"])
def test_killed_and_resumed_equals_uninterrupted(data, tmp_path, opt):
    args = ["--stages", PLAN, "--opt", opt, "--deterministic", "--ckpt-every", "2"]
    ref = train_run(data, tmp_path / "ref", *args)
    out = tmp_path / "killed"
    train_run(data, out, *args, kill=KILLS[0])
    for k in KILLS[1:]:
        train_run(data, out, *args, "--resume", kill=k)
    run = train_run(data, out, *args, "--resume")
    _same(ref, run)
    stages = pd.read_json(ref / "config.json", typ="series")["stages"]
    assert [s["opt"] for s in stages] == [opt.partition(":")[0]] * 2


def test_schedule_free_validates_and_saves_the_averaged_weights(data, tmp_path):
    run = train_run(data, tmp_path, "--stages", "epochs=2,size=32,bs=4,lr=1e-2,sched=const", "--opt",
                    "schedulefree_adamw", "--deterministic", kill="epoch_end:1")
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    # after epoch 1: best.pt holds the weights epoch 1 scored, last.pt the same averaged
    # weights, and its optimizer state the train-mode weights the next step continues from
    assert int(best["epoch"]) == 1 and best["model"].keys() == last["model"].keys()
    for k in best["model"]:
        assert torch.equal(best["model"][k], last["model"][k]), k
    state = last["optimizer"]["state"]
    assert all(not g["train_mode"] for g in last["optimizer"]["param_groups"])
    weights = list(last["model"].values())
    unseen = [s for s in state.values() if not any(torch.equal(s["train_weights"], w) for w in weights)]
    assert len(state) > 0 and unseen  # the train-mode weights are not the ones saved


def test_layer_decay_writes_param_groups_per_block(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=32, n_test=1)
    run = train_run(data, tmp_path / "runs", "--arch", "tf_efficientnet_lite0", "--stages",
                    "epochs=1,size=32,bs=4,lr=1e-3", "--layer-decay", "0.5", "--workers", "0")
    table = pd.read_csv(run / "param_groups.csv")
    assert {"stage", "group", "lr_scale", "params", "weight_decay"} <= set(table.columns)
    scales = table["lr_scale"].to_numpy()
    assert len(set(scales)) >= 5 and (np.diff(scales) >= 0).all() and scales[-1] == 1.0
    assert table["group"].iloc[-1].startswith("head") and table["group"].iloc[0] == "block0"
    assert set(table.loc[table["group"].str.endswith(".no_wd"), "weight_decay"]) == {0.0}
    cfg = pd.read_json(run / "config.json", typ="series")
    assert cfg["stages"][0]["layer_decay"] == 0.5
