"""Static augmentation (--aug-static K): copies made once, epoch e reads copy e mod K."""
import signal

import numpy as np
import pytest

from conftest import write_dataset
from helpers import same_run, train
from utils.data.loader import CachedImages
from utils.augment.static import make_static
from utils.augment.transforms import build_augment

PLAN = "epochs=2,size=24,bs=8,lr=1e-2,train=head;epochs=2,size=32,train=all"  # 4 epochs, two sizes


def test_copies_are_the_dynamic_draws_of_their_epoch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 20, 20, 3), dtype=np.uint8)
    y = rng.random((5, 3)).astype(np.float32)
    rows = np.array([6, 0, 3, 2, 5])
    aug = build_augment("default;colorswap:rb,remap=a/b", 16, labels=["a", "b", "c"])
    dyn = CachedImages(images, y, rows, aug, seed=3)
    static = make_static(dyn, 3)
    assert static.copies.shape == (3, 5, 16, 16, 3) and static.copies.dtype == np.uint8
    for epoch in range(7):  # epoch e reads copy e mod K, itself epoch (e mod K)'s dynamic draw
        static.epoch, dyn.epoch = epoch, epoch % 3
        for i in range(5):
            (a, ya), (b, yb) = static[i], dyn[i]
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    assert not np.array_equal(static.copies[0], static.copies[1])  # the copies differ
    with pytest.raises(ValueError):
        make_static(CachedImages(images, y, rows, None), 2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("s") / "data", n=40, size=32)


@pytest.fixture(scope="module")
def dynamic(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("dyn")
    train(data, out, "--stages", PLAN, "--deterministic", "--workers", "0")
    return out / "r"


@pytest.mark.slow
def test_as_many_copies_as_epochs_is_the_dynamic_run(data, dynamic, tmp_path):
    train(data, tmp_path, "--stages", PLAN, "--deterministic", "--workers", "0", "--aug-static", "4")
    same_run(dynamic, tmp_path / "r")


@pytest.mark.slow
def test_one_copy_differs_and_resumes_exactly(data, dynamic, tmp_path):
    args = ["--stages", PLAN, "--deterministic", "--workers", "0", "--aug-static", "1", "--ckpt-every", "2"]
    train(data, tmp_path / "ref", *args)
    ref, dyn = (np.loadtxt(d / "preds" / "val.none.csv", delimiter=",", skiprows=1, usecols=(1, 2, 3))
                for d in (tmp_path / "ref" / "r", dynamic))
    assert not np.allclose(ref, dyn, atol=1e-4)
    out = tmp_path / "killed"
    for kill in ("step:3", "stage_end:0", "step:11"):  # mid-epoch, at the size change, in stage 2
        r = train(data, out, *args, *(["--resume"] if (out / "r").exists() else []),
                  kill=kill, check=False)
        assert r.returncode == -signal.SIGKILL, (kill, r.stderr[-2000:])
    train(data, out, *args, "--resume")
    same_run(tmp_path / "ref" / "r", out / "r")


@pytest.mark.slow
def test_bad_static_flags_exit_2(data, tmp_path):
    for bad in (["--aug-static", "-1"], ["--aug-static", "2", "--aug", "none"]):
        r = train(data, tmp_path, "--stages", PLAN, *bad, check=False)
        assert r.returncode == 2 and "--aug-static" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "r").exists()
