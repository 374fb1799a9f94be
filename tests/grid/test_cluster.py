"""Grid run names (utils/grid/cluster.py run_name): they hash a cell's flags of configuration, so
cells differing only in train.py's how-to-run flags share their runs, and flags without those
name their runs as they always did."""
import hashlib
import json

from utils.grid.cluster import run_name

FLAGS = ["--folds-k", "2", "--stages", "epochs=1,size=16,bs=8", "--no-pretrained"]


def test_how_to_run_flags_leave_a_cells_run_name_as_it_was():
    former = hashlib.sha1(json.dumps(["tiny_cnn", FLAGS]).encode()).hexdigest()[:8]  # every flag hashed
    assert run_name("tiny_cnn", FLAGS, 0, 1) == f"tiny_cnn-{former}-s0-f1"
    how = ["--amp", "bf16", "--workers=2", "--no-channels-last", "--device", "cpu", "--plots", "none", "--compile"]
    assert run_name("tiny_cnn", FLAGS[:2] + how + FLAGS[2:], 0, 1) == run_name("tiny_cnn", FLAGS, 0, 1)
    assert run_name("tiny_cnn", FLAGS + ["--seed", "1"], 0, 1) != run_name("tiny_cnn", FLAGS, 0, 1)
