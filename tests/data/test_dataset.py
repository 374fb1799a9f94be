"""Data layer: reading by content, validation of bad datasets, folds, the image cache."""
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from utils.data.cache import decode_image, load_images
from utils.data.dataset import load_dataset, select_label_group
from utils.data.folds import load_or_make_folds, make_folds
from utils.common.errors import DataError


def test_load_dataset_reads_labels_and_files(tiny_data):
    spec = load_dataset(tiny_data)
    assert spec.labels == ["a", "b", "c"]
    assert spec.y.shape == (40, 3) and spec.y.dtype == np.uint8
    df = (tiny_data / "train.csv").read_text().splitlines()[1:]
    for i, line in enumerate(df):
        tags = line.split(",")[1].split()
        assert [spec.labels[j] for j in np.flatnonzero(spec.y[i])] == sorted(tags)
    assert spec.test_names == [f"t{i:03d}" for i in range(6)]


def test_labels_txt_fixes_order(tiny_data):
    (tiny_data / "labels.txt").write_text("c\nb\na\nnever_seen\n")
    spec = load_dataset(tiny_data)
    assert spec.labels == ["c", "b", "a", "never_seen"]
    assert spec.y[:, 3].sum() == 0


def test_decode_by_content_and_modes(tmp_path):
    rgb = (np.arange(16 * 16 * 3) % 251).astype(np.uint8).reshape(16, 16, 3)
    Image.fromarray(rgb).save(tmp_path / "jpeg_named.gif", format="JPEG", quality=100)
    Image.fromarray(rgb).save(tmp_path / "png_named.jpg", format="PNG")
    rgba = np.dstack([rgb, np.full((16, 16), 0, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
    for f in ["jpeg_named.gif", "png_named.jpg", "alpha.png", "pal.png", "gray.png", "deep.png"]:
        a = decode_image(tmp_path / f, 8)
        assert a.shape == (8, 8, 3) and a.dtype == np.uint8, f
    assert (decode_image(tmp_path / "png_named.jpg") == rgb).all()
    assert (decode_image(tmp_path / "alpha.png") == 255).all()  # fully transparent -> white background
    g = decode_image(tmp_path / "gray.png")
    assert (g[..., 0] == rgb[..., 0]).all() and (g[..., 1] == g[..., 2]).all()
    assert (decode_image(tmp_path / "deep.png")[..., 0] == rgb[..., 0]).all()  # 16-bit scaled to 8


def test_names_with_or_without_extension(tiny_data):
    csv = tiny_data / "train.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace("img000,", "img000.jpg,")
    lines[2] = lines[2].replace("img001,", "img001.png,")  # wrong extension in the CSV: found by stem
    csv.write_text("\n".join(lines) + "\n")
    spec = load_dataset(tiny_data)
    assert spec.files[0].name == "img000.jpg" and spec.files[1].name == "img001.jpg"


def _problems(root):
    with pytest.raises(DataError) as e:
        load_dataset(root)
    return str(e.value)


def test_all_problems_reported_together(tiny_data):
    (tiny_data / "train" / "img003.jpg").unlink()                       # missing file
    (tiny_data / "train" / "img004.jpg").write_bytes(b"not an image")   # unreadable
    lines = (tiny_data / "train.csv").read_text().splitlines()
    lines.append(lines[5])                                              # duplicate name
    lines.append("img010,zebra")                                        # duplicate + unknown tag
    (tiny_data / "train.csv").write_text("\n".join(lines) + "\n")
    (tiny_data / "labels.txt").write_text("a\nb\nc\n")
    msg = _problems(tiny_data)
    assert "img003" in msg and "row 5" in msg
    assert "img004" in msg and "not a readable image" in msg
    assert "duplicate image name 'img004'" in msg
    assert "zebra" in msg and "labels.txt" in msg
    assert "6 problem(s)" in msg  # the duplicate row of img004 is also unreadable


def test_two_files_for_one_name_are_named_as_candidates(tiny_data):
    Image.open(tiny_data / "train" / "img002.jpg").save(tiny_data / "train" / "img002.png")
    msg = _problems(tiny_data)
    assert "train.csv row 4: 2 candidate files for 'img002'" in msg and "img002.jpg, img002.png" in msg
    assert "no image file" not in msg and "1 problem(s)" in msg
    lines = (tiny_data / "train.csv").read_text().replace("img002,", "img002.png,")
    (tiny_data / "train.csv").write_text(lines)  # the extension written out tells them apart, as the message says
    assert load_dataset(tiny_data).files[2].name == "img002.png"


def test_many_problems_are_capped_with_a_count(tiny_data):
    for i in range(30):
        (tiny_data / "train" / f"img{i:03d}.jpg").unlink()
    msg = _problems(tiny_data)
    assert "30 problem(s)" in msg and "and 10 more" in msg


@pytest.mark.parametrize("content,needle", [
    ("", "empty"),
    ("name,labels\nimg000,a\n", "missing column"),
    ("image_name,tags\n", "no rows"),
])
def test_bad_csv(tiny_data, content, needle):
    (tiny_data / "train.csv").write_text(content)
    assert needle in _problems(tiny_data)


def test_empty_test_folder(tiny_data):
    (tiny_data / "sample_submission.csv").unlink()
    for f in (tiny_data / "test").iterdir():
        f.unlink()
    assert "test folder has no images" in _problems(tiny_data)


def test_truncated_image_found_when_decoding(tiny_data, tmp_path):
    f = tiny_data / "train" / "img007.jpg"
    Image.fromarray((np.random.default_rng(0).random((200, 200, 3)) * 255).astype(np.uint8)).save(f)
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="img007.jpg: truncated JPEG"):  # the upfront check finds it
        load_dataset(tiny_data)
    spec = load_dataset(tiny_data, check=False)  # unchecked: the decoder still names it
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="img007"):
        load_images(spec.files, 16, cache, "train", workers=1)
    assert list(cache.glob("*")) == []  # nothing half-written


@pytest.mark.slow
def test_bad_data_exits_2_and_writes_nothing(tiny_data, tmp_path):
    (tiny_data / "train" / "img002.jpg").unlink()
    before = sorted(p.name for p in tiny_data.rglob("*"))
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(tiny_data), "--out",
                        str(tmp_path / "runs"), "--arch", "tiny_cnn", "--no-pretrained"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "img002" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tiny_data.rglob("*")) == before
    assert not (tmp_path / "runs").exists()


def test_folds_spread_every_label_evenly():
    rng = np.random.default_rng(0)
    dens = np.array([0.9, 0.5, 0.2, 0.05, 0.02, 0.01])
    y = (rng.random((1000, len(dens))) < dens).astype(np.uint8)
    folds = make_folds(y, k=5, seed=1)
    assert Counter(folds.tolist()).keys() == {0, 1, 2, 3, 4}
    for j in range(y.shape[1]):
        per_fold = np.bincount(folds[y[:, j] == 1], minlength=5)
        even = y[:, j].sum() / 5
        assert np.all(np.abs(per_fold - even) <= 1 + 1e-9), (j, per_fold)


def test_folds_file_is_reused_and_guarded(tiny_data):
    spec = load_dataset(tiny_data)
    f1 = load_or_make_folds(spec, k=4, seed=0)
    assert (tiny_data / "folds.csv").is_file()
    assert (load_or_make_folds(spec, k=4, seed=99) == f1).all()  # reused, not remade
    with pytest.raises(DataError, match="K=4"):
        load_or_make_folds(spec, k=5)
    spec.names = spec.names[:-1]
    spec.y = spec.y[:-1]
    with pytest.raises(DataError, match="1 image.* no longer in train.csv .*'img039'") as e:
        load_or_make_folds(spec, k=4)
    assert "--folds-k" not in str(e.value)  # K agrees: the message names the real difference


def test_cache_is_rebuilt_when_a_file_changes(tiny_data, tmp_path):
    spec = load_dataset(tiny_data)
    cache = tmp_path / "cache"
    a = load_images(spec.files, 16, cache, "train", workers=1)
    ref = np.stack([decode_image(f, 16) for f in spec.files])
    assert (np.asarray(a) == ref).all()
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(spec.files[3])
    os.utime(spec.files[3], ns=(1, 10**18))
    b = load_images(spec.files, 16, cache, "train", workers=2)
    assert (np.asarray(b[3]) == 0).all() and len(list(cache.glob("*.npy"))) == 1


def test_label_groups():
    labels = ["a", "b", "c", "d"]
    y = np.array([[1, 1, 0, 0]] * 8 + [[1, 0, 1, 0]] * 1 + [[1, 0, 0, 1]] * 3)
    assert select_label_group(labels, y, None) == [0, 1, 2, 3]
    assert select_label_group(labels, y, "d,b") == [1, 3]
    assert select_label_group(labels, y, "auto:2/0") == [2, 3]  # the rare half
    assert select_label_group(labels, y, "auto:2/1") == [0, 1]
    with pytest.raises(DataError, match="valid tags"):
        select_label_group(labels, y, "zz")
