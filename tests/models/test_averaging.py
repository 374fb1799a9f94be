"""Checkpoint averaging: --keep-epochs, tools/average_checkpoints.py, predict.py --checkpoint avg."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, write_dataset
from helpers import train
from utils.models.averaging import average_state_dicts, choose
from utils.common.errors import DataError


def test_average_state_dicts_is_the_arithmetic_mean():
    g = torch.Generator().manual_seed(0)
    sds = [{"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g).half(),
            "bn.num_batches_tracked": torch.tensor(7 * i)} for i in range(1, 5)]
    avg = average_state_dicts(sds)
    np.testing.assert_allclose(avg["w"].numpy(), np.mean([sd["w"].numpy() for sd in sds], axis=0), atol=1e-6)
    assert avg["b"].dtype == torch.float16
    np.testing.assert_allclose(avg["b"].float().numpy(),
                               np.mean([sd["b"].float().numpy() for sd in sds], axis=0), atol=1e-3)
    assert int(avg["bn.num_batches_tracked"]) == 28
    with pytest.raises(DataError, match="another model"):
        average_state_dicts([sds[0], {"w": sds[0]["w"]}])


def test_choose_last_and_top():
    f2 = {3: 0.5, 4: 0.7, 5: 0.6, 6: 0.7}
    assert choose(f2, last=2) == [5, 6]
    assert choose(f2, top=2) == [4, 6] and choose(f2, top=3) == [4, 5, 6]
    with pytest.raises(DataError, match="--keep-epochs 5"):
        choose(f2, last=5)
    with pytest.raises(DataError, match="one of"):
        choose(f2)


def _tool(*args):
    return subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "tools" / "average_checkpoints.py"), *args],
                          capture_output=True, text=True, timeout=300)


def _predict(run, *args):
    return subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "predict.py"), "--run", str(run),
                           "--split", "val", "--device", "cpu", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = write_dataset(tmp_path_factory.mktemp("d") / "data", n=40, size=24)
    out = tmp_path_factory.mktemp("runs")
    train(data, out, "--stages", "epochs=4,size=24,bs=8,lr=2e-2", "--keep-epochs", "3", "--deterministic")
    return out / "r"


@pytest.mark.slow
def test_keep_epochs_then_average_then_predict(run):
    kept = sorted(p.name for p in (run / "checkpoints").glob("epoch_*.pt"))
    assert kept == ["epoch_002.pt", "epoch_003.pt", "epoch_004.pt"]
    ckpts = [torch.load(run / "checkpoints" / k, weights_only=False) for k in kept]
    hist = pd.read_csv(run / "history.csv")
    assert [c["val_f2"] for c in ckpts] == pytest.approx(list(hist["val_f2"][1:]))

    r = _tool("--run", str(run), "--last", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    avg = torch.load(run / "checkpoints" / "avg.pt", weights_only=False)
    assert avg["averaged"]["epochs"] == [3, 4] and avg["weights"] == "avg" and avg["meta"]["arch"] == "tiny_cnn"
    for k, v in avg["model"].items():
        if torch.is_floating_point(v):
            torch.testing.assert_close(v, (ckpts[1]["model"][k] + ckpts[2]["model"][k]) / 2, atol=1e-6, rtol=0)

    best_before = (run / "preds" / "val.none.csv").read_bytes()
    r = _predict(run, "--checkpoint", "avg")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "preds" / "val.none.csv").read_bytes() == best_before  # the best weights' file is kept
    by_name = pd.read_csv(run / "preds" / "val.none-avg.csv")
    r = _predict(run, "--checkpoint", str(run / "checkpoints" / "avg.pt"))
    assert r.returncode == 0, r.stderr[-2000:]
    pd.testing.assert_frame_equal(by_name, pd.read_csv(run / "preds" / "val.none-avg.csv"))
    r = _predict(run, "--checkpoint", "best")
    assert r.returncode == 0
    assert not np.allclose(by_name.iloc[:, 1:], pd.read_csv(run / "preds" / "val.none.csv").iloc[:, 1:])


@pytest.mark.slow
def test_bn_recompute_gives_the_training_images_statistics(run):
    r = _tool("--run", str(run), "--top", "2", "--bn-recompute", "--bs", "1000")
    assert r.returncode == 0, r.stderr[-2000:]
    avg = torch.load(run / "checkpoints" / "avg.pt", weights_only=False)
    assert avg["averaged"]["bn_recomputed"]
    # brute force: with one batch, the stem's BatchNorm mean is the mean of its input over
    # every training image (all outside fold 0, at the checkpoint's size, normalised)
    from utils.data.cache import default_cache_dir, load_images
    from utils.models.checkpoint import load_for_inference
    from utils.data.dataset import load_dataset
    from utils.data.loader import to_input

    cfg = pd.read_json(run / "config.json", typ="series")
    spec = load_dataset(cfg["data_root_abs"])
    folds = pd.read_csv(f"{cfg['data_root_abs']}/folds.csv").set_index("image_name")["fold"]
    rows = [i for i, n in enumerate(spec.names) if folds[n] != 0]
    images = load_images(spec.files, 24, default_cache_dir(spec.root))
    model, meta = load_for_inference(run / "checkpoints" / "avg.pt")
    with torch.no_grad():
        x = to_input(torch.from_numpy(np.asarray(images[rows])), meta["mean"], meta["std"], torch.device("cpu"))
        pre = model.stem[0](x)
    torch.testing.assert_close(model.stem[1].running_mean, pre.mean((0, 2, 3)), atol=1e-5, rtol=1e-5)
    assert avg["averaged"]["bn_images"] == len(rows)


@pytest.mark.slow
def test_errors_name_what_to_do(run, tmp_path):
    r = _tool("--run", str(run), "--last", "9")
    assert r.returncode == 2 and "--keep-epochs 9" in r.stderr and "Traceback" not in r.stderr
    (run / "checkpoints" / "avg.pt").unlink(missing_ok=True)
    r = _predict(run, "--checkpoint", "avg")
    assert r.returncode == 2 and "average_checkpoints.py" in r.stderr


def test_checkpoint_names_and_paths(tmp_path):
    from utils.predict.jobs import checkpoint_path

    assert checkpoint_path(tmp_path, "avg") == tmp_path / "checkpoints" / "avg.pt"
    f = tmp_path / "x.pt"
    f.write_bytes(b"")
    assert checkpoint_path(tmp_path, str(f)) == f
    with pytest.raises(DataError, match="best, avg, last"):
        checkpoint_path(tmp_path, "bset")
