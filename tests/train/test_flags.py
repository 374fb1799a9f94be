"""train.py's flag table (utils/train/flags.py): the parser, the resume rules, config.json and
TrainOptions all come from it, and resolving the flags leaves the parsed namespace as it was."""
import dataclasses
import json
from pathlib import Path

import train
from utils.train.flags import FLAGS, FREE_FLAGS, NEEDS, OPTIONS, RESUME_DEFAULTS, RESUME_KEYS, stored_args
from utils.train.run_setup import demo_values, resolve_flags
from utils.train.trainer import TrainOptions

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy" / "runs" / "done" / "config.json"


def test_every_flag_is_one_row_of_the_parser():
    parser_dests = {a.dest for a in train.get_args_parser()._actions if a.dest != "help"}
    assert parser_dests == {f.dest for f in FLAGS} and len(FLAGS) == len(parser_dests)


def test_resume_rules_and_needs_come_from_the_table():
    assert {"device", "workers", "plots", "amp", "out", "resume"} <= FREE_FLAGS
    assert not {"arch", "aug", "seed", "stages"} & FREE_FLAGS
    assert NEEDS["pseudo_weight"] == ("pseudo", "--pseudo CSV") and set(NEEDS) == {"pseudo_weight", "distill", "ema_warmup"}
    assert {"arch", "loss_spec", "aug", "mix", "labels", "stages", "channels"} <= set(RESUME_KEYS)
    assert RESUME_DEFAULTS == {"channels": 3}


def test_train_options_are_the_option_rows():
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    assert set(OPTIONS) <= fields and set(OPTIONS) == fields - {"eval_bs"}


def test_config_keys_of_a_recorded_run_are_kept():
    stored = json.loads(LEGACY.read_text())
    # every flag a run of today's layout stored is still a flag, stored the same way
    newer = {"opt", "layer_decay", "weights"}  # flags added after the fixture was recorded
    assert set(stored["args"]) | newer == set(stored_args(vars(train.parse_args([]))))
    recorded = {f.config for f in FLAGS if f.config}
    assert recorded <= set(stored) | {"pseudo", "soft_targets", "weights"}


def test_resolving_does_not_touch_the_parsed_flags():
    args = train.parse_args([])
    before = dict(vars(args))
    flags, run_dir = resolve_flags(args, train.parse_args)
    assert vars(args) == before and run_dir is None
    assert (flags.size, flags.epochs) == (96, 3) and args.size is None  # the demo's defaults, on the copy
    assert demo_values(train.parse_args(["--stages", "epochs=1"])) == {}
