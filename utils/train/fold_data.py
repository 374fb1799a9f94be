"""The rows one run learns from and validates on, and their images.

The fold's training rows (less any --exclude rows) are the training set; pseudo-labelled
test images (utils/train/pseudo.py Extras) follow them as items indexed past the training
cache. The validation rows are the whole fold, excluded rows too (they are predicted,
and result.json lists them as `excluded_val`).
"""
from dataclasses import dataclass

import numpy as np

from utils.common import distributed as dist
from utils.common.errors import DataError
from utils.data.bands import image_options
from utils.data.cache import load_images
from utils.train.pseudo import CombinedImages, sampler_labels, training_targets


@dataclass
class FoldData:
    """Indices and targets of one fold's run (rows index the dataset's training images)."""
    spec: object               # utils.data.dataset DataSpec: names, files, test_files, folder names
    train_idx: np.ndarray      # (n,) int rows trained on
    val_idx: np.ndarray        # (V,) int rows validated on
    y_train: np.ndarray        # (n, L) 0/1 tags of train_idx (the run's L labels)
    y_val: np.ndarray          # (V, L) 0/1 tags of val_idx
    excluded_val: list         # names of validation images --exclude left out of training
    extras: object = None      # utils.train.pseudo.Extras (pseudo rows, soft targets) or None
    fit_rows: np.ndarray = None     # (n [+ P],) training items: train_idx, then len(files) + test rows
    fit_targets: np.ndarray = None  # (n [+ P], L [+ 1]) float targets of fit_rows (+ a loss-weight column)
    fit_y: np.ndarray = None        # (n [+ P], L) uint8 labels the sampler counts

    @classmethod
    def split(cls, spec, fold_ids, fold, label_idx, exclude=None, extras=None):
        """Split spec's rows by fold_ids (N,) int: `fold` validates, the others train.

        label_idx: the L label columns the model predicts; exclude: rows left out of
        training; extras: pseudo.Extras or None. DataError when either side is empty.
        """
        train_idx, val_idx = np.flatnonzero(fold_ids != fold), np.flatnonzero(fold_ids == fold)
        exclude = np.asarray([] if exclude is None else exclude, np.int64)
        train_idx = train_idx[~np.isin(train_idx, exclude)]
        excluded_val = [spec.names[i] for i in val_idx[np.isin(val_idx, exclude)]]
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise DataError(f"fold {fold}: no {'validation' if len(val_idx) == 0 else 'training'} images")
        y = spec.y[:, label_idx]
        data = cls(spec, train_idx, val_idx, y[train_idx], y[val_idx], excluded_val, extras)
        data.fit_rows, data.fit_targets = train_idx, data.y_train
        if extras:
            data.fit_rows = np.concatenate([train_idx, len(spec.files) + extras.test_rows])
            data.fit_targets = training_targets(data.y_train, train_idx, extras)
        data.fit_y = sampler_labels(data.y_train, extras)
        return data


class RunImages:
    """A run's uint8 image caches, one image size at a time (stages move on, memory stays flat).

    spec: DataSpec; config: the run config (its band options); cache_dir: where caches live.
    Under torchrun rank 0 builds each cache file first and the other ranks then read it.
    """

    def __init__(self, spec, config, cache_dir):
        self.spec, self.options, self.cache_dir = spec, image_options(config), cache_dir
        self._cache = {}

    def _load(self, files, desc, size):
        return dist.main_first(lambda: load_images(files, size, self.cache_dir, desc=desc, **self.options))

    def train(self, size):
        """Every training image (N, size, size, C) uint8, memory-mapped."""
        if size not in self._cache:
            self._cache = {size: self._load(self.spec.files, f"{self.spec.images}", size)}
        return self._cache[size]

    def with_test(self, size, extras):
        """train(size), followed by the test images when extras (pseudo.Extras) trains on test rows."""
        if not extras or not len(extras.test_rows):
            return self.train(size)
        return CombinedImages(self.train(size), self._load(self.spec.test_files, self.spec.test_images, size))
