"""Damaged images, checked the same way for JPEG and PNG: a damaged test image is a warning
of train.py (predict.py refuses it), a damaged training image is refused before anything
is written, by train.py and by tools/submit.py's check of a grid."""
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from conftest import ROOT, write_dataset
from helpers import FAST, train_one_thread, tree


def noise(path, fmt, side=16):
    Image.fromarray((np.random.default_rng(3).random((side, side, 3)) * 255).astype(np.uint8)).save(path, format=fmt)


def cut(path, keep):
    """Keep the first `keep` bytes (a fraction of the file when < 1)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])


@pytest.mark.slow
def test_damaged_test_images_are_warned_about_for_jpeg_and_png(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=3)
    cut(data / "test" / "t000.jpg", 300)  # the header cut: PIL cannot even open it
    (data / "test" / "t001.jpg").unlink()
    noise(data / "test" / "t001.png", "PNG")
    cut(data / "test" / "t001.png", 0.7)  # the header reads, the IEND chunk is gone
    r = train_one_thread(data, tmp_path / "runs", "--stages", FAST)
    head = r.stderr[: r.stderr.find("stage 1 epoch 1")]
    assert "2 test image(s)" in head and "t000.jpg" in head and "t001.png" in head, r.stderr[-3000:]
    assert (tmp_path / "runs" / "r" / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_damaged_training_images_are_refused_before_anything_is_written(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=2)
    (data / "train" / "img003.jpg").unlink()
    noise(data / "train" / "img003.png", "PNG", side=32)
    cut(data / "train" / "img003.png", 0.8)  # header intact: only the end marker gives it away
    noise(data / "train" / "img007.jpg", "JPEG", side=64)
    cut(data / "train" / "img007.jpg", 0.8)
    for f in ("img003.png", "img007.jpg"):
        with Image.open(data / "train" / f):  # the header still reads
            pass
    before = tree(data)
    r = train_one_thread(data, tmp_path / "runs", "--stages", FAST, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "img003.png" in r.stderr and "truncated PNG" in r.stderr, r.stderr[-2000:]
    assert "img007.jpg" in r.stderr and "truncated JPEG" in r.stderr
    assert tree(data) == before and not (tmp_path / "runs").exists()

    out = tmp_path / "grid"
    s = subprocess.run([sys.executable, str(ROOT / "tools" / "submit.py"), "--cluster", "local", "--data", str(data),
                        "--out", str(out), "--arch", "tiny_cnn", "--folds-k", "2", "--", "--no-pretrained"],
                       capture_output=True, text=True, timeout=300)
    assert s.returncode == 2 and "nothing was submitted" in s.stderr and "Traceback" not in s.stderr, s.stderr[-2000:]
    assert "img003.png" in s.stderr and "img007.jpg" in s.stderr
    assert s.stderr.count("img003.png") == 1  # once for the grid, not once per cell
    assert tree(data) == before and not out.exists()
