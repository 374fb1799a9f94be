"""scripts/notes_experiments.sh refuses bad rows, tables and settings before creating anything."""
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "notes_experiments.sh"


def run(tmp_path, *args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("TRAIN_FOLDS", "FOLDS", "SEED")}
    full.update(DATA=str(tmp_path / "data"), RUNS=str(tmp_path / "runs"), **env)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=60)


def test_help_prints_usage_and_creates_nothing(tmp_path):
    r = run(tmp_path, "--help")
    assert r.returncode == 0
    assert "--table SECTION" in r.stdout and "TRAIN_FOLDS" in r.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, env, words", [
    (["no-such-row"], {}, "unknown row 'no-such-row'"),
    (["base", "no-such-row"], {}, "unknown row 'no-such-row'"),
    (["--table", "zz"], {}, "unknown table 'zz'"),
    (["--table", "a"], {"TRAIN_FOLDS": "1"}, "at least 2 folds"),
    (["--table", "a"], {}, "no runs folder"),
    (["base"], {}, "no dataset at"),
])
def test_bad_requests_exit_2_before_anything_is_made(tmp_path, args, env, words):
    r = run(tmp_path, *args, **env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_table_of_an_empty_runs_folder_fails(tmp_path):
    (tmp_path / "runs").mkdir()
    r = run(tmp_path, "--table", "e")
    assert r.returncode == 1
    assert "no runs match" in r.stderr
