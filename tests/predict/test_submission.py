"""predict.py's out-of-fold table for the --submission thresholds, against a per-fold loop."""
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from utils.common.errors import DataError
from utils.predict.jobs import val_fold
from utils.predict.submission import oof_table

LABELS = ["a", "b", "c"]


def dataset(root, n=30, k=3, seed=0):
    """train.csv-like spec (names, labels, y) and a folds.csv of k folds in shuffled file order."""
    rng = np.random.default_rng(seed)
    names = [f"img{i:02d}" for i in range(n)]
    folds = np.arange(n) % k
    order = rng.permutation(n)
    pd.DataFrame({"image_name": [names[i] for i in order], "fold": folds[order]}).to_csv(root / "folds.csv",
                                                                                        index=False)
    spec = NS(names=names, labels=["x", *LABELS], y=rng.integers(0, 2, (n, 4)).astype(np.uint8))
    return spec, folds, order


def job(root, spec, fold, probs_of, labels=LABELS):
    run = NS(data_root=root, config={"folds_file": "folds.csv"}, fold=fold, labels=list(LABELS), name=f"f{fold}")
    names, rows = val_fold(run, spec)
    return NS(run=run, spec=spec, out={"val": (names, list(labels), probs_of[rows])}, tta="none")


def test_oof_table_matches_a_per_fold_loop(tmp_path):
    spec, folds, _ = dataset(tmp_path)
    rng = np.random.default_rng(1)
    seed0, seed1 = rng.random((30, 3)), rng.random((30, 3))
    jobs = [job(tmp_path, spec, f, seed0) for f in (2, 0, 1)] + [job(tmp_path, spec, 1, seed1)]
    names, probs, y, fold_ids = oof_table(jobs)
    assert sorted(names) == sorted(spec.names) and len(names) == 30
    for i, name in enumerate(names):  # the loop: each image's folds, its seeds averaged, its truth's columns
        r = spec.names.index(name)
        want = (seed0[r] + seed1[r]) / 2 if folds[r] == 1 else seed0[r]
        assert np.allclose(probs[i], want, rtol=0, atol=1e-15)
        assert list(y[i]) == list(spec.y[r, 1:]) and fold_ids[i] == folds[r]


def test_oof_table_refuses_labels_that_differ_from_the_run(tmp_path):
    spec, _, _ = dataset(tmp_path)
    probs = np.zeros((30, 3))
    bad = job(tmp_path, spec, 0, probs, labels=["a", "c", "b"])
    bad.run.preds_path = lambda split, tta: tmp_path / f"{split}.{tta}.csv"
    with pytest.raises(DataError, match="columns .* differ from the run's labels"):
        oof_table([bad])
