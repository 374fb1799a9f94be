"""Pooling heads (--head): what turns a backbone's feature map into one logit per label.

    avg                  global average pooling + linear (most CNNs' own head)
    max                  global max pooling + linear
    avgmax               average and max pooling concatenated (2C features) + linear
    gem[:p=3]            generalized-mean pooling with a learnable exponent p (initial 3)
                         + linear (Radenović, Tolias & Chum, TPAMI 2018)
    csra[:lam=0.1,t=1]   class-specific residual attention (Zhu & Wu, ICCV 2021): average-pooled
                         class scores + lam x attention-pooled ones, softmax temperature t
                         (t=99: max pooling), from a normalised 1x1-conv classifier
    mldecoder            ML-Decoder (Ridnik et al., WACV 2023): a transformer decoder with one
                         fixed query per label (timm.layers.ml_decoder.MLDecoder)

`create_model(arch, L, head="gem")` (utils.models.factory) takes the backbone's feature map before
its pooling: timm models through their unpooled output (`reset_classifier(0,
global_pool='')`, timm's documented way to get the map, which keeps e.g. ConvNeXt's head
norm), torchvision and builtin models through torchvision's FX feature extractor, cut at
the last square feature map before the global pooling (see torchvision_body). A vision
transformer's output is its tokens (B, N, C): the heads pool the patch tokens (the class,
distillation and register tokens left out), seen as an N x 1 map; GeM clamps them at eps
like any map (a transformer's tokens can be negative). Models whose unpooled output is not
tokens or a map (a distilled DeiT) keep their own head. The model
becomes `HeadNet(body, head)`; the head's parameters are the classifier for layer groups,
train=head and the head learning rate.
"""
import re

from timm.layers import SelectAdaptivePool2d
from timm.layers.ml_decoder import MLDecoder
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from utils.common.errors import DataError
from utils.common.options import check_choice, merge_options, parse_item

HEADS = {"avg": {}, "max": {}, "avgmax": {}, "gem": {"p": 3.0}, "csra": {"lam": 0.1, "t": 1.0},
         "mldecoder": {}}
CSRA_MAX = 99  # CSRA's convention: temperature 99 means max pooling over positions
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def parse_head(spec):
    """Canonical --head text (e.g. 'gem', 'csra:lam=0.2,t=99'), or None for the architecture's own.

    None, '' and 'default' mean the architecture's own head. Raises DataError naming the head
    for an unknown name or option, or an option out of range (gem p > 0, csra lam >= 0, t > 0).
    """
    if spec is None or str(spec).strip().lower() in ("", "default", "none"):
        return None
    name, opts = parse_item(spec, "--head")
    check_choice("head", name, tuple(HEADS))
    opts = merge_options("head", name, opts, HEADS[name])
    for key, value in opts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"--head {name}: {key} must be a number; got {value!r}")
        opts[key] = float(value)
    if name == "gem" and opts["p"] <= 0:
        raise DataError(f"--head gem: p must be > 0; got {opts['p']}")
    if name == "csra" and (opts["lam"] < 0 or opts["t"] <= 0):
        raise DataError(f"--head csra: lam must be >= 0 and t > 0; got lam={opts['lam']}, t={opts['t']}")
    changed = [f"{k}={v:g}" for k, v in opts.items() if v != HEADS[name][k]]
    return name + (":" + ",".join(changed) if changed else "")


# ----------------------------------------------------------------------------- heads

class GeM(nn.Module):
    """Generalized-mean pooling (Radenović et al. 2018): (mean over H, W of x^p)^(1/p), p learnable.

    x: (B, C, H, W), clamped at eps first (features after ReLU are >= 0); returns (B, C).
    p = 1 is average pooling, p -> infinity max pooling. Written here because neither torch
    (LPPool2d sums and has a fixed p) nor torchvision or timm ships it.
    """

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x):
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class PoolHead(nn.Module):
    """pool (B, C, H, W) -> (B, C') features, optional dropout, linear to num_labels logits."""

    def __init__(self, pool, features, num_labels, drop_rate=None):
        super().__init__()
        self.pool = pool
        self.drop = nn.Dropout(float(drop_rate)) if drop_rate else nn.Identity()
        self.fc = nn.Linear(features, num_labels)

    def forward(self, x):
        return self.fc(self.drop(self.pool(x)))


class CSRA(nn.Module):
    """Class-specific residual attention (Zhu & Wu, ICCV 2021; github.com/Kevinz-code/CSRA).

    Scores s (B, L, HW) from a 1x1 conv whose per-class weights are normalised to unit
    length; logits = mean_HW(s) + lam * sum_HW(softmax_HW(t s) * s), or lam * max_HW(s) for
    t = 99. Written here: no library ships it. Input (B, C, H, W), output (B, L).
    """

    def __init__(self, in_features, num_labels, lam=0.1, t=1.0, drop_rate=None):
        super().__init__()
        self.lam, self.t = float(lam), float(t)
        self.drop = nn.Dropout(float(drop_rate)) if drop_rate else nn.Identity()
        self.classifier = nn.Conv2d(in_features, num_labels, 1, bias=False)

    def forward(self, x):
        w = self.classifier.weight
        score = F.conv2d(self.drop(x), w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).flatten(2)
        base = score.mean(dim=2)
        if self.t == CSRA_MAX:
            att = score.max(dim=2).values
        else:
            att = (score * torch.softmax(score * self.t, dim=2)).sum(dim=2)
        return base + self.lam * att


class _FixedQueries(nn.Module):
    """ML-Decoder's query embedding as a buffer: the paper's queries are not learned, and a
    buffer stays fixed when set_trainable switches every head parameter on."""

    def __init__(self, weight):
        super().__init__()
        self.register_buffer("weight", weight.detach().clone())


class _DecoderLayers(nn.Module):
    """nn.TransformerDecoder's loop over its layers (norm None), without its fast-path
    checks: torch 2.x reads layers[0].self_attn, which timm's ML-Decoder layer has not."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, tgt, memory):
        for layer in self.layers:
            tgt = layer(tgt, memory)
        return tgt


class MLDecoderHead(nn.Module):
    """ML-Decoder (Ridnik et al. 2023) from timm.layers.ml_decoder, on a (B, C, H, W) map.

    timm's MLDecoder takes the map directly, but does not run as shipped with this torch:
    it wraps its decoder layer in nn.TransformerDecoder, whose forward now reads the
    layer's self_attn (timm's layer has none), so the layers are called directly
    (_DecoderLayers, same parameter names). Its helper add_ml_decoder_head edits a few timm
    model families in place and exits the process for others, so it is not used. The
    queries, made non-trainable by requires_grad in timm, are a buffer here
    (_FixedQueries), which set_trainable cannot switch on. drop_rate: dropout on the map
    (the decoder has its own dropout 0.1).
    """

    def __init__(self, in_features, num_labels, drop_rate=None):
        super().__init__()

        self.drop = nn.Dropout(float(drop_rate)) if drop_rate else nn.Identity()
        self.decoder = MLDecoder(num_classes=num_labels, initial_num_features=in_features)
        self.decoder.query_embed = _FixedQueries(self.decoder.query_embed.weight)
        self.decoder.decoder = _DecoderLayers(self.decoder.decoder.layers)

    def forward(self, x):
        return self.decoder(self.drop(x))


def build_head(spec, in_features, num_labels, drop_rate=None):
    """The head module for a parse_head spec: (B, in_features, H, W) -> (B, num_labels) logits."""
    name, opts = parse_item(parse_head(spec), "--head")
    opts = {**HEADS[name], **opts}
    if name in ("avg", "max", "avgmax"):
        pool = SelectAdaptivePool2d(pool_type="catavgmax" if name == "avgmax" else name, flatten=True)
        return PoolHead(pool, in_features * pool.feat_mult(), num_labels, drop_rate)
    if name == "gem":
        return PoolHead(nn.Sequential(GeM(opts["p"])), in_features, num_labels, drop_rate)
    if name == "csra":
        return CSRA(in_features, num_labels, opts["lam"], opts["t"], drop_rate)
    return MLDecoderHead(in_features, num_labels, drop_rate)


# ----------------------------------------------------------------------------- bodies

class HeadNet(nn.Module):
    """A backbone's feature map through a head: forward(x (B, 3, H, W)) -> (B, L) logits.

    body(x) gives the map as NCHW, NHWC, (B, N, C) tokens or a dict {"features": map} (FX
    extractor); features() turns it into NCHW, tokens (without the prefix tokens such as
    ViT's class token) becoming an N x 1 map.
    """

    def __init__(self, body, head, layout="NCHW", prefix_tokens=0):
        super().__init__()
        self.body, self.head = body, head
        self.layout, self.prefix_tokens = layout, int(prefix_tokens)

    def features(self, x):
        f = self.body(x)
        if isinstance(f, dict):
            f = f["features"]
        if self.layout == "NHWC":
            return f.permute(0, 3, 1, 2)
        if self.layout == "NLC":
            return f[:, self.prefix_tokens:].transpose(1, 2).unsqueeze(-1)
        return f

    def forward(self, x):
        return self.head(self.features(x))


def _dry_run(body, size):
    """Output of body on one zero image of side `size`, in eval mode and without gradients."""
    was = body.training
    body.eval()
    try:
        with torch.no_grad():
            return body(torch.zeros(1, 3, size, size))
    finally:
        body.train(was)


def timm_body(model, size):
    """timm model -> (body, layout, prefix tokens, channels): its unpooled output.

    reset_classifier(0, global_pool='') removes the pooling and the classifier; the
    model's own dropout before the classifier is switched off (the new head has its own).
    Raises DataError if the model cannot give an unpooled map.
    """
    try:
        model.reset_classifier(0, global_pool="")
    except (TypeError, AssertionError, ValueError) as e:
        raise DataError(f"--head: timm model {type(model).__name__} cannot drop its pooling ({e}); "
                        "use its own head") from e
    if hasattr(model, "drop_rate"):
        model.drop_rate = 0.0
    out = _dry_run(model, size)
    fmt = str(getattr(model, "output_fmt", "NCHW"))
    if out.ndim == 4:
        layout = "NHWC" if fmt == "NHWC" else "NCHW"
        return model, layout, 0, int(out.shape[-1] if layout == "NHWC" else out.shape[1])
    if out.ndim == 3:
        return model, "NLC", int(getattr(model, "num_prefix_tokens", 0)), int(out.shape[-1])
    raise DataError(f"--head: timm model {type(model).__name__} gives {tuple(out.shape)} without its "
                    "pooling, not a feature map; use its own head")


def _module_of(model, node_name):
    """The module an FX node name calls (repeat suffix _N stripped), or None for functions."""
    for name in (node_name, re.sub(r"_\d+$", "", node_name)):
        try:
            return model.get_submodule(name)
        except AttributeError:
            continue
    return None


def torchvision_body(model, classifier, size, arch):
    """torchvision / builtin model -> (FX feature extractor returning {"features": map}, channels).

    The map is the last square (B, C, S, S) output with S > 1 before the classifier layer
    `classifier` (qualified name), skipping adaptive pooling (VGG's 7x7 avgpool) and nodes
    inside the classifier's own container (VGG's and MobileNet's MLP, SqueezeNet's conv
    head). Layers with parameters between that map and the classifier other than norms and
    the container's would be lost: then (torchvision's ViT) DataError.
    """
    _, nodes = get_graph_node_names(model)
    container = classifier.rpartition(".")[0]
    probe = create_feature_extractor(model, return_nodes=nodes)
    outs = _dry_run(probe, size)
    stop = next(i for i, n in enumerate(nodes) if n == classifier or n.startswith(classifier + "_"))
    picked = None
    for i, name in enumerate(nodes[:stop]):
        out, mod = outs.get(name), _module_of(model, name)
        inside = bool(container) and (name == container or name.startswith(container + "."))
        pooled = isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or "adaptive" in name
        if (torch.is_tensor(out) and out.ndim == 4 and out.shape[2] == out.shape[3] > 1
                and not inside and not pooled):
            picked = i
    lost = [] if picked is None else [
        n for n in nodes[picked + 1:stop]
        if (m := _module_of(model, n)) is not None and any(True for _ in m.parameters(recurse=False))
        and not isinstance(m, _NORMS) and not (container and n.startswith(container + "."))]
    if picked is None or lost:
        why = "no feature map found" if picked is None else f"layers {lost[:3]} come after the last feature map"
        raise DataError(f"--head: cannot find where {arch} pools ({why}); use its own head or a timm model")
    body = create_feature_extractor(model, return_nodes={nodes[picked]: "features"})
    return body, int(outs[nodes[picked]].shape[1])


def attach_head(model, source, classifier, spec, num_labels, drop_rate, meta):
    """HeadNet of `model`'s feature map and the head `spec` (create_model's head= path).

    source: 'timm', 'torchvision' or 'builtin'; classifier: qualified name of the layer the
    head replaces (torchvision/builtin); meta: the model's meta (input sizes, arch). The
    feature map's shape is found by one forward pass of a zero image: at the native size
    for models built for one size (torchvision, BEiT), else at up to 128 px (a whole
    number of patches for a transformer).
    """
    fixed = source == "torchvision" or (bool(getattr(model, "pretrained_cfg", {}).get("fixed_input_size"))
                                        and not getattr(model, "dynamic_img_size", False))
    size = meta["input_size"] if fixed else max(meta["min_size"], min(meta["input_size"], 128))
    if not fixed and meta.get("patch"):  # a whole number of patches
        size -= size % meta["patch"]
    if source == "timm":
        body, layout, prefix, channels = timm_body(model, size)
    else:
        (body, channels), layout, prefix = torchvision_body(model, classifier, size, meta["arch"]), "NCHW", 0
    return HeadNet(body, build_head(spec, channels, num_labels, drop_rate), layout, prefix)
