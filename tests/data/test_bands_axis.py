"""Which axis of a TIFF holds the bands: the file's own metadata (samples per pixel, planar
configuration, pages), at every band count and at image sides as small as the band count."""
import warnings

import numpy as np
import pytest
import tifffile

from utils.data import bands
from utils.data.cache import decode_image

SIDES = [(2, 2), (2, 3), (3, 2), (3, 3), (4, 4), (2, 32), (32, 2), (4, 32), (32, 4), (32, 32)]


def image(h, w, c):
    """(h, w, c) uint16 whose every value is distinct, so a transposed read cannot match."""
    return (np.arange(h * w * c, dtype=np.uint16) * 7 + 1000).reshape(h, w, c)


def write(path, img, layout):
    """Write (h, w, c) with explicit metadata: one page of c samples, contiguous or planar
    (one band: a plain grey page of an (h, w, 1) or (1, h, w) array)."""
    c = img.shape[2]
    planar = layout == "planar"
    data = np.moveaxis(img, -1, 0) if planar else img
    kw = {"planarconfig": "separate" if planar else "contig"} if c > 1 else {}
    tifffile.imwrite(path, data, photometric="minisblack", **kw)


@pytest.mark.parametrize("layout", ["contig", "planar"])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_every_band_count_and_side_reads_back_exactly(tmp_path, c, layout):
    for h, w in SIDES:
        img = image(h, w, c)
        path = tmp_path / f"{c}-{layout}-{h}x{w}.tif"
        write(path, img, layout)
        assert bands.image_band_count(path) == c, (h, w)
        np.testing.assert_array_equal(bands.read_tiff(path), img, err_msg=f"{h}x{w}")


@pytest.mark.parametrize("c", [3, 4])
def test_rgb_photometric_reads_back_exactly(tmp_path, c):
    for h, w in SIDES:
        img = image(h, w, c)
        for layout, data in (("contig", img), ("separate", np.moveaxis(img, -1, 0))):
            tifffile.imwrite(tmp_path / "x.tif", data, photometric="rgb", planarconfig=layout)
            assert bands.image_band_count(tmp_path / "x.tif") == c
            np.testing.assert_array_equal(bands.read_tiff(tmp_path / "x.tif"), img, err_msg=f"{layout} {h}x{w}")


@pytest.mark.parametrize("shape", [(32, 32, 2), (32, 4, 2), (32, 3, 2), (16, 2, 2), (5, 32, 2), (32, 32, 5)])
def test_hwc_array_written_as_grey_pages_by_tifffile_default(tmp_path, shape):
    """tifffile.imwrite(path, (H, W, C) array) with C not 3 or 4 stores H pages of W x C:
    the page width, not the page count, is the band axis."""
    img = image(*shape)
    tifffile.imwrite(tmp_path / "x.tif", img)
    with tifffile.TiffFile(tmp_path / "x.tif") as tif:  # the layout this test is about
        assert len(tif.pages) == shape[0] and tif.pages[0].shape == shape[1:]
    assert bands.image_band_count(tmp_path / "x.tif") == shape[2]
    np.testing.assert_array_equal(bands.read_tiff(tmp_path / "x.tif"), img)


@pytest.mark.parametrize("shape", [(2, 32, 32), (2, 32, 2), (2, 4, 32), (2, 3, 32), (5, 16, 16), (6, 32, 32)])
def test_planar_array_written_as_grey_pages_by_tifffile_default(tmp_path, shape):
    img = image(*shape)  # (C, H, W)
    tifffile.imwrite(tmp_path / "x.tif", img)
    assert bands.image_band_count(tmp_path / "x.tif") == shape[0]
    np.testing.assert_array_equal(bands.read_tiff(tmp_path / "x.tif"), np.moveaxis(img, 0, -1))


def test_one_band_with_a_length_one_axis_is_one_band(tmp_path):
    img = image(32, 16, 1)
    for data in (img, np.moveaxis(img, -1, 0), img[..., 0]):
        tifffile.imwrite(tmp_path / "x.tif", data)
        assert bands.image_band_count(tmp_path / "x.tif") == 1
        np.testing.assert_array_equal(bands.read_tiff(tmp_path / "x.tif"), img)


def test_two_band_image_decodes_to_its_two_scaled_bands(tmp_path):
    img = image(32, 32, 2)
    tifffile.imwrite(tmp_path / "x.tif", img)
    sc = {"low": [0.0, 0.0], "high": [65535.0, 65535.0]}
    out = decode_image(tmp_path / "x.tif", None, channels=2, scaling=sc)
    ref = np.clip(np.floor(img.astype(np.float64) * (255.0 / 65535.0) + 0.5), 0, 255)
    assert out.shape == (32, 32, 2)
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_a_leading_time_axis_is_not_bands(tmp_path):
    img = image(8, 8, 2)
    stack = np.stack([np.moveaxis(img, -1, 0), np.zeros((2, 8, 8), np.uint16)])  # (T, C, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tifffile.imwrite(tmp_path / "x.tif", stack, imagej=True, metadata={"axes": "TCYX"})
    assert bands.image_band_count(tmp_path / "x.tif") == 2
    np.testing.assert_array_equal(bands.read_tiff(tmp_path / "x.tif"), img)


# ---------------------------------------------------------------------------- band counts in messages

def test_grey_images_pil_reads_count_one_band(tmp_path):
    from PIL import Image

    grey = np.full((5, 7), 90, np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "l.png")
    Image.fromarray(grey.astype(np.uint16) * 200).save(tmp_path / "i16.png")
    Image.fromarray(grey, "L").convert("LA").save(tmp_path / "la.png")
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    Image.fromarray(grey, "L").convert("P").save(tmp_path / "p.png")
    counts = {n: bands.image_band_count(tmp_path / n) for n in ("l.png", "i16.png", "la.png", "rgb.jpg", "p.png")}
    assert counts == {"l.png": 1, "i16.png": 1, "la.png": 1, "rgb.jpg": 3, "p.png": 3}
    # what the count says is what decoding does: the one band repeated to 3, refused at 4
    out = decode_image(tmp_path / "l.png", None, channels=3)
    assert (out == 90).all() and out.shape == (5, 7, 3)
    with pytest.raises(ValueError, match=r"l\.png: has 1 band, fewer than --channels 4; .*--channels 3 or fewer"):
        decode_image(tmp_path / "l.png", None, channels=4)


def hinted_channels(message):
    import re

    found = re.findall(r"train with --channels (\d+)", message)
    assert len(found) == 1, message
    return int(found[0])


@pytest.mark.parametrize("extra", [["grey.png"], ["grey.png", "thin.tif"], ["two.tif"], ["grey.png", "two.tif"]])
def test_too_few_bands_names_the_count_found_and_a_channels_value_that_reads_them(tmp_path, extra):
    from PIL import Image

    from helpers import write_planet
    from utils.data.dataset import load_dataset
    from utils.common.errors import DataError

    root = write_planet(tmp_path / "d", n=8, n_test=2)
    made = {"grey.png": lambda p: Image.fromarray(np.full((20, 20), 100, np.uint8), "L").save(p),
            "thin.tif": lambda p: tifffile.imwrite(p, np.full((2, 40, 1), 900, np.uint16)),  # (H, W, 1), H = 2
            "two.tif": lambda p: tifffile.imwrite(p, image(32, 32, 2))}
    for name in extra:
        made[name](root / "train" / name)
    with open(root / "train.csv", "a") as f:
        f.write("".join(f"{name.split('.')[0]},a\n" for name in extra))
    with pytest.raises(DataError) as e:
        load_dataset(root, channels=4)
    msg = str(e.value)
    found = {"grey.png": 1, "thin.tif": 1, "two.tif": 2}
    for name in extra:
        assert f"{name} ({bands.bands_text(found[name])})" in msg
    n = hinted_channels(msg)
    # the hint is the largest value that reads every image: a larger one is refused, it is not
    assert n == min(3 if found[name] == 1 else found[name] for name in extra)
    spec = load_dataset(root, channels=n)
    for f in spec.files:
        assert decode_image(f, 16, channels=n).shape == (16, 16, n)
    if n < 3:
        with pytest.raises(DataError):
            load_dataset(root, channels=n + 1)


def write_page_per_band(path, img, series_kw=None):
    """(h, w, c) written by TiffWriter.write() once per band: c series of one grey page each."""
    with tifffile.TiffWriter(path) as tif:
        for b in range(img.shape[2]):
            tif.write(img[..., b], **(series_kw or {}))


@pytest.mark.parametrize("c", [2, 4])
def test_one_series_per_band_is_a_band_stack(tmp_path, c):
    img = image(16, 12, c)
    path = tmp_path / "x.tif"
    write_page_per_band(path, img)
    with tifffile.TiffFile(path) as tif:  # the layout this test is about
        assert len(tif.series) == c and all(s.shape == (16, 12) for s in tif.series)
    assert bands.image_band_count(path) == c
    np.testing.assert_array_equal(bands.read_tiff(path), img)
    # what --channels reads: the file's own first bands, each scaled by its own rule
    keep = min(c, 3)
    sc = {"low": [1000.0 + 100 * b for b in range(keep)], "high": [3000.0 + 200 * b for b in range(keep)]}
    out = decode_image(path, None, channels=keep, scaling=sc)
    ref = np.stack([np.clip(np.floor((img[..., b] - sc["low"][b]) * 255.0 / (sc["high"][b] - sc["low"][b]) + 0.5),
                            0, 255) for b in range(keep)], axis=-1)
    assert np.abs(out.astype(int) - ref).max() <= 1
    problems, _ = bands.band_problems([path], 3, "train.csv")  # 2 bands are too few for an RGB model
    assert bool(problems) == (c < 3)


def test_series_of_other_shapes_or_dtypes_are_not_bands(tmp_path):
    img = image(16, 12, 2)
    with tifffile.TiffWriter(tmp_path / "x.tif") as tif:  # an image and its thumbnail
        tif.write(img[..., 0])
        tif.write(img[::2, ::2, 1])
    assert bands.image_band_count(tmp_path / "x.tif") == 1
    np.testing.assert_array_equal(bands.read_tiff(tmp_path / "x.tif"), img[..., :1])
    with tifffile.TiffWriter(tmp_path / "y.tif") as tif:
        tif.write(img[..., 0])
        tif.write(img[..., 1].astype(np.float32))
    assert bands.image_band_count(tmp_path / "y.tif") == 1
