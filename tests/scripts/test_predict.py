"""predict.py end to end on tiny runs made by train.py: splits, TTA, submission, bad input."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import predict
from conftest import run_script
from helpers import preds_files
from utils.data.cache import decode_image
from utils.models.checkpoint import load_for_inference
from utils.runs.pred_files import read_preds
from utils.metrics.thresholds import binarize, fit_thresholds
from utils.common.write_errors import WriteFault


def clean_preds(run, keep=("val.none.csv",)):
    for p in (run / "preds").glob("*.csv"):
        if p.name not in keep:
            p.unlink()


def test_val_split_lines_up_with_folds_and_matches_trainer(trained):
    base, data, runs = trained
    run_script("predict.py", "--run", runs / "f0", runs / "f1", "--split", "val", "--tta", "none")
    folds = pd.read_csv(data / "folds.csv", dtype={"image_name": str})
    for fold in (0, 1):
        names, labels, probs = read_preds(runs / f"f{fold}" / "preds" / "val.none.csv")
        assert names == folds.loc[folds["fold"] == fold, "image_name"].tolist()
        assert labels == ["a", "b", "c"]
        t_names, _, t_probs = read_preds(base / f"trainer_val_f{fold}.csv")
        ref = pd.DataFrame(t_probs, index=t_names).loc[names].to_numpy()
        np.testing.assert_allclose(probs, ref, atol=1e-5)


def manual_hflip(run, data, names):
    """Per image: decode at the checkpoint's size, normalise, sigmoid of both flips, mean."""
    model, meta = load_for_inference(run / "checkpoints" / "best.pt")
    size = meta["size"]
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for n in names:
            img = torch.from_numpy(decode_image(data / "test" / f"{n}.jpg", size).copy()).permute(2, 0, 1)[None]
            x = (img.float() / 255 - mean) / std
            out.append(((torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1)))) / 2)[0].numpy())
    return np.array(out)


def test_test_split_in_sample_submission_order_with_tta(trained):
    base, data, runs = trained
    run = runs / "f0"
    r = run_script("predict.py", "--run", run, "--split", "test", "--tta", "hflip", "--bs", 4)
    names, labels, probs = read_preds(run / "preds" / "test.hflip.csv")
    assert names == pd.read_csv(data / "sample_submission.csv")["image_name"].tolist()
    np.testing.assert_allclose(probs, manual_hflip(run, data, names), atol=1e-5)
    assert not (run / "preds" / "val.hflip.csv").exists() and "test.hflip.csv" in r.stdout


def test_submission_from_two_folds(trained, tmp_path):
    base, data, runs = trained
    sub = tmp_path / "sub.csv"
    r = run_script("predict.py", "--run", runs / "f*", "--tta", "d4", "--merge", "gmean", "--submission", sub)
    df = pd.read_csv(sub, dtype=str, keep_default_na=False)
    said = r.stdout.split("wrote 4 prediction file(s):")[1]  # what was written, and where
    assert all(str(runs / f / "preds" / f"{s}.d4.csv") in said for f in ("f0", "f1") for s in ("val", "test"))
    assert f"wrote the submission {sub}: 6 test images" in said and "of 2 run(s)" in said
    order = pd.read_csv(data / "sample_submission.csv")["image_name"].tolist()
    assert list(df.columns) == ["image_name", "tags"] and df["image_name"].tolist() == order
    # the reference: mean of the runs' test files, greedy thresholds on their val files
    tests = [read_preds(runs / f / "preds" / "test.d4.csv") for f in ("f0", "f1")]
    vals = [read_preds(runs / f / "preds" / "val.d4.csv") for f in ("f0", "f1")]
    train = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False).set_index("image_name")
    names = vals[0][0] + vals[1][0]
    y = np.array([[int(l in train.loc[n, "tags"].split()) for l in "abc"] for n in names])
    thr = fit_thresholds(y, np.vstack([vals[0][2], vals[1][2]]), "greedy")
    dec = binarize((tests[0][2] + tests[1][2]) / 2, thr)
    want = [" ".join(l for l, d in zip("abc", row) if d) for row in dec]
    assert df["tags"].tolist() == want


def test_run_without_checkpoint_fails_before_writing(trained, tmp_path):
    base, data, runs = trained
    broken = tmp_path / "runs" / "nockpt"
    shutil.copytree(runs / "f0", broken)
    shutil.rmtree(broken / "checkpoints")
    clean_preds(broken)
    good = tmp_path / "runs" / "good"
    shutil.copytree(runs / "f1", good)
    clean_preds(good)
    before = preds_files(tmp_path / "runs")
    r = run_script("predict.py", "--run", good, broken, "--tta", "hflip", "--data", data, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "nockpt" in r.stderr and "best.pt" in r.stderr
    assert preds_files(tmp_path / "runs") == before
    # a checkpoint that breaks only when loaded, after the first run was predicted
    torn = tmp_path / "runs" / "torn"
    shutil.copytree(runs / "f0", torn)
    clean_preds(torn)
    ckpt = torn / "checkpoints" / "best.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    before = preds_files(tmp_path / "runs")
    r = run_script("predict.py", "--run", good, torn, "--tta", "hflip", "--data", data, check=False)
    assert r.returncode == 2 and "torn" in r.stderr and "Traceback" not in r.stderr
    assert preds_files(tmp_path / "runs") == before


def test_different_label_sets_cannot_be_averaged(trained, tmp_path):
    base, data, runs = trained
    other = tmp_path / "runs" / "other"
    shutil.copytree(runs / "f1", other)
    clean_preds(other, keep=())
    cfg = json.loads((other / "config.json").read_text())
    cfg["labels"] = ["a", "b"]
    (other / "config.json").write_text(json.dumps(cfg))
    ck = torch.load(other / "checkpoints" / "best.pt", weights_only=False)  # a 2-label model
    ck["meta"]["labels"] = ["a", "b"]
    ck["model"] = {k: v[:2] if k.startswith("fc.") else v for k, v in ck["model"].items()}
    torch.save(ck, other / "checkpoints" / "best.pt")
    before = preds_files(runs)
    r = run_script("predict.py", "--run", runs / "f0", other, "--submission", tmp_path / "s.csv",
                   "--data", data, check=False)
    assert r.returncode == 2 and "different label sets" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s.csv").exists()
    assert preds_files(tmp_path / "runs") == {} and preds_files(runs) == before


def test_missing_test_image_is_reported(trained, tmp_path):
    base, data, runs = trained
    data2 = tmp_path / "data"
    shutil.copytree(data, data2, ignore=shutil.ignore_patterns(".cache"))
    (data2 / "test" / "t003.jpg").unlink()
    run = tmp_path / "r"
    shutil.copytree(runs / "f0", run)
    clean_preds(run, keep=())
    r = run_script("predict.py", "--run", run, "--data", data2, "--tta", "hflip", check=False)
    assert r.returncode == 2 and "t003" in r.stderr and "Traceback" not in r.stderr
    assert preds_files(tmp_path) == {}


def test_records_from_another_machine_are_converted(trained, tmp_path):
    base, data, runs = trained
    run = tmp_path / "moved" / "f0"
    shutil.copytree(runs / "f0", run)
    clean_preds(run, keep=())
    cfg = json.loads((run / "config.json").read_text())
    cfg["data_root"] = "..\\..\\gone\\planet_data_v7"  # written on Windows, moved since
    cfg["data_root_abs"] = "D:\\kaggle\\planet_data_v7"
    (run / "config.json").write_text(json.dumps(cfg))
    env = {"MULTITAG_PATH_MAP": f"D:\\kaggle\\planet_data_v7={data}"}
    run_script("predict.py", "--run", run, "--split", "test", "--tta", "vflip", env=env, cwd=tmp_path)
    names, _, probs = read_preds(run / "preds" / "test.vflip.csv")
    assert names == pd.read_csv(data / "sample_submission.csv")["image_name"].tolist()
    assert np.all((probs >= 0) & (probs <= 1))
    r = run_script("predict.py", "--run", run, "--split", "test", check=False, cwd=tmp_path)  # no map
    assert r.returncode == 2 and "--data" in r.stderr


def test_unknown_tta_lists_choices(trained):
    base, data, runs = trained
    r = run_script("predict.py", "--run", runs / "f0", "--tta", "12crop", check=False)
    assert r.returncode == 2 and "10crop+full" in r.stderr


def test_a_run_deleted_while_predicting_is_not_recreated(trained, tmp_path, monkeypatch):
    base, data, runs = trained
    copy = tmp_path / "runs"
    shutil.copytree(runs / "f0", copy / "f0")
    real = predict.predict_job

    def predict_then_delete(job, *a, **kw):
        real(job, *a, **kw)
        shutil.rmtree(job.run.dir)

    monkeypatch.setattr(predict, "predict_job", predict_then_delete)
    args = predict.get_args_parser().parse_args(["--runs", str(copy / "f0"), "--tta", "hflip", "--split", "test",
                                                 "--device", "cpu"])
    with pytest.raises(WriteFault, match="deleted .* while predicting"):
        predict.main(args)
    assert not (copy / "f0").exists()
