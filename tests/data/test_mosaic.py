"""The Fashion-MNIST mosaic dataset: npz checks, layout, tags = classes shown, determinism, named colours, CLI."""
import gzip
import hashlib
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils.data.dataset import load_dataset
from utils.common.errors import DataError
from utils.data.mosaic import (CLASSES, COLOURS, DENSITIES, MAX_COLOURS, MAX_TAGS, colour_densities, colour_tags,
                               draw_mosaic, layout, load_npz, make_mosaic, mosaic_frequencies, mosaic_labels,
                               sample_colours, sample_labels)

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_train=40, n_test=12, size=32, seed=0)
TRAIN_VALUE, TEST_VALUE = 255, 60  # fake photos: train ones white, test ones dark grey


def write_fake_npz(path, per_class=3, **override):
    """A tiny Fashion-MNIST-like npz: per_class flat photos per class and split."""
    y = np.repeat(np.arange(len(CLASSES), dtype=np.uint8), per_class)
    arrays = dict(x_train=np.full((len(y), 28, 28), TRAIN_VALUE, np.uint8), y_train=y,
                  x_test=np.full((len(y), 28, 28), TEST_VALUE, np.uint8), y_test=y.copy())
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_fake_npz(tmp_path_factory.mktemp("npz") / "fm.npz")


@pytest.fixture(scope="module")
def small(npz, tmp_path_factory):
    return make_mosaic(npz, tmp_path_factory.mktemp("d") / "mosaic", **SMALL)


def _pixel_digest(folder):
    """One sha256 over every file's path and content, PNGs by mode and decoded pixels (not by zlib's bytes)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            if p.suffix == ".png":
                with Image.open(p) as im:
                    h.update(im.mode.encode())
                    h.update(np.asarray(im).tobytes())
            else:
                h.update(p.read_bytes())
    return h.hexdigest()


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_layout_is_a_dataset_the_loader_accepts(small):
    assert sorted(p.name for p in small.iterdir()) == [
        "labels.txt", "sample_submission.csv", "test", "test_labels.csv", "train", "train.csv"]
    spec = load_dataset(small)  # the project's own checks: files, tags, labels.txt
    assert spec.labels == list(CLASSES) and len(spec.names) == 40 and len(spec.test_names) == 12
    test = _read(small / "test_labels.csv")
    assert spec.test_names == test["image_name"].tolist()
    assert (_read(small / "sample_submission.csv")["tags"] == "").all()
    tags = spec.y.sum(1)
    assert tags.min() >= 1 and tags.max() <= MAX_TAGS
    for split, n in (("train", 40), ("test", 12)):
        for f in sorted((small / split).iterdir())[:n]:
            with Image.open(f) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 32)


def test_test_images_use_test_photos_only(small):
    for split, lo, hi in (("train", 96, 255), ("test", 1, TEST_VALUE)):
        peaks = [np.asarray(Image.open(f)).max() for f in (small / split).iterdir()]
        assert lo <= min(peaks) and max(peaks) <= hi, (split, min(peaks), max(peaks))


def test_same_seed_same_bytes(npz, small, tmp_path):
    assert _digest(make_mosaic(npz, tmp_path / "again", **SMALL)) == _digest(small)
    other = _digest(make_mosaic(npz, tmp_path / "other", **{**SMALL, "seed": 1}))
    assert other["train/train_00001.png"] != _digest(small)["train/train_00001.png"]


def test_label_densities():
    n = 200_000
    y = sample_labels(n, np.random.default_rng(0))
    assert y.shape == (n, len(CLASSES)) and y.dtype == bool
    k = y.sum(1)
    assert k.min() >= 1 and k.max() <= MAX_TAGS
    p = np.array(DENSITIES)
    # redrawn empty rows shift densities up by at most P(empty) ~ 0.4%
    assert np.all(np.abs(y.mean(0) - p) < 5 * np.sqrt(p * (1 - p) / n) + 0.005), (y.mean(0), p)
    assert y.mean(0).max() > 0.85 and y.mean(0).min() < 0.01


@pytest.mark.parametrize("seed", range(20))
def test_every_present_class_gets_a_cell_and_no_other(seed):
    rng = np.random.default_rng(seed)
    row = sample_labels(1, rng)[0]
    side, cells = layout(row, rng)
    assert side in (2, 3) and len(cells) == side * side
    assert set(cells) - {-1} == set(np.flatnonzero(row))
    if row.sum() > 4:
        assert side == 3


@pytest.mark.parametrize("seed", range(6))
def test_drawn_cells_follow_the_layout(seed):
    """Replaying the layout with the same generator: lit cells are exactly the non-empty ones."""
    photos = [np.full((2, 28, 28), 255, np.uint8) for _ in CLASSES]
    row = sample_labels(1, np.random.default_rng(100 + seed))[0]
    img = np.asarray(draw_mosaic(row, photos, 36, np.random.default_rng(seed)))
    side, cells = layout(row, np.random.default_rng(seed))
    step = 36 // side
    for k, c in enumerate(cells):
        block = img[k // side * step:(k // side + 1) * step, k % side * step:(k % side + 1) * step]
        assert (block.min() >= 96) if c >= 0 else (block.max() == 0), (k, c)


def test_frequencies_table(small):
    table = mosaic_frequencies(small)
    assert list(table.index) == list(CLASSES) and list(table.columns) == ["density", "train", "test"]
    tags = _read(small / "train.csv")["tags"].str.split()
    assert table.loc["sandal", "train"] == pytest.approx(sum("sandal" in t for t in tags) / 40)


@pytest.mark.parametrize("override, match", [
    (dict(x_train=None, y_train=None), r"missing key\(s\) x_train, y_train; the file has x_test, y_test"),
    (dict(y_test=np.full(30, 12, np.uint8)), "class ids must be 0..9"),
    (dict(y_test=np.zeros(30, np.uint8)), "no photo of class"),
    (dict(x_train=np.zeros((30, 28), np.uint8)), "x_train: expected"),
])
def test_bad_npz_names_file_and_problem(tmp_path, override, match):
    path = write_fake_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(DataError, match=match) as e:
        make_mosaic(path, tmp_path / "out", **SMALL)
    assert str(path) in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


def test_unreadable_npz(tmp_path):
    (tmp_path / "x.npz").write_text("not a zip")
    with pytest.raises(DataError, match="x.npz: not an .npz file"):
        load_npz(tmp_path / "x.npz")
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "absent.npz")


@pytest.mark.parametrize("kind, write, what", [
    ("pickle", lambda p: p.write_bytes(pickle.dumps({"x_train": [1, 2]})), "a Python pickle"),
    ("npy", lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p), "single .npy"),
    ("gzip", lambda p: p.write_bytes(gzip.compress(b"\x00\x00\x08\x03")), "gzip file"),
    ("zip", lambda p: zipfile.ZipFile(p, "w").writestr("a.txt", "x"), "missing key(s) x_train"),
])
@pytest.mark.slow
def test_not_an_npz_says_what_it_needs_and_where_to_get_it(tmp_path, kind, write, what):
    path = tmp_path / f"{kind}.npz"
    write(path)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_mosaic.py"), "--npz", str(path), "--out",
                        str(tmp_path / "m")], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "pickled" not in r.stderr
    assert str(path) in r.stderr and what in r.stderr
    assert "x_train, y_train, x_test, y_test" in r.stderr and "keras.datasets" in r.stderr
    assert "zalandoresearch/fashion-mnist" in r.stderr and not (tmp_path / "m").exists()


@pytest.mark.slow
def test_cli(npz, tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "make_mosaic.py"), "--npz", str(npz), "--out", str(tmp_path / "m"),
           "--n-train", "10", "--n-test", "4", "--size", "24"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ankle_boot" in r.stdout and len(list((tmp_path / "m" / "train").iterdir())) == 10
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "not empty" in r.stderr
    bad = write_fake_npz(tmp_path / "bad.npz", x_test=None)
    r = subprocess.run(cmd[:3] + [str(bad)] + ["--out", str(tmp_path / "n")], capture_output=True, text=True)
    assert r.returncode == 2 and "x_test" in r.stderr and "Traceback" not in r.stderr


# --- named colours (colours=N) ---

# _pixel_digest of `small` (fake npz, SMALL), made before named colours existed: colours=0 must keep it.
GREY_DIGEST = "105271c53f660d77e42f864808058c96160279c3d66b538204a214c952d8a926"
COLOURED = dict(n_train=400, n_test=60, size=32, seed=0, colours=MAX_COLOURS)
RGB = np.array([c for _, c in COLOURS], np.float64)
CHROMA = RGB / RGB.max(1, keepdims=True)  # what a tint looks like whatever the photo's brightness


@pytest.fixture(scope="module")
def textured_npz(tmp_path_factory):
    """Fake photos of random pixels (0..255), so cells have dark, mid and bright pixels."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(CLASSES), dtype=np.uint8), 3)
    x = lambda: rng.integers(0, 256, (len(y), 28, 28)).astype(np.uint8)  # noqa: E731
    return write_fake_npz(tmp_path_factory.mktemp("npz") / "textured.npz", x_train=x(), x_test=x())


@pytest.fixture(scope="module")
def coloured(textured_npz, tmp_path_factory):
    return make_mosaic(textured_npz, tmp_path_factory.mktemp("d") / "mosaic24", **COLOURED)


def _colour_pixels(path, min_value=40):
    """Per COLOURS entry, how many of the image's pixels (largest channel >= min_value) are nearest
    its chromaticity, and the largest distance of such a pixel to its nearest tint."""
    with Image.open(path) as im:
        px = np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3)
    px = px[px.max(1) >= min_value]
    d = np.linalg.norm((px / px.max(1, keepdims=True))[:, None] - CHROMA[None], axis=2)
    return np.bincount(d.argmin(1), minlength=len(COLOURS)), d.min(1).max(initial=0)


def test_colours_0_is_the_greyscale_dataset_unchanged(npz, small, tmp_path):
    assert _pixel_digest(small) == GREY_DIGEST  # the default path, pinned
    assert _digest(make_mosaic(npz, tmp_path / "c0", **SMALL, colours=0)) == _digest(small)


def test_colour_list():
    assert len(COLOURS) == MAX_COLOURS == 14 and len({n for n, _ in COLOURS}) == 14
    assert colour_tags(3) == ["colour_blue", "colour_white", "colour_red"]
    assert mosaic_labels(0) == list(CLASSES) and len(mosaic_labels(14)) == 24
    d = np.linalg.norm(CHROMA[:, None] - CHROMA[None], axis=2) + 9 * np.eye(14)
    assert d.min() > 0.3  # tints told apart at any brightness


def test_colour_densities_are_imbalanced():
    n = 200_000
    for k in (1, 2, 5, 14):
        y = sample_colours(n, np.random.default_rng(k), k)
        assert y.shape == (n, k) and set(np.unique(y.sum(1))) <= {1, 2}
        p = np.array(colour_densities(k))
        assert np.all(np.abs(y.mean(0) - p) < 5 * np.sqrt(p * (1 - p) / n) + 1e-9), (k, y.mean(0), p)
    p = np.array(colour_densities(14))
    assert p.max() > 0.3 and p.min() < 0.02 and ((p >= 0.01) & (p <= 0.05)).sum() >= 5
    assert np.all(np.diff(p) < 0)  # COLOURS is in frequency order
    assert (y.sum(1) == 2).mean() == pytest.approx(0.4, abs=0.01)


def test_coloured_dataset_labels(coloured):
    labels = (coloured / "labels.txt").read_text().split("\n")
    assert labels == [*mosaic_labels(14), ""] and len(labels) - 1 == 24
    spec = load_dataset(coloured)  # the project's own checks: every tag is in labels.txt
    assert spec.labels == mosaic_labels(14) and len(spec.names) == 400 and len(spec.test_names) == 60
    for csv in ("train.csv", "test_labels.csv"):
        for tags in _read(coloured / csv)["tags"].str.split():
            assert tags == [t for t in labels if t in tags]  # labels.txt order: garments, then colours
            colours = [t for t in tags if t.startswith("colour_")]
            assert 1 <= len(colours) <= 2 and 1 <= len(tags) - len(colours) <= MAX_TAGS


def test_coloured_dataset_frequencies(coloured):
    table = mosaic_frequencies(coloured)
    assert list(table.index) == mosaic_labels(14)
    assert table["density"].tolist() == [*DENSITIES, *colour_densities(14)]
    colours = table.loc[colour_tags(14), "train"]
    assert colours.max() > 0.3 and colours.min() < 0.05, colours
    tags = _read(coloured / "train.csv")["tags"].str.split()
    assert table.loc["colour_red", "train"] == pytest.approx(sum("colour_red" in t for t in tags) / 400)


def test_every_colour_tag_is_the_tint_shown(coloured):
    """Each image shows exactly its colour tags: every lit pixel has one of their chromaticities,
    and each of them covers many pixels (a cell)."""
    seen = set()
    for split, csv in (("train", "train.csv"), ("test", "test_labels.csv")):
        for name, tags in _read(coloured / csv).itertuples(index=False):
            counts, worst = _colour_pixels(coloured / split / f"{name}.png")
            tagged = [i for i, (n, _) in enumerate(COLOURS) if f"colour_{n}" in tags.split()]
            seen.update(tagged)
            assert worst < 0.05 and counts[tagged].min() >= 30, (name, tags, counts, worst)
            assert counts.sum() == counts[tagged].sum(), (name, tags, counts)
    assert len(seen) >= 12  # the rare colours are checked too


def test_fewer_colours(textured_npz, tmp_path):
    out = make_mosaic(textured_npz, tmp_path / "m3", **{**COLOURED, "n_train": 50, "n_test": 5, "colours": 3})
    assert (out / "labels.txt").read_text().split() == [*CLASSES, "colour_blue", "colour_white", "colour_red"]
    used = {t for ts in _read(out / "train.csv")["tags"].str.split() for t in ts if t.startswith("colour_")}
    assert used == {"colour_blue", "colour_white", "colour_red"}


def test_garment_tags_do_not_depend_on_colours(npz, small, tmp_path):
    out = make_mosaic(npz, tmp_path / "m", **SMALL, colours=5)
    strip = lambda d: [" ".join(t for t in ts.split() if not t.startswith("colour_"))  # noqa: E731
                       for ts in _read(d / "train.csv")["tags"]]
    assert strip(out) == strip(small)


@pytest.mark.parametrize("seed", range(12))
def test_every_tint_gets_a_cell(seed):
    """Two tints on a row whose layout may have one garment cell: both are shown, nothing else."""
    photos = [np.full((2, 28, 28), 255, np.uint8) for _ in CLASSES]
    row = np.zeros(len(CLASSES), bool)
    row[seed % len(CLASSES)] = True
    tints = RGB[[seed % 14, (seed + 5) % 14]]
    img = np.asarray(draw_mosaic(row, photos, 32, np.random.default_rng(seed), tints)).reshape(-1, 3)
    shown = {tuple(c) for c in np.unique(img, axis=0)} - {(0, 0, 0)}
    assert shown == {tuple(c) for c in tints.astype(np.uint8)}


@pytest.mark.parametrize("colours", [-1, 15, 2.5, True, "3"])
def test_bad_colours(npz, tmp_path, colours):
    with pytest.raises(DataError, match="colours must be an integer 0..14"):
        make_mosaic(npz, tmp_path / "out", **SMALL, colours=colours)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_colours(npz, tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "make_mosaic.py"), "--npz", str(npz), "--out", str(tmp_path / "m"),
           "--n-train", "20", "--n-test", "4", "--size", "24", "--colours", "14"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "24 labels" in r.stdout and "colour_lavender" in r.stdout
    assert (tmp_path / "m" / "labels.txt").read_text().split() == mosaic_labels(14)
    r = subprocess.run(cmd[:-1] + ["15"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "--colours" in r.stderr
