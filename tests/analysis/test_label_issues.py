"""tools/label_issues.py: planted flipped labels found in a synthetic out-of-fold set, as cleanlab ranks them."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import ROOT
from utils.runs.pred_files import write_preds

LABELS = ["a", "b", "c", "d"]
N, K, FLIPPED = 120, 2, {3: 0, 17: 2, 40: 1, 77: 3, 95: 0, 110: 2}  # image -> flipped tag

spec_ = importlib.util.spec_from_file_location("label_issues_tool", ROOT / "tools" / "label_issues.py")
tool = importlib.util.module_from_spec(spec_)
spec_.loader.exec_module(tool)


def write_run(runs, data, name, arch, fold, names, probs):
    d = runs / name
    (d / "preds").mkdir(parents=True)
    cfg = {"name": name, "arch": arch, "fold": fold, "seed": 0, "labels": LABELS, "all_labels": LABELS,
           "label_group": None, "images": "train", "data_root": os.path.relpath(data, d),
           "data_root_abs": str(data), "folds_file": "folds.csv", "folds_k": K}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "result.json").write_text(json.dumps({"finished": True}))
    write_preds(d / "preds" / "val.none.csv", names, LABELS, probs)


@pytest.fixture(scope="module")
def oof_set(tmp_path_factory):
    """Clean tags, good OOF probabilities from two models, and train.csv with FLIPPED tags."""
    tmp = tmp_path_factory.mktemp("li")
    rng = np.random.default_rng(0)
    clean = (rng.random((N, len(LABELS))) < 0.35).astype(np.uint8)
    given = clean.copy()
    for i, j in FLIPPED.items():
        given[i, j] = 1 - given[i, j]
    names = [f"im{i:03d}" for i in range(N)]
    data = tmp / "data"
    (data / "train").mkdir(parents=True)
    for i, n in enumerate(names):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(data / "train" / f"{n}.png")
    tags = [" ".join(t for t, v in zip(LABELS, row) if v) for row in given]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(data / "train.csv", index=False)
    folds = np.arange(N) % K
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(data / "folds.csv", index=False)
    runs = tmp / "runs"
    models = []
    for m in range(2):
        z = rng.normal(0, 0.8, clean.shape) + 3.0 * (2.0 * clean - 1)
        probs = np.round(1 / (1 + np.exp(-z)), 6)
        models.append(probs)
        for f in range(K):
            rows = np.flatnonzero(folds == f)
            write_run(runs, data, f"m{m}-f{f}", f"m{m}", f, [names[i] for i in rows], probs[rows])
    return tmp, runs, names, given, np.mean(models, 0)


@pytest.mark.slow
def test_flipped_labels_rank_first_as_cleanlab_says(oof_set):
    from cleanlab.multilabel_classification import filter as cl_filter
    from cleanlab.multilabel_classification import rank as cl_rank

    tmp, runs, names, given, mean = oof_set
    out = tmp / "out"
    table = tool.main(tool.get_args_parser().parse_args(["--runs", str(runs / "*"), "--top", "8",
                                                         "--out", str(out)]))
    csv = pd.read_csv(out / "label_issues.csv", dtype={"image_name": str})
    top = csv.head(len(FLIPPED))
    assert set(top["image_name"]) == {names[i] for i in FLIPPED}
    for r in top.itertuples():
        i = names.index(r.image_name)
        assert r.tag == LABELS[FLIPPED[i]] and r.given == given[i, FLIPPED[i]]
    # the scores are cleanlab's on the per-image mean of the two models' OOF probabilities
    lists = [list(np.flatnonzero(row)) for row in given]
    want = cl_rank.get_label_quality_scores(lists, mean, aggregator_kwargs={"method": "softmin"})
    order = [names.index(n) for n in csv["image_name"]]
    np.testing.assert_allclose(csv["score"].to_numpy(), want[order], rtol=1e-5)
    np.testing.assert_array_equal(csv["issue"].to_numpy(), cl_filter.find_label_issues(lists, mean, n_jobs=1)[order])
    assert list(csv["rank"]) == list(range(1, N + 1)) and len(table) == N
    with Image.open(out / "label_issues.png") as im:
        assert im.size[0] > 300


@pytest.mark.slow
def test_outputs_go_beside_the_runs_by_default(oof_set, tmp_path):
    tmp, runs, names, _, _ = oof_set
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "label_issues.py"), "--runs", str(runs / "*"),
                        "--top", "4"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(runs / "label_issues" / "label_issues.csv", dtype={"image_name": str})
    assert sorted(table["image_name"]) == sorted(names) and (runs / "label_issues" / "label_issues.png").is_file()
    assert str(runs / "label_issues" / "label_issues.csv") in r.stdout


def test_bad_input_exits_2_and_writes_nothing(oof_set, tmp_path):
    _, runs, _, _, _ = oof_set
    cmd = [sys.executable, str(ROOT / "tools" / "label_issues.py"), "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd + ["--runs", str(runs / "*"), "--top", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--top 0" in r.stderr
    r = subprocess.run(cmd + ["--runs", str(tmp_path / "none*")], capture_output=True, text=True)
    assert r.returncode == 2 and "no runs match" in r.stderr
    assert not (tmp_path / "o").exists()


def sheet_rows(n, long=False):
    tags = "a b c d " * 4 if long else "a b"
    return pd.DataFrame({"rank": range(1, n + 1), "image_name": [f"im{i:03d}" + "_x" * 20 * long for i in range(n)],
                         "tag": "a", "given": 1, "probability": 0.03, "given_tags": tags.strip()})


@pytest.mark.parametrize("n, cols, long", [(1, 6, False), (5, 2, True), (13, 6, True), (48, 6, False)])
def test_contact_sheet_title_and_captions_keep_apart(tmp_path, n, cols, long):
    """The title, each image's caption above it and its red line below overlap nothing and
    stay inside the sheet, however many rows and columns."""
    from utils.analysis.label_issues import contact_sheet, draw_contact_sheet

    images = [np.full((16, 16, 3), 100 + i, np.uint8) for i in range(n)]
    title = "most suspicious labels of 300 images, 2 model(s)" + " and a longer title" * 3 * long
    fig = draw_contact_sheet(sheet_rows(n, long), images, cols, title)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)  # the constrained layout runs at draw time
    head = fig._suptitle.get_window_extent(renderer)
    texts = [t.get_window_extent(renderer) for ax in fig.axes for t in (ax.title, ax.xaxis.label)]
    images_boxes = [ax.get_window_extent(renderer) for ax in fig.axes]
    assert len(fig.axes) == n and len(fig.axes[0].title.get_text().splitlines()) >= 2
    boxes = [head, *texts]
    for i, a in enumerate(boxes):
        assert fig.bbox.x0 <= a.x0 and a.x1 <= fig.bbox.x1 + 1 and fig.bbox.y0 <= a.y0 and a.y1 <= fig.bbox.y1 + 1
        assert not any(a.overlaps(b) for b in boxes[i + 1:] + images_boxes), i
    path = contact_sheet(sheet_rows(n, long), images, tmp_path / "sheet.png", cols, title)
    with Image.open(path) as im:
        assert im.size[0] == round(min(cols, n) * 2.0 * 80) and abs(im.size[1] - fig.get_figheight() * 80) <= 1
