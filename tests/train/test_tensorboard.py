"""TensorBoard event files of a run: read back with tensorboard's EventAccumulator."""
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from conftest import write_dataset  # noqa: E402
from helpers import train  # noqa: E402
from utils.train.tensorboard import TensorBoardLog, hparams_of  # noqa: E402

PLAN = "epochs=2,size=24,bs=8,lr=2e-2,train=head;epochs=1,size=24,train=all"
SCALARS = ["train_loss", "val_loss", "val_f2", "lr", "img_per_s", "f2_per_label/a", "f2_per_label/b",
           "f2_per_label/c"]


def events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def hparams_logged(folder):
    """The hyper-parameters the HPARAMS tab shows for the run in `folder` (name -> value)."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = events(folder).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = HParamsPluginData.FromString(content).session_start_info
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def assert_matches_history(run):
    """Every epoch of history.csv once in tb/, with the same values (float32)."""
    hist = pd.read_csv(run / "history.csv")
    acc = events(run / "tb")
    tags = acc.Tags()
    assert set(SCALARS) <= set(tags["scalars"])
    for tag in SCALARS:
        col = "f2_" + tag.split("/")[1] if tag.startswith("f2_per_label/") else tag
        got = acc.Scalars(tag)
        assert [e.step for e in got] == list(hist["epoch"])
        np.testing.assert_allclose([e.value for e in got], hist[col].to_numpy(), rtol=1e-6, atol=1e-7)
    # validation probabilities per label, images with and without the tag, every epoch
    for lab in "abc":
        hists = acc.Histograms(f"probs_with_tag/{lab}") + acc.Histograms(f"probs_without_tag/{lab}")
        assert sorted({h.step for h in hists}) == list(hist["epoch"])
    return acc


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n=32, size=24)


@pytest.mark.slow
def test_run_writes_scalars_histograms_and_hparams(data, tmp_path):
    train(data, tmp_path, "--stages", PLAN, "--tensorboard")
    run = tmp_path / "r"
    acc = assert_matches_history(run)
    n_val = len(pd.read_csv(run / "preds" / "val.none.csv"))
    last = acc.Histograms("probs_with_tag/a")[-1].histogram_value.num + \
        acc.Histograms("probs_without_tag/a")[-1].histogram_value.num
    assert last == n_val
    logged = hparams_logged(run / "tb" / "hparams")
    assert logged["arch"] == "tiny_cnn" and logged["fold"] == 0 and logged["stages"].startswith("epochs=2,size=24")
    best = events(run / "tb" / "hparams").Scalars("hparam/best_val_f2")[0].value
    assert best == pytest.approx(pd.read_csv(run / "history.csv")["val_f2"].max(), rel=1e-6)


@pytest.mark.slow
def test_resumed_run_continues_without_duplicate_steps(data, tmp_path):
    # killed while writing the checkpoint at the end of epoch 2: tb/ already has epoch 2,
    # the resumed run trains epoch 2 again and must replace it, not add a second one
    r = train(data, tmp_path, "--stages", PLAN, kill="ckpt:2", check=False)
    assert r.returncode != 0
    assert [e.step for e in events(tmp_path / "r" / "tb").Scalars("val_f2")] == [1, 2]
    train(data, tmp_path, "--stages", PLAN, "--resume")
    assert_matches_history(tmp_path / "r")


@pytest.mark.slow
def test_no_tensorboard_writes_nothing(data, tmp_path):
    train(data, tmp_path, "--stages", "epochs=1,size=24,bs=8", "--no-tensorboard")
    assert (tmp_path / "r" / "history.csv").is_file() and not (tmp_path / "r" / "tb").exists()


def test_every_numeric_history_column_is_logged(tmp_path):
    """Columns added to the history row later (e.g. val_f2_ema) appear without code changes;
    text, NaN and booleans are left out."""
    log = TensorBoardLog(tmp_path, ["a", "b"], {"arch": "x", "lr": 0.1, "stages": [{"epochs": 1, "size": 8}]})
    rng = np.random.default_rng(0)
    y = rng.random((20, 2)) < 0.5
    for epoch in (1, 2):
        log.log_epoch({"epoch": epoch, "val_f2": 0.5 + epoch / 10, "val_f2_ema": 0.6 + epoch / 10,
                       "f2_a": 0.1 * epoch, "note": "text", "nan_col": float("nan"), "flag": True},
                      rng.random((20, 2)), y)
    log.close({"finished": True, "best_val_f2": 0.8, "epochs": 2})
    acc = events(tmp_path / "tb")
    scalars = set(acc.Tags()["scalars"])
    assert {"val_f2", "val_f2_ema", "f2_per_label/a"} <= scalars
    assert not {"note", "nan_col", "flag", "epoch"} & scalars
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val_f2_ema")] == [(1, 0.7), (2, 0.8)]
    assert hparams_logged(tmp_path / "tb" / "hparams") == {"arch": "x", "lr": 0.1, "stages": "epochs=1,size=8",
                                                           "n_labels": 0}
    assert hparams_of({"arch": "x", "created": "t", "stages": [{"epochs": 1, "size": 8}], "labels": ["a"]}) == \
        {"arch": "x", "stages": "epochs=1,size=8", "n_labels": 1}
