"""The stage key bn=frozen: BatchNorm statistics stay fixed while the layers' weights train."""
import pytest
import torch

from conftest import write_dataset
from helpers import train
from utils.models import factory as M
from utils.models import layer_groups as G
from utils.common.errors import DataError
from utils.train.stages import resolve_stages


def _running_stats(state):
    return {k: v.clone() for k, v in state.items() if "running_" in k}


def test_all_layers_freezes_statistics_but_not_weights():
    torch.manual_seed(0)
    model = M.create_model("tiny_cnn", 3)
    G.set_trainable(model, "all")
    model.train()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert G.freeze_bn(model) == 0  # every layer trainable: nothing frozen by default
    assert G.freeze_bn(model, all_layers=True) == n_bn > 0
    before = _running_stats(model.state_dict())
    x = torch.randn(6, 3, 32, 32) * 3 + 1  # statistics far from the initial 0 / 1
    model(x).sum().backward()
    for k, v in _running_stats(model.state_dict()).items():
        assert torch.equal(before[k], v), k
    bn = model.stem[1]
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    # in eval mode the layer normalises with its running statistics, as a per-channel affine map
    h = model.stem[0](x)
    ref = (h - bn.running_mean[None, :, None, None]) / torch.sqrt(bn.running_var[None, :, None, None] + bn.eps)
    ref = ref * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
    torch.testing.assert_close(bn(h), ref)


def test_stage_key_bn_parses_and_refuses_unknown_values():
    plan = resolve_stages(stages="epochs=1,train=head;epochs=2,train=all,bn=frozen")
    assert [s.bn for s in plan] == ["train", "frozen"]
    assert plan[1].to_dict()["bn"] == "frozen"
    with pytest.raises(DataError, match="bn"):
        resolve_stages(stages="epochs=1,bn=fixed")


@pytest.mark.slow
def test_bn_frozen_run_keeps_the_initial_statistics(tmp_path):
    data = write_dataset(tmp_path / "data", n=32, size=24)
    plan = "epochs=2,size=24,bs=8,lr=1e-2,train=all"
    train(data, tmp_path / "runs", "--stages", plan + ",bn=frozen", name="frozen")
    train(data, tmp_path / "runs", "--stages", plan, name="trained")
    fresh = M.create_model("tiny_cnn", 3).state_dict()  # --no-pretrained: running mean 0, var 1
    frozen = torch.load(tmp_path / "runs/frozen/checkpoints/last.pt", weights_only=False)["model"]
    trained = torch.load(tmp_path / "runs/trained/checkpoints/last.pt", weights_only=False)["model"]
    stats = [k for k in fresh if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    for k in stats:
        assert torch.equal(frozen[k], fresh[k]), k
        assert not torch.equal(trained[k], fresh[k]), k
    weights = [k.replace("running_mean", "weight") for k in stats if k.endswith("running_mean")]
    assert any(not torch.equal(frozen[k], fresh[k]) for k in weights)  # affine weights trained
