"""Test-time augmentation: view geometry on known pixels, batched == per-view loop, merges."""
import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from utils.common.errors import DataError
from utils.predict.tta import (MERGES, TTA_NAMES, crop_side, merge_probs, multiscale_sizes,
                       n_views, predict_tta, predict_tta_loop, tta_views, view_fns,
                       view_groups)

S = 16
EXPECTED_VIEWS = {"none": 1, "hflip": 2, "vflip": 2, "d4": 8, "5crop": 5, "10crop": 10,
                  "10crop+full": 12, "multiscale": 3}


def arange_image(b=2, s=S):
    """Batch whose pixels are all distinct: pixel value encodes (image, channel, row, col)."""
    return torch.arange(b * 3 * s * s, dtype=torch.float32).view(b, 3, s, s)


def split_views(group, b):
    return list(group.split(b))


def test_names_and_view_counts():
    assert set(TTA_NAMES) == set(EXPECTED_VIEWS)
    x = arange_image()
    for name, v in EXPECTED_VIEWS.items():
        assert n_views(name) == v
        groups = tta_views(name, x)
        assert sum(g.shape[0] for g in groups) == v * x.shape[0]
        assert len(groups) == (3 if name == "multiscale" else 1)


def test_view_groups_bound_views_per_forward():
    x = arange_image()
    assert [len(g) for g in view_groups("10crop", x, 3)] == [3, 3, 3, 1]
    assert [len(g) for g in view_groups("10crop+full", x)] == [12]
    assert [len(g) for g in view_groups("10crop+full", x, crop_resize=False)] == [10, 2]
    assert [len(g) for g in view_groups("multiscale", x)] == [1, 1, 1]
    flat = [v for g in view_groups("d4", x, 3) for v in g]
    assert torch.equal(torch.cat(flat), tta_views("d4", x)[0])


def test_unknown_names_list_choices():
    with pytest.raises(DataError, match="10crop"):
        tta_views("12crop", arange_image())
    with pytest.raises(DataError, match="tsharpen"):
        merge_probs(np.ones((2, 1, 1)), "median")


def test_flips():
    x = arange_image()
    (h,) = tta_views("hflip", x)
    assert torch.equal(h[:2], x)
    assert torch.equal(h[2:], x[..., torch.arange(S - 1, -1, -1)])  # columns reversed
    (v,) = tta_views("vflip", x)
    assert torch.equal(v[2:], x[..., torch.arange(S - 1, -1, -1), :])  # rows reversed


def test_d4_is_the_dihedral_group():
    x = arange_image(b=1)
    (g,) = tta_views("d4", x)
    got = {g[i, 0].numpy().tobytes() for i in range(8)}
    img = x[0, 0].numpy()
    want = {np.ascontiguousarray(np.rot90(m, k)).tobytes()
            for m in (img, np.fliplr(img)) for k in range(4)}
    assert len(got) == 8 and got == want


def expected_crops(x, c):
    m = (S - c) // 2
    tl = x[..., :c, :c]
    tr = x[..., :c, S - c:]
    bl = x[..., S - c:, :c]
    br = x[..., S - c:, S - c:]
    ce = x[..., m:m + c, m:m + c]
    return [tl, tr, bl, br, ce]


def test_crops_at_crop_size_come_from_the_corners_and_centre():
    x = arange_image()
    c = crop_side(S)
    assert c == 14  # round(16 * 7/8)
    (g,) = tta_views("10crop", x, crop_resize=False)
    views = split_views(g, 2)
    crops = expected_crops(x, c)
    for got, want in zip(views[:5], crops):
        assert torch.equal(got, want)
    for got, want in zip(views[5:], crops):
        assert torch.equal(got, want.flip(-1))
    # the corners really are the corners: top-left pixel of image 0, channel 0
    assert views[0][0, 0, 0, 0] == 0 and views[3][0, 0, -1, -1] == S * S - 1
    assert views[4][0, 0, 0, 0] == 1 * S + 1  # centre crop starts at (1, 1)


def test_crops_resized_back_to_training_size():
    x = arange_image()
    (g,) = tta_views("5crop", x)
    assert g.shape == (10, 3, S, S)
    for got, want in zip(split_views(g, 2), expected_crops(x, crop_side(S))):
        ref = F.interpolate(want, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        torch.testing.assert_close(got, ref)


def test_10crop_full_adds_image_and_mirror():
    x = arange_image()
    (g,) = tta_views("10crop+full", x)
    views = split_views(g, 2)
    assert torch.equal(views[10], x) and torch.equal(views[11], x.flip(-1))


def test_multiscale_sizes():
    assert multiscale_sizes(128) == [112, 128, 144]
    assert multiscale_sizes(224) == [196, 224, 252]
    groups = tta_views("multiscale", arange_image())
    assert [g.shape[-1] for g in groups] == multiscale_sizes(S)
    assert torch.equal(groups[1], arange_image())


class TinyNet(torch.nn.Module):
    """Conv + BatchNorm (eval mode uses running stats) + pooling, 5 labels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        # asymmetric pooling so flips and crops change the output
        w = torch.linspace(0, 1, x.shape[-1], device=x.device)
        return self.fc((x * w).mean(dim=(2, 3)) * 4)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(7, S, S, 3), dtype=np.uint8)


@pytest.mark.parametrize("tta", TTA_NAMES)
@pytest.mark.slow
def test_batched_equals_per_view_loop(tta, images):
    model = TinyNet()
    model.train()  # predict must switch to eval (running stats) and restore the flag
    for merge in MERGES:
        kw = dict(tta=tta, merge=merge, bs=3, progress=False)
        ref = predict_tta_loop(model, images, **kw)
        got = predict_tta(model, images, **kw)
        chunked = predict_tta(model, images, max_views_per_forward=4, **kw)
        assert got.dtype == np.float64 and got.shape == (7, 5)
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
        np.testing.assert_allclose(chunked, ref, atol=1e-5, rtol=0)
    assert model.training


def test_loop_matches_manual_forward(images):
    """The reference itself: per image, per view, sigmoid, mean."""
    model = TinyNet().eval()
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    got = predict_tta_loop(model, images, tta="hflip", mean=mean, std=std, bs=4, progress=False)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
         - torch.tensor(mean).float().view(1, 3, 1, 1)) / torch.tensor(std).float().view(1, 3, 1, 1)
    with torch.no_grad():
        for i in range(len(images)):
            xi = x[i:i + 1]
            p = (torch.sigmoid(model(xi)) + torch.sigmoid(model(xi.flip(-1)))) / 2
            np.testing.assert_allclose(got[i], p[0].numpy(), atol=1e-6)


def test_input_kinds_agree(images):
    model = TinyNet()
    ref = predict_tta(model, images, tta="d4", bs=3, progress=False)
    t = torch.from_numpy(images)
    ds = torch.utils.data.TensorDataset(t)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    for kind in (t, loader, [t[:4], t[4:]], t.permute(0, 3, 1, 2).contiguous()):
        np.testing.assert_allclose(predict_tta(model, kind, tta="d4", bs=3, progress=False),
                                   ref, atol=1e-6)


def test_merge_functions_against_numpy():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 1, size=(6, 4, 3))
    np.testing.assert_allclose(merge_probs(p, "mean"), p.mean(0))
    np.testing.assert_allclose(merge_probs(p, "max"), p.max(0))
    np.testing.assert_allclose(merge_probs(p, "gmean"), scipy.stats.gmean(p, axis=0))
    np.testing.assert_allclose(merge_probs(p, "tsharpen"), np.sqrt(p).mean(0))
    # per element, spelled out
    i, j = 2, 1
    assert merge_probs(p, "gmean")[i, j] == pytest.approx(np.prod(p[:, i, j]) ** (1 / 6))
    z = p.copy()
    z[0, 0, 0] = 0.0
    assert merge_probs(z, "gmean")[0, 0] == 0.0


def test_merge_is_on_probabilities_not_logits(images):
    """gmean of sigmoid outputs differs from sigmoid of mean logits; we must do the former."""
    model = TinyNet().eval()
    got = predict_tta(model, images, tta="hflip", merge="gmean", bs=8, progress=False)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
         - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
             [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        p = torch.stack([torch.sigmoid(model(x)), torch.sigmoid(model(x.flip(-1)))]).double()
    np.testing.assert_allclose(got, scipy.stats.gmean(p.numpy(), axis=0), atol=1e-6)


def test_view_fns_keep_batch():
    x = arange_image(b=3)
    for name in TTA_NAMES:
        for fn in view_fns(name, S):
            assert fn(x).shape[0] == 3


def test_rows_select_images_in_order(images):
    model = TinyNet()
    rows = [5, 0, 3]
    ref = predict_tta(model, images[rows], tta="hflip", bs=2, progress=False)
    for kind in (images, torch.from_numpy(images)):
        got = predict_tta(model, kind, tta="hflip", bs=2, rows=rows, progress=False)
        np.testing.assert_allclose(got, ref, atol=1e-6)
