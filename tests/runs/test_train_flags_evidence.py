"""Every default that cites EXPERIMENTS.md names a section the page has."""
import re

import pytest

from conftest import ROOT
from utils.runs.train_flags import BY_DEST

CITING = ["utils/train/recipes.py", "utils/runs/train_flags.py", "predict.py", "tools/submit.py", "scripts/cv.sh"]
# the plan and training-ingredient rows whose --help says which section supports the default
EVIDENCED = ["arch", "head", "recipe", "size", "bs", "epochs", "lr", "loss", "sampler", "aug", "aug_static", "ema",
             "ema_warmup", "mix", "accum", "keep_epochs", "pseudo_weight", "distill"]


def _headings():
    return [line.lstrip("#").strip() for line in (ROOT / "EXPERIMENTS.md").read_text().splitlines()
            if line.startswith("## ") or line.startswith("### ")]


def _anchor(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


@pytest.mark.parametrize("path", CITING)
def test_cited_anchors_are_headings_of_the_page(path):
    anchors = {_anchor(h) for h in _headings()}
    cited = set(re.findall(r"EXPERIMENTS\.md#([\w-]+)", (ROOT / path).read_text()))
    assert cited, f"{path} cites no section"
    assert cited <= anchors, f"{path} cites {sorted(cited - anchors)}, not a heading of EXPERIMENTS.md"


@pytest.mark.parametrize("dest", EVIDENCED)
def test_the_help_names_a_section_that_exists(dest):
    helptext = " ".join(BY_DEST[dest].argparse["help"].split())
    m = re.search(r"EXPERIMENTS\.md sections? (.*?)\)", helptext)
    assert m, f"--{dest}'s help says nothing of its evidence"
    headings = _headings()
    for name in m.group(1).split(", "):
        name = name.strip("'")
        if len(name) == 1:   # a lettered subsection: 'a' is '### a. ...'
            assert any(h.startswith(f"{name}. ") for h in headings), (dest, name)
        else:
            assert any(h.startswith(name) for h in headings), (dest, name)


def test_a_misspelt_anchor_is_not_a_heading():
    anchors = {_anchor(h) for h in _headings()}
    assert "s-a-second-seed-which-answers-hold" in anchors
    assert "s-a-second-seed-which-answers-holds" not in anchors
