"""train.py's epoch lines say where their F2's thresholds come from, print the EMA's score
with --ema, and the closing line's best F2 names its weights and epoch and is one printed."""
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, write_dataset


@pytest.mark.parametrize("ema", [None, "0.5"])
def test_the_closing_best_f2_is_one_an_epoch_line_printed(tmp_path, ema):
    data = write_dataset(tmp_path / "data", n=36, size=24)
    cmd = [sys.executable, "-W", "ignore", str(ROOT / "train.py"), "--data", str(data), "--out", str(tmp_path / "runs"),
           "--arch", "tiny_cnn", "--no-pretrained", "--name", "r", "--plots", "none", "--workers", "0",
           "--stages", "epochs=3,size=24,lr=0.05", *(["--ema", ema, "--no-ema-warmup"] if ema else [])]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    lines = [line for line in text.splitlines() if re.search(r"stage \d+ epoch \d+ ", line)]
    assert len(lines) == 3
    assert all("val F2" in line and "(thresholds fitted on this fold;" in line for line in lines)
    printed = {}  # (weights, epoch) -> F2 as printed
    for line in lines:
        epoch = int(re.search(r"epoch (\d+) ", line).group(1))
        printed["raw", epoch] = re.search(r"  val F2 (\d\.\d{4})", line).group(1)
        if ema:
            printed["ema", epoch] = re.search(r"EMA val F2 (\d\.\d{4})", line).group(1)
        else:
            assert "EMA" not in line
    best = re.search(r"best validation F2: (\d\.\d{4}) \((raw|EMA) weights, epoch (\d+); thresholds fitted on this "
                     r"fold\)", text)
    assert best, text[-2000:]
    f2, weights, epoch = best.group(1), best.group(2).lower(), int(best.group(3))
    assert printed[weights, epoch] == f2
    result = json.loads((tmp_path / "runs" / "r" / "result.json").read_text())
    assert result["best_weights"] == weights and result["best_epoch"] == epoch
    hist = pd.read_csv(tmp_path / "runs" / "r" / "history.csv")
    column = "val_f2_ema" if weights == "ema" else "val_f2"
    assert f"{hist[column].iloc[epoch - 1]:.4f}" == f2 == f"{result['best_val_f2']:.4f}"
    assert float(f2) == pytest.approx(max(hist[c].max() for c in hist.columns if c in ("val_f2", "val_f2_ema")), abs=1e-4)
