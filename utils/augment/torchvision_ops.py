"""Augmentation ops run by torchvision.transforms.v2: erase (random erasing / cutout),
randaug (RandAugment), trivialaug (TrivialAugmentWide), autoaug (AutoAugment).

Each runs on one image's R, G, B as a uint8 (3, H, W) tensor with torch's CPU generator
seeded from the numpy Generator passed in, so the result is a pure function of that rng
(see TorchvisionOp).
"""
import torch
from torchvision.transforms import v2

from utils.common.errors import DataError
from utils.common.options import check_choice
from utils.augment.ops import Op


class TorchvisionOp(Op):
    """A step run by a torchvision.transforms.v2 transform on a uint8 (3, H, W) tensor.

    Subclasses give `transform(rng)`, the v2 transform for one image. v2 transforms draw
    their parameters from torch's global CPU generator, which would make the result depend
    on whatever ran before in the process (and break exact resume). So each image's call
    runs inside torch.random.fork_rng, with the CPU generator seeded from the numpy rng
    passed in: the result is a pure function of that rng, and the global torch RNG (dropout,
    the loader) is left as it was. Only the CPU generator is forked and seeded
    (default_generator.manual_seed, not torch.manual_seed, which would also reseed CUDA):
    v2 draws its parameters on the CPU whatever the image's device.
    """

    geometric = False

    def transform(self, rng):
        raise NotImplementedError

    def _check_int(self, key, lo, hi=None):
        v = self.opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            bound = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
            raise DataError(f"augmentation {self.name}: {key} must be {bound}; got {v!r}")

    def run(self, img, rng):
        """Apply to one uint8 (3, H, W) tensor (any device); returns a uint8 (3, H, W) tensor."""
        t = self.transform(rng)
        seed = int(rng.integers(2 ** 63))
        threads = torch.get_num_threads()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                if img.device.type == "cpu":
                    # one image is far too small for intra-op threads: with them these ops ran
                    # 10-25x slower outside the loader workers (which are single-threaded)
                    torch.set_num_threads(1)
                return t(img)
        finally:
            torch.set_num_threads(threads)

    def apply(self, img, y, rng):
        img = img if img.flags.writeable else img.copy()
        out = self.run(torch.from_numpy(img).permute(2, 0, 1), rng)
        return out.permute(1, 2, 0).numpy(), y

    def apply_batch(self, x, y, rng):
        """Batch version on a float tensor (B, 3, H, W) in [0, 1]: each image is quantised to
        uint8 and transformed on its own, with its own draws. A v2 transform called on a batch
        draws one set of parameters for all of it (the same box, ops and magnitudes on every
        image), so the images go one by one; with the same rng a batch of one gives the CPU
        path's result exactly."""
        u8 = x.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        out = torch.stack([self.run(img, rng) for img in u8])
        return out.to(x.dtype).div_(255), y


class Erase(TorchvisionOp):
    name = "erase"
    defaults = {"p": 0.5, "side": 0.5, "ratio": 1.0, "fill": "random"}

    def check(self):
        super().check()
        if not 0 < self.opts["side"] <= 1 or not 0 < self.opts["ratio"] <= 1:
            raise DataError(f"augmentation erase: side and ratio must be in (0, 1]; got "
                            f"side={self.opts['side']}, ratio={self.opts['ratio']}")
        fill = self.opts["fill"]
        if fill != "random" and (isinstance(fill, bool) or not isinstance(fill, (int, float))
                                 or not 0 <= fill <= 255):
            raise DataError(f"augmentation erase: fill must be a grey level 0-255 or random; got {fill!r}")

    def transform(self, rng):
        side, ratio = self.opts["side"], self.opts["ratio"]
        # box height = sqrt(area * aspect) <= sqrt(side^2 * ratio / ratio) = side (width alike)
        top = side * side * ratio
        fill = self.opts["fill"]
        fill = [float(c) for c in rng.integers(0, 256, 3)] if fill == "random" else float(fill)
        return v2.RandomErasing(p=self.opts["p"], scale=(min(0.02, top), top), ratio=(ratio, 1 / ratio),
                                value=fill)


class RandAug(TorchvisionOp):
    name, defaults = "randaug", {"n": 2, "m": 9, "bins": 31}

    def check(self):
        self._check_int("bins", 2)
        self._check_int("n", 0)
        self._check_int("m", 0, self.opts["bins"] - 1)

    def transform(self, rng):
        # bilinear, as torchvision's reference training presets use (v2's default is nearest)
        return v2.RandAugment(num_ops=self.opts["n"], magnitude=self.opts["m"],
                              num_magnitude_bins=self.opts["bins"],
                              interpolation=v2.InterpolationMode.BILINEAR)


class TrivialAug(TorchvisionOp):
    name, defaults = "trivialaug", {"bins": 31}

    def check(self):
        self._check_int("bins", 2)

    def transform(self, rng):
        return v2.TrivialAugmentWide(num_magnitude_bins=self.opts["bins"],
                                     interpolation=v2.InterpolationMode.BILINEAR)


class AutoAug(TorchvisionOp):
    name, defaults = "autoaug", {"policy": "imagenet"}

    def check(self):
        check_choice("autoaug policy", str(self.opts["policy"]).lower(), ("imagenet", "cifar10", "svhn"))
        self.opts["policy"] = str(self.opts["policy"]).lower()

    def transform(self, rng):
        return v2.AutoAugment(policy=v2.AutoAugmentPolicy(self.opts["policy"]),
                              interpolation=v2.InterpolationMode.BILINEAR)
