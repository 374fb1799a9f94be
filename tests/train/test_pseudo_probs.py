"""tools/pseudo_label.py --probs with a file that is not a probability file: exit 2 with what
the file is, what was expected, and the first wrong row and column; nothing written."""
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from utils.common.errors import DataError
from utils.runs.pred_files import read_preds, write_preds

sys.path.insert(0, str(ROOT / "tools"))
import pseudo_label  # noqa: E402

LABELS = ["a", "b", "c"]
EXPECTED = "Expected a predictions csv of probabilities as predict.py"

BAD = {  # name: (file text, what the message calls it, the wrong cell's line and text or None)
    "hard": ("image_name,a,b,c\nt1,1,0,1\nt2,0,1,0\nt3,0,0,1\n", "thresholded 0/1 table", None),
    "submission": ("image_name,tags\nt1,a c\nt2,b\n", "a submission (image_name,tags", (2, "a c")),
    "logits": ("image_name,a,b,c\nt1,0.3,0.2,0.5\nt2,0.1,-1.25,0.4\n", "scores or logits", (3, "-1.25")),
    "text": ("image_name,a,b,c\nt1,0.9,0.2,0.5\nt2,0.1,high,0.4\n", "text, not numbers", (3, "high")),
    "empty_cell": ("image_name,a,b,c\nt1,0.9,0.2,0.5\nt2,0.1,0.3,\n", "empty cell", (3, "column 'c'")),
    "id_column": ("id,a,b,c\nt1,0.9,0.2,0.5\n", "first column is 'id', not image_name", None),
    "no_header": ("t1,0.9,0.2,0.5\nt2,0.1,0.7,0.4\n", "without a header line", None),
    "folds": ("image_name,fold\nt1,0\nt2,1\n", "a folds file", None),
    "no_labels": ("image_name\nt1\n", "no label column", None),
    "no_rows": ("image_name,a,b,c\n", "a header without rows", None),
}


def args(probs, out, *extra):
    return pseudo_label.get_args_parser().parse_args(["--probs", str(probs), "--out", str(out), *extra])


@pytest.mark.parametrize("name", list(BAD))
def test_not_a_probability_file_says_what_it_is_and_where(tmp_path, name):
    text, what, cell = BAD[name]
    path = tmp_path / f"{name}.csv"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        pseudo_label.main(args(path, tmp_path / "pseudo.csv"))
    msg = str(e.value)
    assert msg.startswith(f"--probs {path}: not a probability file") and what in msg and EXPECTED in msg, msg
    if cell:  # the row named is the file's line holding the wrong value
        line, value = cell
        assert f"row {line}" in msg and value in msg, msg
        if not value.startswith("column"):
            assert value in text.split("\n")[line - 1].split(",")
    assert not (tmp_path / "pseudo.csv").exists()


def test_a_probability_file_is_read_as_before(tmp_path):
    probs = np.array([[0.9, 0.2, 0.5], [0.1, 0.7, 0.4], [1.0, 0.0, 0.99]])
    write_preds(tmp_path / "stack_test.csv", ["t1", "t2", "t3"], LABELS, probs)
    pseudo_label.main(args(tmp_path / "stack_test.csv", tmp_path / "pseudo.csv", "--quantile", "0"))
    names, labels, targets = read_preds(tmp_path / "pseudo.csv")
    assert names == ["t1", "t2", "t3"] and labels == LABELS
    np.testing.assert_allclose(targets, probs)


def test_the_tool_exits_2_without_a_traceback(tmp_path):
    (tmp_path / "sub.csv").write_text(BAD["submission"][0])
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "pseudo_label.py"), "--probs", str(tmp_path / "sub.csv"),
                        "--out", str(tmp_path / "pseudo.csv")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a probability file but a submission" in r.stderr and EXPECTED in r.stderr
    assert not (tmp_path / "pseudo.csv").exists()


def test_out_of_fold_predictions_of_training_images_are_refused(tmp_path):
    """stack_oof.csv, a run's preds/val.<tta>.csv, or a copy of stack_oof.csv under another name
    hold probabilities of training images: not pseudo-labels for the test set."""
    probs = np.array([[0.9, 0.2, 0.5], [0.1, 0.7, 0.4]])
    write_preds(tmp_path / "stack" / "stack_oof.csv", ["i1", "i2"], LABELS, probs)
    write_preds(tmp_path / "stack" / "oof_copy.csv", ["i2", "i1"], LABELS, probs)
    write_preds(tmp_path / "run" / "preds" / "val.hflip.csv", ["i1", "i2"], LABELS, probs)
    (tmp_path / "run" / "config.json").write_text("{}")
    for path, message in [(tmp_path / "stack" / "stack_oof.csv", "stack_test.csv"),
                          (tmp_path / "stack" / "oof_copy.csv", "the same images as"),
                          (tmp_path / "run" / "preds" / "val.hflip.csv", "test.hflip.csv")]:
        with pytest.raises(DataError, match="this needs probabilities of test images") as e:
            pseudo_label.main(args(path, tmp_path / "pseudo.csv", "--quantile", "0"))
        assert message in str(e.value) and str(path) in str(e.value)
    assert not (tmp_path / "pseudo.csv").exists()
    write_preds(tmp_path / "stack" / "stack_test.csv", ["t1", "t2"], LABELS, probs)  # test images: accepted
    pseudo_label.main(args(tmp_path / "stack" / "stack_test.csv", tmp_path / "pseudo.csv", "--quantile", "0"))
    assert read_preds(tmp_path / "pseudo.csv")[0] == ["t1", "t2"]
