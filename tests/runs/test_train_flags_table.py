"""train.py's flag table (utils/runs/train_flags.py): the parser, the run name's tag, the model key, the
resume rules, config.json and TrainOptions all come from it. Its tests compare with the runs of
tests/fixtures/legacy (recorded before some flags existed) and are generated from the table's rows:
every flag of configuration refused when changed on --resume, every how-to-run flag free."""
import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

import train
from utils.common.errors import DataError
from utils.runs.directory import model_key
from utils.runs.train_flags import (BY_DEST, CONFIG, FLAGS, HOW, HOW_TO_RUN, NEEDS, OPTIONS, RESUME_KEYS, TrainOptions,
                               flag, legacy_config, recorded, stored_args, undeclared_legacy)
from utils.train.parse import get_args_parser
from utils.train.resume import check_same_config, given_flags, restore_flags, stored_flags
from utils.train.run_setup import demo_values, resolve_flags

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy" / "runs"
RUNS = {name: json.loads((LEGACY / name / "config.json").read_text()) for name in ("done", "killed")}
DONE = RUNS["done"]
CONFIG_ROWS = [f for f in FLAGS if f.role == CONFIG]
CHECKED = [f for f in FLAGS if f.checked]
HOW_ROWS = [f for f in FLAGS if f.role == HOW and f.dest != "resume"]


def _dest(row):
    return row.dest


def other_value(row, value):
    """argv giving row's flag a value other than `value`, from its argparse details."""
    kw = row.argparse
    if kw.get("action") is argparse.BooleanOptionalAction:
        return [f"--no-{row.name[2:]}" if value in (None, True) else row.name]
    if kw.get("action") == "store_true":
        return [row.name] if not value else []
    if kw.get("choices"):
        return [row.name, next(c for c in kw["choices"] if c != value)]
    if kw.get("type") in (int, float):
        return [row.name, str(kw["type"]((value or 0) + 1))]
    return [row.name, f"{value}-other" if value else "other"]


def parsed(argv):
    """train.py's namespace and given flags for argv, from the parser alone (no --config, recipe)."""
    args = get_args_parser().parse_args(argv)
    return args, given_flags(get_args_parser, argv)


def test_every_flag_is_one_row_of_the_parser():
    parser_dests = {a.dest for a in train.get_args_parser()._actions if a.dest != "help"}
    assert parser_dests == {f.dest for f in FLAGS} and len(FLAGS) == len(parser_dests)


def test_every_configuration_flag_says_how_older_runs_resume():
    assert undeclared_legacy() == []
    new = flag("--new-ingredient", "training ingredients", type=int, default=0, config="new_ingredient", checked=True)
    assert undeclared_legacy(FLAGS + (new,)) == ["--new-ingredient"]
    assert undeclared_legacy((flag("--new-log", "speed", role=HOW, default=None),)) == []


def test_what_the_legacy_runs_stored_is_what_the_table_stores():
    for name, stored in RUNS.items():
        now = set(stored_args(vars(train.parse_args([]))))
        assert set(stored["args"]) <= now, name  # every flag stored then is still a flag of configuration
        for dest in now - set(stored["args"]):  # newer flags: the run resumes at their legacy value
            assert BY_DEST[dest].legacy != "unset", dest
        assert not HOW_TO_RUN & set(stored["args"]), name
        by_value = {f.config for f in FLAGS if f.config and f.record != "by use"}
        assert by_value - set(stored) <= {f.config for f in FLAGS if f.legacy != "unset"}, name


def test_the_legacy_runs_keep_their_model_keys():
    for name, stored in RUNS.items():
        assert model_key(stored) == stored["model_key"], name


def test_model_key_counts_a_flag_added_later_only_when_set():
    base = dict(DONE)
    assert model_key({**base, "ema": None, "ema_warmup": False}) == model_key(base)  # warm-up counts with its partner
    for row in (f for f in FLAGS if f.model == "when set"):
        assert model_key({**base, row.config: legacy_config()[row.config]}) == model_key(base), row.name
        assert model_key({**base, row.config: "set"}) != model_key(base), row.name
    assert model_key({**base, "ema": 0.99}) == model_key({**base, "ema": 0.99, "ema_warmup": True})


def test_train_options_are_the_option_rows_with_their_defaults():
    fields = {f.name: f.default for f in dataclasses.fields(TrainOptions)}
    assert fields == {d: BY_DEST[d].default for d in OPTIONS}
    assert train.TrainOptions is TrainOptions
    assert all(BY_DEST[d].role == HOW or d == "aug_device" for d in OPTIONS)


def test_needs_and_resume_keys_come_from_the_table():
    assert NEEDS == {f.dest: f.needs for f in FLAGS if f.needs}
    assert set(RESUME_KEYS) == {f.config for f in CHECKED} | {"labels", "stages"}
    assert {"amp", "channels_last", "workers", "device", "plots", "tensorboard"} <= HOW_TO_RUN


@pytest.mark.parametrize("row", CONFIG_ROWS, ids=_dest)
def test_changing_a_flag_of_configuration_on_resume_is_refused_naming_it(row):
    stored = DONE
    value = stored_flags(DONE)[row.dest]  # a flag newer than the run at its legacy value
    if not other_value(row, value):  # a store_true flag the run had on cannot be given off: the run had it off
        stored, value = {**DONE, "args": {**DONE["args"], row.dest: False}}, False
    args, given = parsed(["--resume", "--name", "done", *other_value(row, value)])
    with pytest.raises(DataError, match=re.escape(row.name) + ": the run was started with"):
        restore_flags(args, stored, given, "runs/done")


@pytest.mark.parametrize("row", CONFIG_ROWS, ids=_dest)
def test_a_run_older_than_a_flag_resumes_at_its_legacy_value(row):
    older = {**DONE, "args": {k: v for k, v in DONE["args"].items() if k != row.dest}}
    args, given = parsed(["--resume", "--name", "done"])
    restored = restore_flags(args, older, given, "runs/done")
    assert restored.get(row.dest, getattr(args, row.dest)) == row.assumed
    args, given = parsed(["--resume", "--name", "done", *other_value(row, row.assumed)])
    with pytest.raises(DataError, match=re.escape(row.name)):
        restore_flags(args, older, given, "runs/done")


@pytest.mark.parametrize("row", CHECKED, ids=_dest)
def test_a_checked_flag_recorded_otherwise_is_refused_and_missing_is_its_legacy_value(row):
    now = {**legacy_config(), **DONE}  # the run's configuration as a run would record it today
    with pytest.raises(DataError, match=rf"\n  {row.config}: run has [^\n]*\n[^ ]"):  # that key alone
        check_same_config(DONE, {**now, row.config: "other"}, "runs/done")
    older = {k: v for k, v in DONE.items() if k != row.config}
    check_same_config(older, {**now, row.config: legacy_config()[row.config]}, "runs/done")


@pytest.mark.parametrize("row", HOW_ROWS, ids=_dest)
def test_a_how_to_run_flag_may_change_on_resume(row):
    args, given = parsed(["--resume", "--name", "done", *other_value(row, row.default)])
    assert row.dest in given
    assert row.dest not in restore_flags(args, DONE, given, "runs/done")
    assert row.dest not in stored_args(vars(args))


def test_config_json_records_the_flags_the_table_says():
    values = vars(train.parse_args(["--keep-epochs", "2"]))
    rec = recorded(values)
    assert rec["keep_epochs"] == 2 and rec["loss_spec"] == "bce" and "exclude" not in rec  # by use
    newer = {f.config for f in FLAGS if f.legacy != "unset"}  # keys a run recorded before may lack
    assert set(rec) <= set(DONE) | newer


def test_resolving_does_not_touch_the_parsed_flags():
    args = train.parse_args([])
    before = dict(vars(args))
    flags, run_dir = resolve_flags(args, train.parse_args)
    assert vars(args) == before and run_dir is None
    assert (flags.size, flags.epochs) == (96, 3) and args.size is None  # the demo's defaults, on the copy
    assert demo_values(train.parse_args(["--stages", "epochs=1"])) == {}


def test_resume_of_a_run_that_does_not_exist_names_out_and_its_runs(tmp_path):
    from utils.train.run_setup import find_run
    flags = argparse.Namespace(resume=True, name="nosuchrun")
    with pytest.raises(DataError, match=f"no run named nosuchrun in --out {re.escape(str(tmp_path))}; "
                                        "it holds no runs"):
        find_run(flags, tmp_path)
    for name in ("b", "a", "c", "d", "e", "f"):
        (tmp_path / name).mkdir()
    with pytest.raises(DataError, match=r"its runs: a, b, c, d, e \(\+1 more\)"):
        find_run(flags, tmp_path)
