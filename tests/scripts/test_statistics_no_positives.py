"""tools/statistics.py on a fold where no image has one label: that label's F2 is n/a, footnoted."""
import numpy as np
import pandas as pd
import pytest

from helpers import RUN_LABELS, brute_label_f2, load_tool, random_probs, run_tool, write_run

statistics = load_tool("statistics")


@pytest.fixture
def runs_without_c(tmp_path):
    """Two folds of 30 images; label c only in fold 0. Model m0 has both folds (r0, r1), model m1
    only fold 1 (q1). Returns (runs folder, y, folds, {run: probs})."""
    rng = np.random.default_rng(0)
    n = 60
    folds = np.arange(n) % 2
    y = (rng.random((n, 3)) < [0.5, 0.4, 0.3]).astype(np.uint8)
    y[folds == 1, 2] = 0
    assert y[folds == 0, 2].sum() >= 5
    names = [f"img{i:03d}" for i in range(n)]
    data = tmp_path / "data"
    data.mkdir()
    tags = [" ".join(lab for lab, v in zip(RUN_LABELS, row) if v) for row in y]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(data / "folds.csv", index=False)
    runs, probs = tmp_path / "runs", {}
    for name, fold, arch in (("r0", 0, "m0"), ("r1", 1, "m0"), ("q1", 1, "m1")):
        m = folds == fold
        probs[name] = random_probs(y[m], seed=len(probs))
        write_run(runs, name, data, fold, [s for s, v in zip(names, m) if v], probs[name], arch=arch)
    return runs, y, folds, probs


def label_cells(out, row, n_cols=3):
    """The last n_cols cells of the printed per-label row that starts with `row`."""
    part = out.split("per-label F2")[1] if "per-label F2" in out else out
    line = next(s for s in part.splitlines() if s.split() and s.split()[0] == row)
    return line.split()[-n_cols:]


def test_a_label_no_validation_image_has_is_na_not_one(runs_without_c, tmp_path, capsys):
    runs, y, folds, probs = runs_without_c
    run_df, model_df = run_tool(statistics, "--runs", runs, "--csv", tmp_path / "b.csv", "--md", tmp_path / "b.md")
    rows = run_df.set_index("run")
    assert np.isnan(rows.loc["r1", "f2:c"]) and np.isnan(rows.loc["q1", "f2:c"])
    m0 = folds == 0
    assert rows.loc["r0", "f2:c"] == pytest.approx(brute_label_f2(y[m0, 2], probs["r0"][:, 2]), abs=1e-12)
    assert rows.loc["r1", "f2:a"] == pytest.approx(brute_label_f2(y[~m0, 0], probs["r1"][:, 0]), abs=1e-12)
    models = model_df.set_index("arch")
    assert np.isnan(models.loc["m1", "f2:c"])  # only fold 1: no image with c
    assert 0 < models.loc["m0", "f2:c"] <= 1  # both folds joined: c has positives

    out = capsys.readouterr().out
    assert label_cells(out.split("runs (3)")[1], "r1")[2] == statistics.NA
    assert label_cells(out.split("runs (3)")[1], "r1")[0] == f"{rows.loc['r1', 'f2:a']:.4f}"
    assert label_cells(out.split("runs (3)")[1], "r0")[2] == f"{rows.loc['r0', 'f2:c']:.4f}"
    assert label_cells(out.split("runs (3)")[0], models.loc["m0", "name"])[2] == f"{models.loc['m0', 'f2:c']:.4f}"
    assert label_cells(out.split("runs (3)")[0], models.loc["m1", "name"])[2] == statistics.NA
    assert "1.0000" not in out.split("per-label F2")[-1]
    assert out.count(statistics.NO_POSITIVES_NOTE) == 1 and out.rstrip().endswith(statistics.NO_POSITIVES_NOTE)
    assert max(map(len, out.splitlines())) <= 120

    csv = pd.read_csv(tmp_path / "b.csv", keep_default_na=False)
    cells = csv.set_index(csv["level"] + "/" + csv["model"].where(csv["level"] == "model", csv["run"]))["f2:c"]
    assert cells["run/r1"] == "n/a" and cells["run/q1"] == "n/a"
    assert float(cells["run/r0"]) == pytest.approx(rows.loc["r0", "f2:c"], abs=1e-12)
    assert np.isnan(pd.read_csv(tmp_path / "b.csv")["f2:c"]).sum() == 3  # pandas reads n/a as missing

    md = (tmp_path / "b.md").read_text()
    assert md.count(statistics.NA) == 3 and md.count(statistics.NO_POSITIVES_NOTE) == 1
    runs_md = md.split("### runs")[1].splitlines()
    header = next(s for s in runs_md if s.startswith("| run |")).split(" | ")
    r1 = next(s for s in runs_md if s.startswith("| r1 |")).split(" | ")
    assert r1[header.index("f2:c")] == statistics.NA and r1[header.index("f2:b")] != statistics.NA


def test_na_in_the_wide_table_sorts_last_and_brief_has_no_footnote(runs_without_c, capsys):
    runs = runs_without_c[0]
    run_df, _ = run_tool(statistics, "--runs", runs, "--wide", "--level", "run", "--sort", "label:c")
    out = capsys.readouterr().out
    lines = [s for s in out.splitlines() if s.split() and s.split()[0] in ("r0", "r1", "q1")]
    assert lines[0].split()[0] == "r0" and len(lines) == 3  # the two n/a rows after the scored one
    header = next(s for s in out.splitlines() if "f2:c" in s).split()
    for s in lines:
        cell = s.split()[header.index("f2:c")]
        assert (cell == statistics.NA) == (s.split()[0] != "r0")
    assert out.count(statistics.NO_POSITIVES_NOTE) == 1
    run_tool(statistics, "--runs", runs, "--brief")
    out = capsys.readouterr().out
    assert statistics.NA not in out and statistics.NO_POSITIVES_NOTE not in out


def test_every_label_with_positives_prints_no_na(runs_without_c, capsys):
    runs = runs_without_c[0]
    run_tool(statistics, "--runs", runs / "r0")
    out = capsys.readouterr().out
    assert statistics.NA not in out and statistics.NO_POSITIVES_NOTE not in out
