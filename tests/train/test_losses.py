import json

import numpy as np
import pytest
import torch

from utils.common.errors import DataError
from utils.train.losses import LOSSES, build_loss, positive_weights


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64) * 3
    targets = (torch.rand(6, 4, generator=g) < 0.4).double()
    return logits, targets


@pytest.fixture
def y_train():
    y = np.zeros((20, 4), dtype=np.int64)
    y[:1, 0] = 1      # density 0.05
    y[:10, 1] = 1     # 0.5
    y[:, 2] = 1       # 1.0
    return y          # column 3 never present


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_bce(x, y, pos_weight=1.0):
    p = np_sigmoid(x)
    return -(pos_weight * y * np.log(p) + (1 - y) * np.log(1 - p))


def test_bce_matches_numpy(batch):
    x, y = batch
    loss, info = build_loss("bce")
    assert loss(x, y).item() == pytest.approx(np_bce(x.numpy(), y.numpy()).mean(), rel=1e-5)
    assert info == {"loss": "bce"}


def test_wbce_weights_inverse_odds_and_cap(y_train):
    w = positive_weights(y_train)
    assert w == pytest.approx([20.0, 2.0, 1.0, 1.0])  # absent label: 1, neither inf nor the cap
    w = positive_weights(y_train, mode="odds", cap=10)
    assert w == pytest.approx([10.0, 1.0, 0.0, 1.0])  # 19 capped at 10


def test_wbce_equals_torch_pos_weight_and_numpy(batch, y_train):
    x, y = batch
    loss, info = build_loss("wbce:mode=odds,cap=50", y_train)
    w = positive_weights(y_train, mode="odds", cap=50)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w))(x, y)
    assert loss(x, y).item() == pytest.approx(ref.item(), rel=1e-5)
    assert loss(x, y).item() == pytest.approx(np_bce(x.numpy(), y.numpy(), w).mean(), rel=1e-5)
    assert info["pos_weight"] == pytest.approx(list(w))
    assert info["mode"] == "odds" and info["cap"] == 50


def test_focal_matches_numpy(batch):
    x, y = batch
    xn, yn = x.numpy(), y.numpy()
    p = np_sigmoid(xn)
    p_t = np.where(yn == 1, p, 1 - p)
    a_t = np.where(yn == 1, 0.25, 0.75)
    ref = (a_t * (1 - p_t) ** 2 * np_bce(xn, yn)).mean()
    loss, _ = build_loss("focal")
    assert loss(x, y).item() == pytest.approx(ref, rel=1e-5)


def test_focal_gamma0_no_alpha_is_bce(batch):
    x, y = batch
    loss, _ = build_loss("focal:gamma=0,alpha=none")
    assert loss(x, y).item() == pytest.approx(build_loss("bce")[0](x, y).item(), rel=1e-5)


def test_asl_matches_numpy(batch):
    x, y = batch
    xn, yn = x.numpy(), y.numpy()
    p = np_sigmoid(xn)
    p_neg = np.minimum(1 - p + 0.05, 1)
    ref = -(yn * np.log(p) * (1 - p) ** 1
            + (1 - yn) * np.log(p_neg) * (1 - p_neg) ** 4).mean()
    loss, info = build_loss("asl:gamma_pos=1", None)
    assert loss(x, y).item() == pytest.approx(ref, rel=1e-5)
    assert info["gamma_neg"] == 4 and info["clip"] == 0.05


def test_asl_without_focusing_or_clip_is_bce(batch):
    x, y = batch
    loss, _ = build_loss("asl", gamma_neg=0, gamma_pos=0, clip=0)
    assert loss(x, y).item() == pytest.approx(build_loss("bce")[0](x, y).item(), rel=1e-5)


def test_asl_detach_changes_gradient_not_value(batch):
    x, y = batch
    vals, grads = [], []
    for detach in (True, False):
        xg = x.clone().requires_grad_(True)
        out = build_loss("asl", detach=detach)[0](xg, y)
        out.backward()
        vals.append(out.item())
        grads.append(xg.grad)
    assert vals[0] == pytest.approx(vals[1])
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_json_info_scalar_and_half_precision(name, y_train, batch):
    loss, info = build_loss(name, y_train)
    json.dumps(info)
    x, y = batch
    out = loss(x.to(torch.bfloat16), y)
    assert out.dtype == torch.float32 and out.ndim == 0 and torch.isfinite(out)


def test_errors_list_valid_choices(y_train):
    with pytest.raises(DataError, match="bce, wbce, focal, asl"):
        build_loss("softmax")
    with pytest.raises(DataError, match="gamma_neg"):
        build_loss("asl:gama_neg=3")
    with pytest.raises(DataError, match="training labels"):
        build_loss("wbce")
    with pytest.raises(DataError, match="inverse, odds"):
        build_loss("wbce:mode=log", y_train)


def test_loss_booleans_take_the_option_vocabulary():
    for text, want in (("1", True), ("off", False), ("yes", True)):
        assert build_loss(f"asl:detach={text}")[1]["detach"] is want
    with pytest.raises(DataError, match="--loss asl: detach='maybe' .* not a boolean"):
        build_loss("asl:detach=maybe")
