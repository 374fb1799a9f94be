"""tools/submit.py and utils/grid/cluster.py: a grid through submitit's local executor end to end,
requeue after preemption, the Slurm job chain (against a stand-in sbatch), bad grids."""
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT, write_dataset
from utils.grid.cluster import Cell, TrainJob, grid_problems, make_cells, read_grid, run_name

SUBMIT = ROOT / "tools" / "submit.py"
TRAIN = ["--no-pretrained", "--stages", "epochs=1,size=24,bs=8", "--plots", "none", "--no-tensorboard"]


def submit(*args, env=None, check=True):
    e = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    r = subprocess.run([sys.executable, str(SUBMIT), *map(str, args)], capture_output=True, text=True,
                       timeout=600, env=e)
    if check:
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("d") / "data", n=32, size=24)


def test_local_grid_trains_predicts_stacks_and_skips_finished_runs(data, tmp_path):
    out = tmp_path / "runs"
    grid = ["--data", data, "--out", out, "--arch", "tiny_cnn", "--folds", 0, 1, "--folds-k", 2, "--tta", "none",
            "--stack-method", "mean"]
    submit("--cluster", "local", "--array-parallelism", 2, *grid, "--", *TRAIN)
    flags = ["--folds-k", "2", *TRAIN]
    names = [run_name("tiny_cnn", flags, 0, f) for f in (0, 1)]
    assert sorted(p.name for p in out.iterdir() if (p / "config.json").is_file()) == sorted(names)
    for fold, name in enumerate(names):
        run = out / name
        cfg = json.loads((run / "config.json").read_text())
        assert (cfg["arch"], cfg["fold"], cfg["seed"], cfg["folds_k"]) == ("tiny_cnn", fold, 0, 2)
        assert json.loads((run / "result.json").read_text())["finished"]
        assert (run / "preds" / "val.none.csv").is_file() and (run / "preds" / "test.none.csv").is_file()
    sub = pd.read_csv(out / "stack" / "submission.csv", keep_default_na=False)
    assert sub["image_name"].tolist() == [f"t{i:03d}" for i in range(6)]
    rep = json.loads((out / "stack" / "stack_report.json").read_text())
    assert sorted(r for m in rep["members"] for r in m["runs"]) == sorted(names)
    # again: nothing is retrained; a missing prediction is made again
    stamps = {n: (out / n / "checkpoints" / "last.pt").stat().st_mtime_ns for n in names}
    (out / names[1] / "preds" / "test.none.csv").unlink()
    r = submit("--cluster", "debug", *grid, "--", *TRAIN)
    assert "2 run(s) finished (skipped)" in r.stdout
    assert stamps == {n: (out / n / "checkpoints" / "last.pt").stat().st_mtime_ns for n in names}
    assert (out / names[1] / "preds" / "test.none.csv").is_file()


def job_task_pid(job):
    """pid of the process running the job's function (the local executor's controller's child)."""
    ctrl = job._process.pid
    kids = Path(f"/proc/{ctrl}/task/{ctrl}/children").read_text().split()
    assert len(kids) == 1, kids
    return int(kids[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the job's process through /proc (Linux)")
def test_preempted_training_job_is_requeued_and_resumes(data, tmp_path):
    """SIGUSR2 to a running training job, as Slurm sends it before a time limit or on
    preemption: checkpoint() stops train.py with Ctrl-C (it writes last.pt), the job is
    requeued and the new job continues the run with --resume to the end."""
    import submitit

    out = tmp_path / "runs"
    flags = ["--folds-k", "2", "--no-pretrained", "--stages", "epochs=20,size=24,bs=8", "--plots", "none",
             "--no-tensorboard"]
    cell = Cell("tiny_cnn", 0, 0, flags, run_name("tiny_cnn", flags, 0, 0))
    ex = submitit.LocalExecutor(folder=tmp_path / "logs")
    ex.update_parameters(timeout_min=10)
    job = ex.submit(TrainJob(data, out), cell)
    history = out / cell.name / "history.csv"
    deadline = time.time() + 300
    while not (history.is_file() and len(pd.read_csv(history)) >= 1) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(job_task_pid(job), signal.SIGUSR2)
    assert job.result() == str(out / cell.name)
    logs = job.stdout() + job.stderr()
    assert "preempted" in logs and "Ctrl-C" in logs and "resuming" in logs, logs[-3000:]
    assert logs.count("resuming") == 1 and "Job completed successfully" in logs
    hist = pd.read_csv(history)
    assert hist["epoch"].tolist() == list(range(1, 21))
    assert json.loads((out / cell.name / "result.json").read_text())["finished"]


@pytest.mark.parametrize("cluster, stdin", [("debug", "closed"), ("debug", "open"), ("local", "closed")])
def test_failed_job_is_reported_without_a_debugger(tmp_path, cluster, stdin):
    """A training job that fails (train.py refuses an image whose pixel data is broken, which
    the grid check of headers and end markers cannot see) ends submit.py with the job, its error and where its output is, exit
    code 1. --cluster debug opens no pdb prompt, whether stdin is closed or a terminal
    nobody types in (an open pipe: a prompt would wait on it forever, hence the timeout)."""
    data = write_dataset(tmp_path / "data", n=32, size=24)
    png = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), 128, np.uint8)).save(png, format="PNG")
    png = bytearray(png.getvalue())
    start = png.index(b"IDAT") + 4
    png[start:start + 8] = b"\0" * 8  # the zlib stream broken; header and IEND intact
    (data / "train" / "img005.jpg").write_bytes(bytes(png))
    out = tmp_path / "runs"
    cmd = [sys.executable, str(SUBMIT), "--cluster", cluster, "--data", str(data), "--out", str(out), "--arch",
           "tiny_cnn", "--folds", "0", "--folds-k", "2", "--tta", "none", "--", *TRAIN]
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL if stdin == "closed" else read_end,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, OMP_NUM_THREADS="1"))
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            pytest.fail(f"submit.py --cluster {cluster} waits on stdin after a failed job: " + (stdout + stderr)[-2000:])
    finally:
        os.close(read_end)
        os.close(write_end)
    name = run_name("tiny_cnn", ["--folds-k", "2", *TRAIN], 0, 0)
    assert proc.returncode == 1, stdout + stderr
    assert "(Pdb)" not in stdout + stderr and "Traceback" not in stderr, stdout + stderr
    (report,) = [line for line in stderr.splitlines() if line.startswith("error: training of")]
    assert f"error: training of {name} failed (" in report
    assert f"JobFailed: train.py exited with code 2 for {name}: " in report
    if cluster == "debug":
        assert report.endswith("); its output is above: --cluster debug runs every job in this process")
        assert "img005.jpg: cannot decode" in stderr  # train.py's own message, before the report
    else:
        logs = re.search(r"\); log: (\S+) and (\S+)$", report)
        assert logs, report
        assert "img005.jpg: cannot decode" in Path(logs[2]).read_text()  # the job's stderr
    assert not (out / name / "result.json").exists()


def test_grid_file_and_run_names():
    cells = make_cells({"a": ["--bs", "8"], "b": []}, [0, 1], [0, 3], ["--epochs", "2"])
    assert [(c.arch, c.seed, c.fold) for c in cells] == [(a, s, f) for a in "ab" for s in (0, 3) for f in (0, 1)]
    assert cells[0].flags == ["--bs", "8", "--epochs", "2"]
    names = [c.name for c in cells]
    assert len(set(names)) == len(names) and names == [c.name for c in make_cells(
        {"a": ["--bs", "8"], "b": []}, [0, 1], [0, 3], ["--epochs", "2"])]
    assert all(re.fullmatch(rf"{c.arch}-[0-9a-f]{{8}}-s{c.seed}-f{c.fold}", c.name) for c in cells)
    assert run_name("a", ["--bs", "8"], 0, 0) != run_name("a", ["--bs", "16"], 0, 0)


def test_grid_yaml(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("archs:\n  tiny_cnn: {bs: 8, pretrained: false}\n  tv:resnet18: ['--lr', '1e-3']\n"
                    "folds: [0, 2]\nflags: {epochs: 1, aug: none}\n")
    g = read_grid(path)
    assert g["archs"] == {"tiny_cnn": ["--bs", "8", "--no-pretrained"], "tv:resnet18": ["--lr", "1e-3"]}
    assert g["folds"] == [0, 2] and g["seeds"] is None and g["flags"] == ["--epochs", "1", "--aug", "none"]
    path.write_text("arch: [x]\n")
    with pytest.raises(Exception, match="unknown key"):
        read_grid(path)


def test_bad_grid_is_refused_before_anything_is_submitted(data, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("archs:\n  resnet5O: {}\n  tiny_cnn: {bogus-flag: 3}\n  tv:tiny_cnn: {}\nfolds: [0, 7]\n")
    out = tmp_path / "runs"
    r = submit("--cluster", "local", "--data", data, "--out", out, "--grid", grid, "--folds-k", 2, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nothing was submitted" in r.stderr
    assert "resnet5O" in r.stderr and "--bogus-flag" in r.stderr and "--fold 7: must be in 0..1" in r.stderr
    r = submit("--cluster", "local", "--data", data, "--out", out, "--arch", "tiny_cnn", "--folds-k", 2,
               "--", "--bogus", 3, check=False)
    assert r.returncode == 2 and "train.py refuses its flags: unrecognized arguments: --bogus 3" in r.stderr
    assert "submit.py: error" not in r.stderr and not out.exists()  # the flags are train.py's
    r = submit("--cluster", "local", "--data", data, "--out", out, "--arch", "tiny_cnn", "--folds-k", 2,
               "--", "--pseudo-weight", 1, check=False)  # no effect without --pseudo, at any value
    assert r.returncode == 2 and "--pseudo-weight 1.0: only used with --pseudo CSV" in r.stderr
    assert not out.exists()
    for bad, said in ((["--opt", "lionn"], "lionn"), (["--mix", "mixup:abc"], "mixup")):  # train.py's own checks
        r = submit("--cluster", "local", "--data", data, "--out", out, "--arch", "tiny_cnn", "--folds-k", 2,
                   "--", *bad, check=False)
        assert r.returncode == 2 and "nothing was submitted" in r.stderr and said in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr and not out.exists()


def test_a_bad_flag_of_every_cell_is_said_once(data, tmp_path):
    """A typo in the flags every cell shares: one line naming the cells, the value, the guesses and
    the optimizers once (not once per cell)."""
    out = tmp_path / "runs"
    r = submit("--cluster", "local", "--data", data, "--out", out, "--arch", "tiny_cnn", "tv:tiny_cnn",
               "--folds-k", 2, "--", "--opt", "lionn", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "error: the grid cannot run; nothing was submitted:" and len(lines) == 2, r.stderr[-3000:]
    assert lines[1].startswith("  every cell (4): --opt") and "'lionn'" in lines[1] and "did you mean" in lines[1]
    assert r.stderr.count("schedulefree_adamw") == 1


def test_grid_problems_name_the_cells_each_stops():
    cells = [f"tiny_cnn fold {f} seed 0" for f in range(5)]
    lines = grid_problems({"bad --mix": cells, "bad data": [], "bad --ema": cells[:2],
                                "bad --head": cells[:4]}, n_cells=5)
    assert lines == ["every cell (5): bad --mix", "bad data",
                     "tiny_cnn fold 0 seed 0, tiny_cnn fold 1 seed 0: bad --ema",
                     "tiny_cnn fold 0 seed 0, tiny_cnn fold 1 seed 0 and 2 other cells: bad --head"]
    assert grid_problems({"bad": cells[:1]}, n_cells=1) == ["tiny_cnn fold 0 seed 0: bad"]


def test_without_sbatch_slurm_says_so(data, tmp_path):
    r = submit("--cluster", "slurm", "--data", data, "--out", tmp_path / "runs", "--arch", "tiny_cnn",
               env={"PATH": os.path.dirname(sys.executable)}, check=False)
    assert r.returncode == 2 and "sbatch" in r.stderr and "--cluster local" in r.stderr
    assert not (tmp_path / "runs").exists()


STAND_IN_SBATCH = """#!/bin/sh
# records each batch script and answers like sbatch
n=$(cat "$SBATCH_DIR/count" 2>/dev/null || echo 100)
n=$((n + 1))
echo $n > "$SBATCH_DIR/count"
cp "$1" "$SBATCH_DIR/job_$n.sh"
echo "Submitted batch job $n"
"""


def test_slurm_job_array_and_dependencies(data, tmp_path):
    """The batch scripts submit.py hands to sbatch: one training array, a predict array whose
    task i waits for training task i, and a stack job after every prediction."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sbatch").write_text(STAND_IN_SBATCH)
    (bindir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it; never called here
    for tool in ("sbatch", "srun"):
        (bindir / tool).chmod(0o755)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "SBATCH_DIR": str(tmp_path)}
    data = write_dataset(tmp_path / "data3", n=32, size=24)  # no folds file yet: K=3 is free to choose
    r = submit("--cluster", "slurm", "--data", data, "--out", tmp_path / "runs", "--arch", "tiny_cnn",
               "--folds", 0, 1, 2, "--folds-k", 3, "--seeds", 0, 1, "--partition", "gpu", "--gpus-per-task", 1,
               "--timeout-min", 90, "--array-parallelism", 4, "--slurm-extra", "account=proj", "--", *TRAIN, env=env)
    scripts = [(tmp_path / f"job_{n}.sh").read_text() for n in (101, 102, 103)]
    train, predict, stack = scripts
    for s in scripts:
        assert "#SBATCH --partition=gpu" in s and "#SBATCH --account=proj" in s and "#SBATCH --time=90" in s
    assert "#SBATCH --array=0-5%4" in train and "--dependency" not in train
    assert "#SBATCH --array=0-5%4" in predict and "#SBATCH --dependency=aftercorr:101" in predict
    assert "--array" not in stack and "#SBATCH --dependency=afterok:102" in stack
    assert "#SBATCH --gpus-per-task=1" in train
    assert "stack job 103" in r.stdout
    assert not (tmp_path / "runs" / "tiny_cnn").exists()  # nothing ran here


def _folds_file(data, k):
    names = pd.read_csv(data / "train.csv")["image_name"]
    pd.DataFrame({"image_name": names, "fold": [i % k for i in range(len(names))]}).to_csv(data / "folds.csv",
                                                                                          index=False)


def test_grid_without_every_fold_trains_and_predicts_without_a_stack_job(tmp_path):
    data = write_dataset(tmp_path / "data", n=32, size=24)
    _folds_file(data, 2)  # K=2 from the file: no --folds-k needed
    out = tmp_path / "runs"
    r = submit("--cluster", "debug", "--data", data, "--out", out, "--arch", "tiny_cnn", "--folds", 0,
               "--tta", "none", "--", *TRAIN)
    said = r.stdout.split("1 run(s) new")[1]  # between the count and the end, in order
    assert "no stack job" in said and "tiny_cnn seed 0 folds [0]" in said
    assert "every fold 0..1" in said and "train every fold: --folds 0 1" in said
    name = [p.name for p in out.iterdir() if p.name.startswith("tiny_cnn")][0]
    steps = [f"training: submitted 1 job(s): {name}", f"training of {name}: finished",
             f"prediction: submitted 1 job(s): {name}", f"prediction of {name}: finished", "done: 1 run(s) trained"]
    assert [said.index(s) for s in steps] == sorted(said.index(s) for s in steps)
    assert "no stack job (see above why)" in said.split("done:")[1]
    (run,) = [p for p in out.iterdir() if p.name.startswith("tiny_cnn")]
    assert json.loads((run / "config.json").read_text())["folds_k"] == 2
    assert (run / "result.json").is_file() and (run / "preds" / "test.none.csv").is_file()
    assert not (out / "stack").exists()


def test_grid_takes_k_from_the_folds_file_and_refuses_a_typed_other_k(tmp_path):
    data = write_dataset(tmp_path / "data", n=32, size=24)
    _folds_file(data, 3)
    out = tmp_path / "runs"
    r = submit("--cluster", "local", "--data", data, "--out", out, "--arch", "tiny_cnn", "--folds", 3,
               "--", *TRAIN, check=False)
    assert r.returncode == 2 and "--fold 3: must be in 0..2" in r.stderr  # K=3 of the file, not 5
    r = submit("--cluster", "local", "--data", data, "--out", out, "--arch", "tiny_cnn", "--folds-k", 5,
               "--", *TRAIN, check=False)
    assert r.returncode == 2 and "has K=3 folds; leave --folds-k out" in r.stderr and not out.exists()


def test_help_examples_make_a_stack_job(tmp_path):
    """Every example in submit.py --help trains every fold of its models, so it ends in a submission."""
    import importlib.util
    import shlex
    spec = importlib.util.spec_from_file_location("submit_tool", SUBMIT)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    data = write_dataset(tmp_path / "data", n=32, size=24)
    examples = [line.split("submit.py", 1)[1] for line in tool.__doc__.splitlines() if "tools/submit.py" in line]
    assert examples
    for example in examples:
        argv = shlex.split(example)
        if "--budget" in argv:  # plans its own grid (tests/scripts/test_submit_budget.py)
            continue
        argv[argv.index("--data") + 1] = str(data)
        if "--grid" in argv:  # the grid file of the docstring, written out
            grid = tmp_path / "grid.yaml"
            grid.write_text(tool.__doc__.split("A grid file:")[1].split("On Slurm")[0])
            argv[argv.index("--grid") + 1] = str(grid)
        args = tool.parse_args(argv)
        cells = tool.build_cells(args)
        assert tool.any_model_complete(cells, tool.grid_folds_k(cells, str(data))), example
