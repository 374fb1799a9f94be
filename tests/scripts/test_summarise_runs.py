"""scripts/summarise_runs.py: cross-fitted F2, its spread over folds and time, in --runs order."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import fbeta_score

from conftest import ROOT, write_dataset
from helpers import train
from utils.metrics.thresholds import binarize, fit_thresholds


def test_table_rows_spread_and_minutes(tmp_path):
    data = write_dataset(tmp_path / "data", n=36, size=24)
    runs = tmp_path / "runs"
    for tag, lr in (("zeta", "1e-2"), ("alpha", "1e-3")):  # names sort against the --runs order
        for fold in (0, 1):
            train(data, runs, "--stages", f"epochs=1,size=24,bs=8,lr={lr}", "--folds-k", "2",
                  "--fold", str(fold), name=f"{tag}-f{fold}")
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "scripts" / "summarise_runs.py"),
                        "--rare", "0", "--runs", str(runs / "zeta-f*"), str(runs / "alpha-f*")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stdout.splitlines() if l.startswith("| ") and not l.startswith("| model")]
    assert [l.split(" | ")[0][2:].split(" ")[0] for l in lines] == ["zeta", "alpha"]
    truth = pd.read_csv(data / "train.csv", keep_default_na=False).set_index("image_name")
    folds = pd.read_csv(data / "folds.csv").set_index("image_name")["fold"]
    first = None
    for line, tag in zip(lines, ("zeta", "alpha")):
        cells = [c.strip() for c in line.strip("| ").split(" | ")]
        preds = pd.concat([pd.read_csv(runs / f"{tag}-f{k}" / "preds" / "val.none.csv") for k in (0, 1)])
        preds = preds.set_index("image_name").loc[truth.index]
        labels = list(preds.columns)
        y = np.array([[l in t.split() for l in labels] for t in truth["tags"]], dtype=np.uint8)
        p, f = preds.to_numpy(), folds.loc[truth.index].to_numpy()
        per_fold = []
        for k in (0, 1):  # thresholds from the other fold, scored on this one (sklearn's F2)
            held = f == k
            dec = binarize(p[held], fit_thresholds(y[~held], p[~held], "greedy"))
            per_fold.append(fbeta_score(y[held], dec, beta=2, average="samples", zero_division=0))
        assert float(cells[-5]) == round(float(np.std(per_fold, ddof=1)), 4)
        assert cells[-4] == f"{min(per_fold):.4f}–{max(per_fold):.4f}"
        first = per_fold if first is None else first
        assert cells[-3] == " / ".join(f"{a - b:+.4f}" for a, b in zip(per_fold, first))
        secs = sum(json.loads((runs / f"{tag}-f{k}" / "result.json").read_text())["train_seconds"] for k in (0, 1))
        assert float(cells[-2]) == round(secs / 60, 1) and float(cells[-1]) >= float(cells[-2]) - 0.05


def test_a_single_fold_is_refused_with_the_folds_found(tmp_path):
    data = write_dataset(tmp_path / "data", n=24, size=16)
    runs = tmp_path / "runs"
    train(data, runs, "--stages", "epochs=1,size=16,bs=8", "--folds-k", "2", "--fold", "0", name="m-f0")
    r = subprocess.run([sys.executable, "-W", "ignore", str(ROOT / "scripts" / "summarise_runs.py"),
                        "--folds", "0", "--runs", str(runs / "m-f*")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "fold(s) [0] only (--folds 0)" in r.stderr and "at least 2 folds" in r.stderr
    assert "Traceback" not in r.stderr
