"""Weight EMA (utils/models/ema.py) against the closed form of an exponential moving average."""
import numpy as np
import pytest
import torch
from torch import nn

from utils.models.ema import WeightEMA, build_ema, ema_decay
from utils.common.errors import DataError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def _set(model, t):
    """Weights (and BatchNorm buffers) of step t: a known, non-linear sequence."""
    with torch.no_grad():
        for i, p in enumerate(list(model.parameters()) + [model[1].running_mean, model[1].running_var]):
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32).view_as(p) + 0.7 * t + i) + 1.5)
        model[1].num_batches_tracked.fill_(10 * t)


def _closed_form(seq, decays):
    """e_n = sum_k w_k (1 - d_k) prod_{j > k} d_j with d_0 = 0 (the first update copies)."""
    n = len(seq) - 1
    d = [0.0] + list(decays)
    return sum(seq[k] * (1 - d[k]) * np.prod(d[k + 1:n + 1]) for k in range(n + 1))


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_closed_form(warmup):
    # decay 0.5: the warm-up (1+k)/(10+k) reaches it at k = 8, inside the 11 averaging updates
    model = _model()
    ema = WeightEMA(model, 0.5, warmup=warmup)
    seqs = {k: [] for k in model.state_dict() if "num_batches" not in k}
    for t in range(12):
        _set(model, t)
        ema.update(model)
        for k in seqs:
            seqs[k].append(model.state_dict()[k].double().numpy().copy())
    decays = [ema_decay(0.5, k, warmup) for k in range(1, 12)]
    if warmup:
        assert decays[:3] == pytest.approx([2 / 11, 3 / 12, 4 / 13]) and decays[-4:] == [0.5] * 4
    else:
        assert decays == [0.5] * 11
    got = ema.module.state_dict()
    for k, seq in seqs.items():
        np.testing.assert_allclose(got[k].double().numpy(), _closed_form(seq, decays), atol=1e-6)
    assert int(got["1.num_batches_tracked"]) == 110  # integer buffers follow the model
    assert ema.updates == 12


def test_constant_decay_matches_geometric_weights():
    # without warm-up: e_n = d^n w_0 + sum_{k>=1} (1-d) d^(n-k) w_k
    model = _model()
    ema = WeightEMA(model, 0.75, warmup=False)
    ws = []
    for t in range(6):
        _set(model, t)
        ema.update(model)
        ws.append(model[0].weight.detach().double().numpy().copy())
    d, n = 0.75, 5
    want = d ** n * ws[0] + sum((1 - d) * d ** (n - k) * ws[k] for k in range(1, n + 1))
    np.testing.assert_allclose(ema.module[0].weight.detach().double().numpy(), want, atol=1e-6)


def test_state_dict_round_trip_continues_exactly():
    a_model, b_model = _model(), _model()
    a = WeightEMA(a_model, 0.99)
    for t in range(5):
        _set(a_model, t)
        a.update(a_model)
    b = WeightEMA(b_model, 0.99)
    b.load_state_dict(a.state_dict())
    for t in range(5, 9):
        _set(a_model, t)
        a.update(a_model)
        b.update(a_model)
    for k, v in a.module.state_dict().items():
        assert torch.equal(v, b.module.state_dict()[k]), k
    assert a.updates == b.updates == 9


@pytest.mark.parametrize("bad", [1.0, -0.5, 1.5])
def test_bad_decay_names_the_flag(bad):
    with pytest.raises(DataError, match="--ema"):
        build_ema(_model(), bad)
    assert build_ema(_model(), None) is None and build_ema(_model(), 0) is None
