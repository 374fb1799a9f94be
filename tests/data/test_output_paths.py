"""Outputs never replace the dataset's own files, land in its image folders or hit a folder."""
import errno
import json
import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, write_dataset
from helpers import run_stack, train, write_runs
from utils.common.errors import DataError
from utils.data import output_paths
from utils.data.output_paths import check_can_write, check_output_dir, check_output_file, write_together
from utils.common.write_errors import WriteFault


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the checks

@pytest.mark.parametrize("name", ["train.csv", "labels.txt", "sample_submission.csv", "folds.csv", "duplicates.csv",
                                  "test_labels.csv", "train/sub.csv", "test/new/sub.csv", "train_seg/sub.csv"])
def test_dataset_files_and_image_folders_are_refused(tmp_path, name):
    data = write_dataset(tmp_path / "data", n=4, size=16, n_test=2)
    shutil.copytree(data / "train", data / "train_seg")  # an image variant: any folder of images
    with pytest.raises(DataError, match=r"--out .*(dataset's own|image folder)"):
        check_output_file(data / name, "--out", [data])
    # the same file through another spelling of the path
    with pytest.raises(DataError):
        check_output_file(data / "train" / ".." / name, "--out", [data])


def test_other_files_are_allowed(tmp_path):
    data = write_dataset(tmp_path / "data", n=4, size=16, n_test=2)
    (data / "notes").mkdir()
    (data / "notes" / "a.txt").write_text("x")
    for path in (data / "submission.csv", data / "notes" / "sub.csv", tmp_path / "sub.csv", tmp_path / "new" / "s.csv"):
        assert check_output_file(path, "--out", [data]) == path
    assert check_output_file(data / "duplicates.csv", "--out", [data], allow=("duplicates.csv",))


def test_folders_and_files_in_the_wrong_place(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is an existing directory"):
        check_output_file(tmp_path / "dir", "--out")
    with pytest.raises(DataError, match="is a file, not a folder"):
        check_output_file(tmp_path / "file" / "sub.csv", "--out")
    with pytest.raises(DataError, match="is an existing file, not a folder"):
        check_output_dir(tmp_path / "file", "--out")
    with pytest.raises(DataError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "runs", "--out")
    assert check_output_dir(tmp_path / "dir" / "runs", "--out") == tmp_path / "dir" / "runs"


def refuse(*_, **__):
    raise PermissionError(errno.EACCES, "Permission denied")


def test_a_folder_that_takes_no_file_is_refused(tmp_path, monkeypatch):
    assert check_can_write(tmp_path / "new" / "deeper", "--report-dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # the probe is gone, nothing made
    monkeypatch.setattr(output_paths, "make_temp", refuse)  # as root on a read-only mount or an immutable folder
    with pytest.raises(DataError, match=rf"--out: cannot write in {tmp_path} \(to make {tmp_path / 'new'}\): "
                                        r"Permission denied"):
        check_can_write(tmp_path / "new", "--out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o500)
    try:
        with pytest.raises(DataError, match=r"--out: cannot write in .*ro: Permission denied"):
            check_can_write(tmp_path / "ro", "--out")
    finally:
        (tmp_path / "ro").chmod(0o700)


def _fill(text):
    return lambda p: p.write_text(text)


def _full_disk(*_):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_write_together_writes_all_or_none(tmp_path):
    (tmp_path / "old.txt").write_text("before")
    paths = [tmp_path / "old.txt", tmp_path / "sub" / "new.txt", tmp_path / "last.txt"]
    with pytest.raises(WriteFault, match=rf"no space left on device writing {tmp_path / 'last.txt'}"):
        write_together({paths[0]: _fill("after"), paths[1]: _fill("new"), paths[2]: _full_disk})
    assert snapshot(tmp_path) == {"old.txt": b"before"}  # no temp file, no new file, the old one kept
    assert write_together(dict(zip(paths, map(_fill, "abc")))) == paths
    assert snapshot(tmp_path) == {"old.txt": b"a", "sub/new.txt": b"b", "last.txt": b"c"}


def test_write_together_undoes_the_moves_of_a_failed_set(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("old a")
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("c.txt"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(src, dst)

    monkeypatch.setattr(output_paths.os, "replace", replace)
    with pytest.raises(WriteFault, match="read-only file system writing .*c.txt"):
        write_together({tmp_path / n: _fill("new") for n in ("a.txt", "b.txt", "c.txt")})
    assert snapshot(tmp_path) == {"a.txt": b"old a"}  # a.txt put back, b.txt removed again


# ----------------------------------------------------------------------------- stack.py

@pytest.fixture
def stacked(tmp_path):
    root, *_ = write_runs(tmp_path, [dict(arch="net0", signal=1.0), dict(arch="net1", signal=1.5)], n=60, n_test=8)
    return root


@pytest.mark.parametrize("name", ["train.csv", "sample_submission.csv", "folds.csv"])
def test_stack_refuses_a_dataset_file(stacked, name):
    data = stacked / "data"
    before = snapshot(stacked)
    r = run_stack("--runs", stacked / "runs" / "*", "--method", "mean", "--out", data / name)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--out {data / name}: is the dataset's own {name}" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(stacked) == before  # no stack_oof.csv / stack_test.csv / stack_report.* either


def test_stack_refuses_an_existing_folder_before_writing(stacked):
    out = stacked / "subs"
    out.mkdir()
    before = snapshot(stacked)
    r = run_stack("--runs", stacked / "runs" / "*", "--method", "mean", "--out", out)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--out {out}: is an existing directory" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(stacked) == before


def test_stack_refuses_a_report_folder_inside_the_images(stacked):
    data = stacked / "data"
    (data / "train").mkdir()
    (data / "train" / "img0000.jpg").write_bytes(b"")
    before = snapshot(stacked)
    r = run_stack("--runs", stacked / "runs" / "*", "--method", "mean", "--report-dir", data / "train")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "image folder" in r.stderr and snapshot(stacked) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_stack_refuses_a_read_only_output_folder_before_any_work(stacked):
    ro = stacked / "ro"
    ro.mkdir(mode=0o500)
    before = snapshot(stacked)
    try:
        for flag in ("--out", "--report-dir"):
            out = ro / "sub.csv" if flag == "--out" else stacked / "sub.csv"
            rep = ro / "rep" if flag == "--report-dir" else stacked / "rep"
            r = run_stack("--runs", stacked / "runs" / "*", "--method", "mean", "--out", out, "--report-dir", rep)
            assert r.returncode == 2, r.stderr[-2000:]
            assert f"{flag}: cannot write in {ro}" in r.stderr and "Traceback" not in r.stderr
            assert "library:" not in r.stderr  # refused before the runs were read
    finally:
        ro.chmod(0o700)
    assert snapshot(stacked) == before


def stack_in_process(*argv):
    stack = importlib.import_module("stack")
    parser = stack.get_args_parser()
    args = parser.parse_args(list(map(str, argv)))
    stack.check_args(parser, args)
    return stack, args


def test_stack_refuses_an_output_folder_that_takes_no_file(stacked, monkeypatch):
    stack, args = stack_in_process("--runs", stacked / "runs" / "*", "--method", "mean",
                                   "--out", stacked / "subs" / "sub.csv")
    monkeypatch.setattr(output_paths, "make_temp", refuse)  # what root meets on a read-only mount
    with pytest.raises(DataError, match=rf"--out: cannot write in {stacked} \(to make {stacked / 'subs'}\)"):
        stack.main(args)


def test_a_failed_write_leaves_the_previous_outputs(stacked, monkeypatch):
    rep = stacked / "rep"
    stack, args = stack_in_process("--runs", stacked / "runs" / "*", "--method", "mean", "--out",
                                   stacked / "sub.csv", "--report-dir", rep)
    stack.main(args)
    before = snapshot(stacked)
    assert {k for k in before if k.startswith("rep/")} == {"rep/stack_oof.csv", "rep/stack_report.json",
                                                          "rep/stack_report.md", "rep/stack_test.csv"}
    monkeypatch.setattr(stack, "atomic_write_text", _full_disk)  # the report markdown, written last
    args.method = ["select"]  # other outputs than the first time
    with pytest.raises(WriteFault, match=f"no space left on device writing {rep / 'stack_report.md'}"):
        stack.main(args)
    assert snapshot(stacked) == before


def test_stack_still_writes_next_to_the_data(stacked):
    data = stacked / "data"
    r = run_stack("--runs", stacked / "runs" / "*", "--method", "mean", "--out", data / "submission.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (data / "submission.csv").is_file() and (stacked / "runs" / "stack_report.md").is_file()


# ----------------------------------------------------------------------------- predict.py

@pytest.fixture(scope="module")
def two_folds(tmp_path_factory):
    """Both folds (K=2) of one tiny model; the data folder has a labels.txt."""
    base = tmp_path_factory.mktemp("o")
    data = write_dataset(base / "data", n=24, size=16, n_test=4)
    (data / "labels.txt").write_text("a\nb\nc\n")
    for fold in (0, 1):
        train(data, base / "runs", "--stages", "epochs=1,size=16,bs=8", "--folds-k", "2", "--fold", str(fold),
              "--device", "cpu", "--workers", "0", name=f"f{fold}")
    return base, data


@pytest.mark.parametrize("name", ["labels.txt", "train.csv", "test/sub.csv"])
@pytest.mark.slow
def test_predict_refuses_a_dataset_file_as_submission(two_folds, name):
    base, data = two_folds
    before = snapshot(base)
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "predict.py"), "--run", str(base / "runs" / "f0"),
                        str(base / "runs" / "f1"), "--split", "both", "--device", "cpu",
                        "--submission", str(data / name)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--submission {data / name}: is" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(base) == before  # neither the data nor the runs' preds were written


# ----------------------------------------------------------------------------- tools with an output file flag

def run_tool(name, *args):
    return subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "tools" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_pseudo_label_refuses_the_labels_file(stacked):
    data = stacked / "data"
    before = snapshot(stacked)
    r = run_tool("pseudo_label.py", "--runs", stacked / "runs" / "*", "--out", data / "train.csv")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--out {data / 'train.csv'}: is the dataset's own train.csv" in r.stderr
    assert snapshot(stacked) == before


def test_plot_probs_refuses_a_folder(stacked):
    (stacked / "plots").mkdir()
    pred = next((stacked / "runs").glob("*/preds/val.none.csv"))
    r = run_tool("plot_probs.py", "--preds", pred, "--out", stacked / "plots")
    assert r.returncode == 2 and "--out" in r.stderr and "is an existing directory" in r.stderr, r.stderr[-2000:]


def test_near_duplicates_refuses_train_csv(tmp_path):
    data = write_dataset(tmp_path / "data", n=6, size=16, n_test=2)
    before = snapshot(data)
    r = run_tool("near_duplicates.py", "--data", data, "--out", data / "train.csv")
    assert r.returncode == 2 and "is the dataset's own train.csv" in r.stderr, r.stderr[-2000:]
    assert snapshot(data) == before


@pytest.mark.slow
def test_statistics_refuses_a_dataset_file_for_its_tables(stacked):
    data = stacked / "data"
    before = snapshot(stacked)
    for flag, name in (("--csv", "train.csv"), ("--md", "labels.txt")):
        r = run_tool("statistics.py", "--runs", stacked / "runs", flag, data / name)
        assert r.returncode == 2 and f"{flag} {data / name}: is the dataset's own {name}" in r.stderr, r.stderr[-2000:]
    assert snapshot(stacked) == before


def test_submit_refuses_a_dataset_file_before_submitting(tmp_path):
    data = write_dataset(tmp_path / "data", n=12, size=16, n_test=2)
    before = snapshot(data)
    r = run_tool("submit.py", "--cluster", "local", "--data", data, "--out", tmp_path / "runs", "--arch", "tiny_cnn",
                 "--folds-k", 2, "--submission", data / "sample_submission.csv")
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--submission {(data / 'sample_submission.csv').resolve()}: is the dataset's own" in r.stderr
    assert not (tmp_path / "runs").exists() and snapshot(data) == before


@pytest.mark.parametrize("name", ["labels.txt", "train.csv", "folds.csv"])
def test_plot_probs_refuses_the_dataset_files_of_the_runs_it_reads(stacked, name):
    data = stacked / "data"
    before = snapshot(stacked)
    run = next((stacked / "runs").glob("*/preds/val.none.csv")).parents[1]
    r = run_tool("plot_probs.py", "--runs", run, "--out", data / name)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"is the dataset's own {name}" in r.stderr
    assert snapshot(stacked) == before


# ----------------------------------------------------------------------------- what an output path is

def special_files(tmp_path, monkeypatch):
    """{kind in the message: path}: a named pipe, a socket, and a path the stat call reports as a
    character device (no real device is touched)."""
    import socket
    import stat

    from utils.common import atomic

    fifo, sock, dev = tmp_path / "fifo", tmp_path / "sock", tmp_path / "null"
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock))
    dev.write_text("")
    real = atomic._mode
    monkeypatch.setattr(atomic, "_mode", lambda p: stat.S_IFCHR | 0o666 if str(p) == str(dev) else real(p))
    return {"a named pipe (FIFO)": fifo, "a socket": sock, "a character device": dev}, server


def test_devices_pipes_and_sockets_are_refused_and_left_as_they_are(tmp_path, monkeypatch):
    import stat

    from utils.common.atomic import atomic_write_text

    files, server = special_files(tmp_path, monkeypatch)
    try:
        for kind, path in files.items():
            with pytest.raises(DataError, match=re.escape(f"--out {path}: is {kind}, not a regular file")):
                check_output_file(path, "--out")
            with pytest.raises(DataError, match=re.escape(kind)):  # the writers refuse it too
                atomic_write_text(path, "x")
            with pytest.raises(DataError, match=re.escape(kind)):
                write_together({path: lambda p: atomic_write_text(p, "x")})
            with pytest.raises(DataError, match=re.escape(f"is {kind}, not a folder")):
                check_output_dir(path, "--report-dir")
        assert stat.S_ISFIFO(os.stat(files["a named pipe (FIFO)"]).st_mode)
        assert stat.S_ISSOCK(os.stat(files["a socket"]).st_mode)
        assert files["a character device"].read_text() == ""
    finally:
        server.close()


def test_a_symbolic_link_is_written_through_to_its_target(tmp_path):
    from utils.common.atomic import atomic_write_text

    (tmp_path / "real").mkdir()
    target, link = tmp_path / "real" / "sub.csv", tmp_path / "sub.csv"
    target.write_text("old")
    link.symlink_to(target)
    assert check_output_file(link, "--out") == link
    atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    write_together({link: lambda p: atomic_write_text(p, "newer")})
    assert link.is_symlink() and target.read_text() == "newer"
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "to_pipe").symlink_to(tmp_path / "pipe")
    with pytest.raises(DataError, match="named pipe"):  # checked as its target
        check_output_file(tmp_path / "to_pipe", "--out")
    data = write_dataset(tmp_path / "data", n=4, size=16, n_test=2)
    (tmp_path / "to_train").symlink_to(data / "train.csv")
    with pytest.raises(DataError, match="dataset's own train.csv"):
        check_output_file(tmp_path / "to_train", "--out", [data])


def test_inputs_and_files_in_run_folders_are_refused(tmp_path):
    run = tmp_path / "runs" / "m-f0"
    (run / "preds").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"arch": "m", "fold": 0}))
    (run / "preds" / "val.none.csv").write_text("image_name,a\n")
    for path in (run / "preds" / "val.none.csv", run / "config.json", run / "page.html", run / "new" / "x.csv"):
        with pytest.raises(DataError, match=re.escape(f"is inside the run folder {run.resolve()}")):
            check_output_file(path, "--out")
        assert check_output_file(path, "--submission", in_runs=True) == path  # predict.py, plot_probs.py
    assert check_output_file(tmp_path / "runs" / "page.html", "--out") == tmp_path / "runs" / "page.html"
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "config.json").write_text('{"editor": "vim"}')  # some other config.json: no run
    assert check_output_file(tmp_path / "project" / "out.csv", "--out")
    issues = tmp_path / "label_issues.csv"
    issues.write_text("image_name\n")
    with pytest.raises(DataError, match=re.escape(f"--out {issues}: is {issues}, a file this command reads")):
        check_output_file(issues, "--out", inputs=[None, issues])
