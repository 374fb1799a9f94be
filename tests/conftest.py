"""Shared fixtures: tiny datasets and runs made inside the test, never real data; and what
every kind of test needs (ROOT, the argv or the run of a script). Other shared helpers are in
tests/helpers.py."""
import os
import shutil
import subprocess
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


def run_script(script, *args, env=None, check=True, cwd=None):
    """Run ROOT/script with these arguments; with check, it must exit 0."""
    e = dict(os.environ, **(env or {}))
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / script), *map(str, args)],
                       capture_output=True, text=True, timeout=300, env=e, cwd=cwd)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two runs (folds 0 and 1 of K=4) of one tiny model; the trainer's val.none.csv kept aside.
    Returns (base, data, runs)."""
    base = tmp_path_factory.mktemp("p")
    data = write_dataset(base / "data", n=40, size=32, n_test=6)
    runs = base / "runs"
    for fold in (0, 1):
        run_script("train.py", "--data", data, "--out", runs, "--arch", "tiny_cnn", "--no-pretrained",
                   "--stages", "epochs=1,size=32,bs=8", "--folds-k", 4, "--fold", fold, "--name", f"f{fold}",
                   "--plots", "none", "--device", "cpu", "--workers", 0)
        shutil.copy(runs / f"f{fold}" / "preds" / "val.none.csv", base / f"trainer_val_f{fold}.csv")
    return base, data, runs
