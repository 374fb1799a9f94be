"""predict.py --size: predictions at another image side than the training one (FixRes)."""
import numpy as np
import pandas as pd
import torch

from conftest import run_script
from utils.data.cache import decode_image
from utils.models.checkpoint import load_for_inference
from utils.runs.pred_files import read_preds


def manual(run, data, names, size):
    """Per image: decode at `size`, normalise with the checkpoint's statistics, sigmoid."""
    model, meta = load_for_inference(run / "checkpoints" / "best.pt")
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for n in names:
            img = torch.from_numpy(decode_image(data / "test" / f"{n}.jpg", size).copy()).permute(2, 0, 1)[None]
            out.append(torch.sigmoid(model((img.float() / 255 - mean) / std))[0].numpy())
    return np.array(out)


def test_size_override_predicts_at_that_size_into_its_own_file(trained):  # noqa: F811
    base, data, runs = trained
    run = runs / "f0"
    r = run_script("predict.py", "--run", run, "--split", "test", "--tta", "none", "--size", 40)
    names, labels, probs = read_preds(run / "preds" / "test.none-40px.csv")
    assert names == pd.read_csv(data / "sample_submission.csv")["image_name"].tolist()
    np.testing.assert_allclose(probs, manual(run, data, names, 40), atol=1e-5)
    assert not np.allclose(probs, manual(run, data, names, 32), atol=1e-3)  # trained at 32 px
    assert "test.none-40px.csv" in r.stdout and not (run / "preds" / "test.none.csv").exists()


def test_size_below_8_is_refused(trained):  # noqa: F811
    _, _, runs = trained
    r = run_script("predict.py", "--run", runs / "f0", "--size", 4, check=False)
    assert r.returncode == 2 and "--size" in r.stderr
