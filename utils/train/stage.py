"""One stage of a training run (`Stage`), its keys, how each key is read and checked, and
the --stages string.

A key a stage leaves out keeps the previous stage's value (the first stage starts from
`Stage()`'s defaults, or the caller's `defaults`); only `name` is not inherited.

Epoch-valued schedule keys (`step`, `milestones`) accept a fraction of the stage's epochs
(a value below 1: `milestones=0.5/0.75`) or epochs from the stage's start (1 or more:
`milestones=30/60` in a 90-epoch stage). Both are stored as fractions, so a plan keeps
its shape when --epochs rescales it, and an inherited value means the same part of the
next stage.

Optimizer options are keys `opt.KEY=value` (`opt=lion,opt.betas=0.9/0.99`), gathered into
the stage's `opt_args`; a stage that names another optimizer starts with none.
"""
import dataclasses
import difflib
from dataclasses import dataclass

from utils.common.errors import DataError, report_problems
from utils.common.options import as_bool, as_float, as_int, as_str, parse_item, parse_value, split_items, split_options
from utils.train.optimizers import OWN, optimizer_names, optimizer_problems, option_value

OPTIMIZERS = OWN  # built from torch.optim; every name: utils.train.optimizers.optimizer_names()
SCHEDULES = ("const", "step", "multistep", "cosine", "onecycle", "plateau")
BN_MODES = ("train", "frozen")


@dataclass
class Stage:
    """One stage of a run.

    epochs: epochs in this stage; size: image side in px; bs: global batch size.
    lr: the head's peak learning rate; earlier layer groups get lr * lr_mult**k (k = 1 for
      the group just before the head, 2 for the one before that, ...).
    opt: 'sgd' | 'adam' | 'adamw' (torch.optim), 'schedulefree_adamw', or any name of
      timm.optim.list_optimizers() (utils/train/optimizers.py); momentum: SGD momentum, or
      Adam's beta1 (also schedulefree_adamw's; timm's momentum optimizers take it too);
      nesterov: Nesterov momentum (SGD only; ignored by adam/adamw).
    opt_args: the optimizer's own options ({'betas': (0.9, 0.99)}), typed `opt.betas=0.9/0.99`.
    layer_decay: per-block lr decay D: the head at lr, each block k places before it at
      lr * D**k (blocks: timm's fine group_matcher, else module order); replaces lr_mult's
      four coarse groups while set (None: off).
    wd: weight decay (L2 for sgd/adam, decoupled for adamw).
    sched: lr shape within the stage, per optimizer step:
      'const'; 'step' (x gamma every `step` epochs); 'multistep' (x gamma at each of
      `milestones`); 'cosine' (to min_lr at the end of the stage); 'onecycle' (cosine rise
      from lr/25 over pct_start of the stage, then cosine fall to min_lr, or lr/25e4 when
      min_lr is 0); 'plateau' (x factor after `patience` epochs without a better
      validation F2, at most max_drops times).
    warmup: epochs of linear warm-up in front of every schedule but onecycle (which rises
      over pct_start instead).
    step, milestones: fractions of the stage's epochs (see the module docstring);
      step=None means "not set" (sched=step then refuses the stage).
    min_lr: floor for the head's lr (the other groups keep their ratio to it).
    train: 'head', 'all', or 'N' (the last N layer groups plus the head).
    drop_rate: dropout before the classifier (None: the model's default).
    accum: micro-batches of `bs` per optimizer step (gradient accumulation): the effective
      batch is accum x bs, and lr and schedule count optimizer steps (utils/train/accumulation.py).
    bn: 'train' (BatchNorm running statistics update in every trainable layer, as usual) or
      'frozen' (every BatchNorm layer keeps the statistics it started the stage with, the
      pretrained ones, while its affine weights still train: the usual fix for small
      batches, e.g. Detectron's FrozenBatchNorm2d; He et al. 2019 "Rethinking ImageNet
      Pre-training", section 3). Layers whose weights are frozen always keep theirs.
    name: a label for logs; not inherited from the previous stage.
    """

    epochs: int = 1
    size: int = 224
    bs: int = 32
    lr: float = 1e-3
    opt: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = False
    wd: float = 0.01
    sched: str = "cosine"
    train: str = "all"
    lr_mult: float = 1.0
    layer_decay: float | None = None
    opt_args: dict = dataclasses.field(default_factory=dict)
    warmup: float = 0.0
    pct_start: float = 0.3
    step: float | None = None
    gamma: float = 0.1
    milestones: tuple = (0.5, 0.75)
    patience: int = 2
    factor: float = 0.1
    max_drops: int = 3
    min_lr: float = 0.0
    drop_rate: float | None = None
    accum: int = 1
    bn: str = "train"
    name: str = ""

    def to_dict(self):
        """JSON-friendly dict of every field (milestones as a list; accum only when > 1, bn
        only when not 'train', layer_decay only when set, opt_args only when not empty)."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["opt_args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.opt_args.items()}
        for key, unset in (("layer_decay", None), ("opt_args", {})):
            if d[key] == unset:  # left out unset, so plans stored before the key existed compare equal
                del d[key]
        if d["accum"] == 1:  # left out at its default, so plans stored before it existed compare equal
            del d["accum"]
        if d["bn"] == "train":  # likewise
            del d["bn"]
        return d

    @classmethod
    def from_dict(cls, d, where="a stage dict"):
        """Build and validate one Stage from a dict of field -> value (missing keys: defaults).

        Values may be native (JSON/YAML) or strings as typed in --stages. Raises
        DataError naming `where`, the field, the value and what is allowed.
        """
        return build_stages([d], where, inherit=False)[0]


# ----- fields: how each is read and checked ---------------------------------------------

def _int(v, what):
    return as_int(v, what)


def _float(v, what):
    return as_float(v, what)


def _opt_float(v, what):
    return as_float("none" if isinstance(v, str) and not v.strip() else v, what, optional=True)


def _bool(v, what):
    return as_bool(v, what)


def _choice(choices):
    return lambda v, what: as_str(v, what, choices)


def _train(v, what):
    s = str(v).strip().lower()
    if s in ("head", "all"):
        return s
    n = parse_value(v)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"{what} is not 'head', 'all' or a number of layer groups >= 1")
    return str(n)


def _milestones(v, what):
    if isinstance(v, str):
        parts = [p for p in v.replace(" ", "").split("/") if p]
    elif isinstance(v, (list, tuple)):
        parts = list(v)
    else:
        parts = [v]
    try:
        return tuple(as_float(p, what) for p in parts)
    except DataError:
        raise DataError(f"{what} is not a '/'-separated list of numbers (e.g. 0.5/0.75)") from None


def _opt_args(v, what):
    if not isinstance(v, dict):
        raise DataError(f"{what} is not a mapping of option: value (in --stages write opt.KEY=value)")
    return {str(k).strip().lower(): option_value(x) for k, x in v.items()}


def _opt_name(v, what):
    return as_str(v, what, optimizer_names())


def _name(v, what):
    return "" if v is None else str(v).strip()


# field -> converter(value, what): the value as typed (parse_value's vocabulary) or native (JSON/YAML)
_CONVERT = {
    "epochs": _int, "size": _int, "bs": _int, "lr": _float,
    "opt": _opt_name, "momentum": _float, "nesterov": _bool, "wd": _float,
    "sched": _choice(SCHEDULES), "train": _train, "lr_mult": _float,
    "layer_decay": _opt_float, "opt_args": _opt_args, "warmup": _float,
    "pct_start": _float, "step": _opt_float, "gamma": _float, "milestones": _milestones,
    "patience": _int, "factor": _float, "max_drops": _int, "min_lr": _float,
    "drop_rate": _opt_float, "accum": _int, "bn": _choice(BN_MODES), "name": _name,
}
KEYS = tuple(f.name for f in dataclasses.fields(Stage))
assert set(KEYS) == set(_CONVERT)

# (field, test, what the value must be); checked after conversion
_RANGES = [
    ("epochs", lambda s: s.epochs >= 1, "must be >= 1"),
    ("size", lambda s: s.size >= 8, "must be >= 8 px"),
    ("bs", lambda s: s.bs >= 1, "must be >= 1"),
    ("lr", lambda s: s.lr > 0, "must be > 0"),
    ("momentum", lambda s: 0 <= s.momentum < 1, "must be in [0, 1)"),
    ("wd", lambda s: s.wd >= 0, "must be >= 0"),
    ("lr_mult", lambda s: s.lr_mult > 0, "must be > 0"),
    ("layer_decay", lambda s: s.layer_decay is None or 0 < s.layer_decay <= 1, "must be in (0, 1] or none"),
    ("warmup", lambda s: 0 <= s.warmup <= s.epochs, "must be in [0, epochs]"),
    ("pct_start", lambda s: 0 < s.pct_start < 1, "must be in (0, 1)"),
    ("gamma", lambda s: 0 < s.gamma <= 1, "must be in (0, 1]"),
    ("patience", lambda s: s.patience >= 1, "must be >= 1"),
    ("factor", lambda s: 0 < s.factor < 1, "must be in (0, 1)"),
    ("max_drops", lambda s: s.max_drops >= 0, "must be >= 0"),
    ("min_lr", lambda s: s.min_lr >= 0, "must be >= 0"),
    ("drop_rate", lambda s: s.drop_rate is None or 0 <= s.drop_rate < 1, "must be in [0, 1) or none"),
    ("accum", lambda s: s.accum >= 1, "must be >= 1"),
    ("nesterov", lambda s: not (s.nesterov and s.opt == "sgd" and s.momentum == 0),
     "needs momentum > 0 with sgd"),
]


def _to_fractions(values, epochs, key):
    """Epoch-valued entries (>= 1) become fractions of `epochs`; fractions stay."""
    out = []
    for v in values:
        if v <= 0:
            raise ValueError(f"{key}={v:g} must be > 0")
        if v >= 1:
            if v >= epochs:
                raise ValueError(f"{key}={v:g} is not inside the stage's {epochs} epoch(s) "
                                 f"(give epochs from the stage's start, or a fraction < 1)")
            v = v / epochs
        out.append(v)
    return out


def _check(stage):
    """Range checks; epoch-valued step/milestones become fractions. Returns (stage, problems)."""
    problems = [f"{k}={getattr(stage, k)!r} {msg}" for k, ok, msg in _RANGES if not ok(stage)]
    problems += optimizer_problems(stage.opt, stage.opt_args)
    try:
        stage.milestones = tuple(sorted(_to_fractions(stage.milestones, stage.epochs, "milestones")))
        if stage.step is not None:
            stage.step = _to_fractions([stage.step], stage.epochs, "step")[0]
    except ValueError as e:
        problems.append(str(e))
    if stage.sched == "step" and stage.step is None:
        problems.append("sched=step needs step=<epochs, or a fraction of the stage>")
    if stage.sched == "multistep" and not stage.milestones:
        problems.append("sched=multistep needs milestones=a/b/... (epochs, or fractions of the stage)")
    return stage, problems


def _unknown_key(key):
    close = difflib.get_close_matches(key, KEYS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key {key!r} ({hint}valid: {', '.join(KEYS)})"


def _gather_opt_args(raw, values, tag, problems):
    """`raw` with its `opt.KEY` keys gathered into `opt_args`; `values` (the inherited ones)
    lose their opt_args when the stage names another optimizer."""
    if not isinstance(raw, dict):
        return raw
    raw = {str(k).strip().lower(): v for k, v in raw.items()}
    dotted = {k[4:]: raw.pop(k) for k in list(raw) if k.startswith("opt.")}
    if "opt" in raw and str(raw["opt"]).strip().lower() != values["opt"]:
        values["opt_args"] = {}
    if dotted:
        if "opt_args" in raw:
            problems.append(f"{tag}: give the optimizer's options as opt_args or as opt.KEY=, not both")
        raw["opt_args"] = {**values["opt_args"], **dotted}
    return raw


def build_stages(raw_stages, where, defaults=None, inherit=True):
    """Turn dicts of raw values into validated Stages; all problems in one DataError.

    With inherit, a key a stage leaves out keeps the previous stage's value (name excepted);
    the first stage starts from Stage() updated with `defaults`.
    """
    problems = []
    base = Stage()
    for k, v in (defaults or {}).items():
        if k not in _CONVERT:
            raise ValueError(f"unknown Stage field in defaults: {k!r}")
        setattr(base, k, _CONVERT[k](v, f"{k}={v!r}"))
    stages, prev = [], base
    for i, raw in enumerate(raw_stages, 1):
        tag = f"stage {i}"
        if not isinstance(raw, dict):
            problems.append(f"{tag}: expected a mapping of key: value, got {type(raw).__name__}")
            continue
        values = dataclasses.asdict(prev if inherit else base)
        values["name"] = base.name
        raw = _gather_opt_args(raw, values, tag, problems)
        for key, v in raw.items():
            key = str(key).strip().lower()
            if key not in _CONVERT:
                problems.append(f"{tag}: {_unknown_key(key)}")
                continue
            try:
                values[key] = _CONVERT[key](v, f"{key}={v!r}")
            except DataError as e:
                problems.append(f"{tag}: {e}")
        values["milestones"] = tuple(values["milestones"])
        stage, bad = _check(Stage(**values))
        problems += [f"{tag}: {p}" for p in bad]
        stages.append(stage)
        prev = stage
    if not raw_stages:
        problems.append("no stages")
    report_problems(f"bad stage plan in {where}", problems)
    return stages


# ----- the --stages string ------------------------------------------------------------

def split_spec(spec):
    """'a=1,b=2;c=3' -> ([{'a': '1', 'b': '2'}, {'c': '3'}], problems): the option language's
    items without names, values kept as typed (each key's converter reads them)."""
    raw, problems = [], []
    for i, part in enumerate(split_items(spec), 1):
        try:
            if ":" in part:  # a stage has no name: only its key=value options
                raise DataError(f"{part!r} is not key=value,key=value")
            parse_item(part, "--stages")
            raw.append(dict(_raw_options(part)))
        except DataError as e:
            problems.append(f"stage {i}: {e}")
    if not raw and not problems:
        problems.append("empty (write key=value,... and ';' between stages)")
    return raw, problems


def _raw_options(part):
    """(key, value as typed) of one stage; parse_item has checked the syntax."""
    for item in split_options(part):
        key, _, value = item.partition("=")
        yield key.strip().lower(), value.strip()


def parse_stages(spec, defaults=None, where="--stages"):
    """Parse a --stages string into a list of validated Stages.

    spec: "key=value,...;key=value,..." (README "Option strings"); keys are Stage's fields,
    `milestones` as "0.5/0.75". A key left out inherits from the previous stage.
    defaults: optional {field: value} the first stage starts from.
    Raises DataError naming the stage (1-based), the field, the bad value and the choices.
    """
    raw, problems = split_spec(spec)
    report_problems(f"bad stage plan in {where}", problems)
    return build_stages(raw, where, defaults)
