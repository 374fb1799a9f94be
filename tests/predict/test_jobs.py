"""predict.py's jobs: a run's validation fold from its folds.csv, and the names of its files."""
from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from utils.common.errors import DataError
from utils.predict.jobs import checkpoint_path, preds_name, run_folds, val_fold


def dataset(root, n=30, k=3, seed=0):
    """A spec of n image names and a folds.csv of k folds in shuffled file order: (spec, folds, order)."""
    names = [f"img{i:02d}" for i in range(n)]
    folds, order = np.arange(n) % k, np.random.default_rng(seed).permutation(n)
    pd.DataFrame({"image_name": [names[i] for i in order], "fold": folds[order]}).to_csv(root / "folds.csv",
                                                                                        index=False)
    return NS(names=names), folds, order


def test_val_fold_follows_folds_csv_order_and_names_problems(tmp_path):
    spec, folds, order = dataset(tmp_path)
    run = NS(data_root=tmp_path, config={}, fold=2)
    names, rows = val_fold(run, spec)
    assert names == [spec.names[i] for i in order if folds[i] == 2]
    assert [spec.names[i] for i in rows] == names
    assert list(run_folds(run)) == [spec.names[i] for i in order]
    with pytest.raises(DataError, match="fold 2 of folds.csv lists images that train.csv no longer has"):
        val_fold(run, NS(names=spec.names[:5]))
    with pytest.raises(DataError, match="folds file .*other.csv not found"):
        run_folds(NS(data_root=tmp_path, config={"folds_file": "other.csv"}))


def test_preds_name_says_size_and_weights():
    args = NS(tta="hflip", size=None, checkpoint="best")
    assert preds_name(args) == "hflip"
    assert preds_name(NS(tta="d4", size=320, checkpoint="avg")) == "d4-320px-avg"
    assert preds_name(NS(tta="none", size=None, checkpoint="last")) == "none-last"


def test_checkpoint_path_refuses_a_mistyped_name(tmp_path):
    assert checkpoint_path(tmp_path, "last") == tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(DataError, match="'bset': not one of best, avg, last"):
        checkpoint_path(tmp_path, "bset")
