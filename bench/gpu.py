"""GPU training and TTA throughput in one short run: ratio tables, printed and as markdown.

    python bench/gpu.py --md gpu.md               # one CUDA GPU; meant to take under 5 minutes on an H100/H200
    python bench/gpu.py --device cpu --quick      # smoke test of every path on CPU (tiny sizes)

(a) Training images/s of --arch (random init, 13 labels) at --size px for each of --batches,
    fp32 against AMP bf16 + channels_last, three ways:
      ceiling  forward, backward and AdamW on a normalised float batch already on the device,
               with no host synchronisation between steps: the compute ceiling
      Step     utils.train.loop.train_one_epoch over one uint8 batch already on the device, again
               and again: the project's step (normalisation on the device, lr schedule, the loss
               read back every step), no loader, no augmentation
      real     the project's data path: a uint8 image cache in RAM (random pixels) ->
               CachedImages -> make_loader (pinned memory, --workers processes) ->
               train_one_epoch with GpuAugment (--aug on the device), non-blocking copies
    real/ceiling is the share of the ceiling the real path reaches; "data wait" is
    train_one_epoch's data_s / (data_s + compute_s) over the timed steps.
(b) Per-step overhead at batch --overhead-bs (bf16 + channels_last, synthetic batch on the
    device): eager against torch.compile (default and mode="reduce-overhead") and CUDA graphs
    (torch.cuda.make_graphed_callables for forward + backward with an eager optimizer, and the
    whole step, AdamW included, captured in one torch.cuda.CUDAGraph).
(c) TTA 10crop on --tta-n images: utils.predict.tta.predict_tta (every view of a batch in one
    forward) against utils.predict.tta.predict_tta_loop (one forward per view).

Every measurement runs --warmup untimed steps first and synchronises the device around its
timer. A part that fails (no compiler, no CUDA, out of memory) is recorded in its table
row and the run goes on. Tables and rows go to stdout, progress bars to stderr
(`2>/dev/null` keeps only the tables). Absolute numbers depend on the machine and its load;
the ratios are measured side by side in one run.
"""
import argparse
import logging
import datetime
import gc
import itertools
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.data.cache import default_workers  # noqa: E402
from utils.data.loader import CachedImages, make_loader, to_input  # noqa: E402
from utils.train.loop import StageParts, train_one_epoch  # noqa: E402
from utils.common.atomic import atomic_write_text  # noqa: E402
from utils.common.errors import DataError  # noqa: E402
from utils.train.losses import build_loss  # noqa: E402
from utils.models.factory import create_model, model_meta  # noqa: E402
from utils.models.layer_groups import param_groups  # noqa: E402
from utils.train.schedule import build_optimizer, build_scheduler  # noqa: E402
from utils.train.stage import Stage  # noqa: E402
from utils.augment.gpu import GpuAugment  # noqa: E402
from utils.predict.tta import predict_tta, predict_tta_loop  # noqa: E402
from utils.common.cli import run_script  # noqa: E402

LABELS = 13
PRECISIONS = {"fp32": (None, False), "bf16+CL": (torch.bfloat16, True)}  # autocast dtype, channels_last
# --quick: every code path on tiny sizes (flags given explicitly still win)
QUICK = dict(arch="tiny_cnn", size=64, batches="4,8", steps=2, warmup=1, overhead_bs=4, n_cache=32,
             workers=1, tta_n=8, tta_bs=4, repeats=1, threads=1)


def get_args_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: cuda)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test: " +
                   ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--sections", default="a,b,c", help="which parts to run, comma list of a, b, c (default: a,b,c)")
    p.add_argument("--md", default=None, help="also write the tables to this markdown file (default: none)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of torch (default: 0 = torch's choice)")
    g = p.add_argument_group("training (a, b)")
    g.add_argument("--arch", default="resnet50", help="model name, random init (default: resnet50)")
    g.add_argument("--size", type=int, default=224, help="image side in px (default: 224)")
    g.add_argument("--batches", default="16,64,256", help="batch sizes of part a (default: 16,64,256)")
    g.add_argument("--steps", type=int, default=30, help="timed steps per measurement (default: 30)")
    g.add_argument("--warmup", type=int, default=5, help="untimed steps before each timer (default: 5)")
    g.add_argument("--workers", type=int, default=-1,
                   help="loader processes of the real path (default: -1 = min(8, cores))")
    g.add_argument("--n-cache", type=int, default=1024,
                   help="images in the random uint8 cache; the loader cycles over them (default: 1024)")
    g.add_argument("--aug", default="default", help="augmentation spec run on the device by the real path "
                   "(default: default)")
    g.add_argument("--overhead-bs", type=int, default=16, help="batch size of part b (default: 16)")
    g = p.add_argument_group("TTA (c)")
    g.add_argument("--tta-n", type=int, default=256, help="images to predict (default: 256)")
    g.add_argument("--tta-bs", type=int, default=64, help="images per batch; x10 views per forward "
                   "when batched (default: 64)")
    g.add_argument("--repeats", type=int, default=3, help="timed runs per TTA method, median kept (default: 3)")
    return p


def parse_args(argv=None):
    """Flags; --quick makes QUICK the defaults, so flags given explicitly still win."""
    parser = get_args_parser()
    if parser.parse_args(argv).quick:
        parser.set_defaults(**QUICK)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- helpers

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def failure(e):
    """A short reason for a table cell: the exception type and the first line of its message."""
    text = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def free(device):
    """Release what the previous measurement left behind (so the next one starts equal)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_steps(fn, warmup, steps, device):
    """Run fn(i) for i < warmup untimed, then `steps` timed calls; the device is synchronised
    around the timer. Returns (timed seconds, warm-up seconds)."""
    t0 = time.perf_counter()
    for i in range(warmup):
        fn(i)
    sync(device)
    t1 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        fn(i)
    sync(device)
    return time.perf_counter() - t1, t1 - t0


def time_project_steps(parts, u8, y, warmup, steps, device):
    """time_steps for the project's train_one_epoch over warmup + steps copies of one uint8 batch
    (u8, y) already on the device: (timed seconds, warm-up seconds)."""
    marks = {0: time.perf_counter()}

    def after_step(done):  # train_one_epoch has read the loss back (synchronised) before this runs
        if done in (warmup, warmup + steps):
            sync(device)
            marks[done] = time.perf_counter()

    train_one_epoch(parts, itertools.repeat((u8, y), warmup + steps), 0, 0, warmup + steps, new_stats(), after_step,
                    desc="project step")
    return marks[warmup + steps] - marks[warmup], marks[warmup] - marks[0]


def new_stats():
    """An epoch's totals for train_one_epoch (utils/train/run_state.py new_epoch_stats)."""
    return {"loss_sum": 0.0, "n": 0, "steps": 0, "data_s": 0.0, "compute_s": 0.0}


@dataclass
class Training:
    """A random-init model with the project's optimizer (AdamW, every layer), schedule and loss."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loss_fn: torch.nn.Module
    amp_dtype: object
    channels_last: bool
    mean: tuple
    std: tuple

    def parts(self, device, gpu_augment=None):
        """The project's utils.train.loop.StageParts over this model (for train_one_epoch)."""
        return StageParts(self.model, self.loss_fn, self.optimizer, self.scheduler, device, self.mean, self.std,
                          amp_dtype=self.amp_dtype, channels_last=self.channels_last, gpu_augment=gpu_augment)


def new_training(arch, precision, device, steps, capturable=False):
    """Fresh Training of `arch` in `precision` (a PRECISIONS key) on `device` for `steps` steps."""
    amp, cl = PRECISIONS[precision]
    torch.manual_seed(0)
    model = create_model(arch, LABELS, pretrained=False)
    meta = model_meta(model)
    model = model.to(device, memory_format=torch.channels_last if cl else torch.contiguous_format).train()
    stage = Stage(epochs=1, lr=1e-4, sched="const", train="all")  # lr small: random pixels, many steps
    optimizer = build_optimizer(stage, param_groups(model, stage.train, stage.lr, 1.0, stage.wd))
    if capturable:  # AdamW keeps its step counts on the device, so a CUDA graph can capture .step()
        for g in optimizer.param_groups:
            g["capturable"] = True
    scheduler = build_scheduler(stage, optimizer, steps)
    loss_fn = build_loss("bce")[0].to(device)
    return Training(model, optimizer, scheduler, loss_fn, amp, cl, tuple(meta["mean"]), tuple(meta["std"]))


def synthetic_batch(tr, bs, size, device):
    """(uint8 (bs, size, size, 3), normalised float (bs, 3, size, size), labels (bs, L)) on `device`."""
    g = torch.Generator().manual_seed(bs)
    u8 = torch.randint(0, 256, (bs, size, size, 3), dtype=torch.uint8, generator=g).to(device)
    y = (torch.rand(bs, LABELS, generator=g) < 0.3).float().to(device)
    x = to_input(u8, tr.mean, tr.std, device, tr.channels_last)
    return u8, x, y


def bare_step(tr, model, x, y, cache_enabled=True):
    """Forward, loss, backward, AdamW: the ceiling (no normalisation, no host sync, no schedule).
    cache_enabled=False is what CUDA graph capture of autocast regions requires."""
    with torch.autocast(x.device.type, dtype=tr.amp_dtype, enabled=tr.amp_dtype is not None,
                        cache_enabled=cache_enabled):
        logits = model(x)
    loss = tr.loss_fn(logits.float(), y)
    tr.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    tr.optimizer.step()
    return loss.detach()


def random_cache(n, size, seed=0):
    """The uint8 image cache (n, size, size, 3), random pixels in RAM: no dataset needed."""
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class Table:
    """Rows of cells under headers, rendered as aligned text or markdown."""

    def __init__(self, title, headers):
        self.title, self.headers, self.rows = title, headers, []

    def add(self, *cells):
        self.rows.append([c if isinstance(c, str) else _fmt(c) for c in cells])

    def text(self):
        widths = [max(len(r[i]) for r in [self.headers] + self.rows) for i in range(len(self.headers))]
        last = len(widths) - 1  # first and last (note) columns left-aligned, numbers right
        line = lambda r: "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        return "\n".join([self.title, line(self.headers), line(["-" * w for w in widths])] +
                         [line(r) for r in self.rows])

    def markdown(self):
        out = [f"**{self.title}**", "", "| " + " | ".join(self.headers) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(self.headers) - 2) + ["---"]) + "|"]
        return "\n".join(out + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in self.rows])


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


# ----------------------------------------------------------------------------- (a)

def real_path(tr, cache, bs, args, device):
    """Images/s and data-wait share of the project's data path: CachedImages over the uint8
    cache -> make_loader -> train_one_epoch with GpuAugment. Timed between the end of
    step --warmup and the end of the last step (loader start-up and cudnn tuning left out)."""
    n = (args.warmup + args.steps) * bs
    y = (np.random.default_rng(1).random((n, LABELS)) < 0.3).astype(np.float32)
    dataset = CachedImages(cache, y, rows=np.arange(n) % len(cache), augment=None, seed=0)
    loader = make_loader(dataset, range(n), bs, args.workers, device, drop_last=True)
    parts = tr.parts(device, GpuAugment(args.aug, args.size))
    stats = new_stats()
    marks = {}

    def on_step(i):  # train_one_epoch already synchronised (float(loss)) before this runs
        if i in (args.warmup, args.warmup + args.steps):
            marks[i] = (time.perf_counter(), stats["data_s"], stats["compute_s"])

    train_one_epoch(parts, loader, 0, 0, args.warmup + args.steps, stats, on_step, desc=f"real path bs {bs}")
    (t0, d0, c0), (t1, d1, c1) = marks[args.warmup], marks[args.warmup + args.steps]
    return args.steps * bs / (t1 - t0), (d1 - d0) / max((d1 - d0) + (c1 - c0), 1e-12)


def section_a(args, device):
    """Part a: ceiling, Step and real path per batch size and precision."""
    cache = random_cache(args.n_cache, args.size)
    table = Table(f"(a) training images/s, {args.arch} at {args.size}px, loader workers {args.workers}, "
                  f"GPU augmentation '{args.aug}'",
                  ["batch", "precision", "ceiling", "Step", "real", "real/ceiling", "Step/ceiling",
                   "data wait", "note"])
    for bs in args.batch_list:
        for precision in PRECISIONS:
            res, notes = {}, []
            try:  # ceiling, Step and real path each take warmup + steps steps of one schedule
                tr = new_training(args.arch, precision, device, 3 * (args.warmup + args.steps))
                u8, x, y = synthetic_batch(tr, bs, args.size, device)
            except Exception as e:  # no model, no memory: the row says why
                table.add(bs, precision, *["-"] * 6, f"setup: {failure(e)}")
                free(device)
                continue
            timers = {"ceiling": lambda: time_steps(lambda i: bare_step(tr, tr.model, x, y), args.warmup, args.steps,
                                                    device),
                      "Step": lambda: time_project_steps(tr.parts(device), u8, y, args.warmup, args.steps, device)}
            for name, timed in timers.items():
                try:
                    res[name] = args.steps * bs / timed()[0]
                except Exception as e:
                    notes.append(f"{name}: {failure(e)}")
            try:
                res["real"], res["wait"] = real_path(tr, cache, bs, args, device)
            except Exception as e:
                notes.append(f"real: {failure(e)}")
            c, s, r = res.get("ceiling"), res.get("Step"), res.get("real")
            wait = f"{100 * res['wait']:.1f}%" if "wait" in res else "-"
            table.add(bs, precision, c, s, r, ratio(r, c), ratio(s, c), wait, "; ".join(notes))
            print(table.text().splitlines()[-1], flush=True)
            tr = u8 = x = y = None
            free(device)
    return table


# ----------------------------------------------------------------------------- (b)

def _whole_step_graph(tr, x, y, warmup):
    """Capture forward, backward and AdamW in one CUDA graph; returns replay(i) (the lr is
    fixed at capture). Warm-up runs on a side stream, as torch.cuda.graph requires."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(max(3, warmup)):
            bare_step(tr, tr.model, x, y, cache_enabled=False)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    tr.optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=tr.amp_dtype, enabled=tr.amp_dtype is not None, cache_enabled=False):
            logits = tr.model(x)
        loss = tr.loss_fn(logits.float(), y)
        loss.backward()
        tr.optimizer.step()
    return lambda i: graph.replay()


def overhead_variants(args, device):
    """(name, needs_cuda, capturable, build) for part b; build(tr, u8, x, y) -> step(i), or the
    StageParts that train_one_epoch steps with (the project's step), made
    lazily so a failure (no compiler, no CUDA) stays in its row. Each variant gets a fresh model;
    capturable: its AdamW must keep its state on the device (whole-step capture)."""

    def eager(tr, u8, x, y):
        return lambda i: bare_step(tr, tr.model, x, y)

    def project_step(tr, u8, x, y):
        return tr.parts(device)

    def compiled(mode, project=False):
        def build(tr, u8, x, y):
            tr.model = torch.compile(tr.model, mode=mode)
            if project:
                return tr.parts(device)
            if mode == "reduce-overhead":
                def fn(i):
                    torch.compiler.cudagraph_mark_step_begin()  # one training iteration per graph tree step
                    return bare_step(tr, tr.model, x, y)
                return fn
            return lambda i: bare_step(tr, tr.model, x, y)
        return build

    def graphed_callables(tr, u8, x, y):
        with torch.autocast("cuda", dtype=tr.amp_dtype, enabled=tr.amp_dtype is not None, cache_enabled=False):
            model = torch.cuda.make_graphed_callables(tr.model, (x,), num_warmup_iters=3)
        return lambda i: bare_step(tr, model, x, y, cache_enabled=False)

    def whole(tr, u8, x, y):
        return _whole_step_graph(tr, x, y, args.warmup)

    return [("eager (bare step)", False, False, eager),
            ("eager, project Step", False, False, project_step),
            ("torch.compile default (bare step)", False, False, compiled("default")),
            ("torch.compile default, project Step (train.py --compile)", False, False, compiled("default", True)),
            ('torch.compile mode="reduce-overhead"', True, False, compiled("reduce-overhead")),
            ("CUDA graphs: make_graphed_callables (fwd+bwd), eager AdamW", True, False, graphed_callables),
            ("CUDA graph: whole step incl. AdamW (capturable)", True, True, whole)]


def section_b(args, device):
    """Part b: per-step overhead at a small batch."""
    bs, precision = args.overhead_bs, "bf16+CL"
    table = Table(f"(b) per-step overhead, {args.arch} at {args.size}px, batch {bs}, {precision}, "
                  f"synthetic batch on the device",
                  ["variant", "img/s", "ms/step", "vs eager", "warm-up s", "note"])
    base = None
    for name, needs_cuda, capturable, build in overhead_variants(args, device):
        if needs_cuda and device.type != "cuda":
            table.add(name, "-", "-", "-", "-", "skipped: needs CUDA")
            continue
        try:
            tr = new_training(args.arch, precision, device, args.warmup + args.steps, capturable)
            u8, x, y = synthetic_batch(tr, bs, args.size, device)
            t0 = time.perf_counter()
            fn = build(tr, u8, x, y)
            seconds, _ = (time_project_steps(fn, u8, y, args.warmup, args.steps, device) if isinstance(fn, StageParts)
                          else time_steps(fn, args.warmup, args.steps, device))
            warm = time.perf_counter() - t0 - seconds  # compiling or capturing counts as warm-up
            ips = args.steps * bs / seconds
            base = base or ips
            table.add(name, ips, 1000 * seconds / args.steps, ratio(ips, base), warm, "")
        except Exception as e:
            table.add(name, "-", "-", "-", "-", f"failed: {failure(e)}")
        print(table.text().splitlines()[-1], flush=True)
        tr = u8 = x = y = fn = None
        free(device)
    return table


# ----------------------------------------------------------------------------- (c)

def section_c(args, device):
    """Part c: 10crop TTA, batched against the per-view loop, in both precisions."""
    table = Table(f"(c) TTA 10crop, {args.arch} at {args.size}px, {args.tta_n} images, batches of {args.tta_bs}",
                  ["precision", "method", "img/s", "views/s", "vs loop", "max abs diff", "note"])
    try:
        torch.manual_seed(0)
        model = create_model(args.arch, LABELS, pretrained=False)
        meta = model_meta(model)
    except Exception as e:
        table.add("-", "-", "-", "-", "-", "-", f"setup: {failure(e)}")
        return table
    images = random_cache(args.tta_n, args.size, seed=2)
    for precision, (amp, cl) in PRECISIONS.items():
        model.to(memory_format=torch.contiguous_format)  # predict_tta converts in place when channels_last
        kw = dict(tta="10crop", mean=meta["mean"], std=meta["std"], bs=args.tta_bs, device=device,
                  amp=amp is not None, channels_last=cl, progress=False)
        res, probs, notes = {}, {}, {}
        for name, fn in (("batched", predict_tta), ("loop", predict_tta_loop)):
            try:
                fn(model, images[:args.tta_bs], **kw)  # warm-up: cudnn tuning for these shapes
                times = []
                for _ in range(args.repeats):
                    sync(device)
                    t = time.perf_counter()
                    probs[name] = fn(model, images, **kw)
                    sync(device)
                    times.append(time.perf_counter() - t)
                res[name] = args.tta_n / statistics.median(times)
            except Exception as e:
                notes[name] = f"failed: {failure(e)}"
            free(device)
        diff = (f"{np.abs(probs['batched'] - probs['loop']).max():.1e}" if len(probs) == 2 else "-")
        for name in ("batched", "loop"):
            ips = res.get(name)
            table.add(precision, name, ips, ips * 10 if ips else None, ratio(ips, res.get("loop")),
                      diff if name == "batched" else "", notes.get(name, ""))
            print(table.text().splitlines()[-1], flush=True)
    return table


# ----------------------------------------------------------------------------- main

def header(args, device):
    """Lines saying what ran where: command, device, versions, settings."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        extra = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    else:
        name = f"CPU {platform.processor() or platform.machine()}"
        extra = "no CUDA"
    # loader workers hand batches over in shared memory: a small /dev/shm makes them fail
    shm = f"{shutil.disk_usage('/dev/shm').total / 2**30:.1f} GiB" if os.path.isdir("/dev/shm") else "none"
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    return [f"command: {cmd}",
            f"device: {name}; torch {torch.__version__}, {extra}; python {platform.python_version()}",
            f"host: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"loader workers {args.workers}, /dev/shm {shm}",
            f"date: {datetime.datetime.now():%Y-%m-%d %H:%M}; "
            f"{'cudnn.benchmark on; ' if device.type == 'cuda' else ''}"
            f"{args.warmup} warm-up + {args.steps} timed steps per measurement"]


def main(args):
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DataError(f"--device {args.device}: CUDA is not available here; try --device cpu --quick")
        torch.backends.cudnn.benchmark = True  # as train.py does on CUDA
    args.batch_list = [int(b) for b in str(args.batches).split(",") if b.strip()]
    args.workers = args.workers if args.workers >= 0 else min(8, default_workers())
    sections = {"a": section_a, "b": section_b, "c": section_c}
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in sections]
    if unknown:
        raise DataError(f"--sections {','.join(unknown)}: choose from {', '.join(sections)}")
    head = header(args, device)
    print("\n".join(head), flush=True)
    start, tables, times = time.perf_counter(), [], []
    for key in chosen:
        t = time.perf_counter()
        print(f"\n--- section {key}", flush=True)
        tables.append(sections[key](args, device))
        times.append((key, time.perf_counter() - t))
        print(f"\n{tables[-1].text()}\nsection {key}: {times[-1][1]:.1f} s", flush=True)
    total = time.perf_counter() - start
    print(f"\ntotal: {total:.1f} s ({', '.join(f'{k} {s:.0f} s' for k, s in times)})")
    if args.md:
        body = ["\n".join(f"- {line}" for line in head)] + [t.markdown() for t in tables]
        body.append(f"Elapsed: {total:.0f} s ({', '.join(f'{k} {s:.0f} s' for k, s in times)}).")
        atomic_write_text(args.md, "\n\n".join(body) + "\n")
        print(f"wrote {args.md}")


if __name__ == "__main__":
    run_script(main, parse_args, logging.INFO)
