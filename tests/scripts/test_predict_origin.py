"""predict.py --checkpoint FILE of another run: refused for the validation fold it trained on,
and its test predictions named for the run that made the weights."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_script, write_dataset
from helpers import preds_files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of folds 0 and 1 (K=4) and a second run of fold 0 (another seed)."""
    base = tmp_path_factory.mktemp("o")
    data = write_dataset(base / "data", n=32, size=16, n_test=4)
    out = base / "runs"
    for name, fold, seed in (("m-f0", 0, 0), ("m-f1", 1, 0), ("m2-f0", 0, 1)):
        run_script("train.py", "--data", data, "--out", out, "--arch", "tiny_cnn", "--no-pretrained",
                   "--stages", "epochs=1,size=16,bs=8", "--folds-k", 4, "--fold", fold, "--name", name,
                   "--seed", seed, "--plots", "none", "--device", "cpu", "--workers", 0)
    return out


def test_checkpoint_meta_records_the_fold_split(runs):
    meta = torch.load(runs / "m-f1" / "checkpoints" / "best.pt", weights_only=False)["meta"]
    assert (meta["run"], meta["fold"], meta["folds_k"]) == ("m-f1", 1, 4)


@pytest.mark.parametrize("split", ["val", "both"])
def test_another_folds_checkpoint_is_refused_for_validation(runs, split):
    before = preds_files(runs)
    r = run_script("predict.py", "--run", runs / "m-f0", "--checkpoint", runs / "m-f1" / "checkpoints" / "best.pt",
                   "--split", split, "--device", "cpu", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "run m-f1 on fold 1" in r.stderr and "validation fold 0" in r.stderr and "leak" in r.stderr
    assert "--split test" in r.stderr
    assert preds_files(runs) == before


def test_checkpoint_without_fold_is_judged_by_its_run_folder_or_refused(runs, tmp_path):
    old = runs / "m-f1" / "checkpoints" / "old.pt"  # as written before meta had the fold
    ck = torch.load(runs / "m-f1" / "checkpoints" / "best.pt", weights_only=False)
    for k in ("fold", "folds_k", "folds_seed"):
        del ck["meta"][k]
    torch.save(ck, old)
    loose = tmp_path / "weights.pt"
    shutil.copy(old, loose)
    try:
        for path, needle in ((old, "run m-f1 on fold 1"), (loose, "cannot tell which fold")):
            r = run_script("predict.py", "--run", runs / "m-f0", "--checkpoint", path, "--split", "val",
                           "--device", "cpu", check=False)
            assert r.returncode == 2 and needle in r.stderr, r.stderr[-2000:]
    finally:
        old.unlink()


def test_same_fold_checkpoint_predicts_validation_like_its_own_run(runs):
    """Weights of another run of the same fold give, on fold 0, what that run itself gives."""
    other = runs / "m2-f0" / "checkpoints" / "best.pt"
    run_script("predict.py", "--run", runs / "m-f0", "--checkpoint", other, "--split", "val", "--device", "cpu")
    got = pd.read_csv(runs / "m-f0" / "preds" / "val.none-from_m2-f0_best.csv")
    run_script("predict.py", "--run", runs / "m2-f0", "--split", "val", "--device", "cpu")
    ref = pd.read_csv(runs / "m2-f0" / "preds" / "val.none.csv")
    assert got["image_name"].tolist() == ref["image_name"].tolist()
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), ref.iloc[:, 1:].to_numpy(), atol=1e-6)


def test_test_split_with_another_runs_checkpoint_names_its_origin(runs):
    before = preds_files(runs)
    run_script("predict.py", "--run", runs / "m-f0", "--checkpoint", runs / "m-f1" / "checkpoints" / "best.pt",
               "--split", "test", "--device", "cpu")
    new = sorted(set(preds_files(runs)) - set(before))
    assert new == ["m-f0/preds/test.none-from_m-f1_best.csv"]
    own = runs / "m-f1" / "preds" / "test.none.csv"
    run_script("predict.py", "--run", runs / "m-f1", "--split", "test", "--device", "cpu")
    pd.testing.assert_frame_equal(pd.read_csv(own), pd.read_csv(runs / new[0]))
    # the run's own checkpoint given as a path is named like --checkpoint best
    run_script("predict.py", "--run", runs / "m-f0", "--checkpoint", runs / "m-f0" / "checkpoints" / "best.pt",
               "--split", "test", "--device", "cpu")
    assert (runs / "m-f0" / "preds" / "test.none.csv").is_file()
