"""Faults while writing: a full disk, a file size limit, Ctrl-C and SIGTERM, a run folder deleted
or used by two runs. Each ends in one line naming the path, a non-zero exit status, no temp file
and no worker process left, and the previous complete file intact.

A full disk is simulated in-process (OSError(ENOSPC) raised by the write) or with a small file
size limit (RLIMIT_FSIZE, SIGXFSZ ignored so writes raise EFBIG) in a subprocess.
"""
import errno
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, script_argv, write_dataset
from utils.common import temp_files
from utils.common.atomic import atomic_save_torch, atomic_write, atomic_write_text
from utils.common.errors import DataError
from utils.common.write_errors import WriteFault
from utils.data import cache
from utils.runs.run_guard import RunFolder, RunLock
from utils.runs.run_name import default_run_name


def _temps(folder):
    return sorted(p.name for p in Path(folder).rglob(".*.tmp"))


def _images(folder, n=80):
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        files.append(folder / f"{i}.png")
        Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(files[-1])
    return files


def _limited(limit):
    """preexec_fn: a file size limit of `limit` bytes, SIGXFSZ ignored (writes past it raise EFBIG)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --- atomic writers and the scripts' error handler ---------------------------------------------

@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES])
def test_a_refused_write_names_the_file_and_keeps_the_previous_one(tmp_path, err):
    path = tmp_path / "preds" / "val.none.csv"
    atomic_write_text(path, "old\n")

    def fail(f):
        f.write(b"half")
        raise OSError(err, os.strerror(err))
    with pytest.raises(WriteFault) as e:
        atomic_write(path, fail)
    assert str(path) in str(e.value) and "\n" not in str(e.value) and e.value.errno == err
    assert path.read_text() == "old\n" and _temps(tmp_path) == []


def test_torch_save_on_a_full_disk_is_one_line_exit_1_old_checkpoint_intact(tmp_path):
    """torch.save wraps the OSError in a RuntimeError: the chain is searched."""
    path = tmp_path / "checkpoints" / "last.pt"
    atomic_save_torch(path, {"w": 1})
    code = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from utils.common.atomic import atomic_save_torch
        from utils.common.cli import exit_cleanly
        exit_cleanly(lambda: atomic_save_torch({str(path)!r}, {{"w": torch.zeros(200_000)}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       preexec_fn=_limited(100_000))
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [f"error: file too large for this file system or the file size limit "
                                             f"(ulimit -f) writing {path}; write elsewhere or raise the limit"]
    import torch
    assert torch.load(path) == {"w": 1} and _temps(tmp_path) == []


def test_stale_temp_files_of_dead_processes_are_swept_by_the_next_write(tmp_path):
    path = tmp_path / "history.csv"
    dead = tmp_path / f".history.csv.{temp_files._HOST}-{_dead_pid()}.abc.tmp"
    live = tmp_path / f".history.csv.{temp_files._HOST}-{os.getppid()}.abc.tmp"
    elsewhere = tmp_path / f".history.csv.otherhost-{_dead_pid()}.abc.tmp"
    for p in (dead, live, elsewhere):
        p.write_text("x")
    atomic_write_text(path, "a\n")
    assert not dead.exists() and live.exists() and elsewhere.exists()


# --- the image cache ---------------------------------------------------------------------------

def test_cache_on_a_full_disk_fails_up_front_naming_sizes_and_leaves_nothing(tmp_path, monkeypatch):
    files = _images(tmp_path / "img", 200)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(WriteFault) as e:
        cache.load_images(files, 64, tmp_path / "cache", workers=1)
    path = cache.cache_path(files, 64, tmp_path / "cache")[2]
    assert str(e.value).startswith(f"no space left on device writing {path} (needs 2.3 MB, ")
    assert str(e.value).endswith("MB free); free space or pass --cache-dir")
    assert not (tmp_path / "cache").exists()  # the folder it made goes too


def test_cache_under_a_file_size_limit_exits_1_with_one_line_and_no_workers_left(tmp_path):
    files = _images(tmp_path / "img", 80)
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from utils.common.cli import exit_cleanly
        from utils.data.cache import load_images
        files = sorted(Path({str(tmp_path / 'img')!r}).glob("*.png"))
        exit_cleanly(lambda: load_images(files, 64, {str(tmp_path / 'cache')!r}, workers=2))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       preexec_fn=_limited(200_000))
    assert r.returncode == 1, r.stderr
    (line,) = [l for l in r.stderr.replace("\r", "\n").splitlines() if l.strip() and not l.startswith("cache ")]
    assert line.startswith("error: file too large") and "needs 0.9 MB" in line and "pass --cache-dir" in line
    assert "Traceback" not in r.stderr and not (tmp_path / "cache").exists()  # the folder it made goes too


def test_a_failed_cache_build_stops_its_workers_and_removes_the_temp_file(tmp_path, monkeypatch):
    files = _images(tmp_path / "img", 100)
    seen = []

    def stop_after_some(self, n=1):
        seen.append(1)
        if len(seen) == 20:
            seen.append(multiprocessing.active_children())
            raise KeyboardInterrupt
    monkeypatch.setattr(cache.tqdm, "update", stop_after_some)
    with pytest.raises(KeyboardInterrupt):
        cache.load_images(files, 32, tmp_path / "cache", workers=2)
    assert len(seen[-1]) == 2  # the pool ran ...
    assert multiprocessing.active_children() == []  # ... and is stopped and joined
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("sig, status, line", [(signal.SIGINT, 130, "stopped by Ctrl-C"),
                                               (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_ctrl_c_or_sigterm_during_a_cache_build_is_one_line_and_cleans_up(tmp_path, sig, status, line):
    files = _images(tmp_path / "img", 200)
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from utils.common.cli import exit_cleanly
        from utils.data import cache
        decode = cache.decode_image
        def slow(*a, **k):
            time.sleep(0.05)
            return decode(*a, **k)
        cache.decode_image = slow
        files = sorted(Path({str(tmp_path / 'img')!r}).glob("*.png"))
        exit_cleanly(lambda: cache.load_images(files, 32, {str(tmp_path / 'cache')!r}, workers=2))
    """)
    # a terminal's Ctrl-C reaches the whole process group: workers included
    p = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not _temps(tmp_path / "cache") and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(p.pid, sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == status, err
    assert err.replace("\r", "\n").strip().splitlines()[-1] == line and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # the folder it made goes too
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # no worker outlived the build
        os.killpg(p.pid, 0)


def test_a_killed_builds_temp_file_is_removed_by_the_next_build(tmp_path):
    files = _images(tmp_path / "img", 5)
    (tmp_path / "cache").mkdir()
    stale = tmp_path / "cache" / f".images-32px-0123456789abcdef.npy.{temp_files._HOST}-{_dead_pid()}.x1.tmp"
    stale.write_bytes(b"\0" * 100)
    cache.load_images(files, 32, tmp_path / "cache", workers=1)
    assert not stale.exists() and _temps(tmp_path / "cache") == []


# --- the run folder: deleted while training, locked while running --------------------------------

def test_run_folder_check_tells_deleted_and_replaced_folders(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text("{}")
    folder = RunFolder(run)
    folder.check()
    (run / "config.json").unlink()
    with pytest.raises(WriteFault, match="deleted or lost its config.json"):
        folder.check()
    (run / "config.json").write_text("{}")
    run.rename(tmp_path / "moved")
    run.mkdir()  # the same name, another folder
    (run / "config.json").write_text("{}")
    with pytest.raises(WriteFault, match="replaced by another folder"):
        folder.check()


def test_a_run_folder_deleted_while_training_stops_the_run_without_recreating_it(tmp_path):
    data = write_dataset(tmp_path / "data", n=24, size=24)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-W", "ignore", *script_argv("train.py", "rmrun:1"), "--data", str(data), "--out", str(out),
           "--arch", "tiny_cnn", "--no-pretrained", "--name", "r", "--plots", "none", "--stages", "epochs=3,size=24,bs=8"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"error: {out / 'r'}: the run folder was deleted or lost its "
                                                 f"config.json while training; stopped without writing anything "
                                                 f"more; start a new run")
    assert not (out / "r").exists()


HOLD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from utils.runs.run_guard import hold_run
    hold_run(sys.argv[2])
    print("held", flush=True)
    time.sleep(120)
""")


def _holder(run):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(ROOT), str(run)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_run_folder_held_by_a_live_process_is_refused_naming_it(tmp_path):
    run = tmp_path / "r"
    p = _holder(run)
    try:
        with pytest.raises(DataError, match=rf"{run}: in use by train.py \(pid {p.pid} on .*\); wait"):
            RunLock(run).acquire()
    finally:
        p.kill()
        p.wait()
    lock = RunLock(run).acquire()  # the killed holder's lock is taken over
    assert f'"pid": {os.getpid()}' in (run / "run.lock").read_text()
    lock.release()
    assert list(run.iterdir()) == []  # the lock file goes; the folder stays: another process made it
    RunLock(tmp_path / "new").acquire().release()
    assert not (tmp_path / "new").exists()  # a folder made for the lock alone goes with it


@pytest.mark.parametrize("training", [False, True], ids=["starting", "with-checkpoint"])
def test_train_refuses_a_name_that_a_running_train_holds(tmp_path, training):
    data = write_dataset(tmp_path / "data", n=24, size=24)
    out = tmp_path / "runs"
    p = _holder(out / "r")
    if training:  # the holder has written its first checkpoint: still "in use", never "pass --resume"
        (out / "r" / "checkpoints").mkdir()
        (out / "r" / "checkpoints" / "last.pt").write_bytes(b"x")
    try:
        r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "train.py"), "--data", str(data), "--out",
                            str(out), "--arch", "tiny_cnn", "--no-pretrained", "--name", "r", "--plots", "none",
                            "--stages", "epochs=1,size=24,bs=8"], capture_output=True, text=True, timeout=300)
    finally:
        p.kill()
        p.wait()
    assert r.returncode == 2 and f"{out / 'r'}: in use by train.py (pid {p.pid}" in r.stderr, r.stderr[-2000:]
    assert "--resume" not in r.stderr
    assert sorted(x.name for x in (out / "r").iterdir()) == ["checkpoints", "run.lock"][not training:]
    # the holder's files; nothing of the refused run


def test_default_names_carry_the_configuration_and_differ_within_a_second():
    flags = Namespace(arch="timm:resnet50", images="train", fold=1, bs=16, lr=1e-3, workers=4, _given=set())
    a = default_run_name(flags, now=0, pid=10)
    b = default_run_name(flags, now=0, pid=11)
    assert a != b and a.startswith("timm_resnet50-train-") and "-f1-" in a
    same_config = default_run_name(Namespace(**{**vars(flags), "fold": 2, "workers": 0}), now=0, pid=10)
    other_config = default_run_name(Namespace(**{**vars(flags), "bs": 32}), now=0, pid=10)
    assert same_config.split("-")[2] == a.split("-")[2] != other_config.split("-")[2]


def test_sigterm_during_training_writes_a_resumable_checkpoint_and_exits_143(tmp_path):
    data = write_dataset(tmp_path / "data", n=24, size=24)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-W", "ignore", *script_argv("train.py", "sigterm:2"), "--data", str(data), "--out",
           str(out), "--arch", "tiny_cnn", "--no-pretrained", "--name", "r", "--plots", "none",
           "--stages", "epochs=2,size=24,bs=4"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 143, r.stderr[-2000:]
    assert "--resume" in r.stderr and "Traceback" not in r.stderr
    assert (out / "r" / "checkpoints" / "last.pt").is_file() and _temps(out) == []
