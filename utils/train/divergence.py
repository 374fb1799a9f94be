"""A training that diverges (its loss or weights no longer finite) stops at once, in one line.

With too high a learning rate the loss grows to 1e16, then NaN; every later number is
meaningless (an F2 of NaN probabilities, a best.pt of NaN weights). The first non-finite value
raises NonFinite (utils/common/errors.py): the loss of every step (utils/train/loop.py), the
validation loss of every epoch (`finite_loss`), the weights of every checkpoint about to be
written (utils/models/checkpoint.py save_checkpoint, which then writes nothing). `stop_on_divergence`
turns it into Diverged, a RunFailed (exit code 1) whose one line names the stage, epoch and step,
the lr and what to try, and marks the run (diverged.json, utils/runs/run_status.py), which
predict.py, stack.py, scripts/cv.sh and tools/submit.py refuse, naming it. last.pt and best.pt
keep the last finite weights, from which --resume (say with --amp off) may try again.
"""
import contextlib
import math

from utils.common import distributed as dist
from utils.common.errors import NonFinite, RunFailed
from utils.runs.run_status import clear_diverged, write_diverged


class Diverged(RunFailed):
    """The run's loss or weights are no longer finite (exit code 1).

    what: what was found ('the training loss is nan'); where: 'stage 1, epoch 2, step 14';
    lr: the learning rate then (None: unknown); amp: the autocast dtype in use (None: full precision).
    """

    def __init__(self, what, where, lr=None, amp=None):
        self.what, self.where, self.lr = what, where, lr
        rate = f" (lr {lr:.3g})" if lr is not None and math.isfinite(lr) else ""
        super().__init__(f"training diverged at {where}{rate}: {what}; no checkpoint of these weights was "
                         f"written. {advice(lr, amp)}")

    def record(self):
        """The dict the run's diverged.json holds: what, where, lr, message."""
        return {"what": self.what, "where": self.where, "lr": self.lr, "message": str(self)}


def advice(lr, amp=None):
    """What to try against a run that diverged at learning rate `lr` under autocast dtype `amp`."""
    tips = [f"a lower learning rate (--lr {lr / 10:.3g})" if lr else "a lower learning rate (--lr)",
            "a warm-up (stage key warmup=1)"]
    if amp is not None:
        tips.append(f"full precision (--amp off; this run used {str(amp).replace('torch.', '')})")
    return "Try " + ", ".join(tips[:-1]) + " or " + tips[-1] + " in a new run (another --name)."


def where(state, step=None):
    """'stage S, epoch E, step N' of a trainer position dict (utils.train.run_state.new_state):
    1-based stage and run epoch; step: default the steps done in the epoch."""
    step = state["step"] if step is None else step
    return f"stage {state['stage'] + 1}, epoch {state['global_epoch'] + 1}, step {step}"


def finite_loss(value, what="validation loss"):
    """`value` (a float) when finite, else NonFinite naming `what`."""
    if not math.isfinite(value):
        raise NonFinite(f"the {what} is {value:g}")
    return value


@contextlib.contextmanager
def stop_on_divergence(run_dir, state, amp=None):
    """Around a run's training: a NonFinite inside becomes Diverged at the position in `state`
    (the trainer's position dict, read when it happens) and rank 0 writes run_dir/diverged.json;
    a training that ends normally removes an earlier mark (a resumed run that got through)."""
    try:
        yield
    except NonFinite as e:
        lr = e.lr if e.lr is not None else (state.get("stats") or {}).get("lr")
        diverged = Diverged(e.what, where(state, e.step), lr, amp)
        if dist.is_main():
            write_diverged(run_dir, diverged.record())
        raise diverged from None
    if dist.is_main():
        clear_diverged(run_dir)

