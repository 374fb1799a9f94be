"""utils/grid/budget_memo.py: a measurement is reused only for the same machine, data and
candidates, and only while recent."""
from utils.data.dataset import load_dataset
from utils.grid.budget import Measured, Speed
from utils.grid.budget_memo import MAX_AGE_S, MEMO_FILE, memo_key, recall, remember

from conftest import write_dataset


def test_a_measurement_is_reused_for_the_same_key_only_while_recent(tmp_path):
    data = write_dataset(tmp_path / "d", n=12, size=16)
    spec = load_dataset(data, "train", "test", need_test=True)
    configs = [("tiny_cnn", 24, 32)]
    key = memo_key(spec, "cpu", configs, [], ["best"], 3, 3)
    assert key == memo_key(spec, "cpu", configs, [], ["best"], 3, 3)
    assert key != memo_key(spec, "cpu", [("tiny_cnn", 32, 32)], [], ["best"], 3, 3)
    assert key != memo_key(spec, "cuda:0", configs, [], ["best"], 3, 3)
    m = Measured({"tiny_cnn@24px/b32": Speed(100.0, 400.0)}, 1.5, 20.0, "cpu", {"24": 900.0}, ["train@24"],
                 {"tiny_cnn": (0.2, 1e-5)}, {"final": (0.1, 1e-4), "interim": (0.01, 1e-5)})
    cache = tmp_path / "cache"
    remember(cache, key, m, now=1000.0)
    got, age = recall(cache, key, now=1060.0)
    assert age == 60.0 and got.to_json() == m.to_json()
    assert recall(cache, "another", now=1060.0) == (None, None)
    assert recall(cache, key, now=1000.0 + MAX_AGE_S + 1) == (None, None)
    (data / "train.csv").write_text((data / "train.csv").read_text() + "")   # same bytes: same key
    assert memo_key(load_dataset(data, "train", "test", need_test=True), "cpu", configs, [], ["best"], 3, 3) == key
    lines = (data / "train.csv").read_text().splitlines()
    (data / "train.csv").write_text("\n".join(lines[:1] + [lines[1].replace(",", ",b ")] + lines[2:]) + "\n")
    assert memo_key(load_dataset(data, "train", "test", need_test=True), "cpu", configs, [], ["best"], 3, 3) != key
    (cache / MEMO_FILE).write_text("{not json")
    assert recall(cache, key, now=1060.0) == (None, None)


def test_a_corrupt_plan_file_says_what_to_do(tmp_path):
    import pytest
    from utils.common.errors import DataError
    from utils.grid.plan_file import read_plan
    (tmp_path / "plan.json").write_text('{"budget": 30')
    with pytest.raises(DataError, match="plan.json.*move it away.*another --out"):
        read_plan(tmp_path / "plan.json")
