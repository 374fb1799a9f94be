"""Recipes: named stage plans from the papers, each a function of (epochs, size).

`RECIPES` maps a --recipe name to its `Recipe`; `strong` also sets defaults of other
train.py flags (STRONG_FLAGS, recipe_flags). Each default that a measurement on this
project's data supports or changed cites its EXPERIMENTS.md section; the rest are the
papers' values (EXPERIMENTS.md "Defaults and their evidence" lists both).
"""
import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Callable

from utils.common.errors import DataError
from utils.train.stage_scaling import distribute_epochs, round_size
from utils.train.stage import Stage


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
    # Measured here: AdamW one-cycle beat SGD step decay and the SGD batch ramp on 5-6 of 6
    # folds (EXPERIMENTS.md#e-increase-the-batch-instead-of-decaying-the-learning-rate);
    # head-then-all, gradual unfreezing and all-at-once were level, lr_mult 0.5 vs 1 too
    # (EXPERIMENTS.md#c-unfreezing-gradually-all-at-once-or-head-then-all); batch 16/32/64
    # level (EXPERIMENTS.md#a-batch-size-and-batchnorm); the head stage's smaller size level
    # with one size throughout (EXPERIMENTS.md#b-image-size-per-stage-and-testing-larger-fixres).
    # The lrs are fastai's: at ~60 updates they left a model at the label prior and the
    # experiments ran 10x (EXPERIMENTS.md#open-questions-from-the-notes-on-a-small-cpu-budget);
    # the demo's ~190 updates learn at 1x (EXPERIMENTS.md#demo-data-label-imbalance-colour-swap-label-groups).
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
# line win over them). Sources, and where this project's measurements moved them (a run
# recorded with the former values resumes with them: config.json keeps its flags):
STRONG_FLAGS = {
    # ASL/ML-Decoder: ModelEma(model, 0.9997); both weights validated, the better kept. No
    # measurable difference at ~60 updates (EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time)
    "ema": 0.9997,
    # ASL/ML-Decoder: CutoutPIL(cutout_factor=0.5) + RandAugment, on flips; RandAugment dropped:
    # the preset without it gained +0.008 and +0.009 over two seeds, 5 of 6 folds
    # (EXPERIMENTS.md#s-a-second-seed-which-answers-hold; --aug strong is the papers' preset)
    "aug": "hflip;erase:1",
    # ASL's scripts train with ASL (gamma_neg=4, clip=0.05); in this recipe BCE beat it on all
    # 6 folds of two seeds (+0.018, +0.069) and ASL collapsed one fold
    # (EXPERIMENTS.md#s-a-second-seed-which-answers-hold); --loss asl gives the papers' loss
    "loss": "bce",
    # mixup 0.1 + cutmix 1.0, switch 0.5: the batch-mixing of timm's "ResNet strikes back"
    # A2/A3 procedures (Wightman, Touvron & Jegou 2021); not in the ASL scripts. Kept: without
    # it, +0.014 with mixed signs, no measurable difference
    # (EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time)
    "mix": "mixup:0.1;cutmix:1.0;switch=0.5",
    # concatenated average and max pooling (fastai's AdaptiveConcatPool2d): a cheap head that
    # fine-tunes well on small data; ML-Decoder's own head is one flag away (--head mldecoder).
    # Heads were level (EXPERIMENTS.md#r-the-training-ingredients-one-at-a-time)
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
    "strong": Recipe(_strong, 40, 448, "Ridnik et al. 2021/2023 (ML-Decoder plan) + RSB mixing; BCE, no RandAugment",
                     STRONG_FLAGS),
}
# The SGD recipes of the papers lost to finetune's AdamW on 5-6 of 6 folds, and the strong
# recipe (BCE) was level with it at the budget measured: finetune stays the default
# (EXPERIMENTS.md#s-a-second-seed-which-answers-hold).
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
    without any. An unknown name gives {} here; resolve_stages reports it."""
    return dict(RECIPES[name].flags) if name in RECIPES else {}
