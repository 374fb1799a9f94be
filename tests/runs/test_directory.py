"""Model keys: runs of one configuration share a key, and what defines a model changes it."""
from utils.runs.directory import display_name, model_key

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


def test_display_name_is_the_runs_shared_start_and_the_hash_start():
    model = "tf_efficientnet_lite0-train-911065081d"
    default = [f"tf_efficientnet_lite0-train-c391dde2-f{f}-20240101-12000{f}-42{f}" for f in (0, 1)]
    assert display_name(model, default) == "tf_efficientnet_lite0-train-c391dde2-911065"
    seeds = default[:1] + ["tf_efficientnet_lite0-train-5e5e5e5e-f0-20240101-130000-7"]  # the tag holds the seed
    assert display_name(model, seeds) == "tf_efficientnet_lite0-train-911065"
    assert display_name(model, ["net-wbce-f0", "net-wbce-f1"], "train_seg") == "net-wbce-train_seg-911065"
    assert display_name(model, ["net-f0", "other-f1"]) == model  # nothing shared
    assert display_name(model, ["mine", "net-f1"]) == model  # a run named without its fold


def test_no_run_message_tells_a_missing_path_from_an_empty_match(tmp_path):
    from utils.runs.directory import no_run_message
    assert no_run_message(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such file or folder"
    assert no_run_message(tmp_path) == f"{tmp_path}: no run (a folder with config.json) matches"
    assert "no run" in no_run_message(tmp_path / "nope*")
