"""Time of the per-epoch figures: plot_prob_distributions and plot_history.

    python bench/plots.py                    # 13 labels x 600 validation images, 3 repeats
    python bench/plots.py --labels 17 --images 8000

Prints seconds per call, so the overhead per epoch is that over the epoch's duration.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.analysis.plots import plot_history, plot_prob_distributions  # noqa: E402


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--labels", type=int, default=13, help="number of labels (default 13)")
    p.add_argument("--images", type=int, default=600, help="validation images (default 600)")
    p.add_argument("--epochs", type=int, default=30, help="rows of history (default 30)")
    p.add_argument("--repeats", type=int, default=3, help="calls timed (default 3)")
    return p


def fake_run(n, n_labels, epochs, seed=0):
    """Labels with densities from 0.2% to 90%, probabilities that partly separate them,
    and a two-stage history of `epochs` rows."""
    rng = np.random.default_rng(seed)
    density = np.geomspace(0.002, 0.9, n_labels)
    y = rng.random((n, n_labels)) < density
    probs = 1 / (1 + np.exp(-(rng.normal(0, 1.5, y.shape) + 3 * y - 2)))
    labels = [f"tag_{i:02d}" for i in range(n_labels)]
    hist = pd.DataFrame({"stage": np.arange(epochs) * 2 // epochs,
                         "epoch": np.arange(1, epochs + 1),
                         "train_loss": np.linspace(0.6, 0.1, epochs),
                         "val_loss": np.linspace(0.6, 0.2, epochs),
                         "val_f2": np.linspace(0.5, 0.8, epochs),
                         **{f"f2_{name}": rng.random(epochs) for name in labels}})
    return y, probs, labels, hist


def seconds(fn, repeats):
    """Wall and CPU seconds per call (CPU time is what a busy machine does not inflate)."""
    fn()  # first call pays matplotlib's font cache and imports
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def main(args):
    y, probs, labels, hist = fake_run(args.images, args.labels, args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        t_probs = seconds(lambda: plot_prob_distributions(y, probs, labels, Path(tmp) / "p.png",
                                                          title="epoch 1"), args.repeats)
        t_hist = seconds(lambda: plot_history(hist, Path(tmp) / "h.png"), args.repeats)
    print(f"{'figure':<48}{'wall s':>8}{'cpu s':>8}")
    print(f"{f'plot_prob_distributions ({args.labels} labels x {args.images} images)':<48}"
          f"{t_probs[0]:>8.3f}{t_probs[1]:>8.3f}")
    print(f"{f'plot_history ({args.epochs} epochs, {args.labels} labels)':<48}"
          f"{t_hist[0]:>8.3f}{t_hist[1]:>8.3f}")
    print(f"{'both, per epoch':<48}{t_probs[0] + t_hist[0]:>8.3f}{t_probs[1] + t_hist[1]:>8.3f}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
