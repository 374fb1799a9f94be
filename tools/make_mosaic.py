"""Build the multi-label "mosaic" dataset (Kaggle/Planet layout) from real Fashion-MNIST photos.

Each image is a 2x2 or 3x3 grid of garment photos; its tags are the classes present,
with densities from about 90% of the images down to under 1%. Test answers go to
DIR/test_labels.csv, which nothing reads unless told to.

--colours N (1..14) tints the garments with the first N named colours (blue, white,
red, green, yellow, pink, orange, purple, cyan, brown, lime, magenta, teal, lavender:
most frequent first) instead of random ones: each image gets one or two of them,
blue on about 41% of the images, the rare ones on 1-5%, and each colour shown is a
tag colour_<name> (colour_blue, ...) after the 10 garments in labels.txt: 24 labels
with --colours 14. Colour augmentation then changes labels.

    python tools/make_mosaic.py --npz fashion_mnist.npz --out data/mosaic
    python tools/make_mosaic.py --npz fashion_mnist.npz --out data/mosaic-small --n-train 500 --n-test 100 --size 64
    python tools/make_mosaic.py --npz fashion_mnist.npz --out data/mosaic24 --n-train 6000 --n-test 1500 \\
        --size 64 --colours 14
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
import time  # noqa: E402

from utils.common.cli import run_script  # noqa: E402
from utils.data.mosaic import CLASSES, COLOURS, MAX_COLOURS, NPZ_KEYS, make_mosaic, mosaic_frequencies  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("input and output")
    g.add_argument("--npz", type=Path, required=True,
                   help=f"Fashion-MNIST .npz with arrays {', '.join(NPZ_KEYS)} (required; e.g. keras.datasets."
                   f"fashion_mnist.load_data() saved with numpy.savez under those names)")
    g.add_argument("--out", type=Path, default=ROOT / "data" / "mosaic",
                   help="folder to create; must be absent or empty (default: data/mosaic in the repository)")
    g.add_argument("--force", action="store_true", help="replace --out if it already holds files (default: refuse)")
    g = p.add_argument_group("dataset")
    g.add_argument("--size", type=int, default=96, help="image side in pixels, at least 16 (default: 96)")
    g.add_argument("--n-train", type=int, default=8000, help="number of training images (default: 8000)")
    g.add_argument("--n-test", type=int, default=2000, help="number of test images (default: 2000)")
    g.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    g.add_argument("--colours", type=int, default=0, choices=range(MAX_COLOURS + 1), metavar="N",
                   help=f"0..{MAX_COLOURS}: tint garments with the first N of the named colours "
                   f"({', '.join(n for n, _ in COLOURS)}), one or two per image, each a tag colour_<name> "
                   f"(10 + N labels); 0: a random tint per garment, no colour tag (default: 0)")
    return p


def main(args):
    t0 = time.perf_counter()
    out = make_mosaic(args.npz, args.out, size=args.size, n_train=args.n_train, n_test=args.n_test,
                      seed=args.seed, force=args.force, colours=args.colours)
    print(f"wrote {args.n_train} train + {args.n_test} test images ({args.size} px, "
          f"{len(CLASSES) + args.colours} labels) to {out} "
          f"in {time.perf_counter() - t0:.0f} s")
    print(mosaic_frequencies(out).to_string(float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    run_script(main, get_args_parser().parse_args, logging.INFO)
