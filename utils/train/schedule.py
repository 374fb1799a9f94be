"""Optimizer and learning-rate schedule of one Stage.

Every schedule is a multiplier on each param group's base lr, a closed-form function of
(stage, optimizer steps taken, validation F2 history) applied through torch's LambdaLR.
Because nothing else feeds it, restoring the step count and the F2 history restores the
exact lr sequence after a resume, and the ratios between layer groups (discriminative
lrs) never change. Two torch classes are not used on purpose: OneCycleLR divides by
zero when pct_start * total_steps is 1 (short stages, tiny test runs) and cannot end at
a given min_lr; ReduceLROnPlateau edits the lrs in place, which a LambdaLR in the same
optimizer would overwrite, and has no cap on the number of drops.
"""
import math

from torch.optim.lr_scheduler import LambdaLR

from utils.common.errors import DataError
from utils.train.optimizers import create_optimizer
from utils.train.stage import SCHEDULES

ONECYCLE_DIV = 25.0          # OneCycleLR's div_factor: start at lr/25
ONECYCLE_FINAL_DIV = 1e4     # OneCycleLR's final_div_factor: end at lr/25/1e4 when min_lr is 0


def group_lrs(stage, n_groups):
    """Discriminative lrs for `n_groups` layer groups ordered from earliest to head.

    The head (last) gets stage.lr; the group k places before it gets lr * lr_mult**k.
    """
    return [stage.lr * stage.lr_mult ** (n_groups - 1 - i) for i in range(n_groups)]


def build_optimizer(stage, param_groups):
    """The optimizer named by `stage` over `param_groups` (dicts with 'params', maybe 'lr',
    'weight_decay', 'name', ... ordered from earliest layer group to the head).

    A group's own 'lr' is kept; when no group has one, group_lrs(stage, n) applies
    stage.lr_mult by position. Weight decay is stage.wd unless the group sets 0 (no decay
    on norms and biases). sgd: momentum, nesterov; adam/adamw: betas=(momentum, 0.999);
    other names and stage.opt_args: utils/train/optimizers.py. Each group also records its
    'base_lr', which the schedule scales.
    Raises DataError for an unknown optimizer name or bad options.
    """
    groups = [dict(g) for g in param_groups]
    if not groups:
        raise ValueError("no parameter groups to optimize")
    if not any("lr" in g for g in groups):
        for g, lr in zip(groups, group_lrs(stage, len(groups))):
            g["lr"] = lr
    for g in groups:
        g.setdefault("lr", stage.lr)
        g["base_lr"] = g["lr"]
        g["weight_decay"] = 0.0 if g.get("weight_decay") == 0 else stage.wd
    return create_optimizer(stage, groups)


def _cos(start, end, t):
    """Cosine interpolation from start (t=0) to end (t=1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def plateau_drops(history, patience, max_drops):
    """Number of lr drops after these validation F2 values (mode max).

    A drop happens once `patience` epochs in a row have not beaten the best F2 so far;
    the count of bad epochs then restarts; at most `max_drops` drops.
    """
    best, bad, drops = -math.inf, 0, 0
    for f in history:
        if f > best:
            best, bad = f, 0
            continue
        bad += 1
        if bad >= patience and drops < max_drops:
            drops, bad = drops + 1, 0
    return drops


class LrSchedule:
    """The lr of every param group at every optimizer step of one stage.

    step_batch() after each optimizer step; step_epoch(val_f2) after each epoch's
    validation; `lr` is the head group's current lr. state_dict()/load_state_dict()
    restore the exact position (load the optimizer's state before or after, either works).
    """

    def __init__(self, stage, optimizer, steps_per_epoch):
        if stage.sched not in SCHEDULES:
            raise DataError(f"unknown schedule {stage.sched!r} (valid: {', '.join(SCHEDULES)})")
        self.stage, self.optimizer = stage, optimizer
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.total_steps = stage.epochs * self.steps_per_epoch
        self.history = []          # validation F2 after each epoch of this stage
        self._drops = 0
        names = [g.get("name") for g in optimizer.param_groups]
        self._head = names.index("head") if "head" in names else len(names) - 1
        for g in optimizer.param_groups:  # base lrs never depend on an optimizer state loaded first
            g["initial_lr"] = g.get("base_lr", g["lr"])
        self._torch = LambdaLR(optimizer, lambda s: self.multiplier(s))

    @property
    def steps(self):
        """Optimizer steps taken in this stage."""
        return self._torch.last_epoch

    @property
    def lr(self):
        """The head group's current lr (the one the next step uses)."""
        return self.optimizer.param_groups[self._head]["lr"]

    def multiplier(self, s):
        """The factor on every group's base lr for the step after `s` steps (pure function)."""
        st, spe, total = self.stage, self.steps_per_epoch, self.total_steps
        s = min(s, total)  # a step past the plan keeps the final lr instead of cycling back up
        floor = min(1.0, st.min_lr / st.lr)
        if st.sched == "onecycle":
            rise = min(round(st.pct_start * total), total - 1)
            if s < rise:
                return _cos(1.0 / ONECYCLE_DIV, 1.0, s / rise)
            end = floor if st.min_lr > 0 else 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
            return _cos(1.0, end, (s - rise) / (total - rise))
        warm_steps = min(round(st.warmup * spe), total)
        warm = min(1.0, (s + 1) / warm_steps) if warm_steps else 1.0
        if st.sched == "cosine":
            t = (s - warm_steps) / (total - warm_steps) if total > warm_steps else 1.0
            return warm * _cos(1.0, floor, t)
        if st.sched == "step":
            decay = st.gamma ** (s // max(1, round(st.step * st.epochs * spe)))
        elif st.sched == "multistep":
            decay = st.gamma ** sum(s >= round(m * st.epochs * spe) for m in st.milestones)
        elif st.sched == "plateau":
            decay = st.factor ** self._drops
        else:
            decay = 1.0
        return warm * max(decay, floor)

    def _apply(self):
        """Set every group's lr for the current step (after a plateau drop or a load)."""
        lrs = [base * self.multiplier(self.steps) for base in self._torch.base_lrs]
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self._torch._last_lr = lrs  # what get_last_lr() reports

    def step_batch(self):
        """Advance one optimizer step."""
        self._torch.step()

    def step_epoch(self, val_f2=None):
        """Record the epoch's validation F2 (None: no validation); plateau may drop the lr."""
        if val_f2 is None:
            return
        self.history.append(float(val_f2))
        if self.stage.sched == "plateau":
            drops = plateau_drops(self.history, self.stage.patience, self.stage.max_drops)
            if drops != self._drops:
                self._drops = drops
                self._apply()

    def state_dict(self):
        """Everything the lr sequence depends on besides the stage: steps and F2 history."""
        return {"sched": self.stage.sched, "steps_per_epoch": self.steps_per_epoch,
                "history": list(self.history), "torch": self._torch.state_dict()}

    def load_state_dict(self, state):
        """Restore a position saved by state_dict(); DataError if the stage's steps differ."""
        if state["sched"] != self.stage.sched or state["steps_per_epoch"] != self.steps_per_epoch:
            raise DataError(f"the saved schedule ({state['sched']}, {state['steps_per_epoch']} steps "
                            f"per epoch) does not match this stage ({self.stage.sched}, "
                            f"{self.steps_per_epoch} steps per epoch): the batch size or the data changed")
        self._torch.load_state_dict(state["torch"])
        self.history = list(state["history"])
        self._drops = plateau_drops(self.history, self.stage.patience, self.stage.max_drops) \
            if self.stage.sched == "plateau" else 0
        self._apply()


def build_scheduler(stage, optimizer, steps_per_epoch):
    """The LrSchedule of `stage` over `optimizer` (from build_optimizer) for an epoch of
    `steps_per_epoch` optimizer steps."""
    return LrSchedule(stage, optimizer, steps_per_epoch)
