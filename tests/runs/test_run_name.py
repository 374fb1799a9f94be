"""Run names: the configuration tag leaves out the flags that only say how to run."""
import hashlib
import json
from argparse import Namespace

from utils.runs.run_name import config_tag


def flags(**kw):
    return Namespace(**{"arch": "resnet50", "images": "train", "fold": 0, "bs": 16, "lr": None, "amp": "auto",
                        "channels_last": None, "compile": False, "workers": -1, **kw})


def test_precision_and_memory_format_leave_the_tag_as_it_was():
    before = {"amp": "auto", "arch": "resnet50", "bs": 16, "images": "train", "lr": None}  # the tag's key until now
    old = hashlib.sha1(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:8]
    tags = {config_tag(flags(amp=a, channels_last=c)) for a in ("auto", "off", "bf16", "fp16")
            for c in (None, True, False)}
    assert tags == {old}
    assert config_tag(flags(bs=32)) != old
