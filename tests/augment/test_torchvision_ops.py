"""The torchvision v2 ops in --aug (erase, randaug, trivialaug, autoaug, preset strong) on both paths."""
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from utils.common.errors import DataError
from utils.augment.gpu import GpuAugment
from utils.augment.torchvision_ops import Erase, RandAug
from utils.augment.transforms import build_augment, parse_augment
from helpers import textured, to_batch

TV_SPECS = ["erase:1", "randaug", "randaug:n=3,m=15", "trivialaug", "autoaug", "autoaug:svhn", "strong"]


def run(spec, img, seed, size=None):
    aug = build_augment(spec, size or img.shape[0])
    return aug(img, np.array([1, 0], np.float32), np.random.default_rng(seed))[0]


@pytest.mark.parametrize("spec", TV_SPECS)
def test_shape_dtype_and_input_untouched(spec):
    img = textured(40, 56)
    before = img.copy()
    out = run(spec, img, 0, size=24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(img, before)


@pytest.mark.parametrize("spec", TV_SPECS)
def test_pure_function_of_the_rng_and_global_torch_rng_untouched(spec):
    img = textured(32, 32)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    a = run(spec, img, 7)
    assert torch.get_num_threads() == threads
    state = torch.random.get_rng_state()
    torch.manual_seed(12345)  # another global state must not change the result
    b = run(spec, img, 7)
    torch.manual_seed(0)
    run(spec, img, 7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the call left the global RNG as it was
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, run(spec, img, s)) for s in range(8, 14))


@pytest.mark.parametrize("spec", ["randaug", "trivialaug", "autoaug", "strong"])
def test_the_op_changes_the_image(spec):
    img = textured(32, 32)
    changed = [not np.array_equal(run(spec, img, s), img) for s in range(20)]
    assert sum(changed) >= 15, changed  # trivialaug and autoaug may draw the identity now and then


def _erased_box(out, fill):
    """(rows, cols) of the bounding box of pixels equal to `fill`, which the image itself never has."""
    hit = np.all(out == np.asarray(fill, np.uint8), axis=-1)
    if not hit.any():
        return 0, 0
    r, c = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
    h, w = r[-1] - r[0] + 1, c[-1] - c[0] + 1
    assert hit.sum() == h * w  # one solid rectangle
    return h, w


@pytest.mark.parametrize("size, opts", [(32, "p=1,fill=0"), (33, "p=1,fill=0"), (48, "p=1,fill=0,ratio=0.3"),
                                        (40, "p=1,fill=0,side=0.25")])
def test_erase_box_is_bounded_by_side(size, opts):
    side = float(opts.split("side=")[1]) if "side=" in opts else 0.5
    img = textured(size, size, low=40)  # no pixel is black: fill=0 marks the erased box exactly
    boxes = [_erased_box(run(f"erase:{opts}", img, s), 0) for s in range(60)]
    assert all(h > 0 for h, _ in boxes)  # p=1: always erased
    assert max(max(b) for b in boxes) <= round(side * size)
    assert max(max(b) for b in boxes) >= round(side * size) - 3  # and it does reach the bound
    if "ratio=0.3" in opts:
        assert any(h != w for h, w in boxes)


def test_erase_probability_and_random_solid_fill():
    img = textured(32, 32, low=40)
    erased = [not np.array_equal(run("erase", img, s), img) for s in range(200)]
    assert 70 <= sum(erased) <= 130  # p = 0.5
    out = run("erase:1", img, 3)
    diff = np.any(out != img, axis=-1)
    colours = np.unique(out[diff], axis=0)
    assert diff.sum() > 0 and len(colours) == 1  # one solid colour, drawn per image
    assert not np.array_equal(colours[0], np.unique(run("erase:1", img, 4)[np.any(run("erase:1", img, 4) != img,
                                                                                   axis=-1)], axis=0)[0])


@pytest.mark.parametrize("op, spec", [(Erase, "erase:p=1"), (RandAug, "randaug:n=2,m=12")])
def test_batch_of_one_matches_the_cpu_path_exactly(op, spec):
    opts = parse_augment(spec)[0][1]
    img = textured(24, 24)
    for seed in range(5):
        cpu, _ = op(**opts).apply(img, None, np.random.default_rng(seed))
        gpu, _ = op(**opts).apply_batch(to_batch([img]), None, np.random.default_rng(seed))
        assert np.array_equal((gpu[0].permute(1, 2, 0) * 255).round().byte().numpy(), cpu)


def test_gpu_path_draws_per_image_where_v2_on_a_batch_draws_once():
    img = textured(32, 32, low=40)
    x = to_batch([img] * 8)
    out, _ = GpuAugment("erase:p=1,fill=0", 32)(x, torch.zeros(8, 2), torch.Generator().manual_seed(0))
    boxes = {_erased_box((o.permute(1, 2, 0) * 255).round().byte().numpy(), 0) for o in out}
    assert len(boxes) > 1 and (0, 0) not in boxes
    # what v2 itself does with a batch: one box for every image (why the GPU path loops)
    u8 = (x * 255).round().byte()
    same = v2.RandomErasing(p=1, value=0)(u8)
    assert all(torch.equal(same[0] == 0, s == 0) for s in same)


@pytest.mark.parametrize("spec", TV_SPECS)
def test_gpu_path_runs_on_cpu_device(spec):
    x = to_batch([textured(32, 32, seed=s) for s in range(4)])
    aug = GpuAugment(spec, 24)
    a, y = aug(x, torch.zeros(4, 2), torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 24, 24) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    b, _ = aug(x, torch.zeros(4, 2), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_strong_preset():
    assert [n for n, _ in parse_augment("strong")] == ["hflip", "erase", "randaug"]
    aug = build_augment("strong", 32)
    assert build_augment(aug.spec, 32).spec == aug.spec
    assert aug.ops[1].opts["p"] == 1 and aug.ops[2].opts == {"n": 2, "m": 9, "bins": 31}


@pytest.mark.parametrize("spec, match", [
    ("randaug:m=40", "randaug: m must be an integer in"),
    ("randaug:n=1.5", "randaug: n must be an integer"),
    ("randaug:q=1", "'randaug': unknown option"),
    ("trivialaug:bins=1", "trivialaug: bins"),
    ("erase:side=2", "erase: side and ratio"),
    ("erase:fill=blue", "erase: fill must be"),
    ("erase:p=3", "erase: p must be"),
    ("autoaug:coco", "autoaug policy 'coco'; valid: imagenet"),
    ("randaug:n=2;m=9", r"write --aug 'randaug:n=2,m=9'"),
])
def test_parse_errors_name_the_op(spec, match):
    with pytest.raises(DataError, match=match):
        build_augment(spec, 32)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.slow
def test_train_with_strong_on_either_path(tmp_path, device):
    import json

    from conftest import write_dataset
    from helpers import train

    data = write_dataset(tmp_path / "data", n=24, size=24)
    train(data, tmp_path / "runs", "--aug", "strong", "--aug-device", device, "--workers", "0",
          "--stages", "epochs=1,size=24,bs=8,train=all")
    cfg = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert cfg["aug"] == "strong"
    hist = (tmp_path / "runs" / "r" / "history.csv").read_text().splitlines()
    assert len(hist) == 2 and "nan" not in hist[1]
