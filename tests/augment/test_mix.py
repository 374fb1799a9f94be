"""Mixup and CutMix of batches with multi-hot targets (utils/augment/mix.py), and losses on soft targets."""
import numpy as np
import pytest
import torch

from utils.common.errors import DataError
from utils.train.losses import build_loss
from utils.augment.mix import BatchMix, MixSpec, cutmix, cutmix_box, parse_mix

B, H, W = 6, 16, 12


def _batch():
    """Image i is the constant i + 1 and carries tag i alone (one-hot rows)."""
    x = torch.arange(1, B + 1, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, H, W).clone()
    return x, torch.eye(B)


@pytest.mark.parametrize("index", range(5))
def test_mixup_gives_convex_combinations_of_two_images(index):
    x, y = _batch()
    xm, ym = BatchMix(MixSpec(mixup=0.4), 10)(x, y, seed=3, epoch=1, index=index)
    assert torch.all(ym >= 0) and torch.allclose(ym.sum(1), torch.ones(B))
    assert torch.all((ym > 0).sum(1) <= 2)
    lams = set()
    for i in range(B):
        # the pixels are the same convex combination as the targets: sum_j y'_ij * (j + 1)
        want = float((ym[i] * torch.arange(1, B + 1)).sum())
        assert torch.allclose(xm[i], torch.full_like(xm[i], want), atol=1e-5)
        j = [k for k in range(B) if k != i and ym[i, k] > 0]
        if j:
            lams.add(round(float(ym[i, i]), 5))
    assert len(lams) <= 1  # one lambda per batch


@pytest.mark.parametrize("index", range(8))
def test_cutmix_lambda_equals_the_kept_area(index):
    x, y = _batch()
    xm, ym = BatchMix(MixSpec(cutmix=1.0), 10)(x, y, seed=0, epoch=2, index=index)
    for i in range(B):
        src = int(torch.argmax(ym[i] - 2 * torch.eye(B)[i]))  # the other image in the mix
        if ym[i, i] == 1:
            assert torch.equal(xm[i], x[i])
            continue
        pasted = float((xm[i] == src + 1).float().mean())
        assert ym[i, src] == pytest.approx(pasted, abs=1e-6)  # 1 - lam = pasted share
        assert ym[i, i] == pytest.approx(1 - pasted, abs=1e-6)
        assert torch.all((xm[i] == i + 1) | (xm[i] == src + 1))


def test_cutmix_box_clipped_and_lambda_corrected():
    rng = np.random.default_rng(0)
    x, y = _batch()
    perm = torch.roll(torch.arange(B), 1)
    for lam in (0.05, 0.3, 0.7, 0.99):
        box = cutmix_box(H, W, lam, rng)
        y0, y1, x0, x1 = box
        assert 0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W
        xm, ym, lam2 = cutmix(x, y, box, perm)
        assert lam2 == pytest.approx(1 - (y1 - y0) * (x1 - x0) / (H * W))
        assert float((xm[0] == x[perm[0]]).float().mean()) == pytest.approx(1 - lam2)


def test_same_seed_epoch_index_same_mix_and_off_epochs():
    x, y = _batch()
    mix = BatchMix(MixSpec(mixup=0.2, cutmix=1.0, switch=0.5, off_epochs=2), total_epochs=5)
    a = mix(x, y, 1, 0, 4)
    b = mix(x, y, 1, 0, 4)
    c = mix(x, y, 1, 0, 5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])
    for epoch in (3, 4):  # the last two epochs are left unmixed
        xo, yo = mix(x, y, 1, epoch, 4)
        assert xo is x and yo is y
    kinds = set()
    for index in range(40):  # both methods are drawn
        xm, ym = mix(x, y, 1, 0, index)
        kinds.add("mixup" if len(torch.unique(xm[0])) == 1 and ym[0, 0] < 1 else "cutmix")
    assert kinds == {"mixup", "cutmix"}


def test_p_leaves_some_batches_unmixed():
    x, y = _batch()
    mix = BatchMix(MixSpec(mixup=1.0, p=0.5), 10)
    mixed = [not torch.equal(mix(x, y, 0, 0, i)[1], y) for i in range(60)]
    assert 10 < sum(mixed) < 50


@pytest.mark.parametrize("text, msg", [
    ("mixup", "method:ALPHA"), ("mixup:0", "ALPHA > 0"), ("mixup:0.2;switch=0.3", "give both"),
    ("blend:1", "unknown method"), ("cutmix:1;off_epochs=-1", ">= 0"), ("mixup:1;q=2", "unknown option"),
    ("p=0.5", "name a method"), ("mixup:1;mixup:2", "twice"), ("mixup:alpha=1,beta=2", "one option"),
    # the former spelling, `,` between every item, is refused with the new form
    ("mixup:0.2,cutmix:1.0,switch=0.3", "write --mix 'mixup:0.2;cutmix:1.0;switch=0.3'"),
    ("mixup:0.2,p=0.5,off_epochs=2", "write --mix 'mixup:0.2;p=0.5,off_epochs=2'"),
])
def test_bad_mix_names_the_flag(text, msg):
    with pytest.raises(DataError, match=msg) as e:
        parse_mix(text)
    assert "--mix" in str(e.value)


def test_parse_mix():
    assert parse_mix(None) is None and parse_mix("none") is None
    assert parse_mix("mixup:0.2;cutmix:1.0;switch=0.3,off_epochs=2") == \
        MixSpec(mixup=0.2, cutmix=1.0, switch=0.3, p=1.0, off_epochs=2)
    assert parse_mix("cutmix:alpha=0.5;p=0.5") == MixSpec(cutmix=0.5, p=0.5)


@pytest.mark.parametrize("name", ["bce", "wbce"])
def test_bce_losses_are_linear_in_soft_targets(name):
    # a mixed target's BCE is the same mix of the two hard targets' BCE (BCE is linear in y)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 4, generator=g)
    y1, y2 = (torch.rand(8, 4, generator=g) < 0.4).float(), (torch.rand(8, 4, generator=g) < 0.4).float()
    loss, _ = build_loss(name, np.array([[1, 0, 1, 1], [0, 1, 0, 1]]))
    for lam in (0.0, 0.3, 0.8):
        soft = loss(logits, lam * y1 + (1 - lam) * y2)
        assert float(soft) == pytest.approx(lam * float(loss(logits, y1)) + (1 - lam) * float(loss(logits, y2)),
                                            rel=1e-5)


@pytest.mark.parametrize("name", ["focal", "asl"])
def test_focusing_losses_take_soft_targets(name):
    # focal and ASL interpolate their focusing weights with y (not linear in y like BCE):
    # finite values and gradients, of the order of the two hard targets' losses
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 4, generator=g, requires_grad=True)
    loss, _ = build_loss(name)
    hard = (torch.rand(8, 4, generator=g) < 0.4).float()
    soft = 0.7 * hard + 0.3 * hard.flip(0)
    value = loss(logits, soft)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    with torch.no_grad():
        ends = [float(loss(logits, t)) for t in (hard, hard.flip(0))]
        assert float(value) <= max(ends) * 1.5 + 1e-6 and float(value) > 0
