"""--tta auto: the TTA every run has, the most views first; an error naming each run when none is shared."""
import json

import pytest

from utils.common.errors import DataError
from utils.runs.directory import load_run
from utils.predict.tta_choice import AUTO, PREFERENCE, VIEWS, choose_tta, make_files_command


def make_run(root, name, val=(), test=(), **config):
    """A run folder with empty prediction files preds/val.<t>.csv and preds/test.<t>.csv."""
    d = root / name
    (d / "preds").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"arch": "x", "fold": 0, "labels": ["a"], **config}))
    for split, ttas in (("val", val), ("test", test)):
        for t in ttas:
            (d / "preds" / f"{split}.{t}.csv").write_text("image_name,a\n")
    return load_run(d)


def test_the_preference_names_every_tta_of_predict_by_its_number_of_views():
    import torch

    from utils.predict.tta import TTA_NAMES, view_fns
    assert set(PREFERENCE) == set(TTA_NAMES)
    for name in TTA_NAMES:
        assert len(view_fns(name, 16)) == VIEWS[name], name
    assert [VIEWS[t] for t in PREFERENCE] == sorted(VIEWS.values(), reverse=True)
    assert PREFERENCE.index("hflip") < PREFERENCE.index("vflip")
    assert torch  # the test needs torch; the module itself never loads it


def test_auto_takes_the_most_views_every_run_has(tmp_path):
    runs = [make_run(tmp_path, "a", val=["none", "10crop", "d4", "10crop+full"]),
            make_run(tmp_path, "b", val=["none", "10crop", "d4"]),
            make_run(tmp_path, "c", val=["hflip", "d4", "10crop"])]
    choice = choose_tta(runs)
    assert choice.name == "10crop"
    assert choice.line.startswith("--tta auto: 10crop (10 views)") and "3 runs" in choice.line
    assert "also shared: d4" in choice.line
    assert choose_tta(runs[:1]).name == "10crop+full"
    assert choose_tta([make_run(tmp_path, "m", val=["hflip", "vflip", "multiscale"])]).name == "multiscale"
    assert choose_tta([make_run(tmp_path, "f", val=["vflip", "hflip"])]).name == "hflip"


def test_auto_needs_every_split_asked_for(tmp_path):
    # as right after scripts/cv.sh: train.py's val.none.csv, predict.py's 10crop on val and test
    runs = [make_run(tmp_path, f"cv-f{f}", val=["none", "10crop"], test=["10crop"]) for f in range(2)]
    assert choose_tta(runs, ("val", "test")).name == "10crop"
    assert choose_tta(runs, ("test",)).name == "10crop"
    runs.append(make_run(tmp_path, "x", val=["10crop+full", "10crop", "none"], test=["none", "10crop"]))
    choice = choose_tta(runs, ("val", "test"))
    assert choice.name == "10crop" and "preds/val.<tta>.csv and preds/test.<tta>.csv" in choice.line
    assert choose_tta(runs[2:], ("val",)).name == "10crop+full"
    assert choose_tta(runs[2:], ("val", "test")).name == "10crop"


def test_variants_of_other_checkpoints_or_sizes_are_read_only_when_named(tmp_path):
    run = make_run(tmp_path, "a", val=["none", "10crop-avg", "d4-96px", "hflip-from_b_best"])
    assert choose_tta([run]).name == "none"
    assert choose_tta([run], requested="10crop-avg").name == "10crop-avg"


def test_a_named_tta_is_used_as_given_without_a_line(tmp_path):
    run = make_run(tmp_path, "a", val=["none", "10crop"])
    choice = choose_tta([run], requested="none")
    assert (choice.name, choice.line) == ("none", None)
    assert choose_tta([run], requested="d4").name == "d4"  # the reader says what is missing


def test_no_shared_tta_names_each_run_and_what_it_has(tmp_path):
    cv = [make_run(tmp_path, f"cv-f{f}", val=["none", "10crop"], test=["10crop"]) for f in range(2)]
    alone = make_run(tmp_path, "alone-f0", val=["none"])
    with pytest.raises(DataError) as e:
        choose_tta([*cv, alone], ("val", "test"), AUTO)
    msg = str(e.value)
    assert "no TTA has preds/val.<tta>.csv and preds/test.<tta>.csv in every run" in msg
    assert f"{cv[0].dir}, {cv[1].dir}: val: 10crop, none; test: 10crop" in msg
    assert f"{alone.dir}: val: none; test: -" in msg
    assert f"python predict.py --runs {alone.dir} --tta 10crop --split both" in msg
    assert "--tta NAME" in msg
    with pytest.raises(DataError, match="no runs"):
        choose_tta([], ("val",))


def test_the_suggested_command_completes_the_tta_most_runs_have(tmp_path):
    a, b = make_run(tmp_path, "a", val=["hflip", "none"]), make_run(tmp_path, "b", val=["hflip"])
    c = make_run(tmp_path, "c", val=["d4"])
    with pytest.raises(DataError) as e:
        choose_tta([a, b, c])
    assert str(e.value).endswith(f"python predict.py --runs {c.dir} --tta hflip --split val")
    assert f"{a.dir}: val: hflip, none" in str(e.value) and f"{b.dir}: val: hflip\n" in str(e.value)
    with pytest.raises(DataError) as e:  # as many runs have each: the one with more views
        choose_tta([b, c])
    assert str(e.value).endswith(f"python predict.py --runs {b.dir} --tta d4 --split val")
    with pytest.raises(DataError) as e:  # no run has any: 10crop, what scripts/cv.sh predicts
        choose_tta([make_run(tmp_path, "empty")], ("val", "test"))
    assert "empty: val: -; test: -" in str(e.value) and str(e.value).endswith("--tta 10crop --split both")


PROBE = {"loss_spec": "logreg", "size": 96, "data_root_abs": "data/planet",
         "stages": [{"probe": "logreg", "C": 1.0, "size": 96, "tta": "none"}]}


def test_a_linear_probe_is_remade_by_the_probe_tool_not_predict(tmp_path):
    probe = make_run(tmp_path, "probe-f0", val=["none"], test=["none"], **PROBE)
    trained = make_run(tmp_path, "cnn-f0", val=["none", "10crop"], test=["10crop"])
    assert probe.is_linear_probe and not trained.is_linear_probe
    assert make_run(tmp_path, "old-probe", loss_spec="logreg").is_linear_probe  # either key says so
    assert make_run(tmp_path, "stage-probe", stages=PROBE["stages"]).is_linear_probe
    assert make_files_command(trained, "d4", "val", "R") == "python predict.py --runs R --tta d4 --split val"
    cmd = make_files_command(probe, "hflip", "both")
    assert cmd.startswith("python tools/linear_probe.py --data data/planet --arch x --size 96 --tta hflip")
    assert make_files_command(probe, "10crop", "both").startswith(cmd.split(" (")[0])  # hflip: all it offers
    with pytest.raises(DataError) as e:
        choose_tta([probe, trained], ("val", "test"))
    msg = str(e.value)
    assert f"{probe.dir}: val: none; test: none" in msg
    assert "e.g. python tools/linear_probe.py --data data/planet --arch x --size 96 --tta hflip" in msg
    assert "predict.py --runs" not in msg
    other = make_run(tmp_path, "cnn2-f0", val=["none"])
    with pytest.raises(DataError) as e:  # trained runs lacking files get predict.py, the probe its own tool
        choose_tta([probe, trained, other], ("val", "test"))
    assert f"python predict.py --runs {other.dir} --tta 10crop --split both; python tools/linear_probe.py" in \
        str(e.value)
