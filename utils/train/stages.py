"""Stage plans: what each part of a training run does (size, batch, optimizer, schedule).

A run is a list of `Stage`s. A plan comes from exactly one source:

    --recipe NAME     a named plan from the papers (RECIPES), a function of (epochs, size)
    --stages SPEC     `;`-separated stages of `,`-separated key=value, e.g.
                      "epochs=2,size=128,lr=1e-3,train=head;epochs=8,size=224,lr=3e-4,train=all"
    --config FILE     JSON or YAML: {"stages": [{...}, ...]} or a bare list of stage dicts
                      (a mapping may also hold a "recipe" name instead, or other settings)

Within --stages and a config file, a key a stage leaves out keeps the previous stage's
value (the first stage starts from `Stage()`'s defaults, or the caller's `defaults`);
only `name` is not inherited. Then the flags --epochs, --size, --bs and --lr adjust the
plan (see `resolve_plan`). Precedence: Stage defaults < caller defaults < config file <
--recipe or --stages < flags.

Epoch-valued schedule keys (`step`, `milestones`) accept a fraction of the stage's epochs
(a value below 1: `milestones=0.5/0.75`) or epochs from the stage's start (1 or more:
`milestones=30/60` in a 90-epoch stage). Both are stored as fractions, so a plan keeps
its shape when --epochs rescales it, and an inherited value means the same part of the
next stage.
"""
import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from utils.common.errors import DataError, report_problems
from utils.common.options import as_bool, as_float, as_int, as_str, parse_item, parse_value, split_items, split_options
from utils.common.text import read_text

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("const", "step", "multistep", "cosine", "onecycle", "plateau")
BN_MODES = ("train", "frozen")


@dataclass
class Stage:
    """One stage of a run.

    epochs: epochs in this stage; size: image side in px; bs: global batch size.
    lr: the head's peak learning rate; earlier layer groups get lr * lr_mult**k (k = 1 for
      the group just before the head, 2 for the one before that, ...).
    opt: 'sgd' | 'adam' | 'adamw'; momentum: SGD momentum, or Adam's beta1;
      nesterov: Nesterov momentum (SGD only; ignored by adam/adamw).
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
        only when not 'train')."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
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
        return _build([d], where, inherit=False)[0]


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


def _name(v, what):
    return "" if v is None else str(v).strip()


# field -> converter(value, what): the value as typed (parse_value's vocabulary) or native (JSON/YAML)
_CONVERT = {
    "epochs": _int, "size": _int, "bs": _int, "lr": _float,
    "opt": _choice(OPTIMIZERS), "momentum": _float, "nesterov": _bool, "wd": _float,
    "sched": _choice(SCHEDULES), "train": _train, "lr_mult": _float, "warmup": _float,
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


def _build(raw_stages, where, defaults=None, inherit=True):
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


# ----- sources --------------------------------------------------------------------------

def _split_spec(spec):
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
    raw, problems = _split_spec(spec)
    report_problems(f"bad stage plan in {where}", problems)
    return _build(raw, where, defaults)


def read_config_file(path):
    """The top-level mapping of a JSON or YAML config file (a bare list -> {"stages": list}).

    Raises DataError naming the file when it cannot be read or parsed or holds neither.
    """
    path = Path(path)
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    text = read_text(path)
    try:
        if kind == "JSON":
            data = json.loads(text)
        else:  # YAML is a superset of JSON, so .yaml/.yml/anything else goes through it
            import yaml
            data = yaml.safe_load(text)
    except Exception as e:  # the parser's message says where the syntax breaks
        raise DataError(f"{path}: not valid {kind} ({e})") from e
    if isinstance(data, list):
        data = {"stages": data}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping (or a bare list of stages), got {type(data).__name__}")
    return data


def _file_stages(path, data=None):
    """The raw list of stage dicts in a config file."""
    data = read_config_file(path) if data is None else data
    if "stages" not in data:
        raise DataError(f"{path}: expected a 'stages' list (or a bare list of stages); "
                        f"found keys {sorted(map(str, data))}")
    if "recipe" in data:
        raise DataError(f"{path}: give 'stages' or 'recipe', not both")
    if not isinstance(data["stages"], list):
        raise DataError(f"{path}: 'stages' must be a list of stage mappings, "
                        f"got {type(data['stages']).__name__}")
    return data["stages"]


def load_plan_file(path, defaults=None):
    """Read a stage plan from JSON or YAML: {"stages": [{...}, ...]} or a bare list.

    Other top-level keys of a mapping are left to the caller (read_config_file). Stages
    inherit missing keys from the previous one, as in --stages. Raises DataError naming
    the file and the stage.
    """
    return _build(_file_stages(path), str(path), defaults)


# ----- recipes --------------------------------------------------------------------------

def round_size(px, multiple=32):
    """Round an image side to the nearest multiple of `multiple` (32), at least `multiple`."""
    return max(multiple, int(math.floor(px / multiple + 0.5)) * multiple)


def _smaller_size(size, ratio):
    """An earlier stage's size: size*ratio rounded to 32, never above `size`."""
    return min(size, round_size(size * ratio))


def _patience(epochs):
    # the papers drop "when validation stops improving" over ~90 epochs, i.e. a few
    # epochs of patience; keep that proportion at small scale, at least one epoch
    return max(1, epochs // 15)


def _need(name, epochs, n, size):
    if epochs < n:
        raise DataError(f"recipe {name!r} needs --epochs >= {n} (one per stage); got {epochs}. To train "
                        f"{epochs} epoch(s), give a plan of one stage instead of the recipe, e.g. "
                        f"--stages \"epochs={epochs},size={size},train=all\" (the whole network; train=head "
                        f"for the classifier only)")


def _finetune(epochs, size):
    # fastai's Learner.fine_tune (Howard & Gugger 2020): one one-cycle epoch on the new
    # head with the body frozen, then everything unfrozen with one-cycle, earlier layers at
    # lower rates (discriminative lrs, ULMFiT: Howard & Ruder 2018); the short head stage
    # runs at a smaller size (fastai progressive resizing) because only the head learns.
    _need("finetune", epochs, 2, size)
    common = dict(opt="adamw", wd=0.01, bs=32, sched="onecycle", pct_start=0.3)
    return [Stage(epochs=1, size=_smaller_size(size, 0.75), lr=1e-3, train="head", name="head", **common),
            Stage(epochs=epochs - 1, size=size, lr=3e-4, train="all", lr_mult=0.5, name="all", **common)]


def _unfreeze_gradual(epochs, size):
    # ULMFiT gradual unfreezing (Howard & Ruder 2018): unfreeze one more layer group each
    # epoch, then train everything. Same total epochs, sizes, optimizer and lrs as
    # `finetune`, so gradual unfreezing vs training everything is one flag apart.
    _need("unfreeze-gradual", epochs, 5, size)
    head, rest = _finetune(epochs, size)
    steps = [dataclasses.replace(rest, epochs=1, train=str(n), name=f"last{n}") for n in (1, 2, 3)]
    return [head, *steps, dataclasses.replace(rest, epochs=epochs - 4)]


def _alexnet(epochs, size):
    # Krizhevsky, Sutskever & Hinton 2012, section 5: SGD, batch 128, momentum 0.9, weight
    # decay 5e-4, lr 0.01 divided by 10 when the validation error stopped improving
    # (3 times in ~90 epochs).
    return [Stage(epochs=epochs, size=size, bs=128, lr=0.01, opt="sgd", momentum=0.9, wd=5e-4,
                  sched="plateau", factor=0.1, max_drops=3, patience=_patience(epochs), train="all",
                  name="alexnet")]


def _resnet(epochs, size):
    # He, Zhang, Ren & Sun 2016, section 3.4: SGD, batch 256, lr 0.1 divided by 10 when the
    # error plateaus, momentum 0.9, weight decay 1e-4; as in torchvision's reference
    # (lr step 30 of 90 epochs): x0.1 every third of the run.
    return [Stage(epochs=epochs, size=size, bs=256, lr=0.1, opt="sgd", momentum=0.9, wd=1e-4,
                  sched="step", step=1 / 3, gamma=0.1, train="all", name="resnet")]


def _vgg(epochs, size):
    # Simonyan & Zisserman 2015, section 3.1: SGD, batch 256, momentum 0.9, weight decay
    # 5e-4, dropout 0.5 in the first two FC layers, lr 0.01 divided by 10 when validation
    # accuracy stopped improving (3 times); single-scale training at S=256, then S=384
    # initialised from it with lr 1e-3. Here: 2/3 of the epochs at size*256/384, the rest at size.
    _need("vgg", epochs, 2, size)
    second = max(1, round(epochs / 3))
    first = epochs - second
    common = dict(bs=256, opt="sgd", momentum=0.9, wd=5e-4, sched="plateau", factor=0.1,
                  max_drops=3, drop_rate=0.5, train="all")
    return [Stage(epochs=first, size=_smaller_size(size, 256 / 384), lr=0.01,
                  patience=_patience(first), name="S256", **common),
            Stage(epochs=second, size=size, lr=0.001, patience=_patience(second), name="S384", **common)]


def _densenet(epochs, size):
    # Huang, Liu, van der Maaten & Weinberger 2017, section 4.2: SGD with Nesterov momentum
    # 0.9 (no dampening), weight decay 1e-4, lr 0.1 divided by 10 at 50% and 75% of the
    # epochs (CIFAR/SVHN; ImageNet: epochs 30 and 60 of 90), batch 256 (ImageNet).
    return [Stage(epochs=epochs, size=size, bs=256, lr=0.1, opt="sgd", momentum=0.9, nesterov=True,
                  wd=1e-4, sched="multistep", milestones=(0.5, 0.75), gamma=0.1, train="all",
                  name="densenet")]


def _bs_ramp(epochs, size):
    # Smith, Kindermans, Ying & Le 2018, "Don't decay the learning rate, increase the batch
    # size": growing the batch by B has the effect of dividing the lr by B. Three equal
    # stages at batch 64, 128, 256 and a constant lr (the resnet recipe's 0.1 at 256,
    # linearly scaled to the first stage's batch of 64), SGD momentum 0.9, wd 1e-4.
    _need("bs-ramp", epochs, 3, size)
    parts = distribute_epochs(epochs, [1, 1, 1])
    return [Stage(epochs=e, size=size, bs=bs, lr=0.025, opt="sgd", momentum=0.9, wd=1e-4,
                  sched="const", train="all", name=f"bs{bs}")
            for e, bs in zip(parts, (64, 128, 256))]


def _strong(epochs, size):
    # Ridnik et al., Alibaba-MIIL: ASL (ICCV 2021) and ML-Decoder (WACV 2023) train.py: one stage
    # fine-tuning everything, Adam at lr 1e-4 with weight decay 1e-4 off biases and norms
    # (their add_weight_decay; here param_groups), OneCycleLR with pct_start 0.2, batch 56 at
    # 448 px for 40 epochs. The flags this recipe also sets are in STRONG_FLAGS.
    return [Stage(epochs=epochs, size=size, bs=56, lr=1e-4, opt="adam", momentum=0.9, wd=1e-4,
                  sched="onecycle", pct_start=0.2, train="all", name="strong")]


# The rest of the strong recipe: defaults of train.py flags (a config file and the command
# line win over them). Sources:
STRONG_FLAGS = {
    "ema": 0.9997,      # ASL/ML-Decoder: ModelEma(model, 0.9997); both weights validated, the better kept
    "aug": "strong",    # ASL/ML-Decoder: CutoutPIL(cutout_factor=0.5) + RandAugment, on flips
    "loss": "asl",      # ASL: gamma_neg=4, gamma_pos=0, clip=0.05 (utils/train/losses.py defaults)
    # mixup 0.1 + cutmix 1.0, switch 0.5: the batch-mixing of timm's "ResNet strikes back"
    # A2/A3 procedures (Wightman, Touvron & Jegou 2021); not in the ASL scripts
    "mix": "mixup:0.1;cutmix:1.0;switch=0.5",
    # concatenated average and max pooling (fastai's AdaptiveConcatPool2d): a cheap head that
    # fine-tunes well on small data; ML-Decoder's own head is one flag away (--head mldecoder)
    "head": "avgmax",
}


@dataclass(frozen=True)
class Recipe:
    """A named plan: `recipe(epochs, size)` -> list[Stage]; None takes the recipe's default.

    epochs: the total over all stages; size: the final stage's image side.
    flags: defaults the recipe gives other train.py flags ({dest: value}); see recipe_flags.
    """

    build: Callable[[int, int], list]
    epochs: int
    size: int
    source: str = field(default="")
    flags: dict = field(default_factory=dict)

    def __call__(self, epochs=None, size=None):
        return self.build(self.epochs if epochs is None else int(epochs),
                          self.size if size is None else int(size))


RECIPES = {
    "finetune": Recipe(_finetune, 10, 224, "fastai fine_tune; Howard & Ruder 2018"),
    "unfreeze-gradual": Recipe(_unfreeze_gradual, 10, 224, "Howard & Ruder 2018 (ULMFiT)"),
    "alexnet": Recipe(_alexnet, 90, 224, "Krizhevsky et al. 2012"),
    "resnet": Recipe(_resnet, 90, 224, "He et al. 2016"),
    "vgg": Recipe(_vgg, 90, 384, "Simonyan & Zisserman 2015"),
    "densenet": Recipe(_densenet, 90, 224, "Huang et al. 2017"),
    "bs-ramp": Recipe(_bs_ramp, 90, 224, "Smith et al. 2018"),
    "strong": Recipe(_strong, 40, 448, "Ridnik et al. 2021/2023 (ASL, ML-Decoder) + RSB mixing", STRONG_FLAGS),
}
DEFAULT_RECIPE = "finetune"


def get_recipe(name):
    """The Recipe called `name`; DataError listing the valid names (closest first) otherwise."""
    if name in RECIPES:
        return RECIPES[name]
    close = difflib.get_close_matches(str(name), RECIPES, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise DataError(f"unknown recipe {name!r} ({hint}valid: {', '.join(RECIPES)})")


def recipe_flags(name):
    """The train.py flag defaults a recipe sets ({dest: value}); {} for None or a recipe
    without any. An unknown name gives {} here; resolve_plan reports it."""
    return dict(RECIPES[name].flags) if name in RECIPES else {}


# ----- flags over a plan ----------------------------------------------------------------

def distribute_epochs(total, weights):
    """Split `total` epochs over stages in proportion to `weights`, at least 1 each.

    Largest-remainder rounding, so the parts sum to `total` exactly. DataError when
    total < len(weights).
    """
    n = len(weights)
    if total < n:
        raise DataError(f"--epochs {total} is fewer than the plan's {n} stages (at least 1 each)")
    ideal = [total * w / sum(weights) for w in weights]
    parts = [max(1, math.floor(x)) for x in ideal]
    while sum(parts) < total:  # give to the stage furthest below its share
        i = max(range(n), key=lambda j: (ideal[j] - parts[j], -j))
        parts[i] += 1
    while sum(parts) > total:  # take from the stage furthest above its share
        i = max((j for j in range(n) if parts[j] > 1), key=lambda j: (parts[j] - ideal[j], j))
        parts[i] -= 1
    return parts


def _scale_sizes(stages, size):
    """Final stage at `size`; earlier ones scaled in proportion, rounded to 32 (min 32)."""
    old = stages[-1].size
    out = []
    for s in stages[:-1]:
        new = round_size(s.size * size / old)
        if s.size <= old:  # a stage smaller than the final one stays no larger than it
            new = min(new, size)
        out.append(dataclasses.replace(s, size=new))
    return out + [dataclasses.replace(stages[-1], size=size)]


def _scale_bs(stages, bs):
    """Linear scaling rule (Goyal et al. 2017): the largest batch becomes `bs`, every
    stage's batch scales by the same factor and its lr (and min_lr) with its batch."""
    ref = max(s.bs for s in stages)
    out = []
    for s in stages:
        new = max(1, round(s.bs * bs / ref))
        k = new / s.bs
        out.append(dataclasses.replace(s, bs=new, lr=s.lr * k, min_lr=s.min_lr * k))
    return out


def _scale_lr(stages, lr):
    """Last stage's lr becomes `lr`; the others (and min_lr) keep their ratio to it."""
    k = lr / stages[-1].lr
    return [dataclasses.replace(s, lr=s.lr * k, min_lr=s.min_lr * k) for s in stages]


def _check_flag(name, value, convert, ok, rule):
    """A flag's value converted and checked; DataError saying what it must be otherwise."""
    v = convert(value, f"{name} {value!r}")
    if not ok(v):
        raise DataError(f"{name} {value!r} must be {rule}")
    return v


def resolve_plan(recipe=None, stages=None, config_file=None, bs=None, size=None, epochs=None,
                 lr=None, defaults=None, accum=None):
    """The run's list of Stages from one plan source and the override flags.

    Source: recipe: a RECIPES name, built for `epochs` and `size` (its own defaults when
    None); stages: a --stages string; config_file: a JSON/YAML file whose 'stages' list
    is used when neither recipe nor stages is given (the command line wins over the file;
    a file without 'stages' only holds the caller's other settings). Nothing given: the
    recipe 'finetune'. defaults: {field: value} the first stage of --stages/--config
    starts from (recipes ignore it).
    Flags (None = not given), applied in this order after the source:
      epochs: the total; --stages/--config plans are redistributed in proportion to their
        stages' epochs, at least 1 each (step/milestones are fractions, so they follow;
        warm-up is cut to the stage's length).
      size: the final stage's size; earlier stages scale in proportion, rounded to a
        multiple of 32 (min 32), and a stage smaller than the final one stays no larger.
        Applies to every source, explicit sizes in --stages included (flags win).
      bs: the largest batch in the plan becomes bs and every stage's batch scales by the
        same factor, its lr and min_lr linearly with it (Goyal et al. 2017). A
        --stages/--config plan that sets no bs anywhere just takes bs, lrs unchanged.
      lr: the last stage's lr becomes lr exactly; the others keep their ratio to it.
      accum: every stage's gradient accumulation (micro-batches per optimizer step).
    Precedence: Stage defaults < `defaults` < config file < --recipe or --stages < flags.
    Raises DataError for --recipe with --stages, an unknown recipe or any malformed value.
    """
    if recipe is not None and stages is not None:
        raise DataError("give one stage plan source, not --recipe and --stages")
    if epochs is not None:
        epochs = _check_flag("--epochs", epochs, _int, lambda v: v >= 1, ">= 1")
    if size is not None:
        size = _check_flag("--size", size, _int, lambda v: v >= 8, ">= 8 px")
    if bs is not None:
        bs = _check_flag("--bs", bs, _int, lambda v: v >= 1, ">= 1")
    if lr is not None:
        lr = _check_flag("--lr", lr, _float, lambda v: v > 0, "> 0")
    if accum is not None:
        accum = _check_flag("--accum", accum, _int, lambda v: v >= 1, ">= 1")
    raw = None
    data = read_config_file(config_file) if config_file is not None else {}
    if "stages" in data:
        file_stages = _file_stages(config_file, data)  # checks it is a list, without 'recipe'
    if stages is not None:
        raw, problems = _split_spec(stages)
        where = "--stages"
        report_problems(f"bad stage plan in {where}", problems)
    elif recipe is None and "stages" in data:
        raw, where = file_stages, str(config_file)
    elif recipe is None:
        recipe = data.get("recipe")
    if raw is not None:
        if bs is not None and not any(isinstance(r, dict) and "bs" in r for r in raw):
            defaults, bs = {**(defaults or {}), "bs": bs}, None  # nothing to scale from
        plan = _build(raw, where, defaults)
        if epochs is not None:
            plan = [dataclasses.replace(s, epochs=e)
                    for s, e in zip(plan, distribute_epochs(epochs, [s.epochs for s in plan]))]
            plan = [dataclasses.replace(s, warmup=min(s.warmup, s.epochs)) for s in plan]
        if size is not None:
            plan = _scale_sizes(plan, size)
    else:
        plan = get_recipe(recipe or DEFAULT_RECIPE)(epochs, size)
    if bs is not None:
        plan = _scale_bs(plan, bs)
    if lr is not None:
        plan = _scale_lr(plan, lr)
    if accum is not None:
        plan = [dataclasses.replace(s, accum=accum) for s in plan]
    return plan


# ----- for people -----------------------------------------------------------------------

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


def describe_plan(stages):
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
