"""Every tool runs with tools/ first on sys.path (Python puts the script's folder there), yet
tools/statistics.py must never stand in for the standard library's `statistics`, which
torch and triton import."""
import subprocess
import sys

import pytest

from conftest import ROOT

TOOLS = sorted((ROOT / "tools").glob("*.py"))
PROBE = ("import runpy, sys; sys.path.insert(0, {tools!r}); runpy.run_path({tool!r}); "
         "import statistics; print(statistics.__file__)")


@pytest.mark.parametrize("tool", TOOLS, ids=lambda p: p.name)
def test_a_tool_leaves_the_standard_library_statistics_alone(tool):
    code = PROBE.format(tools=str(tool.parent), tool=str(tool))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tools" not in r.stdout.strip().split("/")[-2:-1], r.stdout
