"""A run records the dataset it was trained on; reusing it on another dataset is refused, naming both."""
import json
import shutil

import pytest

from conftest import ROOT, write_dataset
from utils.common.errors import DataError
from utils.runs.fingerprint import dataset_fingerprint, dataset_problem, folds_digest, train_csv_digest
from utils.runs.run_status import run_state


def write_folds(root, k=2):
    names = [line.split(",")[0] for line in (root / "train.csv").read_text().splitlines()[1:]]
    (root / "folds.csv").write_text("image_name,fold\n" + "".join(f"{n},{i % k}\n" for i, n in enumerate(names)))
    return names


def test_the_digest_ignores_layout_and_order_but_not_content(tmp_path):
    root = write_dataset(tmp_path / "a", n=8)
    names = write_folds(root)
    digest = train_csv_digest(root)
    lines = (root / "train.csv").read_text().splitlines()
    # BOM, CRLF, spaces, rows and tags in another order: the same rows
    shuffled = [lines[0]] + [f" {n} , {' '.join(reversed(t.split()))} " for n, t in
                             (line.split(",") for line in reversed(lines[1:]))]
    (root / "train.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(shuffled).encode() + b"\r\n")
    assert train_csv_digest(root) == digest
    (root / "train.csv").write_text("\n".join(lines[:-1] + [lines[-1].split(",")[0] + ",b"]) + "\n")
    assert train_csv_digest(root) != digest
    fp = dataset_fingerprint(root, folds_file=root / "folds.csv")
    assert fp["folds"] == folds_digest(names, [i % 2 for i in range(8)])
    assert fp["folds"] != folds_digest(names, [(i + 1) % 2 for i in range(8)])
    assert fp["root"] == str(root.resolve())


def make_run(tmp_path, root, name="r", state="finished"):
    run = tmp_path / "runs" / name
    (run / "checkpoints").mkdir(parents=True)
    config = {"name": name, "arch": "x", "fold": 0, "labels": ["a"], "folds_file": "folds.csv",
              "dataset": dataset_fingerprint(root, folds_file=root / "folds.csv")}
    (run / "config.json").write_text(json.dumps(config))
    (run / ("result.json" if state == "finished" else "checkpoints/last.pt")).write_text("{}")
    return run, config


def test_a_run_of_another_dataset_is_refused_naming_both(tmp_path):
    a, b = write_dataset(tmp_path / "a", n=8, seed=0), write_dataset(tmp_path / "b", n=8, seed=1)
    write_folds(a), write_folds(b)
    run, config = make_run(tmp_path, a)
    assert run_state(run, a) == "finished"
    copy = shutil.copytree(a, tmp_path / "copy")  # the same content elsewhere: the same dataset
    assert run_state(run, copy) == "finished" and dataset_problem(config, run, copy) is None
    with pytest.raises(DataError) as e:
        run_state(run, b, fix="give each dataset its own RUNS folder")
    msg = str(e.value)
    assert str(a.resolve()) in msg and str(b.resolve()) in msg and "train.csv differ" in msg
    assert msg.endswith("give each dataset its own RUNS folder")
    write_folds(copy, k=4)  # only the folds differ
    assert "folds file differ" in dataset_problem(config, run, copy)
    unfinished, _ = make_run(tmp_path, a, "u", state="unfinished")
    with pytest.raises(DataError):
        run_state(unfinished, b)
    assert run_state(tmp_path / "runs" / "nothing", b) == "new"


def test_runs_recorded_before_the_fingerprint_are_accepted(tmp_path):
    legacy = ROOT / "tests" / "fixtures" / "legacy"
    other = write_dataset(tmp_path / "other", n=8)
    assert run_state(legacy / "runs" / "done", other) == "finished"
    assert run_state(legacy / "runs" / "killed", other) == "unfinished"
