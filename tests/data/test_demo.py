"""The synthetic demo dataset: layout, determinism, tag densities, images, safe writing."""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import utils.data.demo as demo
from utils.data.demo import DENSITIES, ON_TOP, TAGS, draw_outfit, make_demo, sample_labels, tag_frequencies
from utils.common.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_train=60, n_test=20, size=32, seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("d") / "demo", workers=1, **SMALL)


def _digest(folder):
    """{relative path: sha256} of every file under folder."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_layout_and_csvs(small):
    assert sorted(p.name for p in small.iterdir()) == [
        "labels.txt", "sample_submission.csv", "test", "test_labels.csv", "train", "train.csv"]
    assert (small / "labels.txt").read_text().split("\n")[:-1] == list(TAGS)
    train, test = _read(small / "train.csv"), _read(small / "test_labels.csv")
    sub = _read(small / "sample_submission.csv")
    for df, n in ((train, 60), (test, 20), (sub, 20)):
        assert list(df.columns) == ["image_name", "tags"] and len(df) == n
        assert df["image_name"].is_unique
    assert train["image_name"].iloc[0] == "train_00001" and not train["image_name"].str.contains(r"\.").any()
    assert (sub["image_name"] == test["image_name"]).all() and (sub["tags"] == "").all()
    for df in (train, test):
        tags = [t for ts in df["tags"].str.split() for t in ts]
        assert set(tags) <= set(TAGS)
        assert all(ts == sorted(ts, key=TAGS.index) for ts in df["tags"].str.split())


@pytest.mark.parametrize("split, csv", [("train", "train.csv"), ("test", "test_labels.csv")])
def test_csv_matches_image_files_and_images_are_rgb(small, split, csv):
    names = _read(small / csv)["image_name"]
    assert sorted(p.name for p in (small / split).iterdir()) == sorted(f"{n}.jpg" for n in names)
    for n in names:
        with Image.open(small / split / f"{n}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 32)


def test_same_seed_same_bytes_for_any_worker_count(small, tmp_path):
    again = make_demo(tmp_path / "again", workers=2, **SMALL)
    assert _digest(again) == _digest(small)
    other = make_demo(tmp_path / "other", workers=1, **{**SMALL, "seed": 1})
    assert _digest(other)["train/train_00001.jpg"] != _digest(small)["train/train_00001.jpg"]


def test_label_densities():
    n = 400_000
    y = sample_labels(n, np.random.default_rng(0))
    assert y.shape == (n, len(TAGS)) and y.dtype == bool
    p = np.array(DENSITIES)
    sigma = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(y.mean(0) - p) < 5 * sigma), (y.mean(0), p)
    # the tags that live on a top never appear without one
    top = y[:, TAGS.index("top")]
    for tag in ON_TOP:
        assert not (y[:, TAGS.index(tag)] & ~top).any()
    # everything else is independent of the top: e.g. shoes at the same rate with or without
    shoes = y[:, TAGS.index("shoes")]
    assert abs(shoes[top].mean() - shoes[~top].mean()) < 0.01


def test_labels_written_follow_sample_labels(small):
    rows = sample_labels(60, np.random.default_rng([0, 0]))
    assert _read(small / "train.csv")["tags"].tolist() == [demo.tags_to_str(r) for r in rows]


def test_tag_frequencies_table(small):
    table = tag_frequencies(small)
    assert list(table.index) == list(TAGS) and list(table.columns) == ["density", "train", "test"]
    tags = _read(small / "train.csv")["tags"].str.split()
    assert table.loc["top", "train"] == pytest.approx(sum("top" in t for t in tags) / 60)


@pytest.mark.parametrize("tag", TAGS)
def test_every_tag_changes_the_image(tag):
    """Turning one tag on (same random stream) visibly changes the picture."""
    base = np.zeros(len(TAGS), bool)
    base[TAGS.index("top")] = tag in ON_TOP  # those are drawn on a top
    on = base.copy()
    on[TAGS.index(tag)] = True
    a = np.asarray(draw_outfit(base, 96, np.random.default_rng(3)), dtype=np.float64)
    b = np.asarray(draw_outfit(on, 96, np.random.default_rng(3)), dtype=np.float64)
    changed = (np.abs(a - b).max(-1) > 40).sum()
    assert changed >= 10, f"{tag}: only {changed} pixels changed"


def test_refuses_non_empty_folder_unless_forced(small, tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        make_demo(out, workers=1, **SMALL)
    assert (out / "keep.txt").exists()
    make_demo(out, workers=1, force=True, **SMALL)
    assert _digest(out) == _digest(small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temp or old folders left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _digest(make_demo(empty, workers=1, **SMALL)) == _digest(small)


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def boom(row, size, rng):
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return Image.new("RGB", (size, size))

    monkeypatch.setattr(demo, "draw_outfit", boom)
    with pytest.raises(KeyboardInterrupt):
        make_demo(tmp_path / "demo", workers=1, **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [dict(n_train=0), dict(n_test=0), dict(size=8), dict(seed=-1)])
def test_invalid_settings(tmp_path, bad):
    with pytest.raises(DataError):
        make_demo(tmp_path / "demo", workers=1, **{**SMALL, **bad})
    assert not (tmp_path / "demo").exists()


def test_cli(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools" / "make_demo.py"), "--out", str(tmp_path / "demo"),
           "--train", "20", "--test", "5", "--size", "24", "--workers", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(tmp_path / "demo") in r.stdout and "long_sleeves" in r.stdout
    assert len(list((tmp_path / "demo" / "train").iterdir())) == 20
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "not empty" in r.stderr
