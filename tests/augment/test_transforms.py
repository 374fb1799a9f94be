import json
import math

import numpy as np
import pytest

from helpers import textured, to_batch
from utils.common.errors import DataError
from utils.augment.ops import hue_matrix
from utils.augment.transforms import AUGMENTS, PRESETS, build_augment, parse_augment, pca_stats, warp

LABELS = ["red", "green", "blue", "dress"]
PCA = {"eigval": [0.05, 0.01, 0.002],
       "eigvec": np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0].tolist()}
RANDOM_SPECS = ["hflip", "vflip", "rotate:15", "shift:0.1", "crop:0.125", "rrc:0.5",
                "pca:0.1", "colorswap:rb", "colorswap:perm", "colorswap:hue",
                "light", "default", "heavy"]


def run(spec, img, seed, size=None, labels=LABELS, y=None):
    aug = build_augment(spec, size or img.shape[0], labels=labels, pca=PCA)
    y = np.array([1, 0, 0, 1], dtype=np.float32) if y is None else y
    return aug(img, y, np.random.default_rng(seed))


@pytest.mark.parametrize("spec", RANDOM_SPECS + ["none"])
@pytest.mark.parametrize("shape", [(32, 32), (40, 56), (97, 75)])
def test_shape_dtype_contiguous_and_fresh(spec, shape):
    img = textured(*shape)
    before = img.copy()
    out, y = run(spec, img, 0, size=24)
    assert out.shape == (24, 24, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert y.shape == (4,) and y.dtype == np.float32
    out[:] = 0
    assert np.array_equal(img, before)  # the cached image is never written through


@pytest.mark.parametrize("spec", RANDOM_SPECS)
def test_same_seed_same_result_other_seed_differs(spec):
    img = textured(32, 40)
    a, _ = run(spec, img, 7, size=32)
    b, _ = run(spec, img, 7, size=32)
    assert np.array_equal(a, b)
    others = [run(spec, img, s, size=32)[0] for s in range(8, 14)]
    assert any(not np.array_equal(a, o) for o in others)


def test_flips_exact_and_hflip_twice_is_identity():
    img = textured(20, 20)
    once, _ = run("hflip:1", img, 0)
    assert np.array_equal(once, img[:, ::-1])
    assert np.array_equal(run("hflip:1", once, 1)[0], img)
    assert np.array_equal(run("vflip:p=1", img, 0)[0], img[::-1])
    assert np.array_equal(run("hflip:0", img, 0)[0], img)


def test_warp_matches_reflect_padding_for_an_integer_shift():
    img = textured(16, 16)
    m = np.array([[1, 0, 2 * 3 / 16], [0, 1, -2 * 2 / 16], [0, 0, 1.0]])  # 3 px right, 2 up
    ref = np.pad(img, ((2, 0), (0, 3), (0, 0)), mode="reflect")[:16, 3:]
    assert np.abs(warp(img, m, 16).astype(int) - ref).max() <= 1


def test_warp_quarter_turn_is_rot90():
    img = textured(16, 16)
    m = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])  # output (x, y) reads input (-y, x)
    out = warp(img, m, 16)
    assert np.abs(out.astype(int) - np.rot90(img, k=1)).max() <= 1  # out[r, c] = img[c, -1 - r]


@pytest.mark.parametrize("spec", ["rotate:30", "shift:0.25", "rotate:20;shift:0.2", "heavy"])
def test_reflect_padding_leaves_no_black_border(spec):
    img = textured(48, 48, low=40)
    for seed in range(10):
        out, _ = run(spec.replace("heavy", "hflip;vflip;rotate:15;shift:0.1;rrc:0.35"),
                     img, seed)
        border = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
        assert border.min() >= 40 and out.min() >= 40


def test_crop_keeps_a_large_window_and_rrc_a_smaller_one():
    # R encodes the column: the span of R in the output is the width of the window kept
    w = 64
    img = np.zeros((w, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) * 4)[None, :]
    spans = {}
    for spec in ("crop:0.125", "rrc:0.2"):
        s = [np.ptp(run(spec, img, seed)[0][..., 0].astype(int)) for seed in range(20)]
        spans[spec] = np.array(s) / (4 * (w - 1))
    assert np.all(spans["crop:0.125"] >= 0.875 - 0.03) and np.all(spans["crop:0.125"] <= 1)
    assert spans["rrc:0.2"].min() < 0.7 and np.all(spans["rrc:0.2"] <= 1)
    assert np.array_equal(run("crop:0", img, 0)[0], img)


def test_pca_offsets_have_the_alexnet_covariance():
    grey = np.full((4, 4, 3), 128, np.uint8)
    big = {"eigval": [0.2, 0.05, 0.01], "eigvec": PCA["eigvec"]}
    aug = build_augment("pca:0.1", 4, pca=big)
    offs = []
    for seed in range(3000):
        out, _ = aug(grey, np.zeros(1, np.float32), np.random.default_rng(seed))
        assert np.all(out == out[0, 0])  # one offset per channel for the whole image
        offs.append(out[0, 0].astype(float) - 128)
    offs = np.array(offs)
    vec, val = np.array(big["eigvec"]), np.array(big["eigval"])
    want = 255 ** 2 * vec @ np.diag((0.1 * val) ** 2) @ vec.T
    assert np.abs(offs.mean(axis=0)).max() < 0.3
    assert np.cov(offs, rowvar=False) == pytest.approx(want, abs=0.15 * np.abs(want).max())
    assert np.abs(offs).max() <= 255 * 5 * 0.1 * 0.2 + 1  # small: a few levels


def test_pca_keeps_range():
    img = np.zeros((8, 8, 3), np.uint8)
    img[:4] = 255
    big = {"eigval": [5.0, 5.0, 5.0], "eigvec": np.eye(3).tolist()}  # huge: forces clipping
    out, _ = build_augment("pca:1", 8, pca=big)(img, np.zeros(1), np.random.default_rng(0))
    assert out.dtype == np.uint8 and not np.array_equal(out, img)


def test_pca_without_statistics_warns_naming_the_flag_unless_only_checking(caplog):
    with caplog.at_level("WARNING"):
        build_augment("pca:0.1", 8, check_only=True)
        build_augment("pca:0.1", 8, pca=PCA)
    assert caplog.text == ""
    with caplog.at_level("WARNING"):
        aug = build_augment("hflip;pca:0.1", 8)
    assert "--aug's `pca` op" in caplog.text and "ImageNet" in caplog.text
    assert aug.info()["pca"]["source"] == "imagenet"


def test_pca_stats_matches_numpy_covariance():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 0.6, 0.3], [0.0, 0.0, 0.2]])
    px = np.clip(128 + 30 * rng.normal(size=(50 * 20 * 20, 3)) @ mix, 0, 255).astype(np.uint8)
    images = px.reshape(50, 20, 20, 3)
    stats = pca_stats(images, max_pixels=10 ** 9)
    json.dumps(stats)
    val, vec = np.linalg.eigh(np.cov(px / 255.0, rowvar=False))
    assert stats["eigval"] == pytest.approx(val[::-1], rel=1e-6)
    got = np.array(stats["eigvec"])
    for j in range(3):  # eigenvectors are columns, up to sign
        assert abs(got[:, j] @ vec[:, 2 - j]) == pytest.approx(1, abs=1e-6)
    sampled = pca_stats(images, max_pixels=5000)
    assert sampled["eigval"] == pytest.approx(stats["eigval"], rel=0.15)
    as_list = pca_stats(list(images), max_pixels=10 ** 9)
    assert as_list["eigval"] == pytest.approx(stats["eigval"], rel=1e-6)


def test_colorswap_rb_swaps_channels_exactly():
    img = textured(8, 8)
    out, y = run("colorswap:rb,p=1", img, 0)
    assert np.array_equal(out, img[..., [2, 1, 0]])
    assert np.array_equal(y, [1, 0, 0, 1])  # no remap: labels untouched


def test_colorswap_perm_and_hue():
    img = textured(8, 8)
    seen = set()
    for seed in range(40):
        out, _ = run("colorswap:perm,p=1", img, seed)
        perm = tuple(next(c for c in range(3) if np.array_equal(out[..., k], img[..., c]))
                     for k in range(3))
        seen.add(perm)
    assert (0, 1, 2) not in seen and len(seen) == 5
    assert hue_matrix(120) == pytest.approx(np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]), abs=1e-12)
    grey = np.full((4, 4, 3), 77, np.uint8)
    assert np.array_equal(run("colorswap:hue,p=1", grey, 3)[0], grey)


def test_remap_swaps_label_columns_only_when_channels_swap():
    img = textured(8, 8)
    y0 = np.array([1, 0, 0, 1], dtype=np.float32)
    aug = build_augment("colorswap:rb,remap=red/blue", 8, labels=LABELS)
    swapped = kept = 0
    for seed in range(40):
        out, y = aug(img, y0, np.random.default_rng(seed))
        if np.array_equal(out, img[..., ::-1]):
            swapped += 1
            assert np.array_equal(y, [0, 0, 1, 1])
        else:
            kept += 1
            assert np.array_equal(out, img) and np.array_equal(y, y0)
    assert swapped > 5 and kept > 5
    assert np.array_equal(y0, [1, 0, 0, 1])  # the caller's labels are not modified


def test_remap_over_a_label_subset():
    aug = build_augment("colorswap:rb,p=1,remap=red/blue+navy/maroon", 8, labels=["blue", "red"])
    _, y = aug(textured(8, 8), np.array([1, 0], np.float32), np.random.default_rng(0))
    assert np.array_equal(y, [0, 1])
    with pytest.raises(DataError, match="navy"):
        build_augment("colorswap:rb,remap=red/navy", 8, labels=["blue", "red"])


def test_spec_parsing_presets_and_round_trip():
    aug = build_augment("default;rotate:30;colorswap:rb,remap=red/blue", 32, labels=LABELS)
    assert aug.spec == "hflip;rotate:30;shift:0.0625;crop:0.125;colorswap:rb,remap=red/blue"
    assert str(build_augment(aug.spec, 32, labels=LABELS)) == aug.spec
    assert build_augment("none", 8).spec == "none" and build_augment("", 8).spec == "none"
    for name, spec in PRESETS.items():
        assert build_augment(name, 8, pca=PCA).spec == build_augment(spec, 8, pca=PCA).spec
    assert [n for n, _ in parse_augment("heavy")] == \
        ["hflip", "vflip", "rotate", "shift", "rrc", "pca", "colorswap"]
    info = build_augment("heavy", 8, pca=PCA).info()
    json.dumps(info)
    assert info["pca"]["source"] == "train" and info["pca"]["eigval"] == PCA["eigval"]
    assert set(AUGMENTS) >= {"hflip", "vflip", "rotate", "shift", "crop", "rrc", "pca",
                             "colorswap"}


@pytest.mark.parametrize("spec, match", [
    ("hflip;blur", "valid: hflip, vflip, rotate"),
    ("rotate:deg=10,angle=3", "unknown option"),
    ("rotate:abc", "must be a number"),
    ("crop:1.5", "crop"),
    ("hflip:p=2", "p must be"),
    ("colorswap:xy", "rb, rg, gb, perm, hue"),
    ("colorswap:hue,remap=red/blue", "fixed swap"),
    ("colorswap:rb,remap=red", "pair"),
    ("default:3", "takes no options"),
])
def test_bad_specs_raise_data_error(spec, match):
    with pytest.raises(DataError, match=match):
        build_augment(spec, 32, labels=LABELS)


def test_remap_needs_labels():
    with pytest.raises(DataError, match="label list"):
        build_augment("colorswap:rb,remap=red/blue", 32)


def test_large_input_is_reduced_without_aliasing():
    # a 1-pixel checkerboard averages to grey when shrunk 4x; plain point sampling would not
    img = np.zeros((128, 128, 3), np.uint8)
    img[::2, ::2] = img[1::2, 1::2] = 255
    out, _ = run("rotate:5", img, 0, size=32)
    assert abs(out[4:-4, 4:-4].mean() - 127.5) < 10 and out[4:-4, 4:-4].std() < 20
    assert math.isclose(run("none", img, 0, size=32)[0].mean(), 127.5, abs_tol=10)


def test_warp_batch_matches_warp():
    from utils.augment.gpu import warp_batch

    imgs = [textured(32, 32, seed=s) for s in range(3)]
    aug = build_augment("rotate:15;shift:0.05;crop:0.125", 32)
    rng = np.random.default_rng(0)
    mats = np.stack([aug.matrix(rng) for _ in imgs])
    out = (warp_batch(to_batch(imgs), mats, 32).permute(0, 2, 3, 1).numpy() * 255)
    for img, m, o in zip(imgs, mats, out):
        ref = warp(img, m, 32).astype(float)
        # the two pad by reflection with or without the edge pixel: compare the middle
        assert np.abs(o[6:-6, 6:-6] - ref[6:-6, 6:-6]).max() <= 1.5


def test_gpu_augment_determinism_flips_and_colour():
    import torch

    from utils.augment.gpu import GpuAugment

    imgs = [textured(16, 16, seed=s) for s in range(4)]
    x, y = to_batch(imgs), torch.tensor([[1.0, 0, 0, 1]] * 4)
    aug = GpuAugment("heavy", 16, labels=LABELS, pca=PCA)
    a = aug(x, y, torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, aug(x, y, torch.Generator().manual_seed(1))[0])
    assert not torch.equal(a, aug(x, y, torch.Generator().manual_seed(2))[0])
    assert a.shape == (4, 3, 16, 16) and 0 <= a.min() and a.max() <= 1
    flipped, _ = GpuAugment("hflip:1", 16)(x, y, torch.Generator().manual_seed(0))
    assert torch.allclose(flipped, x.flip(3), atol=1e-5)
    sw, y2 = GpuAugment("colorswap:rb,p=1,remap=red/blue", 16, labels=LABELS)(
        x, y, torch.Generator().manual_seed(0))
    assert torch.equal(sw, x[:, [2, 1, 0]])
    assert torch.equal(y2, torch.tensor([[0.0, 0, 1, 1]] * 4)) and y[0, 0] == 1
    grey = torch.full((2, 3, 4, 4), 0.5)
    lit, _ = GpuAugment("pca:0.1", 4, pca=PCA)(grey, y[:2], torch.Generator().manual_seed(0))
    offs = lit - 0.5
    assert torch.allclose(offs, offs[:, :, :1, :1].expand_as(offs))
    assert not torch.allclose(offs[0], offs[1]) and offs.abs().max() < 0.05
    small, _ = GpuAugment("crop", 12)(x, y, torch.Generator().manual_seed(0))
    assert small.shape == (4, 3, 12, 12)
