"""A network's input bands: adapting the first convolution and the normalisation to N bands.

`adapt_first_conv` gives a network's first convolution N input channels: for
N > 3 the first three keep their (ImageNet) weights exactly and every extra band gets the
mean of the three RGB filters (it is seen like a grey image); for N < 3 timm's
adapt_input_conv is used (N = 1 sums the RGB filters). timm's own in_chans rescales the
RGB filters by 3/N as well; this does not, so RGB-only weights carry over unchanged.
The normalisation of an extra band (`band_mean_std`) is the mean of the RGB means and
of the RGB standard deviations.

Bands are read and scaled to 8 bits in utils.data.bands.
"""
from timm.models import adapt_input_conv
import torch
from torch import nn

from utils.common.errors import DataError


def band_mean_std(mean, std, channels):
    """Per-band normalisation for `channels` bands from the RGB (3-value) mean and std."""
    mean, std = [float(v) for v in mean[:3]], [float(v) for v in std[:3]]
    if channels == 3:
        return tuple(mean), tuple(std)
    if channels == 1:
        return (sum(mean) / 3,), (sum(std) / 3,)
    if channels == 2:
        return tuple(mean[:2]), tuple(std[:2])
    extra = channels - 3
    return tuple(mean + [sum(mean) / 3] * extra), tuple(std + [sum(std) / 3] * extra)


def first_conv(model):
    """(qualified name, module) of the network's first convolution on the RGB input:
    timm's pretrained_cfg['first_conv'] when given, else the first Conv2d with 3 inputs."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("first_conv") or []
    for name in [names] if isinstance(names, str) else list(names):
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(mod, nn.Conv2d) and mod.in_channels == 3:
            return name, mod
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.in_channels == 3:
            return name, mod
    raise ValueError(f"{type(model).__name__}: no convolution with 3 input channels found")


def adapt_first_conv(model, channels):
    """Give `model` `channels` input channels in place (see the module doc for the rule);
    returns the name of the adapted convolution. Keeps the layer's class (e.g. timm's
    Conv2dSame) by replacing only its weight."""
    name, conv = first_conv(model)
    if conv.groups != 1:
        raise ValueError(f"{name}: a grouped first convolution cannot be adapted to {channels} bands")
    w = conv.weight.detach()
    if channels > 3:
        extra = w.mean(dim=1, keepdim=True).expand(-1, channels - 3, -1, -1)
        new = torch.cat([w, extra], dim=1)
    else:
        new = adapt_input_conv(channels, w)
    conv.weight = nn.Parameter(new.clone().contiguous(), requires_grad=conv.weight.requires_grad)
    conv.in_channels = channels
    return name


def adapt_channels(model, name, channels):
    """Make a model from utils.models.factory take `channels` input bands, in place: its first
    convolution adapted (adapt_first_conv) and model.meta's mean and std extended (band_mean_std).
    DataError for an architecture `name` that re-normalises exactly 3 channels (inception_v3).
    """
    if getattr(model, "transform_input", False):
        raise DataError(f"{name} re-normalises exactly 3 input channels (transform_input); "
                        f"use another architecture for --channels {channels}")
    adapt_first_conv(model, channels)
    mean, std = band_mean_std(model.meta["mean"], model.meta["std"], channels)
    model.meta.update(channels=channels, mean=mean, std=std)
