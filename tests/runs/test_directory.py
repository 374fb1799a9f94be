"""Model keys: runs of one configuration share a key, and what defines a model changes it."""
from utils.runs.directory import model_key

BASE = {"arch": "resnet18", "images": "train", "labels": ["a", "b"], "label_group": None, "stages": [{"epochs": 1}],
        "loss_spec": "bce", "sampler": "none", "aug": "hflip", "pretrained": True, "folds_k": 5, "aug_static": 0,
        "fold": 0, "seed": 0, "name": "x"}


def test_fold_seed_and_name_do_not_change_the_key():
    assert model_key(BASE) == model_key({**BASE, "fold": 3, "seed": 7, "name": "y"})


def test_the_weights_file_is_part_of_the_model_by_its_checksum_not_its_path():
    a = {**BASE, "weights": {"file": "/a/w.pth", "sha256": "1" * 64}}
    moved = {**BASE, "weights": {"file": "/b/w.pth", "sha256": "1" * 64}}
    other = {**BASE, "weights": {"file": "/a/w.pth", "sha256": "2" * 64}}
    assert model_key(a) == model_key(moved)
    assert len({model_key(BASE), model_key(a), model_key(other)}) == 3


def test_a_run_recorded_in_the_former_option_spelling_keeps_its_model():
    old = {**BASE, "aug": "hflip,erase:p=0.5", "mix": "mixup:0.2,cutmix:1.0,switch=0.5"}
    new = {**BASE, "aug": "hflip;erase:p=0.5", "mix": "mixup:0.2;cutmix:1.0;switch=0.5"}
    assert model_key(old) == model_key(new)
    assert model_key(new) != model_key({**new, "aug": "hflip"})


def test_a_linear_probe_names_its_weights_by_name():
    assert model_key({**BASE, "weights": "imagenet"}) != model_key({**BASE, "weights": "dinov2"})
