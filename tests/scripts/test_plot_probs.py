"""tools/plot_probs.py: a run without the predictions asked for is named in the refusal."""
import re

import numpy as np
import pytest

from helpers import RUN_LABELS, load_tool, run_tool, write_run
from utils.common.errors import DataError

plot_probs = load_tool("plot_probs")


def test_a_run_without_validation_predictions_is_named(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    names = [f"img{i:03d}" for i in range(6)]
    (data / "train.csv").write_text("image_name,tags\n" + "".join(f"{n},a\n" for n in names))
    run = write_run(tmp_path / "runs", "r", data, 0, names, np.full((6, len(RUN_LABELS)), 0.5), test=False)
    for f in (run / "preds").glob("val.*.csv"):
        f.unlink()
    with pytest.raises(DataError, match=re.escape(f"{run}: no predictions (preds/val.*.csv)")):
        run_tool(plot_probs, "--run", run)
