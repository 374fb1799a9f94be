"""Run names: the configuration tag hashes the flags of configuration (the flag table's tag
column); the how-to-run flags leave it, and the names of runs named before, as they were."""
import json
from argparse import Namespace
from pathlib import Path

import pytest

from utils.runs.run_name import config_tag, default_run_name
from utils.runs.train_flags import FLAGS, HOW

DONE = json.loads((Path(__file__).parents[1] / "fixtures" / "legacy" / "runs" / "done" / "config.json").read_text())
HOW_ROWS = [f for f in FLAGS if f.role == HOW]


def fixture_flags(**changes):
    """The legacy fixture run's flags (config.json "args") with every how-to-run flag at its default."""
    return Namespace(**{**{f.dest: f.default for f in HOW_ROWS}, **DONE["args"], **changes})


def test_a_configuration_named_before_keeps_its_tag():
    # the tag the former rule (every flag but a hand-kept list, --amp at auto) gave these flags
    assert config_tag(fixture_flags()) == "fb5e3ab3"


@pytest.mark.parametrize("row", HOW_ROWS, ids=lambda f: f.dest)
def test_a_how_to_run_flag_leaves_the_tag_and_name_as_they_were(row):
    other = {bool: True, str: "other", int: 7, float: 0.5}
    value = "bf16" if row.dest == "amp" else other[type(row.default) if row.default is not None else str]
    name = default_run_name(fixture_flags(), now=0, pid=1)
    assert default_run_name(fixture_flags(**{row.dest: value}), now=0, pid=1) == name


def test_a_flag_of_configuration_changes_the_tag_and_the_fold_is_named_apart():
    assert config_tag(fixture_flags(seed=1)) != config_tag(fixture_flags())
    assert config_tag(fixture_flags(lr=0.1)) != config_tag(fixture_flags())
    assert config_tag(fixture_flags(fold=2)) == config_tag(fixture_flags())
    assert "-f2-" in default_run_name(fixture_flags(fold=2), now=0, pid=1)
