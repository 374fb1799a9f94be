"""train.py --weights FILE: a state dict or model folder read offline into --arch, recorded
by its sha256 in config.json and best.pt; mismatches refused by name."""
import json

import pytest
import torch

from conftest import run_script, write_dataset
from helpers import train_run
from utils.models.factory import create_model, in_head, model_meta
from utils.common.checksum import file_sha256

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny_cnn with 5 outputs (another classifier shape) and its weights, as .pth and as a folder."""
    root = tmp_path_factory.mktemp("w")
    torch.manual_seed(123)
    sd = create_model("tiny_cnn", 5).state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, root / "w.pth")
    (root / "folder").mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, root / "folder" / "model.safetensors")
    return root, sd


@pytest.mark.parametrize("where", ["w.pth", "folder"])
def test_head_training_from_a_weights_file_keeps_its_body(tmp_path, source, where):
    root, sd = source
    data = write_dataset(tmp_path / "data", n=16, size=32, n_test=1)
    run = train_run(data, tmp_path / "runs", "--weights", str(root / where), "--stages",
                    "epochs=1,size=32,bs=4,lr=1e-2,train=head,bn=frozen")
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=False)
    head = model_meta(create_model("tiny_cnn", 3))["head"]
    body = [k for k in sd if not in_head(k, head)]
    assert body and len(body) < len(sd)
    for k in body:
        assert torch.equal(best["model"][k], sd[k]), k
    file = root / where if where.endswith(".pth") else root / where / "model.safetensors"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["weights"]["sha256"] == file_sha256(file) == best["meta"]["weights"]["sha256"]
    # predict.py rebuilds the model from best.pt alone: the weights file is not needed any more
    file.rename(file.with_suffix(".moved"))
    try:
        run_script("predict.py", "--runs", run, "--split", "val", "--tta", "hflip")
    finally:
        file.with_suffix(".moved").rename(file)
    assert (run / "preds" / "val.hflip.csv").is_file()


def test_a_file_of_another_shape_is_refused_by_name(tmp_path, source):
    root, sd = source
    bad = dict(sd)
    bad["stem.0.weight"] = torch.zeros(4, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    data = write_dataset(tmp_path / "data", n=16, size=32, n_test=1)
    r = train_run(data, tmp_path / "runs", "--weights", str(tmp_path / "bad.pth"), "--stages", "epochs=1,size=32,bs=4",
                  check=False)
    assert r.returncode == 2 and "stem.0.weight: file (4, 3, 3, 3), model (8, 3, 3, 3)" in r.stderr
    assert not (tmp_path / "runs").exists()
