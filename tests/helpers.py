"""What several test modules share, other than fixtures (tests/conftest.py): ways to run the
scripts, comparisons of runs, and synthetic inputs (run libraries, tool runs, images).

Test modules import these by name (`from helpers import train`); no test module imports another."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from conftest import ROOT, script_argv

# ----------------------------------------------------------------------------- running the scripts

FAST = "epochs=1,size=16,bs=8"  # a one-epoch plan on 16-pixel images


def train(data, out, *extra, env=None, name="r", check=True, kill=None):
    """Run train.py; kill='what:N' kills it at that trainer event (tests/kill_at.py)."""
    cmd = [sys.executable, "-W", "ignore", *script_argv("train.py", kill), "--data", str(data), "--out", str(out),
           "--arch", "tiny_cnn", "--no-pretrained", "--name", name, "--plots", "none", *extra]
    e = dict(os.environ, **(env or {}))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=e)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def train_run(data, out, *extra, name="r", kill=None, arch="tiny_cnn", check=True):
    """Run train.py (kill='what:N': killed at that trainer event, tests/kill_at.py); the run
    folder, or the finished process with check=False."""
    cmd = [sys.executable, "-W", "ignore", *script_argv("train.py", kill), "--data", str(data), "--out", str(out),
           "--arch", arch, "--no-pretrained", "--name", name, "--plots", "none", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    if not check:
        return r
    if kill is None:
        assert r.returncode == 0, r.stderr[-3000:]
    else:
        assert r.returncode == -signal.SIGKILL, (kill, r.stderr[-3000:])
    return out / name


def train_one_thread(data, out, *extra, env=None, name="r", check=True, arch=("--arch", "tiny_cnn"), kill=None):
    """Run train.py with OMP_NUM_THREADS=1 (name=None: no --name); kill='what:N' kills it at
    that trainer event (tests/kill_at.py)."""
    cmd = [sys.executable, "-W", "ignore", *script_argv("train.py", kill), "--data", str(data), "--out", str(out),
           *arch, "--no-pretrained", "--plots", "none", *(["--name", name] if name else []), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def torchrun(data, out, *extra, env=None, kill=None):
    """train.py on two CPU processes under torch.distributed.run (a fixed two-stage plan)."""
    # --standalone: a local rendezvous on a free port, so parallel or repeated runs never clash
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *script_argv("train.py", kill), "--data", str(data), "--out", str(out), "--arch", "tiny_cnn",
           "--no-pretrained", "--stages", "epochs=2,size=32,bs=8;epochs=1,size=24,train=head", "--plots", "none",
           "--device", "cpu", "--workers", "0", "--deterministic", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def run_stack(*args):
    """stack.py with these arguments, from the repository root; the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "stack.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def load_tool(name):
    """tools/NAME.py as a module, to call its main in this process."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_tool(tool, *argv):
    """A loaded tool's main on these command-line arguments."""
    return tool.main(tool.get_args_parser().parse_args([str(a) for a in argv]))


# ----------------------------------------------------------------------------- what runs left behind

def same_run(a, b):
    """Two run folders hold the same validation predictions, last.pt weights and history."""
    same_result(a, b)
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    cols = [c for c in ha.columns if c not in ("seconds", "img_per_s", "data_wait")]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], atol=1e-6)


def same_result(a, b):
    """Two run folders hold the same validation predictions and last.pt weights."""
    import torch

    pa = pd.read_csv(a / "preds" / "val.none.csv")
    pb = pd.read_csv(b / "preds" / "val.none.csv")
    assert list(pa["image_name"]) == list(pb["image_name"])
    np.testing.assert_allclose(pa.iloc[:, 1:].to_numpy(), pb.iloc[:, 1:].to_numpy(), atol=1e-6)
    wa = torch.load(a / "checkpoints" / "last.pt", weights_only=False)["model"]
    wb = torch.load(b / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def tree(path):
    """Every file and folder under path (relative), for 'nothing was written' checks."""
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


def preds_files(folder):
    """{path: mtime} of every prediction file under `folder` (to see what a call wrote)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("preds/*.csv")}


# ----------------------------------------------------------------------------- a library of runs for stack.py

LIBRARY_LABELS = ("a", "b", "c", "d")
LIBRARY_MODELS = [dict(arch="net0", signal=1.0, seeds=[0, 1]), dict(arch="net1", signal=1.6),
                  dict(arch="net2", signal=1.3, labels=["a", "c"]), dict(arch="net3", signal=0.9, images="train_seg")]
FAST_METHODS = ["mean", "select", "lr"]


def write_runs(root, models, n=240, n_test=30, k=3, seed=0):
    """A dataset (train.csv, folds.csv, sample_submission.csv) and finished runs of ``models``.

    models: dicts with arch, signal, and optionally seeds, labels (label group),
    images (variant), skip_folds, unfinished_folds. Returns (root, y, folds, probs)
    where probs[(arch, seed)] = (full OOF (N, L_m), test per fold list).
    """
    from scipy.special import expit, logit

    from utils.runs.pred_files import write_preds

    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "data"
    data.mkdir(parents=True)
    prev = np.array([0.5, 0.35, 0.2, 0.1])
    y = (rng.random((n, 4)) < prev).astype(int)
    names = [f"img{i:04d}" for i in range(n)]
    tnames = [f"t{i:03d}" for i in range(n_test)]
    tags = [" ".join(l for l, v in zip(LIBRARY_LABELS, r) if v) for r in y]
    pd.DataFrame({"image_name": names, "tags": tags}).to_csv(data / "train.csv", index=False)
    folds = rng.permutation(n) % k
    pd.DataFrame({"image_name": names, "fold": folds}).to_csv(data / "folds.csv", index=False)
    pd.DataFrame({"image_name": tnames, "tags": ""}).to_csv(data / "sample_submission.csv", index=False)
    probs = {}
    for m in models:
        labs = m.get("labels", list(LIBRARY_LABELS))
        cols = [LIBRARY_LABELS.index(t) for t in labs]
        for s in m.get("seeds", [0]):
            p = expit(rng.normal(size=(n, len(cols))) + m["signal"] * (2 * y[:, cols] - 1) + logit(prev[cols]))
            tests = []
            for f in range(k):
                if f in m.get("skip_folds", ()):
                    continue
                run = root / "runs" / f"{m['arch']}-s{s}-f{f}"
                (run / "preds").mkdir(parents=True)
                cfg = dict(name=run.name, arch=m["arch"], fold=f, seed=s, labels=labs,
                           all_labels=list(LIBRARY_LABELS), label_group=",".join(labs) if "labels" in m else None,
                           images=m.get("images", "train"), data_root="../../data",
                           data_root_abs=str(data.resolve()), folds_file="folds.csv", folds_k=k)
                (run / "config.json").write_text(json.dumps(cfg))
                if f not in m.get("unfinished_folds", ()):
                    (run / "result.json").write_text(json.dumps({"finished": True}))
                idx = np.flatnonzero(folds == f)[::-1]         # files need not follow train.csv order
                write_preds(run / "preds" / "val.none.csv", [names[i] for i in idx], labs, p[idx])
                t = rng.random((n_test, len(labs)))
                tests.append(t)
                write_preds(run / "preds" / "test.none.csv", tnames[::-1], labs, t[::-1])
            probs[(m["arch"], s)] = (p, tests)
    return root, y, folds, probs


# ----------------------------------------------------------------------------- runs for the tools

RUN_LABELS = ["a", "b", "c"]


def write_run(runs, name, data, fold, names, probs, arch="m0", seed=0, labels=RUN_LABELS, rel="auto",
              abs_path="auto", tta="none", ckpt=True, test=True):
    """A run folder as train.py leaves it, with fake 1000 + 2000 byte checkpoints."""
    from utils.runs.pred_files import write_preds

    d = runs / name
    d.mkdir(parents=True)
    cfg = {"name": name, "arch": arch, "fold": fold, "seed": seed, "labels": labels, "all_labels": RUN_LABELS,
           "label_group": None, "images": "train",
           "data_root": os.path.relpath(data, d) if rel == "auto" else rel,
           "data_root_abs": str(data) if abs_path == "auto" else abs_path,
           "folds_file": "folds.csv", "folds_k": 2, "stages": [{"size": 64, "epochs": 1}, {"size": 96, "epochs": 1}],
           "argv": ["--data", str(data) if abs_path == "auto" else abs_path], "created": "2024-01-01T00:00:00"}
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (d / "history.csv").write_text("stage,epoch,val_f2,seconds\n0,1,0.5,30\n1,2,0.6,30\n")
    (d / "result.json").write_text(json.dumps({"finished": True, "best_val_f2": 0.6, "best_epoch": 2,
                                               "epochs": 2, "train_seconds": 60.0}))
    write_preds(d / "preds" / f"val.{tta}.csv", names, labels, probs)
    if test:
        write_preds(d / "preds" / "test.none.csv", ["t0", "t1"], labels, np.full((2, len(labels)), 0.5))
    if ckpt:
        (d / "checkpoints").mkdir()
        (d / "checkpoints" / "best.pt").write_bytes(b"x" * 1000)
        (d / "checkpoints" / "last.pt").write_bytes(b"x" * 2000)
    return d


def random_probs(y, seed, signal=1.0):
    """Probabilities that lean towards the labels y by `signal`, rounded to 3 digits."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=y.shape) + signal * (2.0 * y - 1)
    return np.round(1 / (1 + np.exp(-z)), 3)


def brute_label_f2(yj, pj):
    """Best F2 of one label over every distinct cut, with sklearn."""
    from sklearn.metrics import fbeta_score

    cuts = np.append(np.unique(pj), 2.0)
    return max(fbeta_score(yj, pj >= t, beta=2, zero_division=1.0) for t in cuts)


# ----------------------------------------------------------------------------- images

def textured(h=32, w=32, seed=0, low=40, high=220):
    """Smooth gradients plus noise in [low, high]: no pixel is black, nothing is symmetric."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + 2 * yy) / (w + 2 * h)], axis=-1)
    img = low + (high - low) * (0.7 * base + 0.3 * rng.random((h, w, 3)))
    return img.round().astype(np.uint8)


def to_batch(images):
    """HxWx3 uint8 images as one float (N, 3, H, W) batch in [0, 1]."""
    import torch

    return torch.as_tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255


PLANET_LOW, PLANET_HIGH = 3_000, 20_000


def planet_image(rng, size, tags):
    """A 4-band uint16 image (R, G, B, NIR) with values in PLANET_LOW..PLANET_HIGH: 'a' a bright RGB
    square, 'b' a bright square visible in the near-infrared band only."""
    img = rng.integers(PLANET_LOW, PLANET_LOW + 6_000, (size, size, 4)).astype(np.uint16)
    if "a" in tags:
        img[2:8, 2:8, :3] = PLANET_HIGH - rng.integers(0, 500, (6, 6, 3))
    if "b" in tags:
        img[10:16, 10:16, 3] = PLANET_HIGH - rng.integers(0, 500, (6, 6))
    return img


def write_planet(root, n=30, n_test=5, size=20, seed=0):
    """Planet layout with 4-band uint16 GeoTIFF-like images (tifffile, R G B + extra sample)."""
    import tifffile

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for i in range(n):
        tags = [t for t in ("a", "b") if rng.random() < 0.5] or ["a"]
        tifffile.imwrite(root / "train" / f"p{i:03d}.tif", planet_image(rng, size, tags), photometric="rgb")
        rows.append(f"p{i:03d},{' '.join(tags)}")
    (root / "train.csv").write_text("image_name,tags\n" + "\n".join(rows) + "\n")
    for i in range(n_test):
        tifffile.imwrite(root / "test" / f"t{i:03d}.tif", planet_image(rng, size, ["a"]), photometric="rgb")
    (root / "sample_submission.csv").write_text("image_name,tags\n" + "".join(f"t{i:03d},a\n" for i in range(n_test)))
    return root
