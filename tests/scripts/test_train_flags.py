"""Wrong flag values exit 2 with a message naming the flag, and nothing is written."""
import pytest

from conftest import write_dataset
from helpers import train
from utils.common.errors import DataError
from utils.runs.train_flags import NEEDS
from utils.train.pseudo import load_extras


@pytest.mark.parametrize("kw, flag", [({"pseudo_weight": -1.0}, "--pseudo-weight"),
                                      ({"pseudo_weight": 0.0}, "--pseudo-weight"),
                                      ({"alpha": 2.0}, "--distill"), ({"alpha": -0.1}, "--distill")])
def test_extras_values_checked_without_their_file_flag(kw, flag):
    with pytest.raises(DataError, match=flag):
        load_extras(None, None, 0, ["a"], **kw)


def test_extras_defaults_without_file_flags_are_none():
    assert load_extras(None, None, 0, ["a"]) is None


@pytest.mark.parametrize("extra, flag", [(["--distill", "2"], "--distill"), (["--pseudo-weight", "-1"], "--pseudo-weight"),
                                         # typed without their partner flag, at their default value
                                         (["--pseudo-weight", "1.0"], "--pseudo-weight 1.0: only used with --pseudo CSV"),
                                         (["--distill", "0.5"], "--distill 0.5: only used with --soft-targets CSV|RUN"),
                                         (["--ema-warmup"], "--ema-warmup: only used with --ema DECAY"),
                                         (["--no-ema-warmup"], "--no-ema-warmup: only used with --ema DECAY"),
                                         (["--loss", "asl:gamma_neg=x"], "--loss asl: gamma_neg must be a number"),
                                         (["--loss", "asl:detach=maybe"], "--loss asl: detach='maybe'"),
                                         # options the trainer reads stage by stage, checked up front
                                         (["--aug", "hflip;rotate:abc"], "augmentation rotate: deg must be a number"),
                                         (["--aug", "hflip;shift:x"], "augmentation shift"),
                                         (["--mix", "mixup:abc"], "--mix"), (["--head", "gem:p=abc"], "--head gem"),
                                         (["--stages", "epochs=1,size=24,bs=8,sched=foo"], "sched='foo'"),
                                         (["--opt", "lion:momentum=0.9"], "--opt: opt=lion: unknown option(s) momentum"),
                                         (["--opt", "lionn"], "opt='lionn' is not an optimizer"),
                                         (["--layer-decay", "1.5"], "--layer-decay 1.5 must be in (0, 1]"),
                                         (["--weights", "no_such_file.pth"], "--weights no_such_file.pth: no such"),
                                         (["--weights", "."], "a folder without weights")])
def test_train_refuses_before_writing(tmp_path, extra, flag):
    data = write_dataset(tmp_path / "data", n=20, size=24)
    before = sorted(p.name for p in data.iterdir())
    r = train(data, tmp_path / "runs", "--stages", "epochs=1,size=24,bs=8", *extra, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert flag in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in data.iterdir()) == before


def test_train_out_an_existing_file_is_refused(tmp_path):
    data = write_dataset(tmp_path / "data", n=20, size=24)
    before = sorted(p.name for p in data.iterdir())
    out = tmp_path / "runs.txt"
    out.write_text("notes\n")
    r = train(data, out, "--stages", "epochs=1,size=24,bs=8", check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"--out {out}: is an existing file" in r.stderr and "Traceback" not in r.stderr
    assert out.read_text() == "notes\n" and sorted(p.name for p in data.iterdir()) == before


@pytest.mark.parametrize("spec, message", [("asl:gamma_neg=x", "gamma_neg must be a number; got 'x'"),
                                           ("focal:gamma=two", "gamma must be a number"),
                                           ("wbce:cap=big", "cap must be a number"),
                                           ("asl:detach=2", "detach=2 .*not a boolean")])
def test_loss_option_of_the_wrong_kind_is_named(spec, message):
    import numpy as np

    from utils.train.losses import build_loss
    with pytest.raises(DataError, match=message):
        build_loss(spec, np.eye(3, dtype=np.uint8))


def test_loss_options_of_the_right_kind_still_build():
    import numpy as np

    from utils.train.losses import build_loss
    assert build_loss("focal:alpha=none,gamma=1")[1] == {"loss": "focal", "gamma": 1, "alpha": None}
    assert build_loss("asl:gamma_neg=2,detach=false")[1]["detach"] is False
    assert build_loss("wbce:cap=5", np.eye(3, dtype=np.uint8))[1]["cap"] == 5


def test_resume_diff_says_not_set_rather_than_null():
    from argparse import Namespace

    from utils.train.resume import restore_flags
    with pytest.raises(DataError) as e:
        restore_flags(Namespace(lr=0.5, bs=8), {"args": {"lr": None, "bs": 8}}, {"lr"}, "runs/R")
    msg = str(e.value)
    assert "--lr: the run was started with --lr at its default (not set), the command line gives 0.5" in msg
    assert "null" not in msg


def test_resume_with_another_lr_names_the_default_the_run_used(tmp_path):
    """A run started without --lr, resumed with --lr 1e-2: the message says what the default was."""
    import signal
    data = write_dataset(tmp_path / "data", n=20, size=16)
    plan = ["--stages", "epochs=2,size=16,bs=8,lr=5e-4"]
    r = train(data, tmp_path / "runs", *plan, check=False, kill="epoch_end:1")
    assert r.returncode == -signal.SIGKILL
    r = train(data, tmp_path / "runs", "--resume", "--lr", "1e-2", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("--lr: the run was started with --lr at its default (0.0005, the final stage's), "
            "the command line gives 0.01") in r.stderr


@pytest.mark.parametrize("drop", ["size", "mean", "std", "arch", "labels"])
def test_checkpoint_meta_without_a_needed_key_is_named(tmp_path, drop):
    import torch

    from utils.models.checkpoint import load_checkpoint
    meta = {"arch": "tiny_cnn", "labels": ["a"], "size": 32, "mean": [0.5] * 3, "std": [0.2] * 3}
    path = tmp_path / "best.pt"
    torch.save({"model": {}, "meta": {k: v for k, v in meta.items() if k != drop}}, path)
    with pytest.raises(DataError, match=f"best.pt: the checkpoint's 'meta' lacks {drop}"):
        load_checkpoint(path)
    torch.save({"model": {}, "meta": meta}, path)
    assert load_checkpoint(path)["meta"] == meta


def _near_duplicates():
    import importlib.util

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("near_duplicates", ROOT / "tools" / "near_duplicates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("extra, message", [(["--max-distance", "128"], "--max-distance 128: must be in 0..127"),
                                            (["--max-colour-difference", "255"], "--max-colour-difference 255: must be"),
                                            (["--leak-labels", "LEAKS"], "--leak-labels: .* has no test images")])
def test_near_duplicates_refuses_before_writing(tmp_path, extra, message):
    nd = _near_duplicates()
    data = write_dataset(tmp_path / "data", n=8, size=24, n_test=0)
    (data / "sample_submission.csv").unlink()
    (data / "test").rmdir()
    before = sorted(p.name for p in data.iterdir())
    extra = [str(tmp_path / "leaks.csv") if e == "LEAKS" else e for e in extra]
    with pytest.raises(DataError, match=message):
        nd.main(nd.get_args_parser().parse_args(["--data", str(data), *extra]))
    assert sorted(p.name for p in data.iterdir()) == before and not (tmp_path / "leaks.csv").exists()


@pytest.mark.parametrize("argv, message", [
    (["--pseudo-weight", "1"], "--pseudo-weight 1.0: only used with --pseudo CSV; give --pseudo or drop --pseudo-weight"),
    (["--distill", "0.3"], "--distill 0.3: only used with --soft-targets CSV|RUN"),
    (["--no-ema-warmup"], "--no-ema-warmup: only used with --ema DECAY; give --ema or drop --no-ema-warmup"),
    (["--config", "CFG"], "--pseudo-weight 0.5: only used with --pseudo CSV"),  # a config file's value
    (["--config", "CFG", "--distill", "0.5"], "--pseudo-weight 0.5: .*\n--distill 0.5: "),  # every one, one message
])
def test_flag_without_its_partner_is_refused(tmp_path, argv, message):
    import train
    from utils.common.cli import refuse_idle_flags

    (tmp_path / "cfg.yaml").write_text("pseudo_weight: 0.5\n")
    args = train.parse_args([str(tmp_path / "cfg.yaml") if a == "CFG" else a for a in argv])
    with pytest.raises(DataError, match=message):
        refuse_idle_flags(args, NEEDS, train.get_args_parser(), args._given)


@pytest.mark.parametrize("argv", [[], ["--pseudo", "p.csv", "--pseudo-weight", "1.0"],
                                  ["--soft-targets", "t.csv", "--distill", "0.5"], ["--ema", "0.99", "--no-ema-warmup"],
                                  ["--recipe", "strong", "--no-ema-warmup"]])  # the recipe turns --ema on
def test_flag_with_its_partner_or_not_typed_is_accepted(argv):
    import train
    from utils.common.cli import refuse_idle_flags

    args = train.parse_args(argv)
    refuse_idle_flags(args, NEEDS, train.get_args_parser(), args._given)


def test_resumed_run_keeps_the_values_it_was_started_with():
    """--resume restores a run's stored values (not typed): they are not judged again."""
    import train
    from utils.common.cli import refuse_idle_flags

    args = train.parse_args(["--resume"])
    args.ema_warmup = False  # as restored from a run started before the check
    refuse_idle_flags(args, NEEDS, train.get_args_parser(), args._given, values=False)
    with pytest.raises(DataError, match="--no-ema-warmup: only used with --ema"):
        refuse_idle_flags(args, NEEDS, train.get_args_parser(), args._given)


def test_label_issues_size_checked_before_reading_runs(tmp_path):
    import importlib.util

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("label_issues", ROOT / "tools" / "label_issues.py")
    li = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(li)
    args = li.get_args_parser().parse_args(["--runs", str(tmp_path / "none*"), "--size", "0",
                                            "--out", str(tmp_path / "li")])
    with pytest.raises(DataError, match="--size 0: must be at least 16 px"):
        li.main(args)
    assert not (tmp_path / "li").exists()


@pytest.mark.parametrize("extra, message", [(["--kfold", "1"], "--kfold 1: must be 0"),
                                            (["--kfold", "-2"], "--kfold -2: must be 0"),
                                            (["--beta", "0"], "--beta 0.0: must be > 0"),
                                            (["--zero-division", "5"], r"--zero-division 5.0: must be in \[0, 1\]"),
                                            (["--zero-division", "nan"], r"--zero-division nan: must be in \[0, 1\]")])
def test_thresholds_values_checked_first(tmp_path, extra, message):
    import importlib.util

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("thresholds_tool", ROOT / "tools" / "thresholds.py")
    th = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(th)
    with pytest.raises(DataError, match=message):
        th.load_inputs(th.get_args_parser().parse_args(["--probs", str(tmp_path / "p.csv"),
                                                        "--truth", str(tmp_path / "t.csv"), *extra]))


def test_every_train_flag_states_its_default():
    import importlib.util

    from conftest import ROOT
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    quiet = [a.option_strings[-1] for a in mod.get_args_parser()._actions
             if a.option_strings and a.dest != "help" and "default" not in (a.help or "").lower()]
    assert quiet == []
