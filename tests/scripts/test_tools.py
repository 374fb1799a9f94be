"""tools/statistics, prune, correlation, plot_probs (and utils/analysis/leaderboard.py) on synthetic runs."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import fbeta_score

from conftest import ROOT
from helpers import RUN_LABELS, brute_label_f2, load_tool, random_probs, run_tool, write_run
from utils.common.errors import DataError
from utils.runs.pred_files import write_preds
from utils.data.dataset import align_names
from utils.analysis.diversity import pairwise_agreement, pairwise_pearson, similar_pairs
from utils.analysis.pruning import coverage_refusals, rank_runs, stack_usage
from utils.metrics.threshold_search import greedy_thresholds
from utils.stack.library import load_library

statistics = load_tool("statistics")
prune = load_tool("prune")
correlation = load_tool("correlation")
plot_probs = load_tool("plot_probs")


# ----------------------------------------------------------------------------- synthetic runs

def make_data(root, n=60, k=2, seed=0):
    """DATA/train.csv and folds.csv: n images, labels a b c, k folds (image i in fold i % k).
    Returns (names, y (n, 3) uint8, folds (n,))."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < [0.5, 0.4, 0.3]).astype(np.uint8)
    folds = np.arange(n) % k
    for f in range(k):  # every label needs positives and negatives in every fold
        assert (y[folds == f].sum(0) >= 5).all() and ((1 - y[folds == f]).sum(0) >= 5).all()
    names = [f"img{i:03d}" for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    tags = [" ".join(lab for lab, v in zip(RUN_LABELS, row) if v) for row in y]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(root / "folds.csv", index=False)
    return names, y, folds


def spoiled(y, k):
    """Positives 0.9, negatives 0.1, then k[j] negatives of label j raised to 0.95: the
    label's best F2 is 5P / (5P + k[j]), strictly falling with k[j]."""
    p = np.where(y == 1, 0.9, 0.1)
    for j, kj in enumerate(k):
        neg = np.flatnonzero(y[:, j] == 0)
        p[neg[:kj], j] = 0.95
    return p


# Quality (spoiled negatives per label a, b, c) of each run; C, D and I rank below the
# median on every label of their fold, nobody else does.
PRUNE_PLAN = {0: {"A": (0, 0, 0), "B": (1, 1, 1), "C": (2, 3, 2), "D": (3, 2, 3)},
              1: {"F": (0, 2, 1), "G": (1, 1, 0), "H": (2, 0, 2), "I": (3, 3, 3)}}
PRUNABLE = {"C", "D", "I"}


@pytest.fixture
def prune_runs(tmp_path):
    data = tmp_path / "data" / "demo"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    for fold, plan in PRUNE_PLAN.items():
        m = folds == fold
        for i, (name, k) in enumerate(plan.items()):
            write_run(runs, name, data, fold, [n for n, v in zip(names, m) if v], spoiled(y[m], k), arch=f"m{i}")
    return runs


def tree(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- statistics

def test_statistics_scores_match_sklearn(tmp_path, capsys):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    probs = {}
    for f in (0, 1):
        m = folds == f
        probs[f] = random_probs(y[m], seed=f)
        write_run(runs, f"r{f}", data, f, [n for n, v in zip(names, m) if v], probs[f])
    run_df, model_df = run_tool(statistics, "--runs", runs, "--csv", tmp_path / "b.csv", "--md", tmp_path / "b.md")
    for f in (0, 1):
        m = folds == f
        row = run_df.set_index("run").loc[f"r{f}"]
        ref = fbeta_score(y[m], probs[f] >= 0.2, beta=2, average="samples", zero_division=1.0)
        assert row["f2@0.2"] == pytest.approx(ref, abs=1e-12)
        thr, _ = greedy_thresholds(y[m], probs[f])
        assert row["f2_best"] == pytest.approx(fbeta_score(y[m], probs[f] >= thr, beta=2, average="samples",
                                                           zero_division=1.0), abs=1e-12)
        assert row["f2_best"] >= row["f2@0.2"]
        for j, lab in enumerate(RUN_LABELS):
            assert row[f"f2:{lab}"] == pytest.approx(brute_label_f2(y[m][:, j], probs[f][:, j]), abs=1e-12)
        assert row["epochs"] == 2 and row["minutes"] == 1.0 and row["size"] == "64>96"
        assert row["tta"] == "none" and row["paths"] == "relative" and not row["converted"]
    # the model joins its two folds: scores of the whole out-of-fold set
    assert len(model_df) == 1
    order = np.concatenate([np.flatnonzero(folds == 0), np.flatnonzero(folds == 1)])
    P = np.concatenate([probs[0], probs[1]])
    ref = fbeta_score(y[order], P >= 0.2, beta=2, average="samples", zero_division=1.0)
    mrow = model_df.iloc[0]
    assert mrow["f2@0.2"] == pytest.approx(ref, abs=1e-12)
    assert mrow["n_images"] == len(names) and mrow["folds"] == "0,1" and mrow["runs"] == 2
    assert mrow["f2:b"] == pytest.approx(brute_label_f2(y[order][:, 1], P[:, 1]), abs=1e-12)
    csv = pd.read_csv(tmp_path / "b.csv")
    assert set(csv["level"]) == {"run", "model"} and len(csv) == 3
    md = (tmp_path / "b.md").read_text()
    assert "| run |" in md and "### models" in md
    out = capsys.readouterr().out
    assert "r0" in out and "f2_best" in out


def test_statistics_seeds_averaged_and_best_tta(tmp_path):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    m = folds == 0
    sub = [n for n, v in zip(names, m) if v]
    p1, p2 = random_probs(y[m], 1, 0.3), random_probs(y[m], 2, 0.3)
    write_run(runs, "s1", data, 0, sub, p1, seed=1)
    write_run(runs, "s2", data, 0, sub, p2, seed=2)
    good = random_probs(y[m], 3, 3.0)  # a much better second TTA of s1
    write_preds(runs / "s1" / "preds" / "val.hflip.csv", sub, RUN_LABELS, good)
    run_df, model_df = run_tool(statistics, "--runs", runs)
    assert run_df.set_index("run").loc["s1", "tta_used"] == "hflip"
    assert run_df.set_index("run").loc["s1", "tta"] == "hflip,none"
    mean = (good + p2) / 2
    ref = fbeta_score(y[m], mean >= 0.2, beta=2, average="samples", zero_division=1.0)
    assert model_df.iloc[0]["f2@0.2"] == pytest.approx(ref, abs=1e-12)
    assert model_df.iloc[0]["seeds"] == "1,2"
    run_df, _ = run_tool(statistics, "--runs", runs, "--tta", "none")
    assert set(run_df["tta_used"]) == {"none"}


def many_label_runs(root, n_labels=40):
    """Two folds of one model (arch m0) over many long label names, with hflip predictions
    made by predict.py besides train.py's val.none.csv. Returns the runs folder."""
    rng = np.random.default_rng(0)
    labels = [f"label_with_a_long_name_{j:03d}" for j in range(n_labels)]
    names = [f"img{i:03d}" for i in range(40)]
    y = (rng.random((40, n_labels)) < 0.4).astype(np.uint8)
    data = root / "data"
    data.mkdir(parents=True)
    tags = [" ".join(lab for lab, v in zip(labels, row) if v) for row in y]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(data / "train.csv", index=False)
    pd.DataFrame({"image_name": names, "fold": np.arange(40) % 2}).to_csv(data / "folds.csv", index=False)
    runs = root / "runs"
    for f in (0, 1):
        rows = np.arange(40) % 2 == f
        sub = [n for n, v in zip(names, rows) if v]
        d = write_run(runs, f"m0-x-f{f}", data, f, sub, random_probs(y[rows], f, 2.0), labels=labels)
        # hflip scores below none here: the run still counts as predicted with hflip
        write_preds(d / "preds" / "val.hflip.csv", sub, labels, random_probs(y[rows], 10 + f, 0.2))
    return runs


def test_statistics_tables_fit_the_terminal(tmp_path, capsys):
    runs = many_label_runs(tmp_path)
    run_df, model_df = run_tool(statistics, "--runs", runs)
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 120
    for j in (0, 39):  # every label's F2 is printed, in the second table
        assert f"f2:label_with_a_long_name_{j:03d}" in out.split("per-label F2")[1]
    assert "train " not in out and "paths" not in out  # the image folder and path columns go to --csv
    assert list(run_df["n_images"]) == [20, 20]
    assert set(run_df["tta_used"]) == {"hflip"} and model_df.iloc[0]["tta_used"] == "hflip"
    # the runs table names the model as the models table does
    name = model_df.iloc[0]["name"]
    runs_part = out.split("runs (2)")[1]
    assert runs_part.count(name) == 2 and model_df.iloc[0]["model"] not in out
    run_tool(statistics, "--runs", runs, "--wide", "--level", "model")
    wide = capsys.readouterr().out.strip().splitlines()
    assert len(wide) == 3 and len(wide[1]) > 120 and "label_with_a_long_name_039" in wide[1]


def test_statistics_names_each_model_once_as_stack_does(tmp_path, capsys):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    for f in (0, 1):
        write_run(runs, f"m0-x-f{f}", data, f, [n for n, v in zip(names, folds == f) if v],
                  random_probs(y[folds == f], seed=f))
    lib = load_library([runs / "*"], "none", need_test=False)
    run_df, model_df = run_tool(statistics, "--runs", runs, "--tta", "none", "--wide", "--csv", tmp_path / "b.csv")
    name, model_id = lib.members[0].name, lib.members[0].model
    assert model_df.iloc[0]["name"] == name and model_df.iloc[0]["model"] == model_id
    out = capsys.readouterr().out
    models_part, runs_part = out.split("runs (2)")
    header = models_part.split("models (1)")[1].strip().splitlines()[0].split()
    assert header[0] == "model" and "name" not in header and models_part.count(name) == 1
    assert runs_part.count(name) == 2 and model_id not in out
    csv = pd.read_csv(tmp_path / "b.csv")
    assert set(csv["model"]) == {name} and "name" not in csv
    run_tool(statistics, "--runs", runs, "--tta", "none")  # the default tables name it alike
    out = capsys.readouterr().out
    models_part, runs_part = out.split("runs (2)")
    assert models_part.split("models (1)")[1].strip().split()[0] == "model"
    assert models_part.count(name) == 2 and runs_part.count(name) == 2  # its per-label table repeats it
    assert model_id not in out


def test_stack_statistics_and_correlation_name_a_model_of_default_named_runs_alike(tmp_path, capsys):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    plan = {"tf_efficientnet_lite0-train-c391dde2-f{f}-20240101-12000{f}-424{f}": ("tf_efficientnet_lite0", (0, 1)),
            "tf_efficientnet_lite0-probe128-hflip-f{f}": ("tf_efficientnet_lite0", (0, 1)),
            "m1-train-0badc0de-f{f}-20240102-120000-7": ("m1", (0,))}  # fold 1 missing: left out by stack.py
    for i, (pattern, (arch, fs)) in enumerate(plan.items()):
        for f in fs:
            d = write_run(runs, pattern.format(f=f), data, f, [n for n, v in zip(names, folds == f) if v],
                          random_probs(y[folds == f], seed=10 * i + f), arch=arch)
            if "probe" in pattern:  # a linear probe: another configuration of the same architecture
                cfg = json.loads((d / "config.json").read_text())
                (d / "config.json").write_text(json.dumps({**cfg, "loss_spec": "logreg"}))
    from utils.runs.directory import find_runs
    found, _ = find_runs(runs)
    ids = {r.name.split("-f")[0]: r.model for r in found}
    want = {f"{stem}-{model.rsplit('-', 1)[1][:6]}": model for stem, model in ids.items()}
    assert len(want) == 3 and "tf_efficientnet_lite0-train-c391dde2-" + ids[
        "tf_efficientnet_lite0-train-c391dde2"].rsplit("-", 1)[1][:6] in want
    _, model_df = run_tool(statistics, "--runs", runs, "--tta", "none")
    assert dict(zip(model_df["name"], model_df["model"])) == want
    corr_names, _, _ = run_tool(correlation, "--runs", runs, "--tta", "none")
    assert sorted(corr_names) == sorted(want)
    out = capsys.readouterr().out
    assert not any(model in out for model in want.values())  # never the bare configuration id
    r = subprocess.run([sys.executable, str(ROOT / "stack.py"), "--runs", str(runs / "*"), "--tta", "none",
                        "--method", "mean", "--report-dir", str(tmp_path / "rep")], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "rep" / "stack_report.json").read_text())
    members = {m["name"]: m["model"] for m in report["members"]}
    left_out = [n for n in want if n.startswith("m1-")][0]
    assert members == {n: m for n, m in want.items() if n != left_out}
    md = (tmp_path / "rep" / "stack_report.md").read_text()
    assert f"- left out {left_out} seed 0" in md and f": {left_out} seed 0 (fold(s) [0])" in r.stderr
    assert not any(model in md + r.stdout + r.stderr for model in want.values())


def test_statistics_keeps_a_stand_alone_run_of_a_covered_fold_apart(tmp_path, capsys):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    probs = {f: random_probs(y[folds == f], seed=f) for f in (0, 1)}
    for f in (0, 1):  # scripts/cv.sh's runs of one configuration ...
        write_run(runs, f"m0-x-f{f}", data, f, [n for n, v in zip(names, folds == f) if v], probs[f])
    # ... and train.py's own run of fold 0 with the same configuration and seed
    alone = "m0-train-1a2b3c4d-f0-20240101-120000-4242"
    write_run(runs, alone, data, 0, [n for n, v in zip(names, folds == 0) if v], random_probs(y[folds == 0], 9, 3))
    run_df, model_df = run_tool(statistics, "--runs", runs)
    lib = load_library([runs / "*"], "none", need_test=False)
    assert lib.members[0].runs == ["m0-x-f0", "m0-x-f1"]  # what stack.py joins
    assert len(model_df) == 1
    row = model_df.iloc[0]
    assert row["runs"] == 2 and row["folds"] == "0,1" and row["n_images"] == len(names)
    assert row["name"] == lib.members[0].name
    order = np.concatenate([np.flatnonzero(folds == 0), np.flatnonzero(folds == 1)])
    ref = fbeta_score(y[order], np.concatenate([probs[0], probs[1]]) >= 0.2, beta=2, average="samples",
                      zero_division=1.0)
    assert row["f2@0.2"] == pytest.approx(ref, abs=1e-12)
    status = run_df.set_index("run")["status"]
    assert status[alone] == "apart" and status["m0-x-f0"] == "ok"
    assert run_df.set_index("run").loc[alone, "f2_best"] > 0  # still scored on its own fold
    err = capsys.readouterr().err
    assert f"{alone}: kept apart from model {lib.members[0].name}, whose fold 0 (seed 0) is m0-x-f0" in err
    # selected on its own, the run is its model's fold 0
    run_df, model_df = run_tool(statistics, "--runs", runs / alone, runs / "m0-x-f1")
    assert set(run_df["status"]) == {"ok"} and model_df.iloc[0]["runs"] == 2
    assert "kept apart" not in capsys.readouterr().err
    # the report's model figures join the same runs as its leaderboard row
    from utils.analysis.report import model_views
    from utils.runs.directory import find_runs
    from utils.analysis.scores import Truth
    found, _ = find_runs([runs / "*"])
    views = model_views(found, Truth(data), "none", dict(zip(model_df["model"], model_df["name"])))
    assert [[r.name for r in v.runs] for v in views] == [["m0-x-f0", "m0-x-f1"]]
    assert views[0].oof.y.shape[0] == len(names)


def test_statistics_sort_where_and_bad_input(tmp_path, capsys):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    runs = tmp_path / "runs"
    m = folds == 0
    sub = [n for n, v in zip(names, m) if v]
    write_run(runs, "good", data, 0, sub, spoiled(y[m], (0, 3, 0)), arch="resnet50")
    write_run(runs, "bad", data, 0, sub, spoiled(y[m], (3, 0, 3)), arch="resnet18")
    nopreds = write_run(runs, "nopreds", data, 0, sub, spoiled(y[m], (0, 0, 0)))
    for f in (nopreds / "preds").iterdir():
        f.unlink()
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_text("{not json")
    run_df, _ = run_tool(statistics, "--runs", runs, "--sort", "label:b")
    assert list(run_df["run"]) == ["bad", "good"]
    err = capsys.readouterr().err
    assert "skipped nopreds: no predictions" in err and "broken" in err and "unreadable" in err
    assert all(len(line) < 300 for line in err.splitlines())
    run_df, _ = run_tool(statistics, "--runs", runs, "--sort", "f2:a", "--ascending")
    assert list(run_df["run"]) == ["bad", "good"]
    run_df, model_df = run_tool(statistics, "--runs", runs, "--where", "arch=resnet5*")
    assert list(run_df["run"]) == ["good"] and len(model_df) == 1
    with pytest.raises(DataError, match="no such column"):
        run_tool(statistics, "--runs", runs, "--sort", "label:zzz")
    with pytest.raises(DataError, match="KEY=VALUE"):
        run_tool(statistics, "--runs", runs, "--where", "arch")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_tool(statistics, "--runs", empty) == (None, None)
    assert "no runs under" in capsys.readouterr().err
    with pytest.raises(DataError, match="not found"):
        run_tool(statistics, "--runs", tmp_path / "nowhere")


def test_statistics_correlation_and_report_refuse_runs_of_another_dataset(tmp_path):
    from utils.runs.fingerprint import dataset_fingerprint

    data, other = tmp_path / "data", tmp_path / "other"
    names, y, folds = make_data(data)
    make_data(other, seed=1)  # the same image names and folds, other tags
    runs = tmp_path / "runs"
    for name, fold, arch in (("r0", 0, "m0"), ("r1", 1, "m0"), ("q0", 0, "m1"), ("q1", 1, "m1")):
        m = folds == fold
        d = write_run(runs, name, data, fold, [n for n, v in zip(names, m) if v], spoiled(y[m], (0, 1, 2)), arch=arch)
        cfg = json.loads((d / "config.json").read_text())
        cfg["dataset"] = dataset_fingerprint(data, folds_file=data / "folds.csv")
        (d / "config.json").write_text(json.dumps(cfg))
    run_df, _ = run_tool(statistics, "--runs", runs, "--data", data)  # its own dataset: scored
    assert len(run_df) == 4
    theirs = cfg["dataset"]["train_csv"][:12]
    for tool, extra in ((statistics, ()), (correlation, ("--out", tmp_path / "c"))):
        with pytest.raises(DataError, match="another dataset") as e:
            run_tool(tool, "--runs", runs, "--data", other, *extra)
        assert all(f"runs/{n} was trained on" in str(e.value).replace("\\", "/") for n in ("r0", "r1", "q0", "q1"))
        assert theirs in str(e.value) and dataset_fingerprint(other)["train_csv"][:12] in str(e.value)
    with pytest.raises(DataError, match="another dataset"):
        run_tool(load_tool("report"), "--runs", runs, "--data", other, "--out", tmp_path / "r.html")


def test_statistics_with_no_run_scored_is_an_error(tmp_path):
    data = tmp_path / "data"
    names, y, folds = make_data(data)
    m = folds == 0
    run = write_run(tmp_path / "runs", "nopreds", data, 0, [n for n, v in zip(names, m) if v], spoiled(y[m], (0, 0, 0)))
    for f in (run / "preds").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="no run could be scored"):
        run_tool(statistics, "--runs", tmp_path / "runs")


# ----------------------------------------------------------------------------- prune

def test_rank_runs_by_hand():
    scores = [("A", 0, {"a": 0.9, "b": 0.5}), ("B", 0, {"a": 0.8, "b": 0.5}), ("C", 0, {"a": 0.1, "b": 0.1}),
              ("D", 1, {"a": 0.3})]
    t = rank_runs(scores).set_index("run")
    assert t.loc["A", "rank:a"] == 1 and t.loc["A", "rank:b"] == 1.5 and t.loc["C", "rank:b"] == 3
    assert t["prunable"].to_dict() == {"A": False, "B": False, "C": True, "D": False}
    assert t.loc["A", "n"] == 3 and t.loc["D", "n"] == 1


def test_prune_lists_exactly_the_bottom_half(prune_runs, capsys):
    before = tree(prune_runs)
    table, deleted = run_tool(prune, "--runs", prune_runs)
    assert set(table.loc[table["prunable"], "run"]) == PRUNABLE and deleted == []
    assert tree(prune_runs) == before  # dry run
    t = table.set_index("run")
    assert (t.loc["I", ["rank:a", "rank:b", "rank:c"]] == 4).all()
    assert t.loc["C", "MB"] == pytest.approx((3000 + sum(
        p.stat().st_size for p in (prune_runs / "C" / "preds").iterdir())) / 2 ** 20)
    out = capsys.readouterr().out
    assert "3 of 8 ranked run(s) prunable" in out and "dry run" in out


def test_prune_delete_removes_exactly_those(prune_runs, capsys):
    before = tree(prune_runs)
    table, deleted = run_tool(prune, "--runs", prune_runs, "--delete")
    assert set(deleted) == PRUNABLE
    after = tree(prune_runs)
    gone = set(before) - set(after)
    assert gone == {f for f in before if f.split("/")[0] in PRUNABLE and f.split("/")[1] in ("checkpoints", "preds")}
    for name in PRUNABLE:
        assert (prune_runs / name / "config.json").is_file() and (prune_runs / name / "history.csv").is_file()
    rec = pd.read_csv(prune_runs / "PRUNED.csv")
    assert set(rec["run"]) == PRUNABLE
    assert rec.set_index("run").loc["I", "rank:a"] == 4
    # the leaderboard still shows them, marked
    capsys.readouterr()
    run_df, _ = run_tool(statistics, "--runs", prune_runs)
    st = run_df.set_index("run")["status"]
    assert set(st[st == "pruned"].index) == PRUNABLE and len(st) == 8
    assert st.drop(list(PRUNABLE)).eq("ok").all()
    assert "skipped" not in capsys.readouterr().err
    # a second pass ranks the five runs left (the pruned ones are not "without predictions")
    table, deleted = run_tool(prune, "--runs", prune_runs)
    assert set(table["run"]) == {"A", "B", "F", "G", "H"}
    assert set(table.loc[table["prunable"], "run"]) == {"B"}  # fold 0 now has two runs
    assert "not ranked" not in capsys.readouterr().err


def test_prune_refuses_runs_used_by_a_stack_report(prune_runs):
    report = prune_runs.parent / "stack_report.json"
    report.write_text(json.dumps({"runs": [str(prune_runs / "D" / "preds" / "val.none.csv")], "method": "mean"}))
    before = tree(prune_runs)
    with pytest.raises(DataError, match="D: used by stack report"):
        run_tool(prune, "--runs", prune_runs, "--delete")
    assert tree(prune_runs) == before and not (prune_runs / "PRUNED.csv").exists()
    _, deleted = run_tool(prune, "--runs", prune_runs, "--delete", "--force")
    assert set(deleted) == PRUNABLE and not (prune_runs / "D" / "checkpoints").exists()


def test_prune_refuses_to_leave_a_label_without_a_usable_top_run(prune_runs):
    import shutil
    for name in ("A", "B"):  # fold 0's top half lost its weights and test predictions
        shutil.rmtree(prune_runs / name / "checkpoints")
        (prune_runs / name / "preds" / "test.none.csv").unlink()
    before = tree(prune_runs)
    with pytest.raises(DataError, match="fold 0, label 'a'.*C, D|fold 0, label 'a'.*D, C"):
        run_tool(prune, "--runs", prune_runs, "--delete")
    assert tree(prune_runs) == before
    _, deleted = run_tool(prune, "--runs", prune_runs, "--delete", "--force")
    assert set(deleted) == PRUNABLE


def test_coverage_and_stack_usage_helpers(tmp_path):
    t = rank_runs([("A", 0, {"a": 0.9}), ("B", 0, {"a": 0.1})])
    assert coverage_refusals(t, {"B"}, {"A", "B"}) == []
    assert len(coverage_refusals(t, {"B"}, {"B"})) == 1
    rep = tmp_path / "r.json"
    rep.write_text(json.dumps({"members": {"x": ["runs\\B"]}, "A": 1}))
    used, problems = stack_usage([rep], ["A", "B", "C"])
    assert set(used) == {"A", "B"} and problems == []
    (tmp_path / "bad.json").write_text("{")
    assert stack_usage([tmp_path / "bad.json"], ["A"])[1]


def test_prune_bad_input_exits_2(tmp_path, prune_runs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no runs"):
        run_tool(prune, "--runs", empty)
    with pytest.raises(DataError, match="not found"):
        run_tool(prune, "--runs", tmp_path / "nowhere")
    (prune_runs / "Z").mkdir()
    (prune_runs / "Z" / "config.json").write_text("[]")
    before = tree(prune_runs)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "prune.py"), "--runs", str(prune_runs), "--delete"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "unreadable run records" in r.stderr and "Z" in r.stderr
    assert tree(prune_runs) == before


# ----------------------------------------------------------------------------- correlation

def test_agreement_and_pearson_match_direct_loops():
    rng = np.random.default_rng(0)
    D = (rng.random((4, 50)) < 0.4).astype(float)
    P = rng.random((4, 50))
    D[2, :10] = np.nan
    P[2, :10] = np.nan
    D[3, 30:] = D[1, :30].mean()  # keep 0/1 after the mask below
    D[3] = np.round(D[3])
    A, R = pairwise_agreement(D), pairwise_pearson(P)
    for i in range(4):
        for j in range(4):
            ok = ~np.isnan(D[i]) & ~np.isnan(D[j])
            assert A[i, j] == pytest.approx(np.mean(D[i, ok] == D[j, ok]))
            ok = ~np.isnan(P[i]) & ~np.isnan(P[j])
            assert R[i, j] == pytest.approx(np.corrcoef(P[i, ok], P[j, ok])[0, 1])


def known_correlations(rhos, n=20000, seed=0):
    """Rows 1.. correlated with row 0 by rhos[i] (population values): (P (M, n), names)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    rows = [base] + [r * base + np.sqrt(1 - r * r) * rng.normal(size=n) for r in rhos]
    return np.array(rows), [f"m{i}" for i in range(len(rows))]


def test_similar_pairs_are_the_highest_and_lowest_correlations():
    P, names = known_correlations([0.95, 0.8, 0.5, 0.1, -0.3])
    R = pairwise_pearson(P)
    most, least = similar_pairs(R, names, 3)
    values = sorted(R[np.triu_indices(len(names), 1)])
    assert [v for *_, v, _ in most] == pytest.approx(values[::-1][:3])
    assert [v for *_, v, _ in least] == pytest.approx(values[:3])
    assert most[0][:2] == ("m0", "m1") and most[0][2] == pytest.approx(0.95, abs=0.02)
    assert least[0][:2] == ("m0", "m5") and least[0][2] == pytest.approx(-0.3, abs=0.02)


@pytest.mark.parametrize("n_models, top, sizes", [(3, 5, (2, 1)), (4, 5, (3, 3)), (5, 5, (5, 5)), (6, 2, (2, 2))])
def test_similar_pairs_never_share_a_pair(n_models, top, sizes):
    P, names = known_correlations(np.linspace(0.9, -0.5, n_models - 1))
    most, least = similar_pairs(pairwise_pearson(P), names, top)
    assert (len(most), len(least)) == sizes
    assert not {p[:2] for p in most} & {p[:2] for p in least}
    assert min((p[2] for p in most), default=1) >= max((p[2] for p in least), default=-1)


def test_the_one_pair_of_two_models_is_the_most_and_the_least_similar():
    P, names = known_correlations([0.6])
    R = pairwise_pearson(P)
    most, least = similar_pairs(R, names, 5)
    assert most == least == [("m0", "m1", pytest.approx(R[0, 1]), None)]
    three, _ = known_correlations([0.6, 0.2])  # a third model: two lists again, no pair in both
    most, least = similar_pairs(pairwise_pearson(three), ["m0", "m1", "m2"], 5)
    assert [p[:2] for p in most] == [("m0", "m1"), ("m0", "m2")] and [p[:2] for p in least] == [("m1", "m2")]


def test_correlation_tool(prune_runs, capsys):
    from utils.analysis.scores import Truth, load_oof, merge_oofs
    from utils.runs.directory import find_runs, group_models

    names, agree, pearson = run_tool(correlation, "--runs", prune_runs)
    runs, _ = find_runs(prune_runs)
    models = group_models(runs)
    assert sorted(names) == sorted(models) and len(names) == 4  # arch m0..m3, each over both folds
    # direct computation: each model's decisions at its greedy thresholds, all (image, label) cells
    dec, prob = {}, {}
    for model, rs in models.items():
        o = merge_oofs([load_oof(r, Truth()) for r in rs])
        thr, _ = greedy_thresholds(o.y, o.probs)
        dec[model] = pd.DataFrame((o.probs >= thr).astype(float), index=o.names, columns=o.labels).sort_index()
        prob[model] = pd.DataFrame(o.probs, index=o.names, columns=o.labels).sort_index()
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert agree[i, j] == pytest.approx((dec[a].to_numpy() == dec[b].to_numpy()).mean())
            assert pearson[i, j] == pytest.approx(np.corrcoef(prob[a].to_numpy().ravel(),
                                                              prob[b].to_numpy().ravel())[0, 1])
    csv = pd.read_csv(prune_runs / "correlation" / "correlation_agreement.csv", index_col=0)
    assert list(csv.index) == names and np.allclose(csv.to_numpy(), agree)
    assert (prune_runs / "correlation" / "correlation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (prune_runs / "correlation" / "correlation_pearson.png").is_file()
    out = capsys.readouterr().out
    assert f"wrote {prune_runs / 'correlation' / 'correlation'}.png, " in out  # the default: a folder of its own
    most, least = out.split("least similar")
    top = [tuple(line.split()[:2]) for line in most.splitlines() if "~" in line]
    bottom = [tuple(line.split()[:2]) for line in least.splitlines() if "~" in line]
    upper = sorted(pearson[np.triu_indices(4, 1)])
    assert (len(top), len(bottom)) == (3, 3) and not set(top) & set(bottom)  # 6 pairs: 3 at each end
    assert [float(r) for r, _ in top] == pytest.approx(upper[::-1][:3], abs=1e-4)
    assert [float(r) for r, _ in bottom] == pytest.approx(upper[:3], abs=1e-4)
    names, agree, _ = run_tool(correlation, "--runs", prune_runs, "--label", "b", "--per-run",
                               "--out", prune_runs.parent / "c")
    assert len(names) == 8 and (prune_runs.parent / "c.png").is_file()
    fold = {n: (0 if n in PRUNE_PLAN[0] else 1) for n in names}
    for x in range(8):  # runs of different folds share no image: no agreement value
        for z in range(8):
            assert np.isnan(agree[x, z]) == (fold[names[x]] != fold[names[z]])
    x, z = names.index("A"), names.index("B")  # label b alone, by hand
    pa, pb = (load_oof(next(r for r in runs if r.name == n), Truth()) for n in ("A", "B"))
    da = pa.probs[:, 1] >= greedy_thresholds(pa.y, pa.probs)[0][1]
    db = pb.probs[:, 1] >= greedy_thresholds(pb.y, pb.probs)[0][1]
    assert agree[x, z] == pytest.approx(np.mean(da == db))


# ----------------------------------------------------------------------------- plot_probs

def test_correlation_tool_with_two_models_lists_their_pair_at_both_ends(prune_runs, capsys):
    names, _, pearson = run_tool(correlation, "--runs", prune_runs, "--where", "arch=m[01]")
    assert len(names) == 2
    out = capsys.readouterr().out
    most, least = out.split("\nleast similar (")
    assert "the only pair with a correlation: both the most and the least similar" in most
    pair = [line.split() for line in least.splitlines() if "~" in line]
    assert pair == [line.split() for line in most.splitlines() if "~" in line]
    assert len(pair) == 1 and float(pair[0][0]) == pytest.approx(pearson[0, 1], abs=1e-4)
    assert {pair[0][2], pair[0][4]} == set(names)


def test_plot_probs_one_and_several(prune_runs, tmp_path):
    out = run_tool(plot_probs, "--run", prune_runs / "A")
    assert out == prune_runs / "A" / "plots" / "probs_val.png" and out.read_bytes()[:4] == b"\x89PNG"
    out = run_tool(plot_probs, "--run", prune_runs / "A", prune_runs / "C", "--labels", "a", "b",
                   "--out", tmp_path / "cmp.png")
    assert out.stat().st_size > 1000
    out = run_tool(plot_probs, "--preds", prune_runs / "A" / "preds" / "val.none.csv",
                   prune_runs / "B" / "preds" / "val.none.csv", "--truth",
                   prune_runs.parent / "data" / "demo" / "train.csv", "--out", tmp_path / "files.png")
    assert out.is_file()
    out = run_tool(plot_probs, "--run", prune_runs / "A", "--split", "test", "--out", tmp_path / "t.png")
    assert out.is_file()
    with pytest.raises(DataError, match="--out"):
        run_tool(plot_probs, "--preds", prune_runs / "A" / "preds" / "val.none.csv")
    with pytest.raises(DataError, match="give --runs DIR"):
        run_tool(plot_probs)


def test_align_names_by_stem():
    assert list(align_names(["x", "y.png"], ["y.jpg", "x.tif"], "t")) == [1, 0]
    with pytest.raises(DataError, match="'z' is missing"):
        align_names(["z"], ["y.jpg"], "t")
    with pytest.raises(DataError, match="'a' matches several rows"):
        align_names(["a"], ["a.jpg", "a.png"], "t")


def test_every_tool_has_help(capsys):
    for tool in (statistics, prune, correlation, plot_probs, load_tool("convert_paths")):
        with pytest.raises(SystemExit) as e:
            tool.get_args_parser().parse_args(["--help"])
        assert e.value.code == 0 and "usage:" in capsys.readouterr().out
    # as a script, from another directory (statistics.py shares a name with the stdlib module)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "statistics.py"), "--help"],
                       capture_output=True, text=True, cwd=ROOT / "tools")
    assert r.returncode == 0 and "--path-map" in r.stdout
