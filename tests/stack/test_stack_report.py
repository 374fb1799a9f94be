"""utils/stack/stack_report.py: the Markdown header says where the submission's thresholds come from."""
from utils.stack.stack_report import render_report


def report(**settings):
    return {"settings": {"tta": "none", "threshold": "greedy", "beta": 2, **settings},
            "library": {"members": 1, "configurations": 1, "images": 4, "labels": ["a"], "folds": 2,
                        "test_images": 2, "left_out": [], "notes": [], "label_frequency": {"a": 0.5}},
            "best_single": None, "methods": {m: {"f2_cross_fitted": 0.5, "std": 0.1, "f2_in_sample": 0.6,
                                                 "optimism": 0.1, "seconds": 1.0, "per_label": {"a": 0.5},
                                                 "weights": None} for m in ("mean", "prior")},
            "ranking": ["mean", "prior"], "chosen": "mean", "chosen_by": "--method", "thresholds": {"a": 0.3},
            "members": []}


def test_the_header_names_a_thresholds_file_applied_with_thresholds():
    plain = render_report(report()).split("\n\n")[1]
    assert "thresholds `greedy`" in plain
    given = render_report(report(thresholds_file="mine.json"))
    header = given.split("## Methods")[0]
    assert "the submission's thresholds from `mine.json` (stack.py --thresholds" in header
    assert "thresholds `greedy`" not in header
