"""Vision transformers from create_model: any multiple of the patch through timm's
dynamic_img_size, other sides refused naming the nearest valid ones, pooling heads on the
patch tokens, and 4-band patch embeddings."""
import pytest
import timm
import torch

from utils.common.errors import DataError
from utils.models.factory import check_input_sizes, create_model, model_meta, patch_size, size_problem
from utils.models.heads import HeadNet

VIT = "vit_tiny_patch16_224"


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_model(VIT, 5).eval()


def test_any_multiple_of_the_patch_runs(vit):
    assert patch_size(vit) == 16 and model_meta(vit)["patch"] == 16 and model_meta(vit)["min_size"] == 16
    with torch.no_grad():
        for side in (16, 32, 48):
            assert vit(torch.randn(2, 3, side, side)).shape == (2, 5)


def test_other_sides_are_refused_naming_the_nearest(vit):
    assert size_problem(vit, 32) is None
    assert size_problem(vit, 100) == f"size 100 is not a multiple of {VIT}'s patch 16; use 96 or 112"
    assert size_problem(vit, 8).endswith("use 16")
    with pytest.raises(DataError, match=r"^--size/--stages: size 40 .* use 32 or 48$"):
        check_input_sizes(vit, [32, 40, 32], "--size/--stages")
    check_input_sizes(vit, [16, 64], "--size")
    check_input_sizes(create_model("tiny_cnn", 3), [17, 33], "--size")  # CNNs take any side


def test_a_model_built_for_one_side_takes_only_that_side():
    fixed = timm.create_model(VIT, pretrained=False, num_classes=3, depth=1)  # without dynamic_img_size
    assert size_problem(fixed, 224) is None
    assert "takes only 224 px" in size_problem(fixed, 32)


def test_avg_head_averages_the_patch_tokens_without_the_class_token():
    torch.manual_seed(0)
    model = create_model(VIT, 4, head="avg").eval()
    assert isinstance(model, HeadNet) and model.prefix_tokens == 1
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.body.forward_features(x)  # (B, 1 + 4 patches, C)
        want = model.head.fc(tokens[:, 1:].mean(dim=1))
        assert tokens.shape[1] == 5
        torch.testing.assert_close(model(x), want)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["max", "avgmax", "gem", "csra", "csra:t=99", "mldecoder"])
def test_every_head_runs_on_tokens_at_two_sides(head):
    torch.manual_seed(0)
    model = create_model(VIT, 4, head=head)
    for side in (32, 64):
        out = model.train()(torch.randn(2, 3, side, side))
        assert out.shape == (2, 4) and torch.isfinite(out).all()
        out.sum().backward()


@pytest.mark.slow
def test_four_bands_adapt_the_patch_embedding():
    four = create_model(VIT, 3, channels=4).eval()
    w4 = four.patch_embed.proj.weight  # the RGB filters kept, the extra band their mean
    assert w4.shape[1] == 4
    torch.testing.assert_close(w4[:, 3], w4[:, :3].mean(dim=1))
    assert len(model_meta(four)["mean"]) == 4
    with torch.no_grad():
        assert four(torch.randn(1, 4, 32, 32)).shape == (1, 3)


@pytest.mark.slow
def test_eva02_at_a_small_side_with_a_head_and_four_bands():
    torch.manual_seed(0)
    model = create_model("eva02_tiny_patch14_224", 3, head="gem", channels=4)
    assert model(torch.randn(2, 4, 28, 28)).shape == (2, 3)
    assert size_problem(model, 32).endswith("use 28 or 42")


@pytest.mark.slow
def test_a_distilled_deit_keeps_its_own_head():
    # its head averages the class and distillation tokens: no token map to pool
    with pytest.raises(DataError, match="use its own head"):
        create_model("deit_tiny_distilled_patch16_224", 3, head="avg")
    model = create_model("deit_tiny_distilled_patch16_224", 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)
