"""train.py and predict.py with a vision transformer: a tiny random ViT trained at a side far
from its pretrained one, sides its patches do not tile refused before anything is written."""
import pytest

from conftest import run_script, write_dataset
from helpers import train_run

pytestmark = pytest.mark.slow
VIT = "vit_tiny_patch16_224"


def test_vit_trains_and_predicts_at_32px_and_refuses_other_sides(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=32, n_test=2)
    stages = "epochs=1,size=32,bs=4,lr=1e-3"
    run = train_run(data, tmp_path / "runs", "--stages", stages, "--head", "avg", "--device", "cpu",
                    "--workers", "0", arch=VIT)
    run_script("predict.py", "--runs", run, "--split", "both", "--tta", "10crop", "--device", "cpu")
    assert (run / "preds" / "test.10crop.csv").is_file()
    # multiscale feeds 28 and 36 px: not whole patches
    r = run_script("predict.py", "--runs", run, "--split", "test", "--tta", "multiscale", check=False)
    assert r.returncode == 2 and "size 28 is not a multiple of" in r.stderr and "use 16 or 32" in r.stderr
    assert not (run / "preds" / "test.multiscale.csv").exists()
    r = train_run(data, tmp_path / "runs", "--stages", "epochs=1,size=40,bs=4", name="bad", arch=VIT, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--size/--stages: size 40 is not a multiple of {VIT}'s patch 16; use 32 or 48" in r.stderr
    assert not (tmp_path / "runs" / "bad").exists()
