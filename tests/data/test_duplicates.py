"""Near-duplicates: planted copies found, distinct images not paired, groups kept in one fold."""
import importlib.util
import io
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from conftest import ROOT
from utils.data.dataset import load_dataset
from utils.data.folds import load_or_make_folds
from utils.data.duplicates import VIEW_PAIRS, Hashes, close_pairs, distance, group_folds, split_groups
from utils.common.errors import DataError
from utils.runs.pred_files import read_preds

spec_ = importlib.util.spec_from_file_location("near_duplicates", ROOT / "tools" / "near_duplicates.py")
near_duplicates = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(near_duplicates)

LABELS = ["a", "b", "c"]


def texture(rng, size=96):
    """A photo-like image: a smooth random colour field, four coloured shapes, fine noise."""
    base = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(4):
        (x, y), (w, h) = rng.integers(0, size - 30, 2), rng.integers(15, 40, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(base, float) + noise, 0, 255).astype(np.uint8))


def jpeg60(im):
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def resized(im):
    return im.resize((int(im.width * 0.8), int(im.height * 0.8)), Image.BICUBIC)


def cropped(im, f=(0.03, 0.05, 0.04, 0.035)):
    w, h = im.size
    return im.crop((round(f[0] * w), round(f[1] * h), w - round(f[2] * w), h - round(f[3] * h)))


# copy name -> (original index, transform, split of the copy)
PLANTED = {"dup_jpeg": (0, jpeg60, "train"), "dup_resize": (1, resized, "train"), "dup_crop": (2, cropped, "train"),
           "t_jpeg": (3, jpeg60, "test"), "t_crop": (4, cropped, "test")}


def planted_dataset(root, n=24, n_test=4, seed=0):
    """n textured train images (every tag on some), n_test distinct test images, and PLANTED copies.

    Returns (root, y dict name -> tags). dup_crop gets different tags from its original
    (a planted label disagreement)."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows, originals = [], []
    for i in range(n):
        im = texture(rng)
        tags = [LABELS[i % 3]] + ([LABELS[(i + 1) % 3]] if i % 4 == 0 else [])
        im.save(root / "train" / f"img{i:02d}.png")
        originals.append((im, tags))
        rows.append((f"img{i:02d}", " ".join(tags)))
    for i in range(n_test):
        texture(rng).save(root / "test" / f"t{i:02d}.png")
    for name, (src, fn, split) in PLANTED.items():
        fn(originals[src][0]).save(root / split / f"{name}.png")
        if split == "train":
            tags = originals[src][1] if name != "dup_crop" else ["b" if "b" not in originals[src][1] else "c"]
            rows.append((name, " ".join(tags)))
    pd.DataFrame(rows, columns=["image_name", "tags"]).to_csv(root / "train.csv", index=False)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return root


def run(data, *argv):
    args = near_duplicates.get_args_parser().parse_args(["--data", str(data), *map(str, argv)])
    return near_duplicates.main(args)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = planted_dataset(tmp_path_factory.mktemp("dups") / "data")
    leaks = root.parent / "leaks.csv"
    counts = run(root, "--cache-dir", root.parent / "cache", "--leak-labels", leaks)
    return root, leaks, counts


def test_planted_copies_found_and_nothing_else(planted):
    root, _, counts = planted
    pairs = pd.read_csv(root / "duplicates.csv", dtype=str)
    found = {frozenset((a, b)) for a, b in zip(pairs["image_a"], pairs["image_b"])}
    expected = {frozenset((f"img{src:02d}", name)) for name, (src, _, _) in PLANTED.items()}
    assert found == expected
    assert counts["train-train pairs"] == 3 and counts["train-test pairs"] == 2 and counts["test-test pairs"] == 0
    assert counts["train groups with disagreeing labels"] == 1  # dup_crop was given other tags
    row = pairs[pairs["image_b"] == "t_jpeg"].iloc[0]
    assert (row["split_a"], row["split_b"]) == ("train", "test")
    report = (root / "duplicates_report.md").read_text()
    assert "dup_crop" in report and "img02" in report


def test_leak_labels_are_the_train_copies_tags(planted):
    root, leaks, _ = planted
    names, labels, probs = read_preds(leaks)
    spec = load_dataset(root, check=False)
    assert labels == LABELS and sorted(names) == ["t_crop", "t_jpeg"]
    for n, p in zip(names, probs):
        src = f"img{PLANTED[n][0]:02d}"
        np.testing.assert_array_equal(p, spec.y[spec.names.index(src)])


def test_close_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, size=(300, 2, 2), dtype=np.uint64)
    h[50:80] = h[0:30] ^ (np.uint64(1) << rng.integers(0, 64, (30, 2, 2)).astype(np.uint64))  # near copies
    thumbs = rng.integers(0, 256, (300, 2, 16, 16, 3)).astype(np.uint8)
    thumbs[50:65] = thumbs[0:15]  # half the near copies have the same thumbnails
    i, j, d, t = close_pairs(Hashes(h, thumbs), 8, 3.0, chunk=64)
    grey = distance(h[:, None], h[None, :])
    gi, gj = np.nonzero(np.triu(grey <= 8, 1))
    diff = np.array([min(np.abs(thumbs[a, p].astype(int) - thumbs[b, q]).mean() for p, q in VIEW_PAIRS)
                     for a, b in zip(gi, gj)])
    want = np.stack([gi, gj], 1)[diff <= 3]
    np.testing.assert_array_equal(np.stack([i, j], 1), want)
    np.testing.assert_array_equal(d, grey[i, j])
    assert len(want) >= 15 and len(gi) >= 30 and np.allclose(t, 0)


def test_folds_keep_groups_and_check_folds_counts_a_split(planted, tmp_path, capsys):
    root, _, _ = planted
    spec = load_dataset(root, check=False)
    folds_file = tmp_path / "folds.csv"
    folds = load_or_make_folds(spec, k=3, seed=0, path=folds_file)
    fold_of = dict(zip(spec.names, folds))
    for name, (src, _, split) in PLANTED.items():
        if split == "train":
            assert fold_of[name] == fold_of[f"img{src:02d}"]
    assert run(root, "--check-folds", "--folds-file", folds_file) == (0, 3)
    df = pd.read_csv(folds_file)
    df.loc[df["image_name"] == "dup_jpeg", "fold"] = (fold_of["img00"] + 1) % 3
    df.to_csv(folds_file, index=False)
    assert run(root, "--check-folds", "--folds-file", folds_file) == (1, 3)
    assert "1 of 3 training duplicate groups are split" in capsys.readouterr().out


def test_group_folds_stratify_groups():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(np.uint8)
    groups = np.repeat(np.arange(100), 2)
    folds = group_folds(y, groups, k=5, seed=0)
    assert split_groups(groups, folds) == []
    sizes = np.bincount(folds)
    assert (sizes % 2 == 0).all() and sizes.min() >= 30, sizes  # whole pairs, folds of similar size
    # label balance close to the whole set's, as iterative stratification promises
    for f in range(5):
        assert np.abs(y[folds == f].mean(0) - y.mean(0)).max() < 0.1


def test_stale_pairs_and_bad_flags_exit_2(planted, tmp_path):
    root, _, _ = planted
    spec = load_dataset(root, check=False)
    stale = tmp_path / "data"
    stale.mkdir()
    pd.read_csv(root / "duplicates.csv").replace("dup_jpeg", "gone").to_csv(stale / "duplicates.csv", index=False)
    with pytest.raises(DataError, match=r"(?s)duplicates.csv: stale.*row \d+: train image 'gone'"):
        load_or_make_folds(SimpleNamespace(**{**vars(spec), "root": stale}), k=3, path=tmp_path / "f.csv")
    assert not (tmp_path / "f.csv").exists()
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "near_duplicates.py"), "--data", str(root),
                        "--max-distance", "-1", "--out", str(tmp_path / "x.csv")], capture_output=True, text=True)
    assert r.returncode == 2 and "--max-distance -1" in r.stderr and not (tmp_path / "x.csv").exists()


def test_pairs_beside_the_folds_file_group_folds_of_read_only_data(planted, tmp_path):
    root, _, _ = planted
    spec = load_dataset(root, check=False)
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    (elsewhere / "duplicates.csv").write_bytes((root / "duplicates.csv").read_bytes())
    no_pairs = tmp_path / "data"
    no_pairs.mkdir()
    folds = load_or_make_folds(SimpleNamespace(**{**vars(spec), "root": no_pairs}), k=3, seed=0,
                               path=elsewhere / "folds.csv")
    fold_of = dict(zip(spec.names, folds))
    assert all(fold_of[n] == fold_of[f"img{src:02d}"] for n, (src, _, split) in PLANTED.items() if split == "train")


def test_a_dataset_without_copies_writes_empty_pairs_and_a_zero_report(tmp_path):
    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for i in range(6):
        texture(rng).save(root / "train" / f"img{i}.png")
    texture(rng).save(root / "test" / "t0.png")
    pd.DataFrame({"image_name": [f"img{i}" for i in range(6)], "tags": [LABELS[i % 3] for i in range(6)]}).to_csv(
        root / "train.csv", index=False)
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    counts = run(root, "--cache-dir", tmp_path / "cache")
    assert counts["pairs"] == 0 and counts["groups"] == 0
    pairs = pd.read_csv(root / "duplicates.csv")
    assert len(pairs) == 0 and list(pairs.columns[:2]) == ["image_a", "image_b"]
    assert "- pairs: 0" in (root / "duplicates_report.md").read_text()


def flat(rng, size=96):
    """A flat synthetic image: a plain background and three solid shapes, no texture."""
    im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(150, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        (x, y), (w, h) = rng.integers(0, size - 40, 2), rng.integers(20, 40, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([int(x), int(y), int(x + w), int(y + h)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def hue_rotated(im, shift=100):
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def test_flat_synthetic_copies_found_and_recolours_kept_apart():
    from utils.data.duplicates import DEFAULT_MAX_COLOUR, DEFAULT_MAX_DISTANCE, image_hashes

    rng = np.random.default_rng(3)
    originals = [flat(rng) for _ in range(12)]

    def jpeg85(im):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    kinds = {"jpeg85": jpeg85, "crop1px": lambda im: im.crop((1, 1, im.width - 1, im.height - 1)),
             "resize": lambda im: im.resize((86, 86), Image.BICUBIC), "recolour": hue_rotated}
    images = originals + [fn(im) for fn in kinds.values() for im in originals]
    h = image_hashes(np.stack([np.asarray(im.resize((64, 64), Image.BILINEAR)) for im in images]))
    i, j, _, _ = close_pairs(h, DEFAULT_MAX_DISTANCE, DEFAULT_MAX_COLOUR)
    found = set(zip(i.tolist(), j.tolist()))
    for k, kind in enumerate(kinds):
        hits = [(o, 12 * (k + 1) + o) in found for o in range(12)]
        assert all(hits) if kind != "recolour" else not any(hits), (kind, hits)
    assert not any(a < 12 and b < 12 for a, b in found)  # distinct originals never pair
