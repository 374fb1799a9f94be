"""predict.py checks and decodes only the images of the splits it predicts: a broken training
image does not stop --split test (nor --split val of another fold); a broken image of the
predicted split is refused, naming the file, before anything is written."""
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import run_script, write_dataset
from utils.runs.pred_files import read_preds


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run (fold 0 of K=3) and its test predictions on the intact data."""
    base = tmp_path_factory.mktemp("splits")
    data = write_dataset(base / "data", n=18, size=16, n_test=4)
    run_script("train.py", "--data", data, "--out", base / "runs", "--arch", "tiny_cnn", "--no-pretrained",
               "--stages", "epochs=1,size=16,bs=8", "--folds-k", 3, "--fold", 0, "--name", "r", "--plots", "none",
               "--device", "cpu", "--workers", 0, "--cache-dir", base / "train-cache")
    run_script("predict.py", "--run", base / "runs" / "r", "--split", "test", "--cache-dir", base / "train-cache")
    return base


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the data and the run to damage; the trainer's val file and the intact test file."""
    shutil.copytree(trained / "data", tmp_path / "data")
    shutil.copytree(trained / "runs" / "r", tmp_path / "r")
    folds = pd.read_csv(tmp_path / "data" / "folds.csv", dtype={"image_name": str})
    return tmp_path, folds


def predict(tmp_path, split, check=True):
    return run_script("predict.py", "--run", tmp_path / "r", "--data", tmp_path / "data", "--split", split,
                      "--cache-dir", tmp_path / "cache", check=check)


def truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep > 1 else data[: int(len(data) * keep)])


def test_broken_training_images_outside_the_predicted_split_do_not_matter(copy, trained):
    tmp_path, folds = copy
    other = folds.loc[folds["fold"] != 0, "image_name"].tolist()
    truncate(tmp_path / "data" / "train" / f"{other[0]}.jpg", 200)  # the header cut: not an image
    truncate(tmp_path / "data" / "train" / f"{other[1]}.jpg", 0.5)  # the pixel data cut
    (tmp_path / "data" / "train" / f"{other[2]}.jpg").unlink()      # gone
    predict(tmp_path, "test")
    got, ref = read_preds(tmp_path / "r" / "preds" / "test.none.csv"), read_preds(
        trained / "runs" / "r" / "preds" / "test.none.csv")
    assert got[0] == ref[0] and got[1] == ref[1]
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-5, atol=1e-7)
    # the validation fold has none of the broken images: decoded alone, it gives the trainer's predictions
    (tmp_path / "r" / "preds" / "val.none.csv").unlink()
    predict(tmp_path, "val")
    got, ref = read_preds(tmp_path / "r" / "preds" / "val.none.csv"), read_preds(
        trained / "runs" / "r" / "preds" / "val.none.csv")
    assert got[0] == ref[0] == folds.loc[folds["fold"] == 0, "image_name"].tolist()
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-4, atol=1e-6)
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.npy")) == ["test", "train"]
    assert any("fold0" in p.name for p in (tmp_path / "cache").glob("train-*.npy"))


@pytest.mark.parametrize("keep", [200, 0.5])
def test_a_broken_image_of_the_predicted_split_is_refused_by_name(copy, keep):
    tmp_path, folds = copy
    before = sorted(p.name for p in (tmp_path / "r" / "preds").iterdir())
    val_name = folds.loc[folds["fold"] == 0, "image_name"].iloc[1]
    truncate(tmp_path / "data" / "train" / f"{val_name}.jpg", keep)
    r = predict(tmp_path, "val", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{val_name}.jpg" in r.stderr and "validation fold 0" in r.stderr
    predict(tmp_path, "test")  # the test images are fine
    truncate(tmp_path / "data" / "test" / "t002.jpg", keep)
    (tmp_path / "r" / "preds" / "test.none.csv").unlink()
    for split in ("test", "both"):
        r = predict(tmp_path, split, check=False)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "t002.jpg" in r.stderr and "sample_submission.csv row 4" in r.stderr
    assert sorted(p.name for p in (tmp_path / "r" / "preds").iterdir()) == [n for n in before if n != "test.none.csv"]
