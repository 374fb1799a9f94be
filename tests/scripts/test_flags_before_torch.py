"""A mistyped flag is refused (exit 2) before torch is imported: every script builds and checks
its parser with torch-free modules and imports the heavy ones in main."""
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPTS = [ROOT / "train.py", ROOT / "predict.py", ROOT / "stack.py", *sorted((ROOT / "tools").glob("*.py"))]


def imported_modules(importtime_stderr):
    """The module names of `python -X importtime` lines ('import time: self | cumulative | name')."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_mistyped_flag_exits_2_without_importing_torch(script):
    r = subprocess.run([sys.executable, "-X", "importtime", str(script), "--bogus-flag"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "unrecognized arguments: --bogus-flag" in r.stderr or "arguments are required" in r.stderr
    modules = imported_modules(r.stderr)
    assert "argparse" in modules  # the importtime lines were read
    assert "torch" not in modules and not any(m.startswith("torch.") for m in modules)


def test_pseudo_label_modes_are_those_of_the_library():
    import importlib.util

    from utils.train.pseudo import MODES

    spec = importlib.util.spec_from_file_location("pseudo_label_tool", ROOT / "tools" / "pseudo_label.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.MODES == MODES
