"""Gradient accumulation (utils/train/accumulation.py through utils/train/loop.py train_one_epoch) against one
large batch."""
import pytest
import torch
from torch import nn

from utils.train.accumulation import Accumulation
from utils.train.loop import StageParts, train_one_epoch
from utils.train.run_state import new_epoch_stats
from utils.train.schedule import build_optimizer, build_scheduler
from utils.train.stage import Stage

S = 8  # image side


def _model():
    torch.manual_seed(0)  # BatchNorm-free: a micro-batch's statistics do not enter the result
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * S * S, 6), nn.ReLU(), nn.Linear(6, 3))


def _data(n):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, S, S, 3), generator=g, dtype=torch.uint8), \
        (torch.rand(n, 3, generator=g) < 0.5).float()


def _parts(model, steps_per_epoch, accumulation=None, opt="sgd"):
    stage = Stage(epochs=1, lr=0.05, opt=opt, momentum=0.9, wd=0.01, sched="const")
    optimizer = build_optimizer(stage, [{"params": list(model.parameters())}])
    scheduler = build_scheduler(stage, optimizer, steps_per_epoch)
    return StageParts(model, nn.BCEWithLogitsLoss(), optimizer, scheduler, torch.device("cpu"),
                      [0.5] * 3, [0.25] * 3, accumulation=accumulation)


def _epoch(parts, x, y, bs):
    """One epoch over x, y in batches of bs."""
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]
    train_one_epoch(parts, batches, 0, 0, len(batches), new_epoch_stats(len(x), 0.05))


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
@pytest.mark.parametrize("n, bs, accum", [(8, 2, 4), (11, 2, 4), (12, 3, 2), (7, 2, 3)])
def test_accumulated_micro_batches_equal_one_large_batch(n, bs, accum, opt):
    """Micro-batches of bs, accum per step (the epoch's last group maybe partial, its last
    micro-batch maybe smaller) give the parameters of plain steps on the groups' images."""
    x, y = _data(n)
    steps = -(-n // bs)
    acc = Accumulation(accum, steps, bs, n)
    a, b = _model(), _model()
    parts_a = _parts(a, acc.updates_per_epoch, acc, opt)
    _epoch(parts_a, x, y, bs)
    parts_b = _parts(b, acc.updates_per_epoch, None, opt)
    _epoch(parts_b, x, y, accum * bs)
    assert parts_a.scheduler.steps == parts_b.scheduler.steps == -(-steps // accum)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), _model().parameters()))


def test_group_bookkeeping():
    acc = Accumulation(accum=4, steps=6, bs=2, n_items=11)  # micro-batches of 2,2,2,2,2,1
    assert acc.updates_per_epoch == 2
    assert [acc.opens_group(i) for i in range(6)] == [True, False, False, False, True, False]
    assert [acc.closes_group(i) for i in range(6)] == [False, False, False, True, False, True]
    assert [acc.group_items(i) for i in range(6)] == [8, 8, 8, 8, 3, 3]
    assert acc.loss_weight(5, 1) == pytest.approx(1 / 3)
    assert [acc.boundary(d) for d in range(7)] == [True, False, False, False, True, False, True]
    assert [acc.updates_done(d) for d in range(7)] == [0, 0, 0, 0, 1, 1, 2]
    drop = Accumulation(accum=3, steps=5, bs=4, n_items=23)  # drop_last: 5 full micro-batches
    assert [drop.group_items(i) for i in range(5)] == [12, 12, 12, 8, 8]
