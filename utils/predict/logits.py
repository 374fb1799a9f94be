"""A network's logits over cached images, without augmentation (predict_logits).

The plain forward pass that validation (utils/train/trainer.py), teacher targets
(utils/train/pseudo.py) and the linear probe's features (utils/analysis/probe.py) share;
test-time augmentation is utils/predict/tta.py.
"""
import numpy as np
import torch
from tqdm import tqdm

from utils.common.distributed import is_main
from utils.data.loader import CachedImages, make_loader, to_input


@torch.inference_mode()
def predict_logits(model, images, bs, device, mean, std, channels_last=False, amp_dtype=None,
                   workers=0, desc="predict", rows=None):
    """Logits (N, L) float32 numpy for uint8 images[rows] (images: (M, S, S, C)), no augmentation."""
    model.eval()
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    ds = CachedImages(images, np.zeros((len(rows), 1), np.float32), rows)
    loader = make_loader(ds, range(len(rows)), bs, workers, device)
    out = []
    for xb, _ in tqdm(loader, desc=desc, leave=False, disable=not is_main(), dynamic_ncols=True):
        x = to_input(xb, mean, std, device, channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
