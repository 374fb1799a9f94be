"""Image files as users have them: motion photos, photos cut short, iPhone HEIC, images in
subfolders, dangling symlinks, other formats, names in another case; each read, or named for
what it is."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_dataset
from utils.common.errors import DataError
from utils.data import image_files
from utils.data.dataset import check_test_images, load_dataset
from utils.data.image_files import ImageFolder, check_complete, check_header


def noise(path, fmt="JPEG", side=48, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(path, format=fmt)
    return Path(path)


def append(path, extra):
    Path(path).write_bytes(Path(path).read_bytes() + extra)


def cut(path, keep=0.5):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


MOTION = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # a phone appends its video after the JPEG


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif")])
def test_data_after_the_end_marker_is_an_image_and_a_file_cut_short_is_not(tmp_path, fmt, ext):
    motion = noise(tmp_path / f"motion.{ext}", fmt)
    append(motion, MOTION)
    assert check_complete(motion) is None
    half = noise(tmp_path / f"half.{ext}", fmt, seed=1)
    cut(half, 0.5)
    with Image.open(half):  # the header still reads
        pass
    problem = check_complete(half)
    assert problem.startswith(f"{half}: truncated {fmt}") and "does not decode completely" in problem


def test_a_motion_photo_trains_and_predicts_and_a_half_photo_is_named(tmp_path):
    from utils.data.cache import decode_image

    data = write_dataset(tmp_path / "d", n=10, size=16, n_test=2)
    append(data / "train" / "img003.jpg", MOTION)
    append(data / "test" / "t001.jpg", MOTION)
    spec = load_dataset(data)
    assert check_test_images(spec) == [] and decode_image(spec.files[3], 16).shape == (16, 16, 3)
    cut(noise(data / "train" / "img004.jpg"), 0.5)  # large enough for its header to survive the cut
    with pytest.raises(DataError, match=r"train.csv row 6: .*img004.jpg: truncated JPEG"):
        load_dataset(data)


def test_heic_photos_are_read_like_any_image(tmp_path):
    pytest.importorskip("pillow_heif")
    from utils.data.cache import decode_image

    data = write_dataset(tmp_path / "d", n=10, size=16, n_test=2)
    (data / "train" / "img002.jpg").unlink()
    noise(data / "train" / "img002.HEIC", "HEIF", side=16)
    spec = load_dataset(data)
    assert spec.files[2].name == "img002.HEIC"
    assert decode_image(spec.files[2], 16).shape == (16, 16, 3)


def test_without_pillow_heif_a_heic_file_is_named_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(image_files, "heif_problem", lambda p: f"{p}: needs pillow-heif: pip install pillow-heif")
    path = tmp_path / "a.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic")
    assert "pip install pillow-heif" in check_header(path)
    from utils.data import heif
    monkeypatch.setattr(heif, "AVAILABLE", False)
    assert "pip install pillow-heif" in heif.heif_problem(path) and heif.heif_problem(tmp_path / "a.jpg") is None


def test_a_missing_image_is_explained_by_what_is_there(tmp_path):
    folder = tmp_path / "train"
    (folder / "sub").mkdir(parents=True)
    noise(folder / "ok.jpg")
    noise(folder / "sub" / "img1.jpg")
    os.symlink(tmp_path / "gone" / "img2.jpg", folder / "img2.jpg")
    (folder / "img3.raw").write_bytes(b"raw")
    noise(folder / "IMG4.JPG")
    index = ImageFolder(folder)
    assert index.resolve("ok") == folder / "ok.jpg" and index.resolve("img1") is None
    assert f"{folder / 'sub' / 'img1.jpg'} is in a subfolder; images must lie directly in {folder}/ (move them up)" \
        in index.why_missing("img1")
    assert f"{folder / 'img2.jpg'} is a symlink to a missing file {tmp_path / 'gone' / 'img2.jpg'}" \
        in index.why_missing("img2.jpg")
    assert "img3.raw is there, but .raw is not an image format read here" in index.why_missing("img3")
    assert "IMG4.JPG differs only in case" in index.why_missing("img4")
    assert index.why_missing("img5") == f"no image file for 'img5' in {folder}"
    assert "a symlink to a missing file" in check_header(folder / "img2.jpg")


def test_the_data_check_names_subfolders_and_symlinks_per_row(tmp_path):
    data = write_dataset(tmp_path / "d", n=10, size=16, n_test=2)
    (data / "train" / "sub").mkdir()
    (data / "train" / "img001.jpg").rename(data / "train" / "sub" / "img001.jpg")
    (data / "train" / "img002.jpg").rename(tmp_path / "elsewhere.jpg")
    os.symlink(tmp_path / "elsewhere-moved.jpg", data / "train" / "img002.jpg")
    with pytest.raises(DataError) as e:
        load_dataset(data)
    msg = str(e.value)
    assert "train.csv row 3: no image file for 'img001'" in msg and "is in a subfolder" in msg
    assert "train.csv row 4: no image file for 'img002'" in msg and "is a symlink to a missing file" in msg


def test_test_images_in_subfolders_are_named_not_silently_skipped(tmp_path, caplog):
    data = write_dataset(tmp_path / "d", n=10, size=16, n_test=3)
    (data / "sample_submission.csv").unlink()  # every image of test/ is predicted
    (data / "test" / "iphone").mkdir()
    for f in sorted((data / "test").glob("*.jpg")):
        f.rename(data / "test" / "iphone" / f.name)
    with pytest.raises(DataError, match=r"test folder has no images .*; 3 lie in its subfolders \('iphone/t000.jpg'"
                                        r".*images must lie directly in .*test/ \(move them up\)"):
        load_dataset(data, need_test=True)
    (data / "test" / "iphone" / "t000.jpg").rename(data / "test" / "t000.jpg")
    assert load_dataset(data, need_test=True).test_names == ["t000"]
    assert "2 image(s) in subfolders of" in caplog.text and "are not predicted" in caplog.text
