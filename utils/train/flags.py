"""train.py's flags, each declared once: one row says how it is parsed and what it means for a run.

A row gives the flag's --help group and argparse details, and:
    resume   MATCH: what is learnt; --resume restores the run's value and refuses a different
             one given. FREE: how or where to run (device, workers, plots ...); never restored,
             free to differ on resume, not stored in config.json "args".
    config   the config.json key that records the value (None: only in "args"); record turns
             the flag's value into the recorded one (BY_USE: the code using the flag records it).
    checked  --resume refuses a config (config.json key `config`) that differs from the run's.
    needs    (partner dest, partner as typed): the flag acts only with its partner set.
    legacy   what a run recorded before the key existed meant (older runs resume unchanged).
    option   passed to the Trainer in TrainOptions (utils/train/trainer.py).
Adding a flag is one row here plus the code that uses it: the parser, the resume checks
(utils/train/resume.py), config.json and TrainOptions are derived from the table.
"""
import argparse
from dataclasses import dataclass, field

from utils.common.cli import CACHE_HELP, DEFAULT_RUNS

MATCH, FREE = "match", "free"
BY_USE = "by use"  # config.json's value is written by the code that uses the flag


def _count_or_none(value):
    return value or None


def _ema_decay(value):
    from utils.models.ema import check_decay  # torch: imported when a run records its --ema

    return check_decay(value)


def _mix_or_none(value):
    from utils.augment.mix import parse_mix  # torch: imported when a run records its --mix

    return value if parse_mix(value) else None


@dataclass(frozen=True)
class Flag:
    """One train.py flag (see the module doc for the fields)."""
    name: str
    group: str
    argparse: dict = field(default_factory=dict)
    resume: str = MATCH
    config: str = None
    record: object = None
    checked: bool = False
    needs: tuple = None
    legacy: object = None
    option: bool = False

    @property
    def dest(self):
        return self.name[2:].replace("-", "_")

    @property
    def stored(self):
        """Whether config.json "args" holds it (every flag but the FREE ones)."""
        return self.resume != FREE


def flag(name, group, resume=MATCH, config=None, record=None, checked=False, needs=None, legacy=None,
         option=False, **argparse_kw):
    """A Flag row: the table's fields by name, everything else is add_argument's."""
    return Flag(name, group, argparse_kw, resume, config, record, checked, needs, legacy, option)


DATA, MODEL, AUGMENT, INGREDIENTS, RUN, SPEED = (
    "data", "model", "imbalance and augmentation", "training ingredients", "run", "speed")
PLAN = "stage plan (one of --recipe, --stages, --config; flags below override)"
PSEUDO = "pseudo-labels and distillation (README: which teacher files keep the out-of-fold score honest)"

FLAGS = (
    # data
    flag("--data", DATA, default=None, resume=FREE,
         help="dataset directory in the Planet layout (default: data/demo in the repository, generated on first "
              "use)"),
    flag("--images", DATA, default="train", config="images", checked=True,
         help="image folder (variant) inside --data (default: train)"),
    flag("--test-images", DATA, default="test", config="test_images",
         help="test image folder inside --data (default: test)"),
    flag("--folds-k", DATA, type=int, default=5, config="folds_k", checked=True,
         help="number of folds when folds.csv is created; an existing folds file's own K is used unless this is "
              "given, and must then agree with it (default: 5)"),
    flag("--folds-seed", DATA, type=int, default=42, config="folds_seed",
         help="seed of the fold split (default: 42)"),
    flag("--folds-file", DATA, default=None, resume=FREE,
         help="folds file (default: DATA/folds.csv)"),
    flag("--cache-dir", DATA, default=None, resume=FREE, option=True,
         help=CACHE_HELP),
    flag("--exclude", DATA, default=None, metavar="FILE", config="exclude", record=BY_USE, checked=True,
         help="CSV with an image_name column (e.g. tools/label_issues.py's): train without these images; they keep "
              "their folds and are still predicted as validation images (default: none)"),
    flag("--channels", DATA, type=int, default=3, config="channels", checked=True, legacy=3,
         help="image bands the model sees: the first N of each image (4 = R, G, B, near-infrared of a Planet "
              "GeoTIFF); 16-bit data is scaled to 8 bits by its 1st-99th percentiles on the training images "
              "(default: 3)"),
    flag("--label-group", DATA, default=None, config="label_group", checked=True,
         help="train on a subset of tags: 'a,b,c' or 'auto:K/i' (i-th of K groups of similar frequency, rarest "
              "first) (default: all tags)"),
    # model
    # EXPERIMENTS.md#real-photos-the-apparel-dataset-end-to-end
    flag("--arch", MODEL, default="tf_efficientnet_lite0", config="arch", checked=True,
         help="torchvision or timm model name (prefix tv: or timm: to choose) (default: tf_efficientnet_lite0, the "
              "model of every experiment; Lite1 was level with it on real photos; evidence: EXPERIMENTS.md section "
              "'Real photos')"),
    flag("--pretrained", MODEL, action=argparse.BooleanOptionalAction, default=True, config="pretrained", checked=True,
         help="start from ImageNet weights: the local torch/Hugging Face cache, downloaded there when missing and "
              "online (default: on)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--weights", MODEL, default=None, metavar="PATH", config="weights", record=BY_USE, checked=True,
         help="start from this file's weights instead of ImageNet's: a .pth/.bin/.safetensors state dict or a "
              "Hugging Face-style model folder, read offline into --arch; a classifier of another shape is left as "
              "initialised, any other mismatch is refused naming the tensors; its sha256 goes into config.json and "
              "best.pt (default: none)"),
    flag("--head", MODEL, default=None, config="head", record=BY_USE, checked=True,
         help="pooling head replacing the architecture's pooling and classifier: avg | max | avgmax | gem[:p=3] | "
              "csra[:lam=0.1,t=1] (t=99: max) | mldecoder (default: the architecture's own; avgmax, gem and csra "
              "were level with it; evidence: EXPERIMENTS.md section r)"),
    # plan
    # None = finetune (utils/train/recipes.py DEFAULT_RECIPE): EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--recipe", PLAN, default=None, config="recipe",
         help="named recipe: finetune (default: its AdamW beat the papers' SGD recipes and the strong recipe was "
              "level with it; evidence: EXPERIMENTS.md sections c, e, s), unfreeze-gradual, alexnet, resnet, vgg, "
              "densenet, bs-ramp, strong (ML-Decoder's plan: adam 1e-4 onecycle, and defaults --ema 0.9997 --aug "
              "'hflip;erase:1' --loss bce --mix 'mixup:0.1;cutmix:1.0;switch=0.5' --head avgmax; BCE and no "
              "RandAugment where the papers have ASL and RandAugment, evidence: EXPERIMENTS.md section s; flags "
              "given win)"),
    flag("--stages", PLAN, default=None,
         help="'key=value,...;key=value,...' one stage per ';' (README \"Option strings\"), e.g. "
              "'epochs=2,size=128,train=head;epochs=8,size=224,train=all' (keys: epochs, size px, bs, lr, opt, "
              "momentum, nesterov, wd, sched, train, lr_mult, warmup, pct_start, step, gamma, milestones, patience,"
              " factor, max_drops, min_lr, drop_rate, accum, bn, name, layer_decay, opt.KEY (the optimizer's "
              "options); utils/train/stage.py) (default: the "
              "--recipe's plan)"),
    flag("--config", PLAN, default=None,
         help="JSON/YAML file with 'stages' and optionally other flags' defaults"),
    # EXPERIMENTS.md#b-image-size-per-stage-and-testing-larger-fixres
    flag("--size", PLAN, type=int, default=None,
         help="final image size in px, earlier stages scale with it (default: the recipe's, 224; 96 on the demo "
              "data; sizes 32-64 px and their schedules were level; evidence: EXPERIMENTS.md section b)"),
    # EXPERIMENTS.md#a-batch-size-and-batchnorm
    flag("--bs", PLAN, type=int, default=None,
         help="the plan's largest batch size; every stage's batch and lr scale linearly with it (default: the "
              "recipe's, 32 for finetune; 16, 32 and 64 were level; evidence: EXPERIMENTS.md section a)"),
    # not measured (the experiments ran 3-5 epochs): EXPERIMENTS.md#defaults-and-their-evidence
    flag("--epochs", PLAN, type=int, default=None,
         help="total epochs, spread over the stages (default: the recipe's, 10; 3 on the demo data; not measured, "
              "evidence: EXPERIMENTS.md section 'Defaults and their evidence')"),
    # EXPERIMENTS.md#open-questions-from-the-notes-on-a-small-cpu-budget
    flag("--lr", PLAN, type=float, default=None,
         help="final stage's learning rate (others scale with it) (default: the recipe's, scaled with --bs; "
              "finetune's 3e-4 learns in the demo's ~200 updates, at ~60 updates 10x was needed; evidence: "
              "EXPERIMENTS.md sections 'Demo data', 'Open questions')"),
    flag("--opt", PLAN, default=None, metavar="NAME[:key=value,...]",
         help="every stage's optimizer, with its options in README \"Option strings\": sgd, adam, adamw (torch), "
              "schedulefree_adamw (package schedulefree), or any timm.optim.list_optimizers() name, e.g. "
              "'lion:betas=0.9/0.99' (stage keys opt=, opt.KEY=) (default: the plan's)"),
    flag("--layer-decay", PLAN, type=float, default=None, metavar="D",
         help="layer-wise lr decay in every stage: the head at the stage's lr, each block k places before it at "
              "lr x D^k (blocks: timm's fine layer groups, else module order); replaces the stage's lr_mult "
              "(stage key layer_decay=) (default: the plan's, off)"),
    # augment
    # EXPERIMENTS.md#demo-data-label-imbalance-colour-swap-label-groups,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--loss", AUGMENT, default="bce", config="loss_spec", checked=True,
         help="bce | wbce[:mode=odds,cap=50] | focal[:gamma=2,alpha=0.25] | asl[:gamma_neg=4,gamma_pos=0,clip=0.05]"
              " (default: bce; wbce and asl were level with it after threshold search, and asl lost to it in the "
              "strong recipe; evidence: EXPERIMENTS.md sections 'Demo data', s)"),
    # EXPERIMENTS.md#demo-data-label-imbalance-colour-swap-label-groups
    flag("--sampler", AUGMENT, default="none", config="sampler", checked=True,
         help="none | oversample[:t=0.1] | undersample[:frac=0.5] (default: none; oversample's +0.005 was inside "
              "the folds' spread; evidence: EXPERIMENTS.md section 'Demo data')"),
    # the AlexNet/ResNet crop + flip: level with the preset 'default' without TTA, and with its
    # 10-crop test (predict.py --tta 10crop) the best row measured, +0.014 over the preset
    # 'default' without TTA on 5 of 6 folds: EXPERIMENTS.md#d-which-augmentations-are-unnecessary,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--aug", AUGMENT, default="hflip;crop:0.125", config="aug", checked=True,
         help="';'-separated augmentations with ','-separated options, e.g. 'hflip;rotate:15;erase:p=0.5,side=0.25'"
              " (hflip, vflip, rotate, shift, crop, rrc, pca, colorswap, erase, randaug, trivialaug, autoaug) and "
              "presets: none, light, default (hflip;rotate:10;shift:0.0625;crop:0.125), heavy, strong (README "
              "\"Option strings\") (default: hflip;crop:0.125, the AlexNet/ResNet crop + flip; predict with --tta "
              "10crop; evidence: EXPERIMENTS.md sections d, s)"),
    # EXPERIMENTS.md#f-static-or-dynamic-augmentation
    flag("--aug-static", AUGMENT, type=int, default=0, metavar="K", config="aug_static", record=_count_or_none,
         checked=True,
         help="static augmentation: K augmented copies of every training image made once per stage, epoch e reads "
              "copy e mod K (default: 0 = dynamic, a new draw every epoch; K=1 and 2 were level with it; evidence: "
              "EXPERIMENTS.md section f)"),
    # ingredients
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--ema", INGREDIENTS, type=float, default=None, metavar="DECAY", config="ema", record=_ema_decay, checked=True,
         help="keep an EMA of the weights with this decay per optimizer step, e.g. 0.9997; every epoch validates "
              "both, best.pt keeps the better (default: off; no measurable difference in a run still climbing; "
              "evidence: EXPERIMENTS.md section r)"),
    # tf.train.ExponentialMovingAverage's num_updates rule, not compared:
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--ema-warmup", INGREDIENTS, action=argparse.BooleanOptionalAction, default=True, config="ema_warmup",
         checked=True, needs=("ema", "--ema DECAY"),
         help="EMA decay warm-up min(decay, (1+k)/(10+k)) at update k (default: on, TensorFlow's rule; not "
              "compared, EXPERIMENTS.md section r)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--mix", INGREDIENTS, default=None, config="mix", record=_mix_or_none, checked=True,
         help="mixup/cutmix of whole batches with soft targets: mixup:ALPHA, cutmix:ALPHA, or both with switch=P "
              "(P(cutmix), default 0.5); p=P mixes a share of the batches, off_epochs=N none in the last N epochs; "
              "the methods ';'-separated, the options in a last item, e.g. "
              "'mixup:0.2;cutmix:1.0;switch=0.5,off_epochs=2' (default: none; mixup and cutmix made no measurable "
              "difference over two seeds; evidence: EXPERIMENTS.md sections r, s)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time,
    # EXPERIMENTS.md#s-a-second-seed-which-answers-hold
    flag("--accum", INGREDIENTS, type=int, default=None, metavar="N", config="accum", checked=True,
         help="gradient accumulation: N micro-batches of --bs per optimizer step, in every stage (default: the "
              "plan's accum=, 1; a memory tool: 2 made no measurable difference over two seeds; evidence: "
              "EXPERIMENTS.md sections r, s)"),
    # EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time
    flag("--keep-epochs", INGREDIENTS, type=int, default=0, metavar="K", config="keep_epochs", checked=True,
         help="keep the last K epochs' weights as checkpoints/epoch_NNN.pt for tools/average_checkpoints.py "
              "(default: 0 = none; averaging the last 3 made no measurable difference; evidence: EXPERIMENTS.md "
              "section r)"),
    # pseudo
    flag("--pseudo", PSEUDO, default=None, metavar="CSV", config="pseudo", record=BY_USE, checked=True,
         help="add these test images to the training set (never to validation) with the file's targets: image_name "
              "+ one column per label in [0, 1], from tools/pseudo_label.py (default: none)"),
    # EXPERIMENTS.md#pseudo-labels-and-distillation-vs-the-same-model-without-apparel
    flag("--pseudo-weight", PSEUDO, type=float, default=1.0, needs=("pseudo", "--pseudo CSV"),
         help="loss weight of each pseudo-labelled image relative to a training image (default: 1.0, the weight "
              "measured; evidence: EXPERIMENTS.md section 'Pseudo-labels and distillation')"),
    flag("--soft-targets", PSEUDO, default=None, metavar="CSV|RUN", config="soft_targets", record=BY_USE, checked=True,
         help="teacher probabilities for distillation: a teacher run directory trained with the same --fold on the "
              "same folds (honest; '{fold}' in the path becomes --fold), or a CSV (image_name + one column per "
              "label) covering every training image; a run's or a stack's out-of-fold file is refused, as it leaks "
              "this fold's labels (default: none)"),
    # EXPERIMENTS.md#pseudo-labels-and-distillation-vs-the-same-model-without-apparel
    flag("--distill", PSEUDO, type=float, default=0.5, metavar="ALPHA",
         needs=("soft_targets", "--soft-targets CSV|RUN"),
         help="with --soft-targets, training targets are (1-ALPHA)*tags + ALPHA*teacher (default: 0.5, the value "
              "measured, which lost with the student's own model as teacher; evidence: EXPERIMENTS.md section "
              "'Pseudo-labels and distillation')"),
    # run
    flag("--fold", RUN, type=int, default=0, config="fold", checked=True,
         help="validation fold (default: 0)"),
    flag("--seed", RUN, type=int, default=0, config="seed", checked=True,
         help="seed of initialisation, order and augmentation (default: 0)"),
    flag("--out", RUN, default=DEFAULT_RUNS, resume=FREE,
         help="folder of runs (default: runs/ in the repository)"),
    flag("--name", RUN, default=None, resume=FREE,
         help="run name (default: <arch>-<images>-<tag>-f<fold>-<YYYYmmdd-HHMMSS>-<pid>, the tag a hash of the "
              "configuration)"),
    flag("--resume", RUN, action="store_true", resume=FREE,
         help="continue --name (or the newest unfinished matching run) from checkpoints/last.pt (default: off, a "
              "new run)"),
    # speed
    flag("--device", SPEED, default="auto", resume=FREE,
         help="auto | cpu | cuda | cuda:N (default: auto)"),
    flag("--workers", SPEED, type=int, default=-1, resume=FREE, option=True,
         help="data loader workers (default: -1 = by machine)"),
    # BENCHMARKS.md "The CPU fast path"; how to run, not what is learnt: out of the run name's tag
    flag("--amp", SPEED, default="auto", choices=["auto", "off", "bf16", "fp16"], resume=FREE, option=True,
         help="mixed precision: auto = on CUDA bf16 autocast where supported (else fp16), on CPU fp32 or bf16 "
              "autocast, whichever trained this network at this size faster when measured on this machine "
              "(bf16 only where the CPU computes it natively; measured once, cached, see "
              "utils/models/fast_path.py); off = fp32; a resumed run keeps the setting config.json records "
              "unless given (default: auto)"),
    flag("--channels-last", SPEED, action=argparse.BooleanOptionalAction, default=None, resume=FREE, option=True,
         help="channels_last memory format; --no-channels-last: contiguous (default: auto = on for CUDA, "
              "measured with --amp on CPU)"),
    flag("--compile", SPEED, action="store_true", resume=FREE, option=True,
         help="torch.compile the model (default: off)"),
    flag("--aug-device", SPEED, default="cpu", choices=["cpu", "gpu"], option=True,
         help="where augmentation runs: cpu (per image, loader workers) or gpu (per batch on the training device) "
              "(default: cpu)"),
    flag("--deterministic", SPEED, action="store_true", config="deterministic",
         help="deterministic algorithms (bit-exact resume on CPU) (default: off)"),
    flag("--ckpt-every", SPEED, type=int, default=0, resume=FREE, option=True,
         help="also checkpoint every N optimizer steps (default: 0 = epoch ends)"),
    flag("--ckpt-minutes", SPEED, type=float, default=10.0, resume=FREE, option=True,
         help="checkpoint at least every N minutes (default: 10)"),
    flag("--plots", SPEED, default="every", choices=["every", "last", "none"], resume=FREE, option=True,
         help="probability-distribution plots per epoch (default: every)"),
    flag("--tensorboard", SPEED, action=argparse.BooleanOptionalAction, default=None, resume=FREE, option=True,
         help="TensorBoard event files in <run>/tb/ every epoch (default: on when the tensorboard package is "
              "installed)"),

)
BY_DEST = {f.dest: f for f in FLAGS}
FREE_FLAGS = frozenset(f.dest for f in FLAGS if f.resume == FREE)
NEEDS = {f.dest: f.needs for f in FLAGS if f.needs}
OPTIONS = tuple(f.dest for f in FLAGS if f.option)
# config.json keys a resumed run must agree on: the checked flags' and the two derived from
# several flags (the label list from --label-group and the data, the plan from --recipe/--stages/...)
RESUME_KEYS = tuple(f.config for f in FLAGS if f.checked) + ("labels", "stages")
RESUME_DEFAULTS = {f.config: f.legacy for f in FLAGS if f.legacy is not None}


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
    """config.json "args": {dest: value} of every stored flag (not the FREE ones)."""
    return {k: v for k, v in values.items() if k in BY_DEST and BY_DEST[k].stored}


def train_options(values):
    """{TrainOptions field: value} of the option flags, from the resolved values."""
    return {k: values[k] for k in OPTIONS}
