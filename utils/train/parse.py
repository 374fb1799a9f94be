"""train.py's command line, for train.py and for whatever checks its flags before running it.

`parse_args` reads the flags of the table (utils/runs/train_flags.py) with one precedence merge:
command line > --config file > --recipe's flags > defaults. `flags_stages` turns the flags
into the run's stages (utils/train/stages.py), and `check_flags` refuses every flag value
train.py would refuse, before anything is written. tools/submit.py checks each grid cell
with these same functions before it submits a job (scripts never import scripts).
"""
import argparse

from utils.common.cli import refuse_idle_flags
from utils.common.errors import DataError
from utils.runs.train_flags import NEEDS, add_flags
from utils.train.resume import given_flags


def get_args_parser(description=None):
    """train.py's flags, from the table in utils/runs/train_flags.py."""
    return add_flags(argparse.ArgumentParser(description=description,
                                             formatter_class=argparse.RawDescriptionHelpFormatter))


def parse_args(argv=None, description=None):
    """Parse flags; a --config file's non-stage keys and then the --recipe's flags become
    defaults (command line > config file > recipe > argparse defaults). The namespace's
    `_given` holds the flags typed (what --resume checks against the run's flags).
    argparse exits (code 2) on a malformed command line; DataError for a bad --config file."""
    parser = get_args_parser(description)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # refused before the plan's modules import torch and timm: at once
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from utils.train.config_file import read_config_file
    from utils.train.recipes import recipe_flags

    extra = {}
    if args.config:
        extra = {k.replace("-", "_"): v for k, v in read_config_file(args.config).items() if k != "stages"}
        unknown = [k for k in extra if k not in vars(args)]
        if unknown:
            raise DataError(f"{args.config}: unknown key(s) {unknown}")
        parser.set_defaults(**extra)
        args, _ = parser.parse_known_args(argv)  # the file may name the recipe
    # a recipe's own flag values (e.g. strong: --ema, --aug, --mix, --head, --loss) are defaults
    # too, below the config file's; the command line wins over both
    parser.set_defaults(**{k: v for k, v in recipe_flags(args.recipe).items() if k not in extra})
    args = parser.parse_args(argv)
    args._given = given_flags(get_args_parser, argv)
    return args


def flags_stages(flags):
    """The run's list of Stages from its flags (--recipe, --stages or --config, and the flags that
    adjust them: --bs, --size, --epochs, --lr, --accum, --opt, --layer-decay). DataError when bad."""
    from utils.train.stages import resolve_stages

    return resolve_stages(recipe=flags.recipe, stages=flags.stages, config_file=flags.config, bs=flags.bs,
                        size=flags.size, epochs=flags.epochs, lr=flags.lr, accum=flags.accum, opt=flags.opt,
                        layer_decay=flags.layer_decay)


def check_flags(flags, spec, plan, label_idx):
    """Fail on a bad --loss, --aug, --ema, --mix, --keep-epochs, --aug-static, --head or an idle
    flag before anything is written (the trainer builds the augmentation per stage).
    spec: the DataSpec; plan: flags_stages's stages; label_idx: the label group's columns."""
    from utils.augment.mix import parse_mix
    from utils.augment.transforms import build_augment
    from utils.models.ema import check_decay
    from utils.models.heads import parse_head
    from utils.train.losses import build_loss
    from utils.train.run_setup import check_aug_static

    build_loss(flags.loss, spec.y[:, label_idx])
    for size in sorted({s.size for s in plan}):
        build_augment(flags.aug, size, [spec.labels[i] for i in label_idx], check_only=True)
    check_decay(flags.ema)
    parse_mix(flags.mix)
    if flags.keep_epochs < 0:
        raise DataError(f"--keep-epochs {flags.keep_epochs}: must be >= 0 (0 keeps none)")
    check_aug_static(flags)
    refuse_idle_flags(flags, NEEDS, get_args_parser(), flags._given, values=not flags.resume)
    parse_head(flags.head)
