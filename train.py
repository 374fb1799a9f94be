"""Fine-tune an ImageNet CNN on one fold of a multi-label dataset, in stages, with exact resume.

    python train.py                                   # demo data, default recipe, fold 0
    python train.py --arch resnet50 --bs 16 --fold 0 --data data/planet
    python train.py --stages "epochs=2,size=128,lr=1e-3,train=head;epochs=8,size=224,lr=3e-4,train=all"
    python train.py --resume --name <run>             # continue exactly where it stopped
    torchrun --nproc_per_node 2 train.py ...          # DistributedDataParallel
"""
from utils.common.cli import stop_on_ctrl_c  # the repository is sys.path[0]: this script's folder

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import logging
import os
import sys
from pathlib import Path

# On CPU, OpenMP threads that spin while waiting lose most of their speed as soon as
# loader workers or other processes share the cores (measured: 14 vs 47 img/s on 2
# cores, BENCHMARKS.md); passive waiting costs nothing measurable when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))

# the flags are parsed and checked before torch is imported (main and start_device import it):
# a mistyped flag is refused in a fraction of a second
from utils.common.atomic import atomic_write_json  # noqa: E402
from utils.common.cli import pick_device, run_script  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.data.output_paths import check_output_dir  # noqa: E402
from utils.common.text import read_json  # noqa: E402
from utils.train.resume import check_same_config, modern_spelling  # noqa: E402
from utils.runs.run_guard import hold_run  # noqa: E402
from utils.runs.train_flags import TrainOptions, train_options  # noqa: E402
from utils.train.parse import check_flags, flags_stages, get_args_parser as train_parser  # noqa: E402
from utils.train.parse import parse_args as parse_train_args  # noqa: E402

log = logging.getLogger("train")


def get_args_parser():
    """train.py's flags, from the table in utils/runs/train_flags.py."""
    return train_parser(__doc__)


def parse_args(argv=None):
    """Parse flags (command line > config file > recipe > defaults: utils/train/parse.py)."""
    return parse_train_args(argv, __doc__)


def start_device(flags):
    """The training device (DDP's local GPU under torchrun), with the --deterministic settings."""
    import torch

    from utils.common import distributed as dist

    device = pick_device(flags.device)
    dist.init_distributed(device.type)
    if device.type == "cuda" and dist.world_size() > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if flags.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def best_line(result):
    """The closing line: the best F2, whose weights (raw or EMA) and epoch, as the epoch lines print it."""
    weights = {"raw": "raw weights, ", "ema": "EMA weights, "}.get(result.get("best_weights"), "")
    return (f"best validation F2: {result['best_val_f2']:.4f} ({weights}epoch {result['best_epoch']}; "
            f"thresholds fitted on this fold)")


def main(args):
    import numpy as np
    import torch

    from utils.common import distributed as dist
    from utils.train.run_setup import (EXCLUDED_COPY, build_config, check_channels, data_root, default_workers,
                                       find_run, finished_result, record_setting, resolve_flags, run_setting,
                                       updated, warn_test_images)
    from utils.augment.transforms import pca_stats
    from utils.data.bands import fit_band_scaling
    from utils.data.cache import default_cache_dir, load_images
    from utils.data.dataset import load_dataset, select_label_group
    from utils.data.exclusion import read_exclusion, write_exclusion
    from utils.data.folds import folds_k_for, plan_folds, warn_unlearnable_labels, write_folds
    from utils.models.factory import check_input_sizes, create_model
    from utils.models.weights import load_weights_file
    from utils.runs.fingerprint import check_same_dataset, dataset_fingerprint
    from utils.train.losses import build_loss
    from utils.train.pseudo import load_extras, sampler_labels
    from utils.train.stage_table import describe_stages
    from utils.train.tensorboard import resolve_flag as resolve_tensorboard
    from utils.train.run_state import seed_everything
    from utils.train.fold_data import FoldData
    from utils.train.trainer import Trainer, check_batches

    check_output_dir(args.out, "--out")
    flags, run_dir = resolve_flags(args, parse_args)  # args stays as parsed
    tensorboard = resolve_tensorboard(flags.tensorboard)
    device = start_device(flags)
    root = data_root(flags)
    check_channels(flags)
    # damaged test images are warned about (warn_test_images), damaged training images refused
    spec = load_dataset(root, flags.images, flags.test_images, channels=flags.channels, warn_test=True)
    if dist.is_main():
        warn_test_images(spec)
    folds_file = Path(flags.folds_file) if flags.folds_file else root / "folds.csv"
    if not flags.resume:  # an existing folds file fixes K unless --folds-k was typed
        flags = updated(flags, folds_k=folds_k_for(folds_file, flags.folds_k, "folds_k" in flags._given))
    # made in memory (the same on every rank) and written only once every check has passed
    fold_ids, folds_file, new_folds = plan_folds(spec, flags.folds_k, flags.folds_seed, folds_file)
    if not 0 <= flags.fold < flags.folds_k:
        raise DataError(f"--fold {flags.fold}: must be in 0..{flags.folds_k - 1}")
    label_idx = select_label_group(spec.labels, spec.y, flags.label_group)
    plan = flags_stages(flags)
    check_flags(flags, spec, plan, label_idx)
    excluded = exclude_cfg = None
    if flags.exclude:
        excluded, digest = read_exclusion(flags.exclude, spec.names)
        exclude_cfg = {"exclude": digest, "exclude_file": EXCLUDED_COPY, "exclude_n": len(excluded)}
    cache_dir = Path(flags.cache_dir) if flags.cache_dir else default_cache_dir(root)
    extras = load_extras(spec, fold_ids, flags.fold, [spec.labels[i] for i in label_idx], flags.pseudo,
                         flags.pseudo_weight, flags.soft_targets, flags.distill, cache_dir, device)
    seed_everything(flags.seed)
    model = create_model(flags.arch, len(label_idx), pretrained=flags.pretrained and not flags.weights,
                         drop_rate=next((s.drop_rate for s in plan if s.drop_rate), None), head=flags.head,
                         channels=flags.channels)
    check_input_sizes(model, [s.size for s in plan], "--size/--stages")  # a ViT takes multiples of its patch
    weights = load_weights_file(model, flags.weights) if flags.weights else None  # refused before any write
    run_dir = run_dir or find_run(flags, Path(flags.out))
    if dist.is_main():  # one train.py per run folder: a second one is refused naming this one
        hold_run(run_dir)
    cfg = build_config(flags, spec, label_idx, plan, model, run_dir, root, folds_file, exclude_cfg)
    if weights is not None:  # the file's sha256: a model key, and in best.pt's meta
        cfg["weights"] = weights
    cfg.update(extras.record if extras else {})
    cfg["dataset"] = dataset_fingerprint(root, spec.names, fold_ids)  # what the run is trained on
    train_rows = (fold_ids != flags.fold).nonzero()[0]
    if excluded is not None:
        train_rows = train_rows[~np.isin(train_rows, excluded)]
    warn_unlearnable_labels(spec, train_rows, label_idx, flags.fold)
    check_batches(plan, flags.sampler, sampler_labels(spec.y[train_rows][:, label_idx], extras), flags.seed,
                  dist.world_size())
    if flags.resume:
        stored = modern_spelling(read_json(run_dir / "config.json"))
        check_same_config(stored, cfg, run_dir)
        check_same_dataset(stored, run_dir, root, "resume it with the dataset it was trained on (--data), or train "
                           "a new run (another --name)", now=cfg["dataset"])
        cfg = stored
        if (done := finished_result(run_dir)) is not None:  # every flag agreed: nothing is left to do
            print(f"run: {run_dir} had already finished (result.json): nothing to resume\n"
                  f"{best_line(done)}; predict.py --runs {run_dir} predicts with it")
            dist.cleanup()
            return done
        if dist.is_main() and new_folds:  # the folds file was moved away: the same folds again
            write_folds(spec, fold_ids, folds_file)
        setting, how = run_setting(flags, device, plan, model, stored.get("fast_path"))
        if dist.is_main():
            record_setting(run_dir, stored, setting, how)
    else:
        cfg["band_scaling"] = fit_band_scaling(spec.files, flags.channels)
        kw = dict(desc=flags.images, channels=flags.channels, scaling=cfg["band_scaling"])
        imgs = dist.main_first(lambda: load_images(spec.files, plan[0].size, cache_dir, **kw))
        if flags.channels >= 3:  # PCA lighting changes R, G, B only
            cfg["pca"] = pca_stats(imgs[train_rows[:: max(1, len(train_rows) // 500)]][..., :3])
        cfg["loss"] = build_loss(flags.loss, spec.y[train_rows][:, label_idx])[1]
        setting, how = run_setting(flags, device, plan, model)
        cfg["fast_path"] = {**setting.record(), "chosen": how}
        if dist.is_main():  # every check has passed: the first files of the run
            if new_folds:
                write_folds(spec, fold_ids, folds_file)
            if excluded is not None:  # the run keeps its own copy of the list
                write_exclusion(run_dir / EXCLUDED_COPY, [spec.names[i] for i in excluded])
            atomic_write_json(run_dir / "config.json", cfg)
    if dist.is_main():
        log.info("run %s: %s on fold %d, %d labels, %d train (+%d pseudo-labelled test) / %d val images, "
                 "device %s, %s (%s)\n%s", run_dir, flags.arch, flags.fold, len(label_idx), len(train_rows),
                 len(extras.test_rows) if extras else 0, int((fold_ids == flags.fold).sum()), device,
                 setting.name, how, describe_stages(plan))
    opts = TrainOptions(**train_options(vars(updated(
        flags, workers=flags.workers if flags.workers >= 0 else default_workers(device), amp=setting.amp,
        channels_last=setting.channels_last, cache_dir=str(cache_dir), tensorboard=tensorboard))))
    model = model.to(device, memory_format=torch.channels_last if setting.channels_last else torch.contiguous_format)
    fold_data = FoldData.split(spec, fold_ids, cfg["fold"], label_idx, excluded, extras)
    trainer = Trainer(model, cfg, fold_data, run_dir, device, opts)
    result = trainer.fit(resume=flags.resume)
    if dist.is_main():
        print(f"run: {run_dir}\n{best_line(result)}, "
              f"predictions: {run_dir / 'preds' / 'val.none.csv'}")
    dist.cleanup()
    return result


if __name__ == "__main__":
    run_script(main, parse_args, logging.INFO)
