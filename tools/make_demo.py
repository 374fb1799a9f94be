"""Generate the synthetic "outfits" demo dataset (Kaggle/Planet layout) that train.py uses by default.

    python tools/make_demo.py                       # data/demo: 3000 train + 1000 test at 96 px
    python tools/make_demo.py --out data/demo-small --train 500 --test 100 --size 64 --seed 1
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]  # tools/statistics.py is not the stdlib's
sys.path.insert(0, str(ROOT))
from utils.common.cli import stop_on_ctrl_c  # noqa: E402

stop_on_ctrl_c(__name__)  # Ctrl-C during the imports below: one line, exit code 130

import argparse  # noqa: E402
import logging  # noqa: E402

from utils.data.demo import make_demo, tag_frequencies  # noqa: E402
from utils.common.cli import run_script  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=ROOT / "data" / "demo",
                   help="folder to create; must be absent or empty (default: data/demo in the repository)")
    g.add_argument("--force", action="store_true", help="replace --out if it already holds files (default: refuse)")
    g = p.add_argument_group("dataset")
    g.add_argument("--train", type=int, default=3000, help="number of training images (default: 3000)")
    g.add_argument("--test", type=int, default=1000, help="number of test images (default: 1000)")
    g.add_argument("--size", type=int, default=96, help="image side in pixels, at least 16 (default: 96)")
    g.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    g.add_argument("--workers", type=int, default=None,
                   help="worker processes; output does not depend on it (default: all cores)")
    return p


def main(args):
    out = make_demo(args.out, n_train=args.train, n_test=args.test, size=args.size,
                    seed=args.seed, workers=args.workers, force=args.force)
    print(f"wrote {args.train} train + {args.test} test images ({args.size} px) to {out}")
    print(tag_frequencies(out).to_string(float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
