"""Static augmentation (--aug-static K): K augmented copies of every training image, made once.

The notes' question "dynamic (per-epoch) vs static (pre-computed) augmentation": Keras-era
pipelines often wrote augmented copies to disk once and trained on them, instead of drawing
a new augmentation every epoch. Here a stage makes K copies of each training image with the
run's --aug pipeline before its first epoch, stores them as one uint8 array
(K, N, S, S, 3) beside the image cache (in memory), and epoch e reads copy e mod K with no
further augmentation. Copy j of item i uses the generator seeded by (seed, j, i), the very
draw dynamic augmentation makes in epoch j, so K >= the number of epochs reproduces the
dynamic run exactly, and K = 1 is one fixed augmented dataset. Copies are a pure function
of (seed, j, i), so a resumed run rebuilds the same array: resume stays exact with no state
in the checkpoint.

No library does this (torchvision, timm and albumentations all augment on the fly), hence
the few lines here.
"""
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from utils.common.distributed import is_main
from utils.data.loader import CachedImages


class StaticAugImages(Dataset):
    """Items (uint8 HWC tensor, float32 labels) of copy `epoch mod K` of pre-augmented images.

    copies: uint8 (K, N, S, S, 3); ys: float32 (K, N, L) labels of each copy (an augmentation
    such as colorswap with remap may change them). `epoch` is set by the trainer, as on
    CachedImages.
    """

    def __init__(self, copies, ys, epoch=0):
        self.copies, self.ys, self.epoch = copies, ys, epoch

    def __len__(self):
        return self.copies.shape[1]

    def __getitem__(self, i):
        j = self.epoch % len(self.copies)
        return torch.from_numpy(self.copies[j, i]), torch.from_numpy(self.ys[j, i])


def make_static(dataset, k, desc="static augmentation"):
    """K augmented copies of every item of a CachedImages -> StaticAugImages.

    dataset: CachedImages with its augment and seed (its epoch is ignored); k >= 1.
    Copy j is dataset's item as drawn in epoch j: generator seeded by (seed, j, index).
    Raises ValueError when k < 1 or the dataset has no augmentation to apply.
    """
    if k < 1:
        raise ValueError(f"need at least one static copy; got {k}")
    if not isinstance(dataset, CachedImages) or dataset.augment is None:
        raise ValueError("static augmentation needs a CachedImages with an augmentation")
    n = len(dataset)
    first_img, first_y = dataset[0]
    copies = np.empty((k, n, *first_img.shape), dtype=np.uint8)
    ys = np.empty((k, n, *first_y.shape), dtype=np.float32)
    with tqdm(total=k * n, desc=desc, unit="img", disable=not is_main(), leave=False) as bar:
        for j in range(k):
            view = CachedImages(dataset.images, dataset.y, dataset.rows, dataset.augment, dataset.seed, epoch=j)
            for i in range(n):
                img, y = view[i]
                copies[j, i], ys[j, i] = img.numpy(), y.numpy()
                bar.update()
    return StaticAugImages(copies, ys)
