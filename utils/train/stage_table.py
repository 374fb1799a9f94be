"""The stage plan as a text table for the log: one row per stage, its schedule in words."""


def _fmt(x):
    return f"{x:.3g}"


def _sched_text(s):
    """A short description of the stage's lr schedule, e.g. 'step x0.1 every 2ep'."""
    if s.sched == "step":
        text = f"step x{_fmt(s.gamma)} every {_fmt(s.step * s.epochs)}ep"
    elif s.sched == "multistep":
        text = f"multistep x{_fmt(s.gamma)} at {'/'.join(_fmt(m * s.epochs) for m in s.milestones)}ep"
    elif s.sched == "cosine":
        text = f"cosine to {_fmt(s.min_lr)}"
    elif s.sched == "onecycle":
        text = f"onecycle rise {_fmt(s.pct_start)}"
    elif s.sched == "plateau":
        text = f"plateau x{_fmt(s.factor)} after {s.patience}ep, max {s.max_drops}"
    else:
        text = "const"
    if s.warmup and s.sched != "onecycle":
        text += f" +warmup {_fmt(s.warmup)}ep"
    return text


def describe_stages(stages):
    """An aligned text table of the plan (one row per stage) for the log."""
    head = ["#", "name", "epochs", "size", "bs", "train", "opt", "lr", "lr_mult", "wd", "drop", "schedule"]
    rows = []
    for i, s in enumerate(stages, 1):
        opt = s.opt + (f" m{_fmt(s.momentum)}" if s.opt == "sgd" and s.momentum else "") + \
            (" nesterov" if s.opt == "sgd" and s.nesterov else "")
        bs = f"{s.bs}x{s.accum}" if s.accum > 1 else str(s.bs)  # micro-batch x accumulation
        rows.append([str(i), s.name or "-", str(s.epochs), str(s.size), bs, s.train, opt,
                     _fmt(s.lr), _fmt(s.lr_mult), _fmt(s.wd),
                     "-" if s.drop_rate is None else _fmt(s.drop_rate), _sched_text(s)])
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in [head, *rows])
