"""Config files for train.py: a JSON or YAML mapping of settings, whose 'stages' list
(or a bare list of stage mappings) is a stage plan.

    {"stages": [{"epochs": 2, "train": "head"}, {"epochs": 8}], "arch": "resnet18"}

A mapping may hold a "recipe" name instead of "stages" (not both). Stages inherit the
keys they leave out from the previous stage, as in --stages (utils/train/stage.py).
"""
import json
from pathlib import Path

import yaml

from utils.common.errors import DataError
from utils.common.text import read_text
from utils.train.stage import build_stages


def read_config_file(path):
    """The top-level mapping of a JSON or YAML config file (a bare list -> {"stages": list}).

    Raises DataError naming the file when it cannot be read or parsed or holds neither.
    """
    path = Path(path)
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    text = read_text(path)
    try:
        if kind == "JSON":
            data = json.loads(text)
        else:  # YAML is a superset of JSON, so .yaml/.yml/anything else goes through it
            data = yaml.safe_load(text)
    except Exception as e:  # the parser's message says where the syntax breaks
        raise DataError(f"{path}: not valid {kind} ({e})") from e
    if isinstance(data, list):
        data = {"stages": data}
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a mapping (or a bare list of stages), got {type(data).__name__}")
    return data


def file_stages(path, data=None):
    """The raw list of stage dicts in a config file (`data`: its mapping, when already read).

    Raises DataError naming the file when 'stages' is missing, not a list, or next to 'recipe'.
    """
    data = read_config_file(path) if data is None else data
    if "stages" not in data:
        raise DataError(f"{path}: expected a 'stages' list (or a bare list of stages); "
                        f"found keys {sorted(map(str, data))}")
    if "recipe" in data:
        raise DataError(f"{path}: give 'stages' or 'recipe', not both")
    if not isinstance(data["stages"], list):
        raise DataError(f"{path}: 'stages' must be a list of stage mappings, "
                        f"got {type(data['stages']).__name__}")
    return data["stages"]


def load_plan_file(path, defaults=None):
    """Read a stage plan from JSON or YAML: {"stages": [{...}, ...]} or a bare list.

    Other top-level keys of a mapping are left to the caller (read_config_file). Stages
    inherit missing keys from the previous one, as in --stages. Raises DataError naming
    the file and the stage.
    """
    return build_stages(file_stages(path), str(path), defaults)
