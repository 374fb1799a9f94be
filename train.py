"""Fine-tune an ImageNet CNN on one fold of a multi-label dataset, in stages, with exact resume.

    python train.py                                   # demo data, default recipe, fold 0
    python train.py --arch resnet50 --bs 16 --fold 0 --data data/planet
    python train.py --stages "epochs=2,size=128,lr=1e-3,train=head;epochs=8,size=224,lr=3e-4,train=all"
    python train.py --resume --name <run>             # continue exactly where it stopped
    torchrun --nproc_per_node 2 train.py ...          # DistributedDataParallel
"""
import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# On CPU, OpenMP threads that spin while waiting lose most of their speed as soon as
# loader workers or other processes share the cores (measured: 14 vs 47 img/s on 2
# cores, BENCHMARKS.md); passive waiting costs nothing measurable when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import numpy as np
import torch

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

from utils.common import distributed as dist  # noqa: E402
from utils.common.atomic import atomic_write_json  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.common.text import read_json  # noqa: E402
from utils.common.cli import add_cache_argument, pick_device, refuse_idle_flags, run_script  # noqa: E402
from utils.common.output_paths import check_output_dir  # noqa: E402
from utils.runs.resume import given_flags, modern_spelling  # noqa: E402

log = logging.getLogger("train")
EXCLUDED_COPY = "excluded.csv"  # --exclude's images, copied into the run directory
# Settings that must match for --resume to continue a run exactly.
RESUME_KEYS = ("arch", "fold", "seed", "images", "labels", "label_group", "stages", "loss_spec", "sampler",
               "aug", "pretrained", "folds_k", "ema", "ema_warmup", "exclude", "mix", "accum", "head",
               "keep_epochs", "pseudo", "soft_targets", "aug_static", "channels")
# Flags that act only with another flag (its dest, as typed): refused without it, whatever their value.
NEEDS = {"pseudo_weight": ("pseudo", "--pseudo CSV"), "distill": ("soft_targets", "--soft-targets CSV|RUN"),
         "ema_warmup": ("ema", "--ema DECAY")}
# What a run recorded before a key existed meant (older runs resume unchanged).
RESUME_DEFAULTS = {"channels": 3}


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="dataset directory in the Planet layout "
                   "(default: data/demo in the repository, generated on first use)")
    g.add_argument("--images", default="train", help="image folder (variant) inside --data (default: train)")
    g.add_argument("--test-images", default="test", help="test image folder inside --data (default: test)")
    g.add_argument("--folds-k", type=int, default=5, help="number of folds when folds.csv is created; an existing folds file's own K is used "
                   "unless this is given, and must then agree with it (default: 5)")
    g.add_argument("--folds-seed", type=int, default=42, help="seed of the fold split (default: 42)")
    g.add_argument("--folds-file", default=None, help="folds file (default: DATA/folds.csv)")
    add_cache_argument(g)
    g.add_argument("--exclude", default=None, metavar="FILE",
                   help="CSV with an image_name column (e.g. tools/label_issues.py's): train without these images; "
                        "they keep their folds and are still predicted as validation images (default: none)")
    g.add_argument("--channels", type=int, default=3, help="image bands the model sees: the first N of each "
                   "image (4 = R, G, B, near-infrared of a Planet GeoTIFF); 16-bit data is scaled to 8 bits by "
                   "its 1st-99th percentiles on the training images (default: 3)")
    g.add_argument("--label-group", default=None, help="train on a subset of tags: 'a,b,c' or 'auto:K/i' "
                   "(i-th of K groups of similar frequency, rarest first) (default: all tags)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="tf_efficientnet_lite0", help="torchvision or timm model name "
                   "(prefix tv: or timm: to choose) (default: tf_efficientnet_lite0)")
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights: the local torch/Hugging Face cache, downloaded "
                   "there when missing and online (default: on)")
    g.add_argument("--head", default=None, help="pooling head replacing the architecture's pooling and "
                   "classifier: avg | max | avgmax | gem[:p=3] | csra[:lam=0.1,t=1] (t=99: max) | mldecoder "
                   "(default: the architecture's own)")
    g = p.add_argument_group("stage plan (one of --recipe, --stages, --config; flags below override)")
    g.add_argument("--recipe", default=None, help="named recipe: finetune (default), unfreeze-gradual, alexnet, "
                   "resnet, vgg, densenet, bs-ramp, strong (ASL/ML-Decoder: adam 1e-4 onecycle, and defaults "
                   "--ema 0.9997 --aug strong --loss asl --mix 'mixup:0.1;cutmix:1.0;switch=0.5' --head avgmax; "
                   "flags given win)")
    g.add_argument("--stages", default=None, help="'key=value,...;key=value,...' one stage per ';' (README \"Option strings\"), e.g. "
                   "'epochs=2,size=128,train=head;epochs=8,size=224,train=all' (keys: epochs, size "
                   "px, bs, lr, opt, momentum, nesterov, wd, sched, train, lr_mult, warmup, pct_start, step, gamma, "
                   "milestones, patience, factor, max_drops, min_lr, drop_rate, accum, bn, name; utils/train/stages.py) "
                   "(default: the --recipe's plan)")
    g.add_argument("--config", default=None, help="JSON/YAML file with 'stages' and optionally other flags' defaults")
    g.add_argument("--size", type=int, default=None, help="final image size in px, earlier stages scale with it "
                   "(default: the recipe's, 224; 96 on the demo data)")
    g.add_argument("--bs", type=int, default=None, help="the plan's largest batch size; every stage's batch and "
                   "lr scale linearly with it (default: the recipe's)")
    g.add_argument("--epochs", type=int, default=None, help="total epochs, spread over the stages "
                   "(default: the recipe's, 10; 3 on the demo data)")
    g.add_argument("--lr", type=float, default=None, help="final stage's learning rate (others scale with it) "
                   "(default: the recipe's, scaled with --bs)")
    g = p.add_argument_group("imbalance and augmentation")
    g.add_argument("--loss", default="bce", help="bce | wbce[:mode=odds,cap=50] | focal[:gamma=2,alpha=0.25] | "
                   "asl[:gamma_neg=4,gamma_pos=0,clip=0.05] (default: bce)")
    g.add_argument("--sampler", default="none", help="none | oversample[:t=0.1] | undersample[:frac=0.5] (default: none)")
    g.add_argument("--aug", default="default", help="';'-separated augmentations with ','-separated options, "
                   "e.g. 'hflip;rotate:15;erase:p=0.5,side=0.25' (hflip, vflip, rotate, shift, crop, rrc, pca, "
                   "colorswap, erase, randaug, trivialaug, autoaug) and presets: none, light, default, heavy, strong "
                   "(README \"Option strings\") (default: default)")
    g.add_argument("--aug-static", type=int, default=0, metavar="K",
                   help="static augmentation: K augmented copies of every training image made once per "
                   "stage, epoch e reads copy e mod K (default: 0 = dynamic, a new draw every epoch)")
    g = p.add_argument_group("training ingredients")
    g.add_argument("--ema", type=float, default=None, metavar="DECAY",
                   help="keep an EMA of the weights with this decay per optimizer step, e.g. 0.9997; every "
                   "epoch validates both, best.pt keeps the better (default: off)")
    g.add_argument("--ema-warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="EMA decay warm-up min(decay, (1+k)/(10+k)) at update k (default: on)")
    g.add_argument("--mix", default=None, help="mixup/cutmix of whole batches with soft targets: mixup:ALPHA, "
                   "cutmix:ALPHA, or both with switch=P (P(cutmix), default 0.5); p=P mixes a share of the "
                   "batches, off_epochs=N none in the last N epochs; the methods ';'-separated, the options "
                   "in a last item, e.g. 'mixup:0.2;cutmix:1.0;switch=0.5,off_epochs=2' (default: none)")
    g.add_argument("--accum", type=int, default=None, metavar="N",
                   help="gradient accumulation: N micro-batches of --bs per optimizer step, in every stage "
                   "(default: the plan's accum=, 1)")
    g.add_argument("--keep-epochs", type=int, default=0, metavar="K",
                   help="keep the last K epochs' weights as checkpoints/epoch_NNN.pt for "
                   "tools/average_checkpoints.py (default: 0 = none)")
    g = p.add_argument_group("pseudo-labels and distillation (README: which teacher files keep the "
                             "out-of-fold score honest)")
    g.add_argument("--pseudo", default=None, metavar="CSV",
                   help="add these test images to the training set (never to validation) with the file's "
                        "targets: image_name + one column per label in [0, 1], from tools/pseudo_label.py "
                        "(default: none)")
    g.add_argument("--pseudo-weight", type=float, default=1.0,
                   help="loss weight of each pseudo-labelled image relative to a training image (default: 1.0)")
    g.add_argument("--soft-targets", default=None, metavar="CSV|RUN",
                   help="teacher probabilities for distillation: a teacher run directory trained with the same "
                        "--fold on the same folds (honest; '{fold}' in the path becomes --fold), or a CSV "
                        "(image_name + one column per label) covering every training image; a run's or a "
                        "stack's out-of-fold file is refused, as it leaks this fold's labels (default: none)")
    g.add_argument("--distill", type=float, default=0.5, metavar="ALPHA",
                   help="with --soft-targets, training targets are (1-ALPHA)*tags + ALPHA*teacher (default: 0.5)")
    g = p.add_argument_group("run")
    g.add_argument("--fold", type=int, default=0, help="validation fold (default: 0)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, order and augmentation (default: 0)")
    g.add_argument("--out", default=str(REPO / "runs"), help="folder of runs (default: runs/ in the repository)")
    g.add_argument("--name", default=None, help="run name (default: <arch>-<images>-f<fold>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue --name (or the newest unfinished matching "
                   "run) from checkpoints/last.pt (default: off, a new run)")
    g = p.add_argument_group("speed")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    g.add_argument("--workers", type=int, default=-1, help="data loader workers (default: -1 = by machine)")
    g.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"],
                   help="mixed precision on CUDA (default: auto = bf16 where supported)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on for CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (default: off)")
    g.add_argument("--aug-device", default="cpu", choices=["cpu", "gpu"],
                   help="where augmentation runs: cpu (per image, loader workers) or gpu (per batch on the "
                   "training device) (default: cpu)")
    g.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-exact resume on CPU) "
                   "(default: off)")
    g.add_argument("--ckpt-every", type=int, default=0, help="also checkpoint every N optimizer steps (default: 0 = epoch ends)")
    g.add_argument("--ckpt-minutes", type=float, default=10.0, help="checkpoint at least every N minutes (default: 10)")
    g.add_argument("--plots", default="every", choices=["every", "last", "none"],
                   help="probability-distribution plots per epoch (default: every)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorBoard event files in <run>/tb/ every epoch (default: on when the tensorboard "
                   "package is installed)")
    return p


def parse_args(argv=None):
    """Parse flags; a --config file's non-stage keys and then the --recipe's flags become
    defaults (command line > config file > recipe > argparse defaults)."""
    from utils.train.stages import read_config_file, recipe_flags

    parser = get_args_parser()
    args, _ = parser.parse_known_args(argv)
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
    args._given = given_flags(get_args_parser, argv)  # what --resume checks against the run's flags
    return args


def default_workers(device):
    """Loader workers: on CUDA most cores; on CPU one (the cores are busy computing)."""
    from utils.data.cache import default_workers as cores

    return min(8, cores()) if device.type == "cuda" else min(1, cores() - 1)


# Without --data the demo trains in a few minutes on 2 CPU cores: the demo's image size
# and a short plan, unless the user sets them.
DEMO_DEFAULTS = {"size": 96, "epochs": 3}


def data_root(args):
    """--data, or the demo dataset (generated on first use, by rank 0)."""
    if args.data:
        return Path(args.data)
    for k, v in DEMO_DEFAULTS.items():
        if getattr(args, k) is None and not (args.stages or args.config):
            setattr(args, k, v)
    root = REPO / "data" / "demo"
    if not (root / "train.csv").is_file():
        if dist.is_main():
            from utils.data.demo import ensure_demo

            log.info("generating the demo dataset in %s (first use)", root)
            ensure_demo(root)
        dist.barrier()
    return root


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def find_run(args, out):
    """The run directory to create or resume; raises DataError when that is impossible."""
    if args.resume:
        if args.name:
            run = out / args.name
            if not (run / "checkpoints" / "last.pt").is_file():
                raise DataError(f"{run}: nothing to resume (no checkpoints/last.pt); run without --resume")
            return run
        # the newest unfinished run matching the given --arch, --fold, --images (all, when none is given)
        want = {k: getattr(args, k) for k in ("arch", "fold", "images") if k in getattr(args, "_given", ())}
        cands = []
        for c in out.glob("*/config.json"):
            cfg = read_json(c)
            if all(cfg.get(k) == v for k, v in want.items()) \
                    and not (c.parent / "result.json").is_file() and (c.parent / "checkpoints" / "last.pt").is_file():
                cands.append(c.parent)
        if not cands:
            what = " ".join(f"{k} {v}" for k, v in want.items()) or "any"
            raise DataError(f"{out}: no unfinished run ({what}) to resume; pass --name")
        return max(cands, key=lambda d: d.stat().st_mtime)
    name = args.name or f"{args.arch.replace(':', '_')}-{args.images}-f{args.fold}-{time.strftime('%Y%m%d-%H%M%S')}"
    if dist.world_size() > 1:  # every rank must use rank 0's name
        obj = [name]
        torch.distributed.broadcast_object_list(obj, src=0)
        name = obj[0]
    run = out / name
    if (run / "checkpoints" / "last.pt").is_file() or (run / "result.json").is_file():
        raise DataError(f"{run}: run exists; pass --resume to continue it or choose another --name")
    return run


def warn_test_images(spec):
    """Say now, not after training, which test images predict.py will not be able to read."""
    from utils.data.dataset import check_test_images

    problems = check_test_images(spec)
    if problems:
        log.warning("%d test image(s) in %s look damaged; predict.py will refuse them, so fix or replace them "
                    "while this trains:\n  %s", len(problems), spec.root / spec.test_images,
                    "\n  ".join(problems[:10]) + (f"\n  (+{len(problems) - 10} more)" if len(problems) > 10 else ""))


def build_config(args, spec, label_idx, plan, model, run_dir, root, folds_file, exclude=None):
    """The resolved configuration written to config.json; exclude: the --exclude list's
    SHA-1 (a model and resume key), with its path and count in exclude_file / exclude_n."""
    from utils.models.ema import check_decay
    from utils.augment.mix import parse_mix
    from utils.models.factory import model_meta
    from utils.common.paths import portable
    from utils.runs.directory import model_key

    meta = model_meta(model)
    rel, absolute = portable(root, run_dir)
    cfg = {"name": run_dir.name, "arch": args.arch, "fold": args.fold, "seed": args.seed,
           "labels": [spec.labels[i] for i in label_idx], "all_labels": spec.labels,
           "label_group": args.label_group, "images": args.images, "test_images": args.test_images,
           "data_root": rel, "data_root_abs": absolute,
           "folds_file": portable(folds_file, root)[0] or str(Path(folds_file).resolve()),
           "folds_k": args.folds_k, "folds_seed": args.folds_seed,
           "pretrained": args.pretrained, "head": meta.get("head_name"), "drop_rate": next((s.drop_rate for s in plan if s.drop_rate), None),
           "stages": [s.to_dict() for s in plan], "loss_spec": args.loss, "sampler": args.sampler,
           "aug": args.aug, "aug_static": args.aug_static or None, "ema": check_decay(args.ema), "ema_warmup": args.ema_warmup,
           "mix": args.mix if parse_mix(args.mix) else None, "accum": args.accum,
           "keep_epochs": args.keep_epochs,
           "channels": args.channels, "mean": list(meta["mean"]), "std": list(meta["std"]),
           "recipe": args.recipe, "argv": sys.argv[1:], "args": run_flags(args), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "git_commit": git_commit(), "deterministic": args.deterministic,
           "versions": {"python": platform.python_version(), "torch": torch.__version__}}
    cfg.update(exclude or {"exclude": None})
    cfg["model_key"] = model_key(cfg)
    return cfg


def run_flags(args):
    """The flags that define a run (config.json "args"): every flag but the free how/where ones."""
    from utils.runs.resume import FREE

    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in FREE}


def restore_run_flags(args):
    """--resume: the run to continue, with every flag not given taken from its config.json."""
    from utils.common.paths import native_rel
    from utils.runs.resume import data_of_run, restore_flags

    run_dir = find_run(args, Path(args.out))
    stored = modern_spelling(read_json(run_dir / "config.json"))
    restore_flags(args, stored, args._given, run_dir, parse=parse_args)
    if "data" not in args._given:
        root = data_of_run(run_dir).data_root
        if root.resolve() != (REPO / "data" / "demo").resolve():
            args.data = str(root)
    if "folds_file" not in args._given and stored.get("folds_file"):
        args.folds_file = str(Path(data_root(args)) / native_rel(stored["folds_file"]))
    return run_dir


def check_aug_static(args):
    """--aug-static K needs K >= 0, an augmentation to copy and the per-image (cpu) path."""
    from utils.augment.transforms import parse_augment

    if args.aug_static < 0:
        raise DataError(f"--aug-static {args.aug_static}: give a number of copies >= 1, or 0 for dynamic")
    if args.aug_static and not parse_augment(args.aug):
        raise DataError(f"--aug-static {args.aug_static} with --aug {args.aug!r}: there is no augmentation "
                        "to pre-compute; drop --aug-static or give --aug")
    if args.aug_static and args.aug_device == "gpu":
        raise DataError("--aug-static makes its copies on the CPU; drop --aug-device gpu")


def check_channels(args):
    """--channels: at least 1; colour augmentation needs R, G, B."""
    from utils.augment.transforms import OPS, parse_augment

    if args.channels < 1:
        raise DataError(f"--channels {args.channels}: must be at least 1")
    names = [name for name, _ in parse_augment(args.aug)]
    colour = [name for name in names if not OPS[name].geometric]
    if args.channels < 3 and colour:
        raise DataError(f"--aug {args.aug}: colour steps {colour} need R, G, B; --channels {args.channels} "
                        f"keeps fewer bands: drop them from --aug")
    # these draw geometric and colour ops together on an RGB image; the other bands would not move
    mixed = [name for name in names if name in ("randaug", "trivialaug", "autoaug")]
    if args.channels != 3 and mixed:
        raise DataError(f"--aug {args.aug}: {mixed} work on RGB images only; with --channels {args.channels} "
                        f"use the geometric steps (hflip, rotate, shift, crop, rrc) and pca, colorswap, erase")


def check_resume(stored, cfg, run_dir):
    diff = [k for k in RESUME_KEYS if stored.get(k, RESUME_DEFAULTS.get(k)) != cfg.get(k)]
    if diff:
        lines = [f"  {k}: run has {json.dumps(stored.get(k))}, now {json.dumps(cfg.get(k))}" for k in diff]
        raise DataError(f"{run_dir}: cannot resume exactly, the configuration changed:\n" + "\n".join(lines) +
                        "\nresume with the run's original flags, or start a new run")


def main(args):
    from utils.data.dataset import load_dataset, select_label_group
    from utils.data.folds import folds_k_for, plan_folds, warn_unlearnable_labels, write_folds
    from utils.models.ema import check_decay
    from utils.data.exclusion import read_exclusion, write_exclusion
    from utils.augment.mix import parse_mix
    from utils.data.bands import fit_band_scaling
    from utils.data.cache import default_cache_dir, load_images
    from utils.train.losses import build_loss
    from utils.models.heads import parse_head
    from utils.models.factory import create_model
    from utils.train.pseudo import load_extras, sampler_labels
    from utils.train.stages import describe_plan, resolve_plan
    from utils.train.tensorboard import resolve_flag as resolve_tensorboard
    from utils.train.fold_data import FoldData
    from utils.train.run_state import seed_everything
    from utils.train.trainer import TrainOptions, Trainer, check_batches
    from utils.augment.transforms import build_augment, pca_stats

    check_output_dir(args.out, "--out")
    run_dir = restore_run_flags(args) if args.resume else None
    tensorboard = resolve_tensorboard(args.tensorboard)
    device = pick_device(args.device)
    dist.init_distributed(device.type)
    if device.type == "cuda" and dist.world_size() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if args.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    root = data_root(args)
    check_channels(args)
    # damaged test images are warned about (warn_test_images), damaged training images refused
    spec = load_dataset(root, args.images, args.test_images, channels=args.channels, warn_test=True)
    if dist.is_main():
        warn_test_images(spec)
    folds_file = Path(args.folds_file) if args.folds_file else root / "folds.csv"
    if not args.resume:  # an existing folds file fixes K unless --folds-k was typed
        args.folds_k = folds_k_for(folds_file, args.folds_k, "folds_k" in getattr(args, "_given", ()))
    # made in memory (the same on every rank) and written only once every check has passed
    fold_ids, folds_file, new_folds = plan_folds(spec, args.folds_k, args.folds_seed, folds_file)
    if not 0 <= args.fold < args.folds_k:
        raise DataError(f"--fold {args.fold}: must be in 0..{args.folds_k - 1}")
    label_idx = select_label_group(spec.labels, spec.y, args.label_group)
    plan = resolve_plan(recipe=args.recipe, stages=args.stages, config_file=args.config,
                        bs=args.bs, size=args.size, epochs=args.epochs, lr=args.lr, accum=args.accum)
    build_loss(args.loss, spec.y[:, label_idx])  # fail on a bad --loss before anything is written
    for size in sorted({s.size for s in plan}):  # and on a bad --aug (the trainer builds it per stage)
        build_augment(args.aug, size, [spec.labels[i] for i in label_idx])
    check_decay(args.ema)
    parse_mix(args.mix)
    if args.keep_epochs < 0:
        raise DataError(f"--keep-epochs {args.keep_epochs}: must be >= 0 (0 keeps none)")
    check_aug_static(args)
    refuse_idle_flags(args, NEEDS, get_args_parser(), getattr(args, "_given", ()), values=not args.resume)
    excluded = exclude_cfg = None
    if args.exclude:
        excluded, digest = read_exclusion(args.exclude, spec.names)
        exclude_cfg = {"exclude": digest, "exclude_file": EXCLUDED_COPY, "exclude_n": len(excluded)}
    parse_head(args.head)  # and on a bad --head
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(root)
    extras = load_extras(spec, fold_ids, args.fold, [spec.labels[i] for i in label_idx], args.pseudo,
                         args.pseudo_weight, args.soft_targets, args.distill, cache_dir, device)
    out = Path(args.out)
    run_dir = run_dir or find_run(args, out)
    seed_everything(args.seed)
    model = create_model(args.arch, len(label_idx), pretrained=args.pretrained,
                         drop_rate=next((s.drop_rate for s in plan if s.drop_rate), None), head=args.head,
                         channels=args.channels)
    cfg = build_config(args, spec, label_idx, plan, model, run_dir, root, folds_file, exclude_cfg)
    cfg.update(extras.record if extras else {})
    train_rows = (fold_ids != args.fold).nonzero()[0]
    if excluded is not None:
        train_rows = train_rows[~np.isin(train_rows, excluded)]
    warn_unlearnable_labels(spec, train_rows, label_idx, args.fold)
    check_batches(plan, args.sampler, sampler_labels(spec.y[train_rows][:, label_idx], extras), args.seed,
                  dist.world_size())
    if args.resume:
        stored = modern_spelling(read_json(run_dir / "config.json"))
        check_resume(stored, cfg, run_dir)
        cfg = stored
        if dist.is_main() and new_folds:  # the folds file was moved away: the same folds again
            write_folds(spec, fold_ids, folds_file)
    else:
        cfg["band_scaling"] = fit_band_scaling(spec.files, args.channels)
        kw = dict(desc=args.images, channels=args.channels, scaling=cfg["band_scaling"])
        imgs = dist.main_first(lambda: load_images(spec.files, plan[0].size, cache_dir, **kw))
        if args.channels >= 3:  # PCA lighting changes R, G, B only
            cfg["pca"] = pca_stats(imgs[train_rows[:: max(1, len(train_rows) // 500)]][..., :3])
        cfg["loss"] = build_loss(args.loss, spec.y[train_rows][:, label_idx])[1]
        if dist.is_main():  # every check has passed: the first files of the run
            if new_folds:
                write_folds(spec, fold_ids, folds_file)
            if excluded is not None:  # the run keeps its own copy of the list
                write_exclusion(run_dir / EXCLUDED_COPY, [spec.names[i] for i in excluded])
            atomic_write_json(run_dir / "config.json", cfg)
    if dist.is_main():
        log.info("run %s: %s on fold %d, %d labels, %d train (+%d pseudo-labelled test) / %d val images, "
                 "device %s\n%s", run_dir, args.arch, args.fold, len(label_idx), len(train_rows),
                 len(extras.test_rows) if extras else 0, int((fold_ids == args.fold).sum()), device,
                 describe_plan(plan))
    cl = args.channels_last if args.channels_last is not None else device.type == "cuda"
    opts = TrainOptions(workers=args.workers if args.workers >= 0 else default_workers(device),
                        ckpt_every=args.ckpt_every, ckpt_minutes=args.ckpt_minutes, channels_last=cl,
                        amp=args.amp, compile=args.compile, plots=args.plots, cache_dir=str(cache_dir),
                        aug_device=args.aug_device, tensorboard=tensorboard)
    model = model.to(device, memory_format=torch.channels_last if cl else torch.contiguous_format)
    fold_data = FoldData.split(spec, fold_ids, cfg["fold"], label_idx, excluded, extras)
    trainer = Trainer(model, cfg, fold_data, run_dir, device, opts)
    result = trainer.fit(resume=args.resume)
    if dist.is_main():
        print(f"run: {run_dir}\nbest validation F2: {result['best_val_f2']:.4f} (epoch {result['best_epoch']}), "
              f"predictions: {run_dir / 'preds' / 'val.none.csv'}")
    dist.cleanup()
    return result


if __name__ == "__main__":
    run_script(main, parse_args, logging.INFO)
