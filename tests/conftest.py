"""Shared fixtures: tiny datasets made inside the test, never real data."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Tests never touch the network: weights missing from the caches are not downloaded (the
# download path is tested with the download replaced), here and in the scripts tests run.
os.environ["HF_HUB_OFFLINE"] = "1"
# --amp auto / --channels-last auto on CPU mean fp32 contiguous here, unmeasured: results are compared
# with fp32 references and must not depend on timings (tests of the choice set the variable themselves)
os.environ["MULTITAG_FAST_PATH"] = "off"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def pytest_collection_modifyitems(items):
    """The suites that drive the scripts end to end (tests/scripts/) are slow; elsewhere a test
    that trains a model says so itself with @pytest.mark.slow. `pytest -m "not slow"` is the
    quick tier for the edit-test loop."""
    for item in items:
        if SCRIPTS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


def script_argv(script, kill=None):
    """The argv (after the interpreter) that runs ROOT/script; with kill='what:N' through
    tests/kill_at.py, which kills the process at that trainer event."""
    if kill:
        return [str(ROOT / "tests" / "kill_at.py"), kill, str(ROOT / script)]
    return [str(ROOT / script)]


def write_dataset(root, n=40, labels=("a", "b", "c"), size=24, seed=0, n_test=6, ext=".jpg"):
    """A small Planet-layout dataset whose tag 'a' is a bright square, 'b' a dark bar, 'c' a red dot."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i in range(n):
        tags = [l for l in labels if rng.random() < 0.4] or [labels[0]]
        img = (rng.random((size, size, 3)) * 60 + 80).astype(np.uint8)
        if "a" in tags:
            img[2:8, 2:8] = 250
        if "b" in tags:
            img[14:18, :] = 10
        if "c" in tags:
            img[18:22, 18:22] = (250, 0, 0)
        Image.fromarray(img).save(root / "train" / f"img{i:03d}{ext}")
        rows.append(f"img{i:03d},{' '.join(tags)}")
    (root / "train.csv").write_text("image_name,tags\n" + "\n".join(rows) + "\n")
    for i in range(n_test):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(root / "test" / f"t{i:03d}.jpg")
    (root / "sample_submission.csv").write_text("image_name,tags\n" + "".join(f"t{i:03d},a\n" for i in range(n_test)))
    return root


@pytest.fixture
def tiny_data(tmp_path):
    return write_dataset(tmp_path / "data")
