"""Portable run records: utils/common/paths.py, reading foreign records, tools/convert_paths.py."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from utils.common.errors import DataError  # noqa: E402
from utils.runs.pred_files import write_preds  # noqa: E402
from utils.common.paths import (apply_path_map, native_rel, parse_path_map, reroot, resolve_stored,  # noqa: E402
                         rewrite_prefix, rewrite_record, split_parts)
from utils.runs.directory import load_run  # noqa: E402


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


convert = load_tool("convert_paths")
statistics = load_tool("statistics")

LABELS = ["a", "b"]
WIN_DATA = "D:\\kaggle\\data\\demo"


def run_tool(tool, *argv):
    return tool.main(tool.get_args_parser().parse_args([str(a) for a in argv]))


def make_data(root, n=20):
    """A tiny train.csv; returns (names, y)."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"i{k}" for k in range(n)]
    y = np.array([[k % 2, k % 3 == 0] for k in range(n)], dtype=np.uint8)
    tags = [" ".join(lab for lab, v in zip(LABELS, row) if v) for row in y]
    (root / "train.csv").write_text("image_name,tags\n" + "".join(f"{a},{t}\n" for a, t in zip(names, tags)))
    (root / "folds.csv").write_text("image_name,fold\n" + "".join(f"{a},0\n" for a in names))
    return names, y


def foreign_run(runs, name, rel, abs_path, names, y):
    """A run folder whose config.json was written on another machine."""
    d = runs / name
    cfg = {"name": name, "arch": "m", "fold": 0, "seed": 0, "labels": LABELS, "images": "train",
           "data_root": rel, "data_root_abs": abs_path, "folds_file": "folds.csv",
           "argv": ["--data", abs_path, "--bs", "16"], "stages": [{"size": 32, "epochs": 1}]}
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    write_preds(d / "preds" / "val.none.csv", names, LABELS, np.clip(y * 0.8 + 0.1, 0, 1))
    return d


@pytest.fixture
def kaggle(tmp_path, monkeypatch):
    """runs/ and data/ copied together from D:\\kaggle to <tmp>/home/me/kaggle; cwd elsewhere."""
    base = tmp_path / "home" / "me" / "kaggle"
    names, y = make_data(base / "data" / "demo")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("MULTITAG_PATH_MAP", raising=False)
    return base, names, y


def tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- utils/common/paths.py

def test_split_parts_both_flavours():
    assert split_parts(WIN_DATA) == ["kaggle", "data", "demo"]
    assert split_parts("D:/kaggle/data") == ["kaggle", "data"]
    assert split_parts("/home/other/data") == ["home", "other", "data"]
    assert split_parts("\\\\server\\share\\x") == ["x"]


def test_path_map_prefixes(tmp_path):
    pairs = parse_path_map("D:\\kaggle=/home/me/kaggle; /mnt/a=/x\n# comment\n/mnt/a/b=/y")
    assert pairs == [("D:\\kaggle", "/home/me/kaggle"), ("/mnt/a", "/x"), ("/mnt/a/b", "/y")]
    assert apply_path_map("d:\\KAGGLE\\data\\demo", pairs) == "/home/me/kaggle/data/demo"
    assert apply_path_map("/mnt/a/b/c", pairs) == "/y/c"           # longest prefix wins
    assert apply_path_map("/mnt/ab", pairs) is None                # whole components only
    assert parse_path_map('{"/a": "/b"}') == [("/a", "/b")]
    with pytest.raises(DataError, match="OLD=NEW"):
        parse_path_map("nonsense")


def test_reroot_prefers_the_longest_suffix(tmp_path):
    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "demo").mkdir()
    assert reroot(WIN_DATA, [tmp_path]) == tmp_path / "data" / "demo"
    assert reroot("/home/other/nothing/here", [tmp_path]) is None


def test_native_rel_and_resolve_relative_windows(tmp_path):
    (tmp_path / "data" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "r").mkdir(parents=True)
    assert native_rel("..\\..\\data\\demo") == "../../data/demo"
    found, how = resolve_stored("..\\..\\data\\demo", WIN_DATA, tmp_path / "runs" / "r")
    assert (found, how) == ((tmp_path / "data" / "demo").resolve(), "relative")


def test_rewrite_prefix_and_record():
    pairs = [("D:\\kaggle", "/home/me/kaggle")]
    assert rewrite_prefix(WIN_DATA, pairs) == "/home/me/kaggle/data/demo"
    assert rewrite_prefix("/home/me/kaggle/data", pairs) is None
    assert rewrite_prefix("relative\\path", pairs) is None and rewrite_prefix(3, pairs) is None
    # NEW under OLD: the output is not rewritten again
    grow = [("/data", "/data/v2")]
    once = rewrite_prefix("/data/x", grow)
    assert once == "/data/v2/x" and rewrite_prefix(once, grow) is None
    rec = {"data_root_abs": WIN_DATA, "argv": ["--data", "d:/Kaggle/data"], "fold": 0, "nested": {"p": WIN_DATA}}
    new, changes = rewrite_record(rec, pairs)
    assert new["argv"][1] == "/home/me/kaggle/data" and new["nested"]["p"] == "/home/me/kaggle/data/demo"
    assert [c[0] for c in changes] == ["data_root_abs", "argv[1]", "nested.p"]
    assert rec["data_root_abs"] == WIN_DATA  # input untouched
    assert rewrite_record(new, pairs) == (new, [])


# ----------------------------------------------------------------------------- reading foreign records

def test_windows_record_copied_with_its_data(kaggle):
    base, names, y = kaggle
    foreign_run(base / "runs", "win", "..\\..\\data\\demo", WIN_DATA, names, y)     # as written on Windows
    foreign_run(base / "runs", "win_other_drive", None, WIN_DATA, names, y)        # no relative path stored
    foreign_run(base / "runs", "posix", "../../../../old/data/demo", "/home/other/kaggle/data/demo", names, y)
    hows = {n: load_run(base / "runs" / n).data_how for n in ("win", "win_other_drive", "posix")}
    assert hows == {"win": "relative", "win_other_drive": "rerooted", "posix": "rerooted"}
    assert load_run(base / "runs" / "posix").data_root == (base / "data" / "demo").resolve()
    run_df, _ = run_tool(statistics, "--runs", base / "runs")
    t = run_df.set_index("run")
    assert set(t.index) == {"win", "win_other_drive", "posix"}
    assert t["converted"].to_dict() == {"win": False, "win_other_drive": True, "posix": True}
    assert (t["f2@0.2"] == 1.0).all()  # probabilities 0.9 / 0.1 against the true tags


def test_path_map_from_file_and_environment(kaggle, tmp_path, monkeypatch, capsys):
    base, names, y = kaggle
    moved = tmp_path / "moved" / "copy_of_dataset"
    make_data(moved)
    foreign_run(base / "runs", "r", None, "/mnt/old/dataset_x", names, y)
    with pytest.raises(DataError, match="no run could be scored"):   # nothing scored: an error, exit 2
        run_tool(statistics, "--runs", base / "runs")
    err = capsys.readouterr().err
    assert "skipped r: data root not found here (stored /mnt/old/dataset_x); pass --path-map" in err
    mapfile = tmp_path / "map.txt"
    mapfile.write_text(f"/mnt/old={tmp_path / 'moved'}\n/mnt/old/dataset_x={moved}\n")
    run_df, _ = run_tool(statistics, "--runs", base / "runs", "--path-map", mapfile)
    assert run_df.set_index("run").loc["r", "paths"] == "mapped" and run_df["converted"].all()
    monkeypatch.setenv("MULTITAG_PATH_MAP", f"/mnt/old/dataset_x={moved}")
    run = load_run(base / "runs" / "r")
    assert (run.data_how, run.data_root) == ("mapped", moved)
    with pytest.raises(DataError, match="not found"):
        run_tool(statistics, "--runs", base / "runs", "--path-map", tmp_path / "none.txt")


# ----------------------------------------------------------------------------- convert_paths

def test_convert_dry_run_apply_and_idempotence(kaggle, capsys):
    base, names, y = kaggle
    runs = base / "runs"
    foreign_run(runs, "win", None, WIN_DATA, names, y)
    foreign_run(runs, "rel", "..\\..\\data\\demo", WIN_DATA, names, y)
    original = tree(runs)
    changed = run_tool(convert, "--runs", runs, "--from", "D:\\kaggle", "--to", base)
    assert len(changed) == 2 and tree(runs) == original  # dry run writes nothing
    out = capsys.readouterr().out
    assert f"data_root_abs: {WIN_DATA!r} -> {str(base / 'data' / 'demo')!r}" in out and "dry run" in out
    run_tool(convert, "--runs", runs, "--from", "D:\\kaggle", "--to", base, "--apply")
    cfg = json.loads((runs / "win" / "config.json").read_text())
    assert cfg["data_root_abs"] == str(base / "data" / "demo") and cfg["data_root"] == "../../data/demo"
    assert cfg["argv"] == ["--data", str(base / "data" / "demo"), "--bs", "16"]
    assert json.loads((runs / "rel" / "config.json").read_text())["data_root"] == "../../data/demo"
    for name in ("win", "rel"):
        assert (runs / name / "config.json.bak").read_bytes() == original[f"{name}/config.json"]
        assert load_run(runs / name).data_how == "relative"
    once = tree(runs)
    assert run_tool(convert, "--runs", runs, "--from", "D:\\kaggle", "--to", base, "--apply") == []
    assert tree(runs) == once  # second run: nothing changes, backups included


def test_convert_auto_and_map_file(kaggle, tmp_path):
    base, names, y = kaggle
    runs = base / "runs"
    foreign_run(runs, "posix", None, "/home/other/kaggle/data/demo", names, y)
    foreign_run(runs, "win", None, WIN_DATA, names, y)
    run_tool(convert, "--runs", runs, "--auto", "--apply")
    for name in ("posix", "win"):
        cfg = json.loads((runs / name / "config.json").read_text())
        assert Path(cfg["data_root_abs"]) == (base / "data" / "demo").resolve()
        assert load_run(runs / name).data_how == "relative"
    assert run_tool(convert, "--runs", runs, "--auto", "--apply") == []
    # a map file, with a relative NEW taken from the current directory
    other = tmp_path / "other_runs"
    foreign_run(other, "m", None, "/srv/x/data/demo", names, y)
    mapfile = tmp_path / "map.txt"
    mapfile.write_text("/srv/x=relative/target\n")
    run_tool(convert, "--runs", other, "--map", mapfile, "--apply")
    cfg = json.loads((other / "m" / "config.json").read_text())
    assert cfg["data_root_abs"] == str(Path.cwd() / "relative" / "target" / "data" / "demo")
    assert cfg["data_root"] is None  # the new place does not exist here: nothing to make relative


def test_convert_crash_leaves_the_old_record(kaggle, monkeypatch):
    base, names, y = kaggle
    d = foreign_run(base / "runs", "win", None, WIN_DATA, names, y)
    before = (d / "config.json").read_bytes()

    def boom(path, obj):
        raise KeyboardInterrupt  # killed between the backup and the rewrite

    monkeypatch.setattr(convert, "atomic_write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        run_tool(convert, "--runs", base / "runs", "--from", "D:\\kaggle", "--to", base, "--apply")
    assert (d / "config.json").read_bytes() == before
    assert not [p for p in d.iterdir() if p.name.endswith(".tmp")]


def test_convert_bad_input(kaggle, tmp_path):
    base, names, y = kaggle
    runs = base / "runs"
    foreign_run(runs, "good", None, WIN_DATA, names, y)
    with pytest.raises(DataError, match="nothing to convert"):
        run_tool(convert, "--runs", runs)
    with pytest.raises(DataError, match="go together"):
        run_tool(convert, "--runs", runs, "--from", "D:\\kaggle")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no run records"):
        run_tool(convert, "--runs", empty, "--auto")
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{oops")
    before = tree(runs)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_paths.py"), "--runs", str(runs),
                        "--from", "D:\\kaggle", "--to", str(base), "--apply"], capture_output=True, text=True)
    assert r.returncode == 2 and "broken" in r.stderr and "nothing was changed" in r.stderr
    assert tree(runs) == before
