"""Inputs that used to fail or train silently wrong: names in another Unicode form, tags
joined by another separator, one label, a label never positive in the training folds."""
import unicodedata

import numpy as np
import pandas as pd
import pytest

from conftest import write_dataset
from utils.common.errors import DataError
from utils.data.dataset import load_dataset

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def rename_first(root, folder, old, new):
    (root / folder / old).rename(root / folder / new)


def replace_in(path, old, new):
    path.write_text(path.read_text().replace(old, new, 1))


@pytest.mark.parametrize("disk,csv", [(NFD, NFC), (NFC, NFD)])
def test_names_match_in_either_unicode_form(tmp_path, disk, csv):
    assert disk != csv
    root = write_dataset(tmp_path / "d", n=12)
    rename_first(root, "train", "img000.jpg", f"{disk}_1.jpg")
    replace_in(root / "train.csv", "img000,", f"{csv}_1,")
    rename_first(root, "test", "t000.jpg", f"{disk}_t.jpg")
    replace_in(root / "sample_submission.csv", "t000,", f"{csv}_t,")
    spec = load_dataset(root)
    assert spec.names[0] == f"{NFC}_1" and spec.files[0].name == f"{disk}_1.jpg"
    assert spec.test_names[0] == f"{csv}_t"  # the submission echoes sample_submission's spelling
    assert spec.test_files[0].name == f"{disk}_t.jpg"


def test_folds_and_exclusion_lists_match_in_either_form(tmp_path):
    from utils.data.exclusion import read_exclusion
    from utils.data.folds import plan_folds
    from utils.data.folds_file import read_folds_file as read_folds

    root = write_dataset(tmp_path / "d", n=12)
    rename_first(root, "train", "img000.jpg", f"{NFC}.jpg")
    replace_in(root / "train.csv", "img000,", f"{NFC},")
    spec = load_dataset(root)
    folds = pd.DataFrame({"image_name": [NFD if n == NFC else n for n in spec.names], "fold": np.arange(12) % 3})
    folds.to_csv(root / "folds.csv", index=False)
    got, _, new = plan_folds(spec, k=3)
    assert not new and got.tolist() == (np.arange(12) % 3).tolist()
    assert read_folds(root / "folds.csv")[NFC] == 0
    pd.DataFrame({"image_name": [f"{NFD}.jpg"]}).to_csv(tmp_path / "ex.csv", index=False)
    assert read_exclusion(tmp_path / "ex.csv", spec.names)[0].tolist() == [0]


def test_files_equal_after_normalisation_are_refused_by_name(tmp_path):
    root = write_dataset(tmp_path / "d", n=12)
    rename_first(root, "train", "img000.jpg", f"{NFC}.jpg")
    rename_first(root, "train", "img001.jpg", f"{NFD}.jpg")
    replace_in(root / "train.csv", "img000,", f"{NFC},")
    with pytest.raises(DataError, match="same name once Unicode-normalised") as e:
        load_dataset(root)
    assert repr(f"{NFC}.jpg") in str(e.value) and repr(f"{NFD}.jpg") in str(e.value)


def test_csv_rows_equal_after_normalisation_are_duplicates(tmp_path):
    root = write_dataset(tmp_path / "d", n=12)
    rename_first(root, "train", "img000.jpg", f"{NFC}.jpg")
    replace_in(root / "train.csv", "img000,", f"{NFC},")
    replace_in(root / "train.csv", "img001,", f"{NFD},")
    with pytest.raises(DataError, match="duplicate image name"):
        load_dataset(root)


@pytest.mark.parametrize("sep", ["|", ",", ";"])
def test_tags_joined_by_another_separator_are_refused_naming_it(tmp_path, sep):
    root = write_dataset(tmp_path / "d", n=12)
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df.loc[[1, 4], "tags"] = f"a{sep}b{sep}c"
    df.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError) as e:
        load_dataset(root)
    msg = str(e.value)
    assert f"tags joined by {sep!r} in 2 row(s) (rows 3, 6" in msg and "'a b c'" in msg


def test_a_separator_inside_a_listed_label_is_meant(tmp_path):
    root = write_dataset(tmp_path / "d", n=12)
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df.loc[1, "tags"] = "a rock|pop"
    df.to_csv(root / "train.csv", index=False)
    (root / "labels.txt").write_text("a\nb\nc\nrock|pop\n")
    assert load_dataset(root).labels[-1] == "rock|pop"


def test_tags_that_differ_only_in_case_are_refused_naming_spellings_and_rows(tmp_path):
    root = write_dataset(tmp_path / "d", n=12)
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df.loc[[1, 2], "tags"] = "red a"
    df.loc[4, "tags"] = "Red"
    df.loc[6, "tags"] = "RED b"
    df.loc[7, "tags"] = "C"  # 'c' elsewhere
    df.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError) as e:
        load_dataset(root)
    msg = str(e.value)
    assert ("differ only in case would train as 3 labels: 'RED' in row 8; 'Red' in row 6; 'red' in 2 rows (3, 4); "
            "write one spelling in every row (e.g. 'red')") in msg
    assert "would train as 2 labels: 'C' in row 9; 'c' in" in msg
    (root / "labels.txt").write_text("a\nb\nc\nC\nred\nRed\nRED\n")  # listed: meant as labels of their own
    assert load_dataset(root).labels == ["a", "b", "c", "C", "red", "Red", "RED"]
    (root / "labels.txt").write_text("a\nb\nc\nC\nred\n")
    with pytest.raises(DataError, match=r"row 6: tag\(s\) \['Red'\] not in labels.txt \(only their case differs: "
                                        r"'Red' is 'red'\?\)"):
        load_dataset(root)


@pytest.mark.parametrize("every", [True, False])
def test_one_label_makes_folds(tmp_path, every):
    from utils.data.duplicates import group_folds
    from utils.data.folds import make_folds

    y = np.ones((20, 1), np.uint8) if every else (np.arange(20) % 4 == 0).astype(np.uint8)[:, None]
    folds = make_folds(y, k=5)
    assert sorted(np.bincount(folds).tolist()) == [4] * 5
    if not every:  # the one label is stratified: one positive per fold
        assert np.bincount(folds[y[:, 0] == 1]).tolist() == [1] * 5
    assert len(set(group_folds(y, np.arange(20) // 2, k=5).tolist())) == 5


def test_one_tag_on_every_image_loads_and_warns(tmp_path, caplog):
    from utils.data.folds import load_or_make_folds, warn_unlearnable_labels

    root = write_dataset(tmp_path / "d", n=12)
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df["tags"] = "a"
    df.to_csv(root / "train.csv", index=False)
    spec = load_dataset(root)
    folds = load_or_make_folds(spec, k=3)
    assert spec.y.shape == (12, 1) and sorted(np.bincount(folds).tolist()) == [4, 4, 4]
    none, every = warn_unlearnable_labels(spec, np.flatnonzero(folds != 0), [0], 0)
    assert (none, every) == ([], ["a"]) and "every training image carries label(s) 'a'" in caplog.text


def test_label_without_training_positive_is_named_and_wbce_stays_sane(tmp_path, caplog):
    import torch

    from utils.data.folds import warn_unlearnable_labels
    from utils.train.losses import build_loss

    root = write_dataset(tmp_path / "d", n=12)
    df = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    df["tags"] = ["a c" if i < 3 else "a b" for i in range(12)]
    df.to_csv(root / "train.csv", index=False)
    spec = load_dataset(root)
    train_rows = np.arange(3, 12)  # 'c' only on the validation rows 0-2
    none, _ = warn_unlearnable_labels(spec, train_rows, [0, 1, 2], 0)
    assert none == ["c"] and "no training image carries label(s) 'c' (3 in the dataset)" in caplog.text
    loss, info = build_loss("wbce", spec.y[train_rows])
    assert info["pos_weight"][2] == 1.0
    val = torch.tensor(spec.y[:3], dtype=torch.float32)
    assert float(loss(torch.zeros(3, 3), val)) < 2  # log 2 per entry at most, not cap x log 2


def write_float_tiffs(folder, scales, seed=0):
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i, s in enumerate(scales):
        files.append(folder / f"f{i:02d}.tif")
        tifffile.imwrite(files[-1], (rng.random((16, 16, 3)) * s).astype(np.float32), photometric="rgb")
    return files


def test_float_tiffs_of_different_ranges_are_refused_naming_them(tmp_path):
    from utils.data.bands import fit_band_scaling

    files = write_float_tiffs(tmp_path, [1000.0] * 8 + [1.0] * 3)
    with pytest.raises(DataError) as e:
        fit_band_scaling(files, 3)
    msg = str(e.value)
    assert "3 image(s) far below" in msg and "f08.tif" in msg and "f10.tif" in msg and "f00.tif" not in msg
    assert "cache them black" in msg and "rescale" in msg
    files = write_float_tiffs(tmp_path / "b", [1.0] * 8 + [1000.0])
    with pytest.raises(DataError, match="1 image\\(s\\) far above.*f08.tif.*cache them white"):
        fit_band_scaling(files, 3)


def test_consistent_ranges_with_dark_and_blank_images_pass(tmp_path):
    from utils.data.bands import fit_band_scaling

    files = write_float_tiffs(tmp_path, [1000.0] * 8 + [80.0, 0.0])  # a dark image, a blank one
    rule = fit_band_scaling(files, 3)
    assert rule["high_depth_images"] == 10 and 900 < rule["high"][0] <= 1000


def test_a_run_folder_given_as_the_dataset_is_named_as_such(tmp_path):
    from utils.data.dataset import read_tags_csv
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(DataError, match=r"is a run folder \(it has config.json\), not a dataset"):
        read_tags_csv(run / "train.csv")
    with pytest.raises(DataError, match=r"train.csv: file not found$"):
        read_tags_csv(tmp_path / "train.csv")
