"""utils/metrics/threshold_file.py: the thresholds file tools/explore.py saves and --thresholds reads."""
import json
import re

import numpy as np
import pytest

from utils.common.errors import DataError
from utils.metrics.threshold_file import read_thresholds_file

LABELS = ["clear", "haze", "road"]


def test_a_record_reads_back_in_any_label_order(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"thresholds": {"road": 0.5, "clear": 0.125, "haze": 1.0}, "model": "m0"}))
    np.testing.assert_array_equal(read_thresholds_file(path, LABELS), [0.125, 1.0, 0.5])


def test_a_stack_report_is_a_thresholds_file(tmp_path):
    path = tmp_path / "stack_report.json"
    path.write_text(json.dumps({"chosen": "mean", "methods": {}, "thresholds": {"clear": 0.2, "haze": 0.3,
                                                                                "road": np.nextafter(1.0, 2.0)}}))
    np.testing.assert_array_equal(read_thresholds_file(path, LABELS), [0.2, 0.3, np.nextafter(1.0, 2.0)])


@pytest.mark.parametrize("content, message", [
    (None, "--thresholds {p}: file not found"),
    ("{not json", "--thresholds {p}: unreadable, not valid JSON"),
    ({"chosen": "x", "thresholds": None}, '"thresholds" object is null (stack.py --threshold expected'),
    ({"clear": 0.2}, '"thresholds" object is missing'),
    ({"thresholds": {"clear": 0.2, "haze": 0.3}}, "no threshold for 1 label(s): road"),
    ({"thresholds": {"clear": 0.2, "haze": 0.3, "road": 0.1, "water": 0.5}}, "1 label(s) these predictions do not have: water"),
    ({"thresholds": {"clear": "0.2", "haze": -0.1, "road": True}}, "not a number in [0, 1]: clear='0.2', haze=-0.1, road=True"),
])
def test_bad_files_are_refused_naming_the_flag_and_the_file(tmp_path, content, message):
    path = tmp_path / "t.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DataError) as e:
        read_thresholds_file(path, LABELS)
    assert message.format(p=path) in str(e.value)


@pytest.mark.parametrize("table, words", [([0.5, 0.2], 'its "thresholds" is a list, not an object label -> number'),
                                          ("0.5", 'its "thresholds" is a string, not an object'),
                                          (None, 'its "thresholds" object is null')])
def test_a_thresholds_value_that_is_no_object_says_what_it_is(tmp_path, table, words):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"thresholds": table}))
    with pytest.raises(DataError, match=re.escape(words)):
        read_thresholds_file(path, ["a", "b"])
    path.write_text(json.dumps([0.5, 0.2]))
    with pytest.raises(DataError, match="holds a list, not an object"):
        read_thresholds_file(path, ["a", "b"])
