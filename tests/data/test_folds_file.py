"""Hand-edited folds files: every value is checked, the bad rows are named, good files read."""
import numpy as np
import pytest

from conftest import write_dataset
from utils.common.errors import DataError
from utils.data.folds_file import fold_id, read_folds_file


def folds_csv(path, rows):
    path.write_text("image_name,fold\n" + "".join(f"{n},{f}\n" for n, f in rows))
    return path


GOOD = [(f"img{i:03d}", i % 5) for i in range(10)]


def edit(rows, i, fold=None, name=None):
    rows = list(rows)
    rows[i] = (rows[i][0] if name is None else name, rows[i][1] if fold is None else fold)
    return rows


@pytest.mark.parametrize("rows,needles", [
    (edit(GOOD, 3, fold=7), ["row 5", "fold 7 is out of range", "6 distinct fold(s)", "ids must be 0..5",
                             "no image has fold 5, 6"]),
    (edit(GOOD, 3, fold=-1), ["row 5", "fold -1 is negative"]),
    (edit(GOOD, 3, fold="1.5"), ["row 5", "fold '1.5' is not an integer"]),
    (edit(GOOD, 3, fold=""), ["row 5", "fold '' is not an integer"]),
    (edit(GOOD, 3, fold="x"), ["row 5", "fold 'x' is not an integer"]),
    (edit(edit(GOOD, 1, fold="1.5"), 2, fold="abc"), ["rows 3, 4: folds must be integers: '1.5' (row 3), "
                                                        "'abc' (row 4)"]),
    # fold 4 emptied: 0..3 and 5 -> five distinct ids, but 5 is beyond 0..4
    (edit(edit(GOOD, 4, fold=5), 9, fold=5), ["rows 6, 11", "fold 5 is out of range", "no image has fold 4"]),
    (edit(GOOD, 3, name="img000"), ["listed twice", "'img000' at row 5 (first at row 2)"]),
    (edit(GOOD, 3, name=""), ["row 5", "empty image_name"]),
    ([(n, 0) for n, _ in GOOD], ["every image has fold 0", "at least 2 folds"]),
])
def test_bad_values_name_their_rows_and_the_fix(tmp_path, rows, needles):
    path = folds_csv(tmp_path / "folds.csv", rows)
    with pytest.raises(DataError) as e:
        read_folds_file(path)
    msg = str(e.value)
    assert str(path) in msg and "move folds.csv away to make new folds" in msg
    for needle in needles:
        assert needle in msg, msg


def test_good_file_reads_with_integral_floats_spaces_and_crlf(tmp_path):
    path = tmp_path / "folds.csv"
    path.write_bytes(b"\xef\xbb\xbfimage_name,fold\r\n" + b"".join(f" {n} , {f}.0\r\n".encode() for n, f in GOOD))
    assert read_folds_file(path) == dict(GOOD)
    assert [fold_id(v) for v in ("3", " +2 ", "4.0", "1.5", "nan", "inf", "")] == [3, 2, 4, None, None, None, None]


def test_header_only_and_wrong_columns_are_refused(tmp_path):
    with pytest.raises(DataError, match="no rows"):
        read_folds_file(folds_csv(tmp_path / "a.csv", []))
    (tmp_path / "b.csv").write_text("name,fold\na,0\n")
    with pytest.raises(DataError, match="expected columns image_name,fold"):
        read_folds_file(tmp_path / "b.csv")


def test_plan_folds_names_a_missing_row_and_a_foreign_name(tmp_path):
    from utils.data.dataset import load_dataset
    from utils.data.folds import folds_k_for, plan_folds

    root = write_dataset(tmp_path / "d", n=10)
    spec = load_dataset(root)
    rows = [(n, i % 5) for i, n in enumerate(spec.names)]
    folds_csv(root / "folds.csv", rows[:-1] + [("stranger", 4)])
    with pytest.raises(DataError) as e:
        plan_folds(spec, k=5)
    msg = str(e.value)
    assert "'img009'" in msg and "added" in msg and "'stranger'" in msg and "no longer in train.csv" in msg
    folds_csv(root / "folds.csv", rows[:-1])  # a row missing: the fix is in folds.csv, not train.csv
    with pytest.raises(DataError) as e:
        plan_folds(spec, k=5)
    msg = str(e.value)
    assert "add those images to folds.csv (or remove them from train.csv), or move folds.csv away to make a " \
        "new split" in msg and "restore" not in msg, msg
    folds_csv(root / "folds.csv", edit(rows, 2, fold=7))
    assert folds_k_for(root / "folds.csv", 5, False) == 5  # K is not taken from a bad file
    with pytest.raises(DataError, match="row 4: fold 7 is out of range"):
        plan_folds(spec, k=5)
    folds_csv(root / "folds.csv", rows)
    folds, _, new = plan_folds(spec, k=5)
    assert not new and folds.tolist() == (np.arange(10) % 5).tolist()
