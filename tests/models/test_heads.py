"""Pooling heads (--head): shapes on timm, torchvision and builtin models, the pooling maths against
closed forms and per-item loops, train=head, and predict.py rebuilding a --head run from best.pt."""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import run_script, write_dataset
from utils.models.checkpoint import load_for_inference
from utils.models.heads import GeM, HeadNet, build_head, parse_head
from utils.common.errors import DataError
from utils.runs.pred_files import read_preds
from utils.models.factory import create_model
from utils.models.layer_groups import freeze_bn, named_layer_groups, param_groups

HEADS = ["avg", "max", "avgmax", "gem", "csra", "csra:t=99", "mldecoder"]


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("arch", ["timm:resnet18", "resnet18", "tiny_cnn"])
@pytest.mark.slow
def test_output_shape_in_train_and_eval(arch, head):
    torch.manual_seed(0)
    model = create_model(arch, 5, pretrained=False, head=head)
    assert isinstance(model, HeadNet) and model.meta["head_name"] == parse_head(head)
    x = torch.randn(2, 3, 32, 32)
    assert model.train()(x).shape == (2, 5)
    out = model.eval()(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    head_params = [n for n, _ in named_layer_groups(model)[-1]]
    assert head_params == [n for n, _ in model.named_parameters() if n.startswith("head.")]


@pytest.mark.parametrize("arch, layout", [("timm:vit_tiny_patch16_224", "NLC"), ("timm:convnext_atto", "NCHW")])
def test_timm_tokens_and_maps(arch, layout):
    model = create_model(arch, 3, head="gem").eval()
    assert model.layout == layout
    x = torch.randn(1, 3, 224, 224)
    f = model.features(x)
    if layout == "NLC":  # 14 x 14 patches, the class token dropped
        assert f.shape == (1, model.body.num_features, 196, 1)
    assert model(x).shape == (1, 3)


@pytest.mark.slow
def test_torchvision_transformer_without_a_map_says_so():
    with pytest.raises(DataError, match="vit_b_16.*timm"):
        create_model("vit_b_16", 3, head="avg")


def test_default_head_is_unchanged():
    model = create_model("tiny_cnn", 3)
    assert not isinstance(model, HeadNet) and model.meta["head_name"] is None
    with pytest.raises(ValueError, match="num_labels"):
        create_model("tiny_cnn", None, head="gem")


def _map(seed=0, shape=(4, 6, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) + 0.05  # positive, like ReLU features


def test_gem_p1_is_average_and_large_p_tends_to_max():
    x = _map()
    torch.testing.assert_close(GeM(p=1.0).double()(x), x.mean(dim=(2, 3)))
    gaps = [(GeM(p=p).double()(x) - x.amax(dim=(2, 3))).abs().max().item() for p in (3, 10, 50, 500)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 0.01 * x.max().item()
    assert all(g <= 0 or g < 1e-9 for g in (GeM(p=50).double()(x) - x.amax(dim=(2, 3))).flatten().tolist())
    head = build_head("gem", 6, 3)
    head.double()(x).sum().backward()
    assert head.pool[0].p.grad is not None and head.pool[0].p.grad.abs() > 0  # p learns


def test_avgmax_is_the_concat_of_both():
    x = _map().float()
    head = build_head("avgmax", 6, 3)
    cat = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
    torch.testing.assert_close(head.pool(x), cat)
    torch.testing.assert_close(head(x), head.fc(cat))
    torch.testing.assert_close(build_head("max", 6, 3).pool(x), x.amax(dim=(2, 3)))


@pytest.mark.parametrize("spec, lam, t", [("csra", 0.1, 1.0), ("csra:lam=0.5,t=4", 0.5, 4.0), ("csra:t=99", 0.1, 99)])
def test_csra_against_a_per_class_loop(spec, lam, t):
    x = _map(1, (2, 6, 3, 4))
    head = build_head(spec, 6, 3).double()
    w = head.classifier.weight.detach()[:, :, 0, 0].numpy()
    xs = x.numpy().reshape(2, 6, -1)
    want = np.zeros((2, 3))
    for b in range(2):
        for c in range(3):
            s = w[c] @ xs[b] / np.linalg.norm(w[c])  # per-position score, unit-norm classifier
            if t == 99:
                att = s.max()
            else:
                a = np.exp(t * s - (t * s).max())
                att = (a / a.sum() * s).sum()
            want[b, c] = s.mean() + lam * att
    np.testing.assert_allclose(head(x).detach().numpy(), want, rtol=1e-10)


def test_mldecoder_queries_stay_fixed():
    torch.manual_seed(0)
    model = create_model("tiny_cnn", 4, head="mldecoder")
    queries = model.head.decoder.query_embed.weight.clone()
    assert "head.decoder.query_embed.weight" not in dict(model.named_parameters())
    assert "head.decoder.query_embed.weight" in model.state_dict()
    opt = torch.optim.SGD([g["params"] for g in param_groups(model, "head", lr=0.1)][0], lr=0.1)
    model.train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    assert torch.equal(model.head.decoder.query_embed.weight, queries)


@pytest.mark.slow
def test_train_head_changes_the_head_only():
    torch.manual_seed(0)
    model = create_model("timm:resnet18", 3, head="gem")
    groups = param_groups(model, "head", lr=0.1)
    assert [g["name"] for g in groups] == ["head", "head.no_wd"]
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(groups, lr=0.1)
    model.train()
    freeze_bn(model)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(
            model(torch.randn(4, 3, 64, 64)), torch.randint(0, 2, (4, 3)).float()).backward()  # a 2x2 map: p matters
        opt.step()
    after = model.state_dict()
    body = [k for k in before if k.startswith("body.")]
    assert body and all(torch.equal(before[k], after[k]) for k in body)  # weights and BN statistics
    assert all(not torch.equal(before[k], after[k]) for k in ("head.pool.0.p", "head.fc.weight"))
    # under discriminative lrs the GeM exponent trains at the head's lr
    groups = param_groups(model, "all", lr=1.0, lr_mult=0.1)
    p_group = next(g for g in groups if any(p is model.head.pool[0].p for p in g["params"]))
    assert p_group["name"].startswith("head") and p_group["lr"] == 1.0
    assert all(g["lr"] < 1.0 for g in groups if not g["name"].startswith("head"))


@pytest.mark.parametrize("spec, match", [
    ("pool", "unknown head 'pool'; valid: avg, max, avgmax, gem, csra, mldecoder"),
    ("gem:p=0", "gem: p must be > 0"),
    ("gem:q=2", "'gem': unknown option"),
    ("csra:lam=-1", "csra: lam must be"),
    ("avg:p=3", "'avg': unknown option"),
])
def test_bad_head_names_the_problem(spec, match):
    with pytest.raises(DataError, match=match):
        parse_head(spec)


def test_parse_head_canonical():
    assert parse_head(None) is None and parse_head("default") is None
    assert parse_head("gem:p=3") == "gem" and parse_head("CSRA:t=99") == "csra:t=99"


@pytest.mark.slow
def test_predict_rebuilds_a_gem_run_from_best_pt(tmp_path):
    data = write_dataset(tmp_path / "data", n=32, size=32, n_test=4)
    runs = tmp_path / "runs"
    run_script("train.py", "--data", data, "--out", runs, "--arch", "tiny_cnn", "--no-pretrained", "--head", "gem",
               "--stages", "epochs=1,size=32,bs=8,train=head;epochs=1,size=32,bs=8,train=all", "--name", "g",
               "--plots", "none", "--device", "cpu", "--workers", 0, "--folds-k", 4)
    run = runs / "g"
    assert json.loads((run / "config.json").read_text())["head"] == "gem"
    model, meta = load_for_inference(run / "checkpoints" / "best.pt")
    assert meta["head"] == "gem" and isinstance(model, HeadNet)
    shutil.copy(run / "preds" / "val.none.csv", tmp_path / "trainer_val.csv")
    cfg = json.loads((run / "config.json").read_text())
    cfg.pop("head")  # best.pt alone must describe the model
    (run / "config.json").write_text(json.dumps(cfg))
    run_script("predict.py", "--run", run, "--split", "val", "--tta", "none")
    names, labels, probs = read_preds(run / "preds" / "val.none.csv")
    ref_names, ref_labels, ref = read_preds(tmp_path / "trainer_val.csv")
    assert names == ref_names and labels == ref_labels
    np.testing.assert_allclose(probs, ref, atol=2e-6)
    bad = run_script("train.py", "--data", data, "--out", runs, "--arch", "tiny_cnn", "--no-pretrained",
                     "--head", "gem:p=-1", "--name", "bad", "--folds-k", 4, check=False)
    assert bad.returncode == 2 and "gem: p must be > 0" in bad.stderr and not (runs / "bad").exists()
