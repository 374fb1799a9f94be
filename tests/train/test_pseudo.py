"""Pseudo-labels and distillation: train.py --pseudo/--soft-targets on tiny runs, the tool, bad input."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, write_dataset
from helpers import same_run, train
from utils.runs.pred_files import read_preds, write_preds
from utils.common.checksum import file_sha256
from utils.train.pseudo import confidence, pseudo_labels

LABELS = ["a", "b", "c"]
SHORT = ["--stages", "epochs=2,size=32,bs=8", "--deterministic", "--ckpt-every", "2", "--folds-k", "4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("d") / "data", n=40, size=32, n_test=8)
    return root


def pseudo_file(path, names, seed=0):
    p = np.random.default_rng(seed).random((len(names), 3))
    write_preds(path, names, LABELS, p)
    return path, p


def folds_of(data):
    return pd.read_csv(data / "folds.csv", dtype={"image_name": str}).set_index("image_name")["fold"]


@pytest.mark.slow
def test_pseudo_rows_join_training_only(data, tmp_path):
    out = tmp_path / "runs"
    csv, _ = pseudo_file(tmp_path / "pseudo.csv", ["t001", "t004", "t006"])
    train(data, out, "--stages", "epochs=1,size=32,bs=8", "--folds-k", "4", "--name", "plain")
    train(data, out, "--stages", "epochs=1,size=32,bs=8", "--folds-k", "4", "--pseudo", csv,
          "--pseudo-weight", "0.5", "--name", "ps")
    plain, ps = (pd.read_csv(out / n / "history.csv") for n in ("plain", "ps"))
    assert ps["seen"].iloc[0] == plain["seen"].iloc[0] + 3          # the training set grew by the 3 rows
    folds = folds_of(data)
    names, _, _ = read_preds(out / "ps" / "preds" / "val.none.csv")
    assert sorted(names) == sorted(folds.index[folds == 0])         # validation: the fold, nothing else
    cfg = json.loads((out / "ps" / "config.json").read_text())
    assert cfg["pseudo"] == {"sha256": file_sha256(csv), "rows": 3, "weight": 0.5}


@pytest.mark.slow
def test_kill_and_resume_with_pseudo_labels_is_exact(data, tmp_path):
    csv, _ = pseudo_file(tmp_path / "pseudo.csv", ["t000", "t002", "t003", "t007"])
    ref, out = tmp_path / "ref", tmp_path / "runs"
    train(data, ref, *SHORT, "--pseudo", csv, "--pseudo-weight", "2")
    r = train(data, out, *SHORT, "--pseudo", csv, "--pseudo-weight", "2", kill="step:3",
              check=False)
    assert r.returncode == -9, r.stderr[-2000:]
    r = train(data, out, *SHORT, "--pseudo-weight", "3", "--resume", check=False)  # another weight: refused
    assert r.returncode == 2 and "--pseudo-weight" in r.stderr
    other, _ = pseudo_file(tmp_path / "other.csv", ["t000", "t002", "t003", "t007"], seed=5)
    r = train(data, out, *SHORT, "--pseudo", other, "--resume", check=False)    # other targets: refused
    assert r.returncode == 2 and "pseudo" in r.stderr
    csv.write_bytes(other.read_bytes())                                        # the file changed: refused
    r = train(data, out, *SHORT, "--resume", check=False)
    assert r.returncode == 2 and "pseudo" in r.stderr
    pseudo_file(csv, ["t000", "t002", "t003", "t007"])                          # the original again
    train(data, out, *SHORT, "--resume")                                       # the run's own flags
    same_run(ref / "r", out / "r")


@pytest.mark.slow
def test_first_step_loss_is_bce_with_mixed_and_weighted_targets(data, tmp_path):
    """One step over the whole training set: its loss, by hand, from the same initial weights."""
    from utils.data.cache import default_cache_dir, load_images
    from utils.data.dataset import load_dataset
    from utils.data.loader import to_input
    from utils.models.factory import create_model
    from utils.train.run_state import seed_everything

    spec = load_dataset(data)
    teacher = np.random.default_rng(1).random((len(spec.names), 3))
    write_preds(tmp_path / "teacher.csv", spec.names, LABELS, teacher)
    csv, p_test = pseudo_file(tmp_path / "pseudo.csv", ["t001", "t005"], seed=2)
    out = tmp_path / "runs"
    alpha, w = 0.3, 0.25
    train(data, out, "--stages", "epochs=1,size=32,bs=64,train=all", "--folds-k", "4", "--aug", "none",
          "--soft-targets", tmp_path / "teacher.csv", "--distill", str(alpha), "--pseudo", csv,
          "--pseudo-weight", str(w))
    cfg = json.loads((out / "r" / "config.json").read_text())
    assert cfg["soft_targets"]["alpha"] == alpha and cfg["soft_targets"]["kind"] == "unknown"
    folds = folds_of(data)
    tr = np.array([folds[n] != 0 for n in spec.names])
    seed_everything(0)
    model = create_model("tiny_cnn", 3, pretrained=False).train()
    imgs = load_images(spec.files, 32, default_cache_dir(data))
    test_imgs = load_images(spec.test_files, 32, default_cache_dir(data))
    x = torch.from_numpy(np.concatenate([imgs[np.flatnonzero(tr)], test_imgs[[1, 5]]]))
    with torch.no_grad():
        logits = model(to_input(x, cfg["mean"], cfg["std"], torch.device("cpu")))
    targets = np.concatenate([(1 - alpha) * spec.y[tr] + alpha * teacher[tr], p_test])
    per_row = F.binary_cross_entropy_with_logits(logits, torch.tensor(targets, dtype=torch.float32),
                                                 reduction="none").mean(1)
    weights = torch.tensor([1.0] * int(tr.sum()) + [w, w])
    manual = float((weights * per_row).sum() / len(per_row))
    hist = pd.read_csv(out / "r" / "history.csv")
    assert hist["train_loss"].iloc[0] == pytest.approx(manual, rel=1e-5)


@pytest.mark.slow
def test_teacher_run_of_the_same_fold_is_honest_others_are_refused(data, tmp_path):
    out = tmp_path / "runs"
    one = ["--stages", "epochs=1,size=32,bs=8", "--folds-k", "4"]
    train(data, out, *one, "--fold", "1", name="teacher-f1")
    r = train(data, out, *one, "--fold", "0", "--soft-targets", out / "teacher-f1", name="s0", check=False)
    assert r.returncode == 2 and "validation fold 1, so it saw fold 0" in r.stderr
    r = train(data, out, *one, "--fold", "0", "--soft-targets", out / "teacher-f1" / "preds" / "val.none.csv",
              name="s0", check=False)
    assert r.returncode == 2 and "trained with validation fold 1, i.e. on fold 0" in r.stderr
    folds = folds_of(data)
    moved = folds.copy()
    moved.iloc[[int(np.flatnonzero(folds == 1)[0]), int(np.flatnonzero(folds == 2)[0])]] = [2, 1]
    moved.rename("fold").reset_index().to_csv(data / "folds_other.csv", index=False)
    cfg_path = out / "teacher-f1" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "folds_file": "folds_other.csv"}))
    r = train(data, out, *one, "--fold", "1", "--soft-targets", out / "teacher-f{fold}", name="s1", check=False)
    assert r.returncode == 2 and "puts 2 image(s) in or out of fold 1 differently" in r.stderr
    cfg_path.write_text(json.dumps(cfg))
    train(data, out, *one, "--fold", "1", "--soft-targets", out / "teacher-f{fold}", "--distill", "0.5", name="s1")
    cfg = json.loads((out / "s1" / "config.json").read_text())
    assert cfg["soft_targets"]["kind"] == "teacher run" and cfg["soft_targets_source"].endswith("teacher-f1")
    assert not (out / "s0").exists()


@pytest.mark.slow
def test_bad_inputs_exit_2_and_write_nothing(data, tmp_path):
    out = tmp_path / "runs"
    one = ["--stages", "epochs=1,size=32,bs=8", "--folds-k", "4"]
    csv, _ = pseudo_file(tmp_path / "p.csv", ["t001", "img003"])
    r = train(data, out, *one, "--pseudo", csv, check=False)
    assert r.returncode == 2 and "p.csv" in r.stderr and "row 3: 'img003'" in r.stderr
    spec_names = pd.read_csv(data / "train.csv")["image_name"].tolist()
    bad = np.full((len(spec_names), 3), 0.5)
    bad[4, 2] = 1.5
    pd.DataFrame(bad, columns=LABELS).assign(image_name=spec_names)[["image_name"] + LABELS].to_csv(
        tmp_path / "soft.csv", index=False)
    r = train(data, out, *one, "--soft-targets", tmp_path / "soft.csv", check=False)
    assert r.returncode == 2 and "soft.csv" in r.stderr and "row 6, column 'c' = 1.5" in r.stderr
    stack_dir = tmp_path / "stack"
    write_preds(stack_dir / "stack_oof.csv", spec_names, LABELS, np.full((len(spec_names), 3), 0.5))
    (stack_dir / "stack_report.json").write_text(json.dumps({"library": {"folds": 4}}))
    r = train(data, out, *one, "--soft-targets", stack_dir / "stack_oof.csv", check=False)
    assert r.returncode == 2 and "leaks the validation labels" in r.stderr
    assert not out.exists()


@pytest.mark.slow
def test_pseudo_and_soft_targets_name_the_kind_of_file_given(data, tmp_path):
    """A submission, a folds file, train.csv or out-of-fold predictions get the explanation
    tools/pseudo_label.py gives for the same file (utils.runs.prob_file), not a leak or NaN message."""
    out = tmp_path / "runs"
    one = ["--stages", "epochs=1,size=32,bs=8", "--folds-k", "4"]
    spec_names = pd.read_csv(data / "train.csv")["image_name"].tolist()
    stack_dir = tmp_path / "stack"
    write_preds(stack_dir / "stack_oof.csv", spec_names, LABELS, np.full((len(spec_names), 3), 0.5))
    (stack_dir / "stack_report.json").write_text(json.dumps({"library": {"folds": 4}}))
    (stack_dir / "submission.csv").write_text("image_name,tags\nt000,a c\nt001,b\n")
    folds_csv = tmp_path / "folds.csv"
    folds_csv.write_text("image_name,fold\n" + "".join(f"{n},{i % 4}\n" for i, n in enumerate(spec_names)))
    cases = [("--soft-targets", stack_dir / "submission.csv", "not a probability file but a submission"),
             ("--pseudo", stack_dir / "submission.csv", "not a probability file but a submission"),
             ("--soft-targets", folds_csv, "not a probability file but a folds file"),
             ("--pseudo", data / "train.csv", "not a probability file but the training labels of a dataset"),
             ("--pseudo", stack_dir / "stack_oof.csv", "out-of-fold predictions of the training images")]
    for flag, path, message in cases:
        r = train(data, out, *one, flag, path, check=False)
        assert r.returncode == 2 and f"{flag} {path}: " in r.stderr and message in r.stderr, (flag, r.stderr)
        assert "leaks" not in r.stderr and "NaN" not in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- tools/pseudo_label.py

def test_confidence_selection_by_hand():
    p = np.array([[0.9, 0.1], [0.5, 0.6], [0.99, 0.01], [0.3, 0.8]])
    np.testing.assert_allclose(confidence(p), [0.4, 0.05, 0.49, 0.25])
    keep, t = pseudo_labels(p, "hard", 0.5, [0.5, 0.7])
    np.testing.assert_array_equal(keep, [0, 2])
    np.testing.assert_array_equal(t, [[1, 0], [1, 0]])
    keep, t = pseudo_labels(p, "soft", 0.0)
    np.testing.assert_array_equal(keep, [0, 1, 2, 3]) and np.testing.assert_array_equal(t, p)


def test_tool_averages_runs_and_keeps_the_surest(tmp_path):
    from helpers import write_runs

    root, *_ = write_runs(tmp_path, [dict(arch="net0", signal=1.0), dict(arch="net1", signal=1.0)], n_test=20)
    runs = sorted((root / "runs").iterdir())
    tables = [read_preds(r / "preds" / "test.none.csv") for r in runs]
    order = sorted(tables[0][0])
    mean = np.mean([pd.DataFrame(p, index=n).loc[order].to_numpy() for n, _, p in tables], axis=0)
    out = tmp_path / "pseudo.csv"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "pseudo_label.py"), "--runs", str(root / "runs"),
                        "--mode", "hard", "--quantile", "0.75", "--thresholds", "0.4", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names, labels, t = read_preds(out)
    conf = confidence(mean)
    want = [order[i] for i in np.flatnonzero(conf >= np.quantile(conf, 0.75))]
    assert sorted(names) == sorted(want) and len(names) == 5
    got = pd.DataFrame(t, index=names).loc[want].to_numpy()
    np.testing.assert_array_equal(got, mean[[order.index(n) for n in want]] >= 0.4)


@pytest.mark.parametrize("flags, message", [(["--mode", "hard", "--thresholds", "2"], "every label = 2.0"),
                                            (["--mode", "hard", "--thresholds", "0.5,-1,0.5"], "b = -1.0"),
                                            (["--thresholds", "0.4"], "only used with --mode hard")])
@pytest.mark.slow
def test_tool_bad_thresholds_exit_2_and_write_nothing(tmp_path, flags, message):
    probs = tmp_path / "test.csv"
    write_preds(probs, ["t001", "t002"], LABELS, np.array([[0.9, 0.2, 0.5], [0.1, 0.7, 0.4]]))
    out = tmp_path / "pseudo.csv"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "pseudo_label.py"), "--probs", str(probs),
                        *flags, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists()
