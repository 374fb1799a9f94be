"""A diverged training stops at the first NaN or infinite loss, names where, marks the run, and
never writes or reads weights that are not finite."""
import json

import numpy as np
import pytest
import torch

from utils.common.errors import DataError, NonFinite, RunFailed
from utils.models.checkpoint import load_checkpoint, save_checkpoint
from utils.runs.run_status import DIVERGED_FILE, diverged_problem, run_state
from utils.train.divergence import Diverged, finite_loss, stop_on_divergence, where
from utils.train.loop import StageParts, train_one_epoch
from utils.train.run_state import new_epoch_stats, new_state


class FakeLoss(torch.nn.Module):
    """Losses in turn (on the logits' graph, so backward runs)."""

    def __init__(self, losses):
        super().__init__()
        self.losses = iter(losses)

    def forward(self, logits, y):
        return logits.sum() * 0 + next(self.losses)


def fake_parts(losses, lr=0.5):
    """StageParts of a tiny linear model whose loss function returns `losses` in turn; its scheduler's lr."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 1))
    scheduler = type("S", (), {"lr": lr, "step_batch": lambda self: None})()
    return StageParts(model, FakeLoss(losses), torch.optim.SGD(model.parameters(), lr=lr), scheduler,
                      torch.device("cpu"), [0.5] * 3, [0.25] * 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_the_first_non_finite_training_loss_stops_the_epoch_at_its_step(bad):
    batches = [(torch.zeros(2, 1, 1, 3, dtype=torch.uint8), torch.zeros(2, 1))] * 4
    seen = []
    with pytest.raises(NonFinite) as e:
        train_one_epoch(fake_parts([0.7, 2.6e16, bad, 0.1]), batches, 0, 0, 4, new_epoch_stats(8, 0.5), seen.append)
    assert e.value.step == 3 and e.value.lr == 0.5 and "training loss" in e.value.what
    assert seen == [1, 2]  # the step's checkpoint hook never ran for the bad step


def test_divergence_is_one_line_with_the_position_lr_and_what_to_try(tmp_path):
    state = {**new_state(), "stage": 1, "global_epoch": 4, "step": 6, "stats": {"lr": 3e-2}}
    with pytest.raises(Diverged) as e, stop_on_divergence(tmp_path, state, torch.float16):
        raise NonFinite("the training loss is nan", step=7, lr=1e8)
    msg = str(e.value)
    assert isinstance(e.value, RunFailed) and "\n" not in msg
    for needle in ("stage 2, epoch 5, step 7", "lr 1e+08", "training loss is nan", "--lr 1e+07", "warmup=1",
                   "--amp off"):
        assert needle in msg, msg
    record = json.loads((tmp_path / DIVERGED_FILE).read_text())
    assert record["where"] == "stage 2, epoch 5, step 7" and record["lr"] == 1e8
    assert run_state(tmp_path) == "diverged" and "diverged at stage 2, epoch 5" in diverged_problem(tmp_path)
    # at an epoch end the position's own step and the epoch's lr are used; full precision: no --amp advice
    with pytest.raises(Diverged) as e, stop_on_divergence(tmp_path, state):
        finite_loss(float("nan"))
    assert "stage 2, epoch 5, step 6 (lr 0.03): the validation loss is nan" in str(e.value)
    assert "--amp" not in str(e.value)
    with stop_on_divergence(tmp_path, state):  # a resumed run that gets through: the mark goes
        pass
    assert not (tmp_path / DIVERGED_FILE).exists() and diverged_problem(tmp_path) is None
    assert where(state, 9) == "stage 2, epoch 5, step 9"


def test_non_finite_weights_are_never_written_and_never_loaded(tmp_path):
    good = {"model": {"w": torch.ones(3), "n": torch.tensor(2)}, "meta": {k: 1 for k in
                                                                         ("arch", "labels", "size", "mean", "std")}}
    path = tmp_path / "best.pt"
    save_checkpoint(path, good)
    before = path.read_bytes()
    bad = {**good, "model": {"w": torch.tensor([1.0, np.nan, 2.0]), "n": torch.tensor(2)}}
    with pytest.raises(NonFinite, match=r"\(w\); best.pt was not written"):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]  # no temp file either
    torch.save(bad, tmp_path / "old.pt")  # written before the check existed
    with pytest.raises(DataError, match=r"old.pt: its weights hold NaN or infinite values \(1 tensor\(s\): w\): "
                                        r"the run diverged"):
        load_checkpoint(tmp_path / "old.pt")
