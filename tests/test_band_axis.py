"""Which axis of a TIFF holds the bands: the file's own metadata (samples per pixel, planar
configuration, pages), at every band count and at image sides as small as the band count."""
import warnings

import numpy as np
import pytest
import tifffile

from utils import bands
from utils.cache import decode_image

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
