"""A run's plots, drawn in a background thread so that training does not wait for matplotlib.

After an epoch: plots/probs_eNNN.png (the validation probabilities per label, with the
epoch's thresholds) and plots/history.png (every history column so far). One drawing
at a time: the next epoch's waits for the previous one, and its errors surface there.
"""
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from utils.analysis.plots import plot_history, plot_prob_distributions


class EpochPlots:
    """Draws one run's per-epoch plots in a thread.

    run_dir: the run directory (plots/ inside); labels: L label names; y_val: (V, L) 0/1
    validation truth; title: the run's name; mode: "every" (each epoch), "last" (only
    epoch `total_epochs`) or "none" (nothing, no thread).
    """

    def __init__(self, run_dir, labels, y_val, title, mode, total_epochs):
        self.dir, self.labels, self.y_val, self.title = run_dir / "plots", labels, y_val, title
        self.mode, self.total_epochs = mode, total_epochs
        # labels without a validation positive: F2 n/a (NaN in history.csv), drawn as such
        self.no_positives = [l for l, n in zip(labels, y_val.sum(0)) if n == 0]
        self._pool = ThreadPoolExecutor(1) if mode != "none" else None
        self._job = None

    def draw(self, epoch, history, probs, thr):
        """Queue epoch `epoch`'s plots (1-based). history: list of history row dicts;
        probs: (V, L) float validation probabilities; thr: (L,) thresholds."""
        if self._pool is None or (self.mode == "last" and epoch < self.total_epochs):
            return

        self.wait()
        hist = pd.DataFrame(history)

        def job():
            plot_prob_distributions(self.y_val, probs, self.labels, self.dir / f"probs_e{epoch:03d}.png",
                                    thresholds=thr, title=f"{self.title} epoch {epoch}")
            plot_history(hist, self.dir / "history.png", no_positives=self.no_positives)
        self._job = self._pool.submit(job)

    def wait(self):
        """Block until the queued drawing is done; re-raises its error."""
        if self._job is not None:
            self._job.result()

    def close(self):
        """Stop the thread (after the queued drawing)."""
        if self._pool is not None:
            self._pool.shutdown()
