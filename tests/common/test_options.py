"""The option language (utils/common/options.py): one value vocabulary, `;` between items,
`,` between an item's options, `:` after its name, and the former spellings refused."""
import subprocess
import sys
from pathlib import Path

import pytest

from utils.augment.mix import MixSpec, parse_mix
from utils.augment.transforms import parse_augment
from utils.common.errors import DataError
from utils.common.options import as_bool, as_float, as_int, parse_item, parse_items, parse_value
from utils.metrics.constraints import parse_constraints
from utils.train.resume import modern_spelling
from utils.stack.methods import parse_method, split_methods
from utils.train.stage import parse_stages

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, want", [
    ("true", True), ("Yes", True), ("on", True), ("false", False), ("NO", False), ("off", False),
    ("none", None), ("null", None), ("3", 3), ("-2", -2), ("1e-3", 1e-3), ("0.5", 0.5),
    (" blue/red ", "blue/red"), ("f2", "f2"),
])
def test_parse_value_vocabulary(text, want):
    got = parse_value(text)
    assert got == want and type(got) is type(want)


def test_typed_values():
    assert [as_bool(v, "x") for v in ("1", "0", "on", "no", 1, True)] == [True, False, True, False, True, False][:5] + [True]
    assert as_int("4", "x") == 4 and as_int("2.0", "x") == 2 and as_float("3", "x") == 3.0
    assert as_float("none", "x", optional=True) is None
    for bad, conv in (("2", as_bool), ("maybe", as_bool), ("2.5", as_int), ("true", as_int), ("inf", as_float)):
        with pytest.raises(DataError, match="--flag 'v'"):
            conv(bad, "--flag 'v'")


def test_items_and_options():
    assert parse_item("asl:gamma_neg=4,clip=0.05", "--loss") == ("asl", {"gamma_neg": 4, "clip": 0.05})
    assert parse_item("Focal:alpha=None,x=true", "--loss") == ("focal", {"alpha": None, "x": True})
    assert parse_item("rotate:15", "--aug", ("deg",)) == ("rotate", {"deg": 15})
    assert parse_item("epochs=2,size=128", "--stages") == ("", {"epochs": 2, "size": 128})
    assert parse_items("hflip;colorswap:rb,remap=Blue/red;", "--aug", lambda n: ("mode",)) == \
        [("hflip", {}), ("colorswap", {"mode": "rb", "remap": "Blue/red"})]


@pytest.mark.parametrize("bad, msg", [
    ("", "write name"), ("asl:gamma", "needs a name"), ("asl:a=1,a=2", "given twice"), ("asl:=3", "empty option"),
    ("asl;focal", "takes one item"), ("a,b:c=1", "write name"),
])
def test_bad_items_name_the_flag(bad, msg):
    with pytest.raises(DataError, match=msg) as e:
        parse_item(bad, "--loss")
    assert "--loss" in str(e.value)


def test_every_list_option_uses_semicolons_between_items():
    assert [n for n, _ in parse_augment("hflip;erase:p=0.5,side=0.25;randaug:n=2,m=9")] == ["hflip", "erase", "randaug"]
    assert dict(parse_augment("erase:p=0.5,side=0.25"))["erase"] == {"p": 0.5, "side": 0.25}
    assert parse_mix("mixup:0.2;cutmix:1.0;switch=0.3") == MixSpec(mixup=0.2, cutmix=1.0, switch=0.3)
    assert [s.epochs for s in parse_stages("epochs=2,size=64;epochs=3")] == [2, 3]
    assert split_methods(["select:size=5,replace=no;lr", "mean"]) == ["select:size=5,replace=no", "lr", "mean"]
    c = parse_constraints(["a", "b", "c", "d"], exactly_one=["a,b;c,d"])
    assert [list(g) for g in c.exactly_one] == [[0, 1], [2, 3]]


def test_stack_methods_share_the_vocabulary_and_error_type():
    assert parse_method("select:replace=off,size=5")[2]["replace"] is False
    assert parse_method("select:replace=1")[2]["replace"] is True
    with pytest.raises(DataError, match="--method select: replace='maybe' is not a boolean"):
        parse_method("select:replace=maybe")
    with pytest.raises(DataError, match="valid: prior, best"):
        parse_method("nope")


@pytest.mark.parametrize("old, new", [
    ("hflip,erase:p=0.5", "hflip;erase:p=0.5"),
    ("randaug:n=2;m=9", "randaug:n=2,m=9"),
    ("hflip,erase:p=0.5,randaug:n=2;m=9", "hflip;erase:p=0.5;randaug:n=2,m=9"),
    ("default,colorswap:rb;remap=blue/red", "default;colorswap:rb,remap=blue/red"),
    ("rotate:15,hflip", "rotate:15;hflip"),
])
def test_former_aug_spelling_is_refused_with_the_new_form(old, new):
    with pytest.raises(DataError, match="--aug") as e:
        parse_augment(old)
    assert f"write --aug '{new}'" in str(e.value)
    parse_augment(new)


def test_former_mix_spelling_is_refused_with_the_new_form():
    with pytest.raises(DataError, match=r"write --mix 'mixup:0\.2;cutmix:1;switch=0\.5,off_epochs=2'"):
        parse_mix("mixup:0.2,cutmix:1,switch=0.5,off_epochs=2")


def test_old_runs_are_read_in_the_new_spelling():
    stored = {"aug": "hflip,rotate:10", "mix": "mixup:0.1,cutmix:1.0,switch=0.5",
              "args": {"aug": "default,erase:1;side=0.25", "mix": None}}
    new = modern_spelling(stored)
    assert new["aug"] == "hflip;rotate:10" and new["mix"] == "mixup:0.1;cutmix:1.0;switch=0.5"
    assert new["args"] == {"aug": "default;erase:1,side=0.25", "mix": None}
    assert stored["aug"] == "hflip,rotate:10"  # a copy: the stored dict is left as it was
    assert modern_spelling({"aug": "default", "mix": "cutmix:1"}) == {"aug": "default", "mix": "cutmix:1"}


@pytest.mark.slow
def test_train_refuses_the_former_spelling_with_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "--out", str(tmp_path / "runs"),
                        "--aug", "hflip,erase:p=0.5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "write --aug 'hflip;erase:p=0.5'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_flag_names_agree_and_former_names_still_parse():
    import predict
    from tools import average_checkpoints, plot_probs, thresholds

    p = predict.get_args_parser()
    assert p.parse_args(["--run", "a", "b"]).runs == p.parse_args(["--runs", "a", "b"]).runs == ["a", "b"]
    assert "--runs" in p.format_help() and "--run " not in p.format_help() and "--no-amp" not in p.format_help()
    assert [p.parse_args(["--runs", "a", *amp]).amp for amp in ([], ["--amp"], ["--amp", "off"], ["--no-amp"])] == \
        ["auto", "bf16", "off", "off"]
    for tool, argv in ((average_checkpoints, ["--run", "r"]), (thresholds, ["--run", "r"]), (plot_probs, ["--run", "r"])):
        parser = tool.get_args_parser()
        dest = "runs" if tool is thresholds else "run"  # thresholds.py reads several runs
        assert getattr(parser.parse_args(argv), dest) == getattr(parser.parse_args(["--runs", *argv[1:]]), dest)
        assert "--run " not in parser.format_help()
