"""Average a run's kept epoch checkpoints into checkpoints/avg.pt (same format as best.pt).

    python train.py ... --keep-epochs 5                          # keeps the last 5 epochs' weights
    python tools/average_checkpoints.py --runs runs/X --last 5    # uniform average of those
    python tools/average_checkpoints.py --runs runs/X --top 3 --bn-recompute
    python predict.py --runs runs/X --checkpoint avg

--bn-recompute recomputes the BatchNorm statistics of the averaged weights over the
run's training images (every image not in its validation fold, at the checkpoint's
size, from the image cache, no augmentation) with torch.optim.swa_utils.update_bn.
Nothing is written before every check has passed; avg.pt is written atomically.
"""
import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

import numpy as np  # noqa: E402

from utils.common.cli import add_cache_argument, add_hidden_alias, pick_device, run_script  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.data.folds_file import read_folds_file  # noqa: E402

log = logging.getLogger("average_checkpoints")


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", dest="run", required=True, metavar="RUN",
                   help="one run directory with checkpoints/epoch_*.pt (train.py --keep-epochs)")
    add_hidden_alias(p, "--run", "--runs")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--last", type=int, default=None, metavar="K",
                     help="average the K latest kept epochs (default: all kept epochs)")
    sel.add_argument("--top", type=int, default=None, metavar="K",
                     help="average the K kept epochs with the best validation F2")
    p.add_argument("--bn-recompute", action="store_true",
                   help="recompute BatchNorm statistics over the run's training images (default: off, the "
                   "statistics are averaged like the weights)")
    g = p.add_argument_group("data (only for --bn-recompute)")
    g.add_argument("--data", default=None, help="dataset directory (default: the one the run recorded)")
    g.add_argument("--path-map", default=None, help="file of OLD=NEW path prefixes for recorded paths (default: none)")
    add_cache_argument(g)
    g.add_argument("--bs", type=int, default=64, help="images per batch for the statistics (default: 64)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    return p


def training_images(run, data=None):
    """(DataSpec of the run's dataset, rows of its training images: every image outside its
    validation fold). DataError when the data or a fold is missing."""
    from utils.data.dataset import load_dataset

    root = Path(data) if data else run.data_root
    if root is None:
        raise DataError(f"{run.dir}: its data directory {run.config.get('data_root_abs')} is not found here; "
                        f"pass --data DIR or --path-map FILE")
    spec = load_dataset(root, run.config.get("images", "train"), run.config.get("test_images", "test"))
    folds_path = root / run.config.get("folds_file", "folds.csv")
    fold_of = read_folds_file(folds_path)  # every value checked, naming the rows
    missing = [n for n in spec.names if n not in fold_of]
    if missing:
        raise DataError(f"{folds_path}: {len(missing)} training image(s) have no fold (e.g. {missing[0]!r})")
    rows = np.array([i for i, n in enumerate(spec.names) if fold_of[n] != run.fold])
    return spec, rows


def main(args):
    from utils.models.averaging import average_run, epoch_checkpoints, has_batchnorm, recompute_bn
    from utils.data.bands import image_options
    from utils.data.cache import default_cache_dir, load_images
    from utils.models.checkpoint import build_from_meta, load_weights, save_checkpoint
    from utils.common.paths import load_path_map
    from utils.runs.directory import load_run

    if args.bs < 1:
        raise DataError(f"--bs {args.bs}: must be >= 1")
    run = load_run(args.run, load_path_map(args.path_map))
    last = args.last
    if last is None and args.top is None:
        last = len(epoch_checkpoints(run.dir)) or 1
    avg = average_run(run.dir, last=last, top=args.top)
    out = run.dir / "checkpoints" / "avg.pt"
    if args.bn_recompute:
        meta = avg["meta"]
        model = build_from_meta(meta)
        load_weights(model, avg["model"], out)
        if not has_batchnorm(model):
            log.info("%s has no BatchNorm layer: nothing to recompute", meta["arch"])
        else:
            spec, rows = training_images(run, args.data)
            cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(spec.root)
            images = load_images(spec.files, int(meta["size"]), cache, desc=spec.images, **image_options(meta))
            device = pick_device(args.device)
            recompute_bn(model, images, rows, meta["mean"], meta["std"], args.bs, device)
            avg["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            avg["averaged"]["bn_recomputed"] = True
            avg["averaged"]["bn_images"] = int(len(rows))
    save_checkpoint(out, avg)
    a = avg["averaged"]
    print(f"{out}: mean of epochs {', '.join(map(str, a['epochs']))} ({a['how']}; their F2 "
          f"{', '.join(f'{f:.4f}' for f in a['val_f2'])})"
          f"{', BatchNorm statistics recomputed' if a['bn_recomputed'] else ''}\n"
          f"predict with: python predict.py --runs {run.dir} --checkpoint avg")
    return avg


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
