"""Bad input users really meet: each one is built here, tiny, and must give a clear answer.

Truncated images, BOM/CRLF text files, small folds, damaged checkpoints, EXIF
orientation, unlisted test images, resume from the run alone, offline weights.
"""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, write_dataset
from helpers import FAST, same_result, train_one_thread, tree
from utils.common.errors import DataError


def truncate_jpeg(path, cut=1536):
    """A valid JPEG of noise (large enough) with its last `cut` bytes removed."""
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(path, format="JPEG", quality=95)
    data = Path(path).read_bytes()
    assert len(data) > 2 * cut
    Path(path).write_bytes(data[:-cut])


# ----------------------------------------------------------------------------- 1: nothing written before the checks

def test_truncated_train_image_writes_nothing_and_the_fixed_dataset_trains(tmp_path):
    data = write_dataset(tmp_path / "data", n=14, size=16, n_test=2)
    truncate_jpeg(data / "train" / "img005.jpg")
    before = tree(data)
    r = train_one_thread(data, tmp_path / "runs", "--stages", FAST, check=False)
    assert r.returncode == 2 and "img005.jpg" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert tree(data) == before  # no folds.csv, no .cache/
    assert not (tmp_path / "runs").exists()
    # the user drops the row: the next run trains (no stale folds.csv refuses it)
    csv = data / "train.csv"
    csv.write_text("".join(l for l in csv.read_text().splitlines(True) if not l.startswith("img005,")))
    train_one_thread(data, tmp_path / "runs", "--stages", FAST)
    assert len(pd.read_csv(data / "folds.csv")) == 13


def test_folds_mismatch_names_added_and_removed_images(tmp_path):
    from utils.data.dataset import load_dataset
    from utils.data.folds import load_or_make_folds

    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=1)
    spec = load_dataset(data)
    load_or_make_folds(spec, k=3)
    df = pd.read_csv(data / "folds.csv")
    df.loc[df["image_name"] == "img004", "image_name"] = "gone1"  # img004 added, gone1 removed
    df.to_csv(data / "folds.csv", index=False)
    with pytest.raises(DataError) as e:
        load_or_make_folds(spec, k=3)
    msg = str(e.value)
    assert "'img004'" in msg and "added" in msg and "'gone1'" in msg and "removed" in msg
    assert "--folds-k" not in msg
    with pytest.raises(DataError, match=r"K=3 folds, the command line asks --folds-k 5: leave --folds-k out "
                                        r"\(the file's K is used\) or pass --folds-k 3"):
        load_or_make_folds(spec, k=5)


# ----------------------------------------------------------------------------- 2: broken test images found at the start

def test_check_complete_finds_truncated_files(tmp_path):
    from utils.data.dataset import check_complete

    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp")):
        good = tmp_path / f"good.{ext}"
        img.save(good, format=fmt)
        assert check_complete(good) is None, fmt
        cut = tmp_path / f"cut.{ext}"
        cut.write_bytes(good.read_bytes()[:-200])
        if fmt == "BMP":  # no end marker to check: left to the decoder
            continue
        with Image.open(cut):  # the header still reads: only the end gives it away
            pass
        assert "truncated" in check_complete(cut), fmt
    padded = tmp_path / "padded.jpg"
    padded.write_bytes((tmp_path / "good.jpg").read_bytes() + b"\0" * 100)
    assert check_complete(padded) is None


def test_truncated_test_image_is_named_when_training_starts(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=3)
    truncate_jpeg(data / "test" / "t001.jpg")
    r = train_one_thread(data, tmp_path / "runs", "--stages", FAST)
    head = r.stderr[: r.stderr.find("stage 1 epoch 1")]
    assert "1 test image(s)" in head and "t001.jpg" in head and "truncated JPEG" in head, r.stderr[-3000:]


# ----------------------------------------------------------------------------- 6: one tolerant text reader

def _dos(text, bom=True):
    return (b"\xef\xbb\xbf" if bom else b"") + text.replace("\n", "\r\n").encode()


def test_bom_crlf_and_trailing_spaces_everywhere(tmp_path):
    from utils.data.dataset import load_dataset
    from utils.data.folds import load_or_make_folds
    from utils.runs.pred_files import read_preds

    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=3)
    clean = load_dataset(data)
    (data / "labels.txt").write_bytes(_dos("a \nb\nc\n"))
    rows = (data / "train.csv").read_text().splitlines()
    (data / "train.csv").write_bytes(_dos("\n".join(r + "  " for r in rows) + "\n"))
    (data / "sample_submission.csv").write_bytes(_dos((data / "sample_submission.csv").read_text()))
    spec = load_dataset(data)
    assert spec.labels == ["a", "b", "c"] and spec.names == clean.names and (spec.y == clean.y).all()
    assert spec.test_names == clean.test_names
    folds = load_or_make_folds(spec, k=3)
    (data / "folds.csv").write_bytes(_dos((data / "folds.csv").read_text().replace("\n", " \n")))
    assert (load_or_make_folds(spec, k=3) == folds).all()
    (tmp_path / "p.csv").write_bytes(_dos("image_name,a,b\nx ,0.5,0.25\ny,1,0\n"))
    names, labels, probs = read_preds(tmp_path / "p.csv")
    assert names == ["x", "y"] and labels == ["a", "b"] and probs.tolist() == [[0.5, 0.25], [1, 0]]


def test_no_text_file_is_read_around_utils_io():
    """Every CSV/JSON/text read goes through utils/common/text.py (one tolerance for BOM/CRLF/whitespace)."""
    pattern = re.compile(r"pd\.read_csv\(|\.read_text\(|json\.load\(|open\([^)]*['\"]rt?['\"]")
    offenders = []
    for f in sorted(ROOT.glob("**/*.py")):
        rel = f.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".git") or str(rel) == "utils/common/text.py":
            continue
        for i, line in enumerate(f.read_text().splitlines(), 1):
            # the one byte-exact copy: convert_paths keeps the old config.json as a backup
            if pattern.search(line) and "cfg_path.read_text()" not in line:
                offenders.append(f"{rel}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ----------------------------------------------------------------------------- 3: never a training batch of 1

def _batches(n, bs, world, rank, start=0):
    """Batches one rank takes: the trainer's path (batch_plan, shard, slice at the resumed step)
    through the BatchSampler a DataLoader uses (make_loader's ListSampler, batch_size, drop_last)."""
    from torch.utils.data import BatchSampler

    from utils.common import distributed as dist
    from utils.data.loader import ListSampler, batch_plan

    bp = batch_plan(n, bs, world)
    mine = dist.shard(np.arange(n), world=world, rank_=rank)
    items = list(BatchSampler(ListSampler(mine[start * bp.bs_local:]), bp.bs_local, bp.drop_last))
    return bp, [len(b) for b in items], items


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_batch_plan_never_makes_a_batch_of_one(world):
    from utils.data.loader import batch_plan

    checked = 0
    for bs in [*range(1, 13), 16, 31, 32, 64]:
        for n in range(1, 140):
            if bs // world < 2 or -(-n // world) < 2:
                with pytest.raises(DataError, match="BatchNorm"):
                    batch_plan(n, bs, world)
                continue
            sizes_all = []
            for rank in range(world):
                bp, sizes, full = _batches(n, bs, world, rank)
                assert len(sizes) == bp.steps >= 1 and min(sizes) >= 2, (n, bs, world, rank, sizes)
                assert sizes[:-1] == [bp.bs_local] * (len(sizes) - 1)
                assert sum(sizes) > -(-n // world) - bp.bs_local  # only a partial batch is left out
                # the old rule where it was safe (two full batches): unchanged results
                assert bp.drop_last == (n >= 2 * bs or -(-n // world) % (bs // world) == 1)
                for start in {1, bp.steps - 1} & set(range(1, bp.steps)):  # resumed mid-epoch
                    _, rest, rest_items = _batches(n, bs, world, rank, start)
                    assert rest_items == full[start:]
                sizes_all.append(len(sizes))
                checked += 1
            assert len(set(sizes_all)) == 1  # every rank takes the same number of steps
    assert checked > 1000


@pytest.mark.parametrize("n,bs", [(14, 8), (70, 64)])
def test_one_image_left_over_trains(tmp_path, n, bs):
    """9 (or 65) training images with batches of 8 (or 64): resnet18 used to crash on the last batch."""
    data = write_dataset(tmp_path / "data", n=n, size=16, n_test=1)
    names = [f"img{i:03d}" for i in range(n)]
    folds = [0] * 5 + [1 + i % 4 for i in range(n - 5)]
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(data / "folds.csv", index=False)
    train_one_thread(data, tmp_path / "runs", "--stages", f"epochs=1,size=32,bs={bs},train=all",
                     arch=("--arch", "resnet18"))
    hist = pd.read_csv(tmp_path / "runs" / "r" / "history.csv")
    assert len(hist) == 1 and (tmp_path / "runs" / "r" / "result.json").is_file()


def test_batches_of_one_per_process_are_refused_before_anything_is_written(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=1)
    r = train_one_thread(data, tmp_path / "runs", "--stages", "epochs=1,size=16,bs=8;epochs=1,size=16,bs=1",
                         check=False)
    assert r.returncode == 2 and "stage 2" in r.stderr and "BatchNorm" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists() and not (data / "folds.csv").exists()


# ----------------------------------------------------------------------------- 4, 9, 10: checkpoints, names in messages

def predict(*args, check=False):
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "predict.py"), *map(str, args)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Folds 0 and 1 of one tiny model, trained once for the tests below (they work on copies)."""
    base = tmp_path_factory.mktemp("two")
    data = write_dataset(base / "data", n=24, size=16, n_test=3)
    for fold in (0, 1):
        train_one_thread(data, base / "runs", "--stages", FAST, "--folds-k", "3", "--fold", str(fold), name=f"f{fold}")
    return base, data, base / "runs"


def _damage(kind, src, dst):
    import torch

    ck = torch.load(src, weights_only=False)
    if kind == "key_removed":
        ck["model"].pop(sorted(ck["model"])[0])
    elif kind == "key_added":
        ck["model"]["extra.weight"] = torch.zeros(3)
    elif kind == "other_labels":
        ck["meta"]["labels"] = ["x", "y", "z"]
    elif kind == "other_head":  # made for 2 labels: the head's shape differs
        ck["meta"]["labels"] = ["a", "b"]
    elif kind == "not_ours":
        ck = [1, 2, 3]
    elif kind == "no_meta":
        ck.pop("meta")
    if kind == "truncated":
        Path(dst).write_bytes(Path(src).read_bytes()[:-2000])
    elif kind == "text":
        Path(dst).write_text("image_name,fold\n")
    else:
        torch.save(ck, dst)


@pytest.mark.parametrize("kind,needle", [
    ("key_removed", "1 missing key"), ("key_added", "1 unexpected key(s): extra.weight"),
    ("other_labels", "other labels"), ("other_head", "other labels"), ("truncated", "cannot read checkpoint"),
    ("text", "cannot read checkpoint"), ("not_ours", "holds a list"), ("no_meta", "'meta'")])
def test_unusable_checkpoints_are_named_and_refused(two_runs, tmp_path, kind, needle):
    from utils.models.checkpoint import load_for_inference, load_weights

    _, _, runs = two_runs
    bad = tmp_path / "best.pt"
    _damage(kind, runs / "f0" / "checkpoints" / "best.pt", bad)
    with pytest.raises(DataError, match=re.escape(needle)) as e:
        load_for_inference(bad, labels=["a", "b", "c"])
    assert str(bad) in str(e.value)
    if kind == "other_head":  # a model for 2 labels: the shapes alone refuse the 3-label weights
        import torch

        from utils.models.factory import create_model

        with pytest.raises(DataError, match="shape mismatch"):
            load_weights(create_model("tiny_cnn", 2, pretrained=False), torch.load(bad, weights_only=False)["model"],
                         bad)


def test_predict_refuses_a_damaged_checkpoint_and_names_each_problem_once(two_runs, tmp_path):
    import shutil

    base, data, runs = two_runs
    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    _damage("key_removed", runs / "f1" / "checkpoints" / "best.pt", work / "f1" / "checkpoints" / "best.pt")
    r = predict("--run", work / "f0", work / "f1", "--split", "test")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert str(work / "f1" / "checkpoints" / "best.pt") in r.stderr and "missing key" in r.stderr
    assert not list(work.glob("*/preds/test.*.csv"))
    # one broken dataset shared by both runs: reported once, naming both runs and the file
    shutil.copy(runs / "f1" / "checkpoints" / "best.pt", work / "f1" / "checkpoints" / "best.pt")
    (data / "test" / "t001.jpg").rename(tmp_path / "t001.jpg")
    try:
        r = predict("--run", work / "f0", work / "f1", "--split", "test")
    finally:
        (tmp_path / "t001.jpg").rename(data / "test" / "t001.jpg")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.count("'t001'") == 1 and "cannot predict: 1 problem" in r.stderr, r.stderr
    assert "f0" in r.stderr and "f1" in r.stderr


def test_resume_refuses_a_damaged_last_checkpoint(two_runs, tmp_path):
    import shutil

    base, data, runs = two_runs
    shutil.copytree(runs / "f0", tmp_path / "runs" / "f0")
    (tmp_path / "runs" / "f0" / "result.json").unlink()
    last = tmp_path / "runs" / "f0" / "checkpoints" / "last.pt"
    _damage("key_added", runs / "f0" / "checkpoints" / "last.pt", last)
    r = train_one_thread(data, tmp_path / "runs", "--stages", FAST, "--folds-k", "3", "--resume", name="f0",
                         check=False)
    assert r.returncode == 2 and str(last) in r.stderr and "unexpected key" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_unlisted_test_images_are_reported_when_predicting(two_runs, tmp_path):
    import shutil

    base, data, runs = two_runs
    for i in range(7):
        shutil.copy(data / "test" / "t000.jpg", data / "test" / f"extra{i}.jpg")
    try:
        r = predict("--run", runs / "f0", "--split", "test", check=True)
    finally:
        for i in range(7):
            (data / "test" / f"extra{i}.jpg").unlink()
    assert "7 image(s)" in r.stderr and "not listed in sample_submission.csv" in r.stderr
    assert "'extra0.jpg'" in r.stderr and "(+2 more)" in r.stderr  # first names, then a count
    assert len(pd.read_csv(runs / "f0" / "preds" / "test.none.csv")) == 3


def test_stack_names_the_missing_image(two_runs, tmp_path):
    base, data, runs = two_runs
    import shutil

    work = tmp_path / "runs"
    shutil.copytree(runs, work)
    for f in ("f0", "f1"):
        predict("--run", work / f, "--split", "test", check=True)
    p = work / "f1" / "preds" / "test.none.csv"
    df = pd.read_csv(p)
    df[df["image_name"] != "t002"].to_csv(p, index=False)
    from utils.stack.library import _place
    from utils.runs.pred_files import read_preds
    from utils.runs.directory import load_run

    names, labels, probs = read_preds(p)
    with pytest.raises(DataError, match=r"1 of the 3 expected missing: 't002'"):
        _place(p, names, labels, probs, load_run(work / "f1"), ["t000", "t001", "t002"], labels)


# ----------------------------------------------------------------------------- 11: resume from the run alone

def test_resume_with_the_run_alone_uses_its_stored_flags(tmp_path):
    data = write_dataset(tmp_path / "data", n=24, size=16, n_test=1)
    plan = "epochs=2,size=16,bs=8,lr=2e-2,train=head;epochs=1,size=16,bs=8,train=all,sched=cosine"
    flags = ["--loss", "asl", "--aug", "light", "--stages", plan, "--seed", "3", "--folds-k", "3",
             "--deterministic", "--ckpt-every", "1"]
    train_one_thread(data, tmp_path / "ref", *flags)
    r = train_one_thread(data, tmp_path / "runs", *flags, kill="step:3", check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]

    def resume(*extra):
        return subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "train.py"), "--resume", "--name", "r",
                               "--data", str(data), "--out", str(tmp_path / "runs"), *extra],
                              capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))

    long_plan = ";".join(f"epochs=1,size=16,bs=8,lr={i + 1}e-3,train=all,sched=cosine,wd=0.0{i}" for i in range(4))
    r = resume("--loss", "bce", "--stages", long_plan)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert '--loss: the run was started with --loss "asl", the command line gives "bce"' in r.stderr
    assert json.dumps(long_plan) in r.stderr and json.dumps(plan) in r.stderr  # shown in full
    assert "--aug" not in r.stderr  # only the flags that differ
    r = resume("--loss", "asl", "--plots", "none")  # a given flag equal to the run's, a free one
    assert r.returncode == 0, r.stderr[-3000:]
    same_result(tmp_path / "ref" / "r", tmp_path / "runs" / "r")
    cfg = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    assert cfg["args"]["loss"] == "asl" and cfg["args"]["arch"] == "tiny_cnn" and "data" not in cfg["args"]


def test_given_flags_are_told_from_defaults():
    sys.path.insert(0, str(ROOT))
    import train as train_script
    from utils.train.resume import given_flags

    given = given_flags(train_script.get_args_parser, ["--loss", "asl", "--no-pretrained", "--bs=16", "--resume"])
    assert given == {"loss", "pretrained", "bs", "resume"}
    assert given_flags(train_script.get_args_parser, []) == set()


# ----------------------------------------------------------------------------- 5: cross-fitting on few rows

def _probs_and_truth(tmp_path, n):
    rng = np.random.default_rng(0)
    names = [f"i{i}" for i in range(n)]
    y = rng.random((n, 2)) < 0.5
    pd.DataFrame({"image_name": names, "a": rng.random(n), "b": rng.random(n)}).to_csv(tmp_path / "p.csv", index=False)
    tags = [" ".join(t for t, v in zip("ab", row) if v) for row in y]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "p.csv", tmp_path / "t.csv"


@pytest.mark.parametrize("n,expect", [(4, "random 4-way split (seed 0); --kfold 5 lowered to the 4 rows"),
                                      (1, "too few to cross-fit")])
def test_threshold_tool_on_fewer_rows_than_folds(tmp_path, n, expect):
    p, t = _probs_and_truth(tmp_path, n)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "thresholds.py"), "--probs", str(p), "--truth", str(t),
                        "--kfold", "5", "--strategy", "greedy", "smooth"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert expect in r.stdout


def test_cross_fitting_helpers_on_few_rows():
    from utils.data.folds import make_folds
    from utils.stack.stackers import inner_split
    from utils.metrics.threshold_search import greedy_thresholds, smooth_thresholds

    rng = np.random.default_rng(1)
    y, P = (rng.random((3, 2)) < 0.5).astype(int), rng.random((3, 2))
    t = smooth_thresholds(y, P, n_splits=5)  # 3-way: one row per fold
    assert t.shape == (2,) and np.all((t >= 0) & (t <= 1 + 1e-9))
    assert np.array_equal(smooth_thresholds(y[:1], P[:1], n_splits=5), greedy_thresholds(y[:1], P[:1])[0])
    assert inner_split(np.zeros(3, int)).sum() == 1 and inner_split(np.zeros(1, int)).sum() == 0
    with pytest.raises(DataError, match="at least 2 folds"):
        make_folds(y, k=1)
    with pytest.raises(DataError, match="use --folds-k 3 or fewer"):
        make_folds(y, k=5)


# ----------------------------------------------------------------------------- 8: EXIF orientation

@pytest.mark.parametrize("orientation,transpose", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
                                                    (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_is_applied(tmp_path, orientation, transpose):
    from utils.data.cache import cache_key, decode_image

    rng = np.random.default_rng(0)
    stored = np.zeros((100, 200, 3), np.uint8)  # 200 wide, 100 high, as written by the camera
    stored[:, :100] = 250
    stored[:, :, 1] = (rng.random((100, 200)) * 60).astype(np.uint8)
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "o.jpg", exif=exif, quality=98)
    want = np.asarray(Image.open(tmp_path / "o.jpg").convert("RGB").transpose(transpose), np.int16)
    got = decode_image(tmp_path / "o.jpg")
    assert got.shape == want.shape and np.abs(got.astype(np.int16) - want).max() == 0
    small = decode_image(tmp_path / "o.jpg", 16)  # the cached size: also upright
    ref = np.asarray(Image.fromarray(want.astype(np.uint8)).resize((16, 16), Image.Resampling.BILINEAR), np.int16)
    assert np.abs(small.astype(np.int16) - ref).mean() < 12
    assert cache_key([tmp_path / "o.jpg"], 16) != _key_v1([tmp_path / "o.jpg"], 16)  # old caches are not reused


def _key_v1(files, size):
    """The cache key before EXIF orientation was applied."""
    import hashlib

    h = hashlib.sha1(f"v1|{size}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"|{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def test_different_test_sets_are_named_once_per_set():
    from types import SimpleNamespace as NS

    import predict as predict_script

    def job(name, tests, root):
        return NS(run=NS(name=name, labels=["a"]), spec=NS(test_names=tests, root=root))

    jobs = [job("r0", ["a", "b", "c"], "D1"), job("r1", ["a", "b", "c"], "D1"),
            job("r2", ["a", "b", "d"], "D2"), job("r3", ["a", "b", "d"], "D2")]
    with pytest.raises(DataError) as e:
        predict_script.check_submission(jobs, ("test", "val"))
    msg = str(e.value)
    assert "1 problem" in msg and "'r2', 'r3' (D2)" in msg and "only in the first 'd'" in msg
    assert "only in the second 'c'" in msg and msg.count("different test sets") == 1
