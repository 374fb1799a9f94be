"""The GPU augmentation path (--aug-device gpu): the --aug pipeline on whole batches with
torch ops on the device, drawing its parameters as the per-sample path does.
"""
import numpy as np
import torch
import torch.nn.functional as F

from utils.augment.transforms import build_augment


def warp_batch(x, mats, size):
    """Torch version of `warp` for a batch: x float (B, C, H, W) on any device, mats (B, 3, 3)
    normalised output->input maps -> (B, C, size, size), bilinear with reflection padding.
    No anti-aliasing: give it images at about the output size."""
    theta = torch.as_tensor(np.asarray(mats)[:, :2], dtype=torch.float32, device=x.device)
    # affine_grid with align_corners=False uses the same [-1, 1]-spans-the-image convention
    grid = F.affine_grid(theta, (len(x), x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


class GpuAugment:
    """The same pipeline as build_augment(spec, ...) on whole batches with torch ops, for the
    GPU: call it as gaug(x float (B, C, H, W) in [0, 1], y (B, L) tensor, generator) ->
    (x float (B, C, size, size) in [0, 1], y); colour steps change bands 0-2 only. The
    torch.Generator seeds one numpy Generator per batch, which draws every parameter, so the
    result is fixed by the generator's state."""

    def __init__(self, spec, size, labels=None, pca=None):
        self.augment = build_augment(spec, size, labels=labels, pca=pca)
        self.size = int(size)

    @property
    def spec(self):
        return self.augment.spec

    def __str__(self):
        return self.spec

    def __call__(self, x, y, generator):
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
        rng = np.random.default_rng(seed)
        mats = np.stack([self.augment.matrix(rng) for _ in range(len(x))])
        if x.shape[-2:] != (self.size, self.size) or not np.allclose(mats, np.eye(3)):
            x = warp_batch(x, mats, self.size)
        rgb = x[:, :3]  # colour steps on R, G, B only, as on the CPU
        for op in self.augment.colour:
            rgb, y = op.apply_batch(rgb, y, rng)
        return (torch.cat([rgb, x[:, 3:]], dim=1) if x.shape[1] > 3 else rgb), y
