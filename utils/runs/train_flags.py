"""train.py's flags, each declared once: one row says how it is parsed and what it means for a run.

A row gives the flag's --help group and argparse details, and:
    role     CONFIG: what is learnt; stored in config.json "args", --resume restores the run's
             value and refuses a different one given. HOW: how or where to run (device, workers,
             precision, logs ...); never stored, free to differ on resume.
    legacy   (CONFIG rows, required) the value to assume for a run whose config.json lacks the
             flag (recorded before it existed): DEFAULT = runs before it trained as its default
             does. --resume of such a run restores it and refuses another value.
    tag      whether the run name's configuration tag hashes it: by default the CONFIG rows;
             False leaves one out (the name has --fold apart); AT_DEFAULT hashes the default
             whatever the value (a HOW flag earlier tags hashed, so tags stay as they were).
    model    how it defines a *model* (utils/runs/directory.py model_key): ALWAYS, WHEN_SET (only
             a value other than the legacy one, so runs recorded before keep their model), None;
             a row that needs a partner counts only when its partner does. model_as: the value
             as the key holds it.
    config   the config.json key that records the value (None: only in "args"); record turns
             the flag's value into the recorded one (BY_USE: the code using the flag records it).
    checked  --resume refuses a config (config.json key `config`) that differs from the run's.
    needs    (partner dest, partner as typed): the flag acts only with its partner set.
    option   a field of TrainOptions, with the row's default.
Adding a flag is one row here plus the code that uses it: the parser, the run name's tag, the
model key, the resume checks (utils/train/resume.py), config.json and TrainOptions derive from it.
"""
import argparse
from dataclasses import dataclass, field, make_dataclass

from utils.common.cli import CACHE_HELP, DEFAULT_RUNS

CONFIG, HOW = "configuration", "how to run"
BY_USE = "by use"  # config.json's value is written by the code that uses the flag
UNSET = "unset"  # legacy not declared (refused for CONFIG rows by tests/runs/test_train_flags_table.py)
DEFAULT = "default"  # legacy: runs recorded before the flag trained as its default does
AT_DEFAULT = "at default"  # tag: hashed at the flag's default
ALWAYS, WHEN_SET = "always", "when set"


def _count_or_none(value):
    return value or None


def _ema_decay(value):
    if value is None:
        return None
    from utils.models.ema import check_decay  # torch: imported when a run records its --ema

    return check_decay(value)


def _mix_or_none(value):
    if not value:
        return None
    from utils.augment.mix import parse_mix  # torch: imported when a run records its --mix

    return value if parse_mix(value) else None


def _modern_aug(spec):
    """--aug in today's spelling (only a spec with a `,` can be in the former one)."""
    if "," not in str(spec):
        return spec
    from utils.augment.transforms import modern_aug  # torch: only for a run of the former spelling

    return modern_aug(spec)


def _modern_mix(spec):
    if "," not in str(spec):
        return spec
    from utils.augment.mix import modern_mix

    return modern_mix(spec)


def _weights_id(weights):
    """--weights by the file's sha256, not its path; a linear probe's extractor by name."""
    return weights["sha256"] if isinstance(weights, dict) else weights


@dataclass(frozen=True)
class Flag:
    """One train.py flag (see the module doc for the fields)."""
    name: str
    group: str
    argparse: dict = field(default_factory=dict)
    role: str = CONFIG
    config: str = None
    record: object = None
    checked: bool = False
    needs: tuple = None
    legacy: object = UNSET
    option: bool = False
    tag: object = None
    model: str = None
    model_as: object = None

    @property
    def dest(self):
        return self.name[2:].replace("-", "_")

    @property
    def default(self):
        return self.argparse.get("default", False if self.argparse.get("action") == "store_true" else None)

    @property
    def stored(self):
        """Whether config.json "args" holds it (the CONFIG rows)."""
        return self.role == CONFIG

    @property
    def assumed(self):
        """The value a run recorded without the flag is taken to have had (legacy)."""
        return self.default if self.legacy == DEFAULT else self.legacy

    @property
    def tagged(self):
        """True, False or AT_DEFAULT: how the configuration tag hashes it."""
        return self.role == CONFIG if self.tag is None else self.tag


def flag(name, group, role=CONFIG, config=None, record=None, checked=False, needs=None, legacy=UNSET,
         option=False, tag=None, model=None, model_as=None, **argparse_kw):
    """A Flag row: the table's fields by name, everything else is add_argument's."""
    return Flag(name, group, argparse_kw, role, config, record, checked, needs, legacy, option, tag, model,
                model_as)


DATA, MODEL, AUGMENT, INGREDIENTS, RUN, SPEED = (
    "data", "model", "imbalance and augmentation", "training ingredients", "run", "speed")
PLAN = "stage plan (one of --recipe, --stages, --config; flags below override)"
PSEUDO = "pseudo-labels and distillation (README: which teacher files keep the out-of-fold score honest)"

FLAGS = (
    # data
    flag("--data", DATA, role=HOW, tag=AT_DEFAULT, default=None,
         help="dataset directory in the Planet layout (default: data/demo in the repository, generated on first "
              "use)"),
    flag("--images", DATA, legacy=DEFAULT, model=ALWAYS, default="train", config="images", checked=True,
         help="image folder (variant) inside --data (default: train)"),
    flag("--test-images", DATA, legacy=DEFAULT, default="test", config="test_images",
         help="test image folder inside --data (default: test)"),
    flag("--folds-k", DATA, legacy=DEFAULT, model=ALWAYS, type=int, default=5, config="folds_k", checked=True,
         help="number of folds when folds.csv is created; an existing folds file's own K is used unless this is "
              "given, and must then agree with it (default: 5)"),
    flag("--folds-seed", DATA, legacy=DEFAULT, type=int, default=42, config="folds_seed",
         help="seed of the fold split (default: 42)"),
    flag("--folds-file", DATA, role=HOW, tag=AT_DEFAULT, default=None,
         help="folds file (default: DATA/folds.csv)"),
    flag("--cache-dir", DATA, default=None, role=HOW, option=True,
         help=CACHE_HELP),
    flag("--exclude", DATA, legacy=None, model=WHEN_SET,
         default=None, metavar="FILE", config="exclude", record=BY_USE, checked=True,
         help="CSV with an image_name column (e.g. tools/label_issues.py's): train without these images; they keep "
              "their folds and are still predicted as validation images (default: none)"),
    flag("--channels", DATA, model=WHEN_SET, type=int, default=3, config="channels", checked=True, legacy=3,
         help="image bands the model sees: the first N of each image (4 = R, G, B, near-infrared of a Planet "
              "GeoTIFF); 16-bit data is scaled to 8 bits by its 1st-99th percentiles on the training images "
              "(default: 3)"),
    flag("--label-group", DATA, legacy=DEFAULT, model=ALWAYS, default=None, config="label_group", checked=True,
         help="train on a subset of tags: 'a,b,c' or 'auto:K/i' (i-th of K groups of similar frequency, rarest "
              "first) (default: all tags)"),
    # model
    # EXPERIMENTS.md#real-photos-the-apparel-dataset-end-to-end
    flag("--arch", MODEL, legacy=DEFAULT, model=ALWAYS, default="tf_efficientnet_lite0", config="arch", checked=True,
         help="torchvision or timm model name (prefix tv: or timm: to choose) (default: tf_efficientnet_lite0, the "
              "model of every experiment; Lite1 was level with it on real photos; evidence: EXPERIMENTS.md section "
              "'Real photos')"),
    flag("--pretrained", MODEL, legacy=DEFAULT, model=ALWAYS,
         action=argparse.BooleanOptionalAction, default=True, config="pretrained", checked=True,
         help="start from ImageNet weights: the local torch/Hugging Face cache, downloaded there when missing and "
              "online (default: on)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--weights", MODEL, legacy=None, model=WHEN_SET, model_as=_weights_id,
         default=None, metavar="PATH", config="weights", record=BY_USE, checked=True,
         help="start from this file's weights instead of ImageNet's: a .pth/.bin/.safetensors state dict or a "
              "Hugging Face-style model folder, read offline into --arch; a classifier of another shape is left as "
              "initialised, any other mismatch is refused naming the tensors; its sha256 goes into config.json and "
              "best.pt (default: none)"),
    flag("--head", MODEL, legacy=None, model=WHEN_SET, default=None, config="head", record=BY_USE, checked=True,
         help="pooling head replacing the architecture's pooling and classifier: avg | max | avgmax | gem[:p=3] | "
              "csra[:lam=0.1,t=1] (t=99: max) | mldecoder (default: the architecture's own; avgmax, gem and csra "
              "were level with it; evidence: EXPERIMENTS.md section r)"),
    # plan
    # None = finetune (utils/train/recipes.py DEFAULT_RECIPE): EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--recipe", PLAN, legacy=DEFAULT, default=None, config="recipe",
         help="named recipe: finetune (default: its AdamW beat the papers' SGD recipes and the strong recipe was "
              "level with it; evidence: EXPERIMENTS.md sections c, e, s), unfreeze-gradual, alexnet, resnet, vgg, "
              "densenet, bs-ramp, strong (ML-Decoder's plan: adam 1e-4 onecycle, and defaults --ema 0.9997 --aug "
              "'hflip;erase:1' --loss bce --mix 'mixup:0.1;cutmix:1.0;switch=0.5' --head avgmax; BCE and no "
              "RandAugment where the papers have ASL and RandAugment, evidence: EXPERIMENTS.md section s; flags "
              "given win)"),
    flag("--stages", PLAN, legacy=DEFAULT, default=None,
         help="'key=value,...;key=value,...' one stage per ';' (README \"Option strings\"), e.g. "
              "'epochs=2,size=128,train=head;epochs=8,size=224,train=all' (keys: epochs, size px, bs, lr, opt, "
              "momentum, nesterov, wd, sched, train, lr_mult, warmup, pct_start, step, gamma, milestones, patience,"
              " factor, max_drops, min_lr, drop_rate, accum, bn, name, layer_decay, opt.KEY (the optimizer's "
              "options); utils/train/stage.py) (default: the "
              "--recipe's plan)"),
    flag("--config", PLAN, legacy=DEFAULT, default=None,
         help="JSON/YAML file with 'stages' and optionally other flags' defaults"),
    # EXPERIMENTS.md#b-image-size-per-stage-and-testing-larger-fixres
    flag("--size", PLAN, legacy=DEFAULT, type=int, default=None,
         help="final image size in px, earlier stages scale with it (default: the recipe's, 224; 96 on the demo "
              "data; sizes 32-64 px and their schedules were level; evidence: EXPERIMENTS.md section b)"),
    # EXPERIMENTS.md#a-batch-size-and-batchnorm
    flag("--bs", PLAN, legacy=DEFAULT, type=int, default=None,
         help="the plan's largest batch size; every stage's batch and lr scale linearly with it (default: the "
              "recipe's, 32 for finetune; 16, 32 and 64 were level; evidence: EXPERIMENTS.md section a)"),
    # not measured (the experiments ran 3-5 epochs): EXPERIMENTS.md#defaults-and-their-evidence
    flag("--epochs", PLAN, legacy=DEFAULT, type=int, default=None,
         help="total epochs, spread over the stages (default: the recipe's, 10; 3 on the demo data; not measured, "
              "evidence: EXPERIMENTS.md section 'Defaults and their evidence')"),
    # EXPERIMENTS.md#open-questions-from-the-notes-on-a-small-cpu-budget
    flag("--lr", PLAN, legacy=DEFAULT, type=float, default=None,
         help="final stage's learning rate (others scale with it) (default: the recipe's, scaled with --bs; "
              "finetune's 3e-4 learns in the demo's ~200 updates, at ~60 updates 10x was needed; evidence: "
              "EXPERIMENTS.md sections 'Demo data', 'Open questions')"),
    flag("--opt", PLAN, legacy=None, default=None, metavar="NAME[:key=value,...]",
         help="every stage's optimizer, with its options in README \"Option strings\": sgd, adam, adamw (torch), "
              "schedulefree_adamw (package schedulefree), or any timm.optim.list_optimizers() name, e.g. "
              "'lion:betas=0.9/0.99' (stage keys opt=, opt.KEY=) (default: the plan's)"),
    flag("--layer-decay", PLAN, legacy=None, type=float, default=None, metavar="D",
         help="layer-wise lr decay in every stage: the head at the stage's lr, each block k places before it at "
              "lr x D^k (blocks: timm's fine layer groups, else module order); replaces the stage's lr_mult "
              "(stage key layer_decay=) (default: the plan's, off)"),
    # augment
    # EXPERIMENTS.md#demo-data-label-imbalance-colour-swap-label-groups,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--loss", AUGMENT, legacy=DEFAULT, model=ALWAYS, default="bce", config="loss_spec", checked=True,
         help="bce | wbce[:mode=odds,cap=50] | focal[:gamma=2,alpha=0.25] | asl[:gamma_neg=4,gamma_pos=0,clip=0.05]"
              " (default: bce; wbce and asl were level with it after threshold search, and asl lost to it in the "
              "strong recipe; evidence: EXPERIMENTS.md sections 'Demo data', s)"),
    # EXPERIMENTS.md#demo-data-label-imbalance-colour-swap-label-groups
    flag("--sampler", AUGMENT, legacy=DEFAULT, model=ALWAYS, default="none", config="sampler", checked=True,
         help="none | oversample[:t=0.1] | undersample[:frac=0.5] (default: none; oversample's +0.005 was inside "
              "the folds' spread; evidence: EXPERIMENTS.md section 'Demo data')"),
    # the AlexNet/ResNet crop + flip: level with the preset 'default' without TTA, and with its
    # 10-crop test (predict.py --tta 10crop) the best row measured, +0.014 over the preset
    # 'default' without TTA on 5 of 6 folds: EXPERIMENTS.md#d-which-augmentations-are-unnecessary,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--aug", AUGMENT, legacy=DEFAULT, model=ALWAYS, model_as=_modern_aug,
         default="hflip;crop:0.125", config="aug", checked=True,
         help="';'-separated augmentations with ','-separated options, e.g. 'hflip;rotate:15;erase:p=0.5,side=0.25'"
              " (hflip, vflip, rotate, shift, crop, rrc, pca, colorswap, erase, randaug, trivialaug, autoaug) and "
              "presets: none, light, default (hflip;rotate:10;shift:0.0625;crop:0.125), heavy, strong (README "
              "\"Option strings\") (default: hflip;crop:0.125, the AlexNet/ResNet crop + flip; predict with --tta "
              "10crop; evidence: EXPERIMENTS.md sections d, s)"),
    # EXPERIMENTS.md#f-static-or-dynamic-augmentation
    flag("--aug-static", AUGMENT, legacy=DEFAULT, model=ALWAYS,
         type=int, default=0, metavar="K", config="aug_static", record=_count_or_none,
         checked=True,
         help="static augmentation: K augmented copies of every training image made once per stage, epoch e reads "
              "copy e mod K (default: 0 = dynamic, a new draw every epoch; K=1 and 2 were level with it; evidence: "
              "EXPERIMENTS.md section f)"),
    # ingredients
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--ema", INGREDIENTS, legacy=None, model=WHEN_SET,
         type=float, default=None, metavar="DECAY", config="ema", record=_ema_decay, checked=True,
         help="keep an EMA of the weights with this decay per optimizer step, e.g. 0.9997; every epoch validates "
              "both, best.pt keeps the better (default: off; no measurable difference in a run still climbing; "
              "evidence: EXPERIMENTS.md section r)"),
    # tf.train.ExponentialMovingAverage's num_updates rule, not compared:
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--ema-warmup", INGREDIENTS, legacy=True, model=ALWAYS,
         action=argparse.BooleanOptionalAction, default=True, config="ema_warmup",
         checked=True, needs=("ema", "--ema DECAY"),
         help="EMA decay warm-up min(decay, (1+k)/(10+k)) at update k (default: on, TensorFlow's rule; not "
              "compared, EXPERIMENTS.md section r)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--mix", INGREDIENTS, legacy=None, model=WHEN_SET, model_as=_modern_mix,
         default=None, config="mix", record=_mix_or_none, checked=True,
         help="mixup/cutmix of whole batches with soft targets: mixup:ALPHA, cutmix:ALPHA, or both with switch=P "
              "(P(cutmix), default 0.5); p=P mixes a share of the batches, off_epochs=N none in the last N epochs; "
              "the methods ';'-separated, the options in a last item, e.g. "
              "'mixup:0.2;cutmix:1.0;switch=0.5,off_epochs=2' (default: none; mixup and cutmix made no measurable "
              "difference over two seeds; evidence: EXPERIMENTS.md sections r, s)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--accum", INGREDIENTS, legacy=DEFAULT, type=int, default=None, metavar="N", config="accum", checked=True,
         help="gradient accumulation: N micro-batches of --bs per optimizer step, in every stage (default: the "
              "plan's accum=, 1; a memory tool: 2 made no measurable difference over two seeds; evidence: "
              "EXPERIMENTS.md sections r, s)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--keep-epochs", INGREDIENTS, legacy=0, type=int, default=0, metavar="K", config="keep_epochs", checked=True,
         help="keep the last K epochs' weights as checkpoints/epoch_NNN.pt for tools/average_checkpoints.py "
              "(default: 0 = none; averaging the last 3 made no measurable difference; evidence: EXPERIMENTS.md "
              "section r)"),
    # pseudo
    flag("--pseudo", PSEUDO, legacy=None, default=None, metavar="CSV", config="pseudo", record=BY_USE, checked=True,
         help="add these test images to the training set (never to validation) with the file's targets: image_name "
              "+ one column per label in [0, 1], from tools/pseudo_label.py (default: none)"),
    # EXPERIMENTS.md#pseudo-labels-and-distillation-vs-the-same-model-without-apparel
    flag("--pseudo-weight", PSEUDO, legacy=DEFAULT, type=float, default=1.0, needs=("pseudo", "--pseudo CSV"),
         help="loss weight of each pseudo-labelled image relative to a training image (default: 1.0, the weight "
              "measured; evidence: EXPERIMENTS.md section 'Pseudo-labels and distillation')"),
    flag("--soft-targets", PSEUDO, legacy=None,
         default=None, metavar="CSV|RUN", config="soft_targets", record=BY_USE, checked=True,
         help="teacher probabilities for distillation: a teacher run directory trained with the same --fold on the "
              "same folds (honest; '{fold}' in the path becomes --fold), or a CSV (image_name + one column per "
              "label) covering every training image; a run's or a stack's out-of-fold file is refused, as it leaks "
              "this fold's labels (default: none)"),
    # EXPERIMENTS.md#pseudo-labels-and-distillation-vs-the-same-model-without-apparel
    flag("--distill", PSEUDO, legacy=DEFAULT, type=float, default=0.5, metavar="ALPHA",
         needs=("soft_targets", "--soft-targets CSV|RUN"),
         help="with --soft-targets, training targets are (1-ALPHA)*tags + ALPHA*teacher (default: 0.5, the value "
              "measured, which lost with the student's own model as teacher; evidence: EXPERIMENTS.md section "
              "'Pseudo-labels and distillation')"),
    # run
    flag("--fold", RUN, legacy=DEFAULT, tag=False, type=int, default=0, config="fold", checked=True,
         help="validation fold (default: 0)"),
    flag("--seed", RUN, legacy=DEFAULT, type=int, default=0, config="seed", checked=True,
         help="seed of initialisation, order and augmentation (default: 0)"),
    flag("--out", RUN, default=DEFAULT_RUNS, role=HOW,
         help="folder of runs (default: runs/ in the repository)"),
    flag("--name", RUN, default=None, role=HOW,
         help="run name (default: <arch>-<images>-<tag>-f<fold>-<YYYYmmdd-HHMMSS>-<pid>, the tag a hash of the "
              "configuration)"),
    flag("--resume", RUN, action="store_true", role=HOW,
         help="continue --name (or the newest unfinished matching run) from checkpoints/last.pt (default: off, a "
              "new run)"),
    # speed
    flag("--device", SPEED, default="auto", role=HOW,
         help="auto | cpu | cuda | cuda:N (default: auto)"),
    flag("--workers", SPEED, type=int, default=-1, role=HOW, option=True,
         help="data loader workers (default: -1 = by machine)"),
    # BENCHMARKS.md "The CPU fast path"; how to run, not what is learnt: out of the run name's tag
    flag("--amp", SPEED, role=HOW, tag=AT_DEFAULT, option=True, default="auto", choices=["auto", "off", "bf16", "fp16"],
         help="mixed precision: auto = on CUDA bf16 autocast where supported (else fp16), on CPU fp32 or bf16 "
              "autocast, whichever trained this network at this size faster when measured on this machine "
              "(bf16 only where the CPU computes it natively; measured once, cached, see "
              "utils/models/fast_path.py); off = fp32; a resumed run keeps the setting config.json records "
              "unless given (default: auto)"),
    flag("--channels-last", SPEED, action=argparse.BooleanOptionalAction, default=None, role=HOW, option=True,
         help="channels_last memory format; --no-channels-last: contiguous (default: auto = on for CUDA, "
              "measured with --amp on CPU)"),
    flag("--compile", SPEED, action="store_true", role=HOW, option=True,
         help="torch.compile the model (default: off)"),
    flag("--aug-device", SPEED, legacy="cpu", tag=False, default="cpu", choices=["cpu", "gpu"], option=True,
         help="where augmentation runs: cpu (per image, loader workers) or gpu (per batch on the training device) "
              "(default: cpu)"),
    flag("--deterministic", SPEED, legacy=False, action="store_true", config="deterministic",
         help="deterministic algorithms (bit-exact resume on CPU) (default: off)"),
    flag("--ckpt-every", SPEED, type=int, default=0, role=HOW, option=True,
         help="also checkpoint every N optimizer steps (default: 0 = epoch ends)"),
    flag("--ckpt-minutes", SPEED, type=float, default=10.0, role=HOW, option=True,
         help="checkpoint at least every N minutes (default: 10)"),
    flag("--plots", SPEED, default="every", choices=["every", "last", "none"], role=HOW, option=True,
         help="probability-distribution plots per epoch (default: every)"),
    flag("--tensorboard", SPEED, action=argparse.BooleanOptionalAction, default=None, role=HOW, option=True,
         help="TensorBoard event files in <run>/tb/ every epoch (default: on when the tensorboard package is "
              "installed)"),

)
BY_DEST = {f.dest: f for f in FLAGS}
HOW_TO_RUN = frozenset(f.dest for f in FLAGS if f.role == HOW)
NEEDS = {f.dest: f.needs for f in FLAGS if f.needs}
OPTIONS = tuple(f.dest for f in FLAGS if f.option)
# config.json keys derived from several flags: the label list (--label-group and the data) and the
# plan (--recipe/--stages/--config/--size/...); a resumed run must agree on them, and they define a model
DERIVED_KEYS = ("labels", "stages")
# config.json keys a resumed run must agree on: the checked flags' and the derived ones
RESUME_KEYS = tuple(f.config for f in FLAGS if f.checked) + DERIVED_KEYS
# {dest: value} a run whose config.json "args" lacks a configuration flag is taken to have had
LEGACY_ARGS = {f.dest: f.assumed for f in FLAGS if f.role == CONFIG and f.legacy != UNSET}


def _legacy_recorded(f):
    """Row f's legacy value as config.json records it (None for the keys the code using the flag writes)."""
    return None if f.record is BY_USE else f.record(f.assumed) if f.record else f.assumed


def legacy_config():
    """{config.json key: value} a run recorded before a checked flag existed is taken to have recorded."""
    return {f.config: _legacy_recorded(f) for f in FLAGS if f.checked and f.legacy != UNSET}


def undeclared_legacy(flags=FLAGS):
    """Flags of configuration that do not say how older runs resume (no legacy value): none allowed."""
    return [f.name for f in flags if f.role == CONFIG and f.legacy == UNSET]


def tag_values(values):
    """{dest: value} the run name's configuration tag hashes, from {dest: value} of the flags: the
    rows the table tags, a tag=AT_DEFAULT row at its default (only where `values` has it)."""
    out = {}
    for k, v in values.items():
        f = BY_DEST.get(k)
        if f is not None and f.tagged:
            out[k] = f.default if f.tagged == AT_DEFAULT else v
    return out


def configuration_argv(argv):
    """train.py's argv without its how-to-run flags and their values, in order: what names a
    configuration (scripts/cv.sh's TAG, tools/submit.py's run names hash it)."""
    out, skip = [], 0
    for token in argv:
        if skip:
            skip -= 1
            continue
        name = token.split("=", 1)[0]
        row = BY_DEST.get(name[2:].replace("-", "_")) if name.startswith("--") else None
        if row is None and name.startswith("--no-"):
            row = BY_DEST.get(name[5:].replace("-", "_"))
        if row is None or row.role != HOW:
            out.append(token)
        elif "=" not in token and row.argparse.get("action") is None:
            skip = 1  # its value
    return out


def model_values(config):
    """{config.json key: value} that define a run's model (fold and seed excluded), from its
    config.json: the derived keys and every ALWAYS row as recorded, a WHEN_SET row only when set
    to other than its legacy value, a row that needs a partner only with its partner."""
    out = {k: config.get(k) for k in DERIVED_KEYS}
    rows = [f for f in FLAGS if f.model]
    for f in rows:
        value = config.get(f.config)
        if f.model == WHEN_SET and (value is None or value == _legacy_recorded(f)):
            continue
        out[f.config] = value
    for f in rows:  # a flag acting with a partner counts when the partner does, at its legacy value if missing
        if f.needs and f.config in out:
            partner = BY_DEST[f.needs[0]].config
            if partner in out:
                out[f.config] = config.get(f.config, f.assumed)
            else:
                del out[f.config]
    for f in rows:
        if f.model_as and f.config in out:
            out[f.config] = f.model_as(out[f.config])
    return out


def add_flags(parser):
    """Add every row to `parser`, in --help groups in the table's order."""
    groups = {}
    for f in FLAGS:
        if f.group not in groups:
            groups[f.group] = parser.add_argument_group(f.group)
        groups[f.group].add_argument(f.name, **f.argparse)
    return parser


def recorded(values):
    """{config.json key: value} of the flags config.json records by value (not BY_USE ones).

    values: {dest: value} of the resolved flags. Raises DataError where a record function does.
    """
    out = {}
    for f in FLAGS:
        if f.config and f.record is not BY_USE:
            out[f.config] = f.record(values[f.dest]) if f.record else values[f.dest]
    return out


def stored_args(values):
    """config.json "args": {dest: value} of every stored flag (the CONFIG rows)."""
    return {k: v for k, v in values.items() if k in BY_DEST and BY_DEST[k].stored}


def train_options(values):
    """{TrainOptions field: value} of the option flags, from the resolved values."""
    return {k: values[k] for k in OPTIONS}


# how to run, as the Trainer takes it: the option rows with their defaults (train.py resolves -1 and
# None = auto before making one)
TrainOptions = make_dataclass(
    "TrainOptions", [(f.dest, object, field(default=f.default)) for f in FLAGS if f.option])
TrainOptions.__doc__ = "How to run (not what to learn): the option rows of train.py's flag table."
TrainOptions.__module__ = __name__
