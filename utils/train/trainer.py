"""One run: a stage plan trained on one fold, with exact resume.

The position of a run is (stage, epoch within the stage, step within the epoch),
always meaning "the next thing to do". last.pt stores it together with the model,
optimizer, scheduler, AMP scaler, every RNG state, the partial epoch's totals, the
best score and the history, so a resumed run computes exactly what an
uninterrupted one would. Sample order and augmentation are pure functions of
(seed, epoch, index) (utils/data/loader.py), which is what makes mid-epoch resume exact.
"""
import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from utils.common import distributed as dist
from utils.data.bands import image_options
from utils.data.cache import load_images
from utils.train.accumulation import Accumulation
from utils.models.averaging import keep_epoch
from utils.runs.checkpoint import check_labels, clean_state_dict, load_checkpoint, load_weights, save_checkpoint
from utils.runs.checkpoint_origin import ORIGIN_KEYS
from utils.models.ema import build_ema
from utils.data.loader import CachedImages, batch_plan, make_loader
from utils.train.loop import Step, predict_logits, sigmoid, train_one_epoch
from utils.common.atomic import atomic_write, atomic_write_csv, atomic_write_json
from utils.common.errors import DataError
from utils.runs.pred_files import write_preds
from utils.train.losses import build_loss
from utils.augment.mix import build_mix
from utils.metrics.fbeta import fbeta_per_label, fbeta_samples
from utils.models.layer_groups import freeze_bn, param_groups
from utils.models.factory import unwrap_model as unwrap
from utils.train.pseudo import CombinedImages, WeightedLoss, sampler_labels, training_targets
from utils.data.sampling import epoch_indices
from utils.train.schedule import build_optimizer, build_scheduler
from utils.train.stages import Stage
from utils.augment.static import make_static
from utils.train.tensorboard import TensorBoardLog
from utils.metrics.threshold_search import greedy_thresholds
from utils.augment.gpu import GpuAugment
from utils.augment.transforms import build_augment

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """How to run (not what to learn): none of these change the result on CPU."""
    workers: int = 0
    ckpt_every: int = 0          # mid-epoch checkpoint every N steps (0: only at epoch ends)
    ckpt_minutes: float = 10.0   # ... and at least every N minutes
    channels_last: bool = False
    amp: str = "auto"            # auto | off | bf16 | fp16
    compile: bool = False
    plots: str = "every"         # every | last | none
    eval_bs: int = 0             # 0: twice the training batch
    cache_dir: str = ""
    aug_device: str = "cpu"      # cpu: per image in the loader workers; gpu: per batch on the device
    tensorboard: bool = False    # event files in <run>/tb/ (utils/train/tensorboard.py)


def rng_state():
    """Every RNG this process uses, as a picklable dict."""
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s):
    """Restore what rng_state() returned."""
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fixed_length(order, n):
    """An epoch's visiting order cut or extended (by wrapping) to n items.

    Repeat-factor sampling rounds stochastically, so epochs differ by a few images;
    the stage's lr schedule is planned for a fixed number of steps per epoch.
    """
    order = np.asarray(order)
    if len(order) >= n:
        return order[:n]
    return np.concatenate([order, order[: n - len(order)]])


def amp_dtype(device, mode):
    """Autocast dtype for `mode` on `device` (None = full precision). bf16 where supported."""
    if mode == "off" or device.type != "cuda":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def check_batches(stages, sampler, y_train, seed, world=1):
    """Fail before training (DataError naming the stage) when a stage could make a batch of 1.

    stages: Stage list; y_train: (N, L) labels of the training rows; sampler: --sampler spec.
    """
    n_epoch = len(epoch_indices(sampler, y_train, seed, 0))
    for i, stage in enumerate(stages):
        batch_plan(n_epoch, stage.bs, world, f"stage {i + 1}")


class _Stop:
    """First Ctrl-C: finish the current step, checkpoint and exit. Second: abort at once."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if dist.world_size() == 1 and threading_main():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: finishing this step and writing a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def threading_main():
    import threading
    return threading.current_thread() is threading.main_thread()


def _fault_point():
    """MULTITAG_DIE_AT='what:N' kills this process (SIGKILL) at a chosen point: a test hook
    for kill-safety (what = step | ckpt | epoch_end | stage_end | stage_start; sigint:N sends
    Ctrl-C instead)."""
    spec = os.environ.get("MULTITAG_DIE_AT", "")
    if not spec:
        return None, None
    what, _, n = spec.partition(":")
    return what, int(n)


class Trainer:
    """Trains `model` on one fold following `stages`; writes the run directory.

    config: the resolved run config (stored as config.json); spec: DataSpec;
    fold_ids: fold per training image; label_idx: columns the model predicts;
    exclude: rows left out of training (train.py --exclude), still predicted when in
    the validation fold (listed in result.json `excluded_val`); extras: utils.train.pseudo.Extras
    (pseudo-labelled test rows, soft targets) or None.
    """

    def __init__(self, model, config, spec, fold_ids, label_idx, run_dir, device, opts, exclude=None,
                 extras=None):
        self.model, self.config, self.spec = model, config, spec
        self.run_dir, self.device, self.opts = run_dir, device, opts
        self.stages = [Stage.from_dict(s) for s in config["stages"]]
        self.labels = config["labels"]
        fold = config["fold"]
        self.train_idx = np.flatnonzero(fold_ids != fold)
        self.val_idx = np.flatnonzero(fold_ids == fold)
        exclude = np.asarray([] if exclude is None else exclude, np.int64)
        self.train_idx = self.train_idx[~np.isin(self.train_idx, exclude)]
        self.excluded_val = [spec.names[i] for i in self.val_idx[np.isin(self.val_idx, exclude)]]
        if len(self.val_idx) == 0 or len(self.train_idx) == 0:
            raise DataError(f"fold {fold}: no {'validation' if len(self.val_idx) == 0 else 'training'} images")
        y = spec.y[:, label_idx]
        self.y_train, self.y_val = y[self.train_idx], y[self.val_idx]
        self.loss_fn, _ = build_loss(config["loss_spec"], self.y_train)
        self.extras = extras
        # Items of the training set: the fold's training images, then any pseudo-labelled
        # test images (indices past the training cache, see _train_images).
        self.fit_rows, self.fit_targets = self.train_idx, self.y_train
        if extras:
            self.fit_rows = np.concatenate([self.train_idx, len(spec.files) + extras.test_rows])
            self.fit_targets = training_targets(self.y_train, self.train_idx, extras)
            self.loss_fn = WeightedLoss(self.loss_fn)
        self.fit_y = sampler_labels(self.y_train, extras)
        self.loss_fn = self.loss_fn.to(device)
        self.mean, self.std = config["mean"], config["std"]
        self.amp_dtype = amp_dtype(device, opts.amp)
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None)
        self.state = {"stage": 0, "epoch": 0, "step": 0, "global_epoch": 0, "global_step": 0,
                      "best": -1.0, "best_epoch": -1, "history": [], "stats": None, "train_seconds": 0.0}
        self.die_what, self.die_n = _fault_point()
        self._plotter = ThreadPoolExecutor(1) if dist.is_main() and opts.plots != "none" else None
        self._plot_job = None
        self._tb = TensorBoardLog(run_dir, self.labels, config) if dist.is_main() and opts.tensorboard else None
        self._last_ckpt_time = time.time()
        self._cache = {}
        self.ema = build_ema(unwrap(model), config.get("ema"), config.get("ema_warmup", True))

    # ----- checkpoints -----------------------------------------------------------------

    def meta(self, stage):
        """What predict.py needs to rebuild and feed the model."""
        return {"arch": self.config["arch"], "labels": self.labels, "size": stage.size,
                "mean": self.mean, "std": self.std, "drop_rate": self.config.get("drop_rate"),
                "head": self.config.get("head"),
                "label_group": self.config.get("label_group"), "stages": self.config["stages"],
                "run": self.config.get("name"), "channels": self.config.get("channels", 3),
                "band_scaling": self.config.get("band_scaling"),
                # the fold split the weights held out: predict.py refuses them for any other fold
                **{k: self.config.get(k) for k in ORIGIN_KEYS}}

    def save_last(self, optimizer=None, scheduler=None):
        """Write checkpoints/last.pt with the full state at the current position."""
        if not dist.is_main():
            return
        self.state["n_ckpt"] = self.state.get("n_ckpt", 0) + 1
        st = dict(self.state)
        ckpt = {"model": clean_state_dict(unwrap(self.model).state_dict()),
                "meta": self.meta(self.stages[min(st["stage"], len(self.stages) - 1)]),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "rng": rng_state(), "state": st, "config_stages": self.config["stages"],
                "ema": self.ema.state_dict() if self.ema is not None else None}
        path = self.run_dir / "checkpoints" / "last.pt"
        if self.die_what == "ckpt" and self.state["n_ckpt"] == self.die_n:
            def half_write(f):  # die after writing part of the temp file: a torn write
                torch.save(ckpt, f)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            atomic_write(path, half_write)
        save_checkpoint(path, ckpt)
        self._last_ckpt_time = time.time()

    def resume(self):
        """Load last.pt (weights always, at any stage/epoch/step); return (optimizer_sd, scheduler_sd)."""
        if dist.is_main():  # temp files of writes a kill interrupted: never read, never kept
            for tmp in (self.run_dir / "checkpoints").glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
        path = self.run_dir / "checkpoints" / "last.pt"
        ckpt = load_checkpoint(path, need=("model", "meta", "state", "rng"))
        if ckpt.get("config_stages") != self.config["stages"]:
            raise DataError(f"{self.run_dir}: the checkpoint was made with another stage plan; "
                            f"resume with the original flags or start a new run")
        check_labels(ckpt["meta"], self.labels, path)
        load_weights(unwrap(self.model), ckpt["model"], path)
        self.state.update(ckpt["state"])
        set_rng_state(ckpt["rng"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise DataError(f"{self.run_dir}: the checkpoint holds no EMA weights; resume without --ema")
            try:
                self.ema.load_state_dict(ckpt["ema"])
            except (RuntimeError, KeyError, TypeError, AttributeError) as e:
                raise DataError(f"{path}: the EMA weights do not fit the model ({e}); the file is damaged; "
                                f"start a new run") from e
        log.info("resuming %s at stage %d, epoch %d, step %d", self.run_dir.name,
                 self.state["stage"] + 1, self.state["epoch"] + 1, self.state["step"])
        return ckpt.get("optimizer"), ckpt.get("scheduler")

    def _maybe_die(self, what, n):
        if self.die_what == what and self.die_n == n:
            # under torchrun every rank reaches this point; wait until rank 0 has written its
            # checkpoint, or the first rank to die takes rank 0 down in the middle of the write
            dist.barrier()
            os.kill(os.getpid(), signal.SIGKILL)

    # ----- the loop ----------------------------------------------------------------------

    def fit(self, resume=False):
        """Train every remaining stage, then predict the validation fold with the best weights.

        Returns the result dict also written to result.json.
        """
        opt_sd = sched_sd = None
        if resume:
            opt_sd, sched_sd = self.resume()
        with _Stop() as stop:
            while self.state["stage"] < len(self.stages):
                si = self.state["stage"]
                opt_sd, sched_sd = self._run_stage(si, opt_sd, sched_sd, stop)
                if stop.requested:
                    raise SystemExit(130)
        return self.finish()

    def _images(self, size):
        """Cached uint8 images of every training image at `size` (rank 0 builds, others wait)."""
        if size in self._cache:
            return self._cache[size]
        files = self.spec.files
        kw = dict(desc=f"{self.spec.images}", **image_options(self.config))
        if dist.is_main():
            arr = load_images(files, size, self.opts.cache_dir, **kw)
        dist.barrier()
        if not dist.is_main():
            arr = load_images(files, size, self.opts.cache_dir, **kw)
        self._cache = {size: arr}  # one size at a time: stages move on, memory stays flat
        return arr

    def _train_images(self, images, size):
        """The training cache, followed by the test cache when pseudo-labelled test images train too."""
        if not self.extras or not len(self.extras.test_rows):
            return images
        kw = dict(desc=self.spec.test_images, **image_options(self.config))
        if dist.is_main():
            test = load_images(self.spec.test_files, size, self.opts.cache_dir, **kw)
        dist.barrier()
        if not dist.is_main():
            test = load_images(self.spec.test_files, size, self.opts.cache_dir, **kw)
        return CombinedImages(images, test)

    def _run_stage(self, si, opt_sd, sched_sd, stop):
        stage = self.stages[si]
        raw = unwrap(self.model)
        groups = param_groups(raw, stage.train, stage.lr, stage.lr_mult, stage.wd)
        model = self.model
        if dist.world_size() > 1:
            model = torch.nn.parallel.DistributedDataParallel(
                raw, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if self.opts.compile:
            model = torch.compile(model)
        optimizer = build_optimizer(stage, groups)
        n_epoch = len(epoch_indices(self.config["sampler"], self.fit_y, self.config["seed"], 0))
        bp = batch_plan(n_epoch, stage.bs, dist.world_size(), f"stage {si + 1}")  # never a batch of 1
        bs_local, drop_last, steps = bp.bs_local, bp.drop_last, bp.steps
        acc = Accumulation.of(stage.accum, bp)
        scheduler = build_scheduler(stage, optimizer, acc.updates_per_epoch)
        try:
            if opt_sd is not None:
                optimizer.load_state_dict(opt_sd)
            if sched_sd is not None:
                scheduler.load_state_dict(sched_sd)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise DataError(f"{self.run_dir / 'checkpoints' / 'last.pt'}: its optimizer or scheduler state does "
                            f"not fit stage {si + 1} ({type(e).__name__}: {e}); the file is damaged") from e
        images = self._images(stage.size)
        gpu_aug = None
        if self.opts.aug_device == "gpu":
            gpu_aug, augment = GpuAugment(self.config["aug"], stage.size, self.labels, self.config.get("pca")), None
        else:
            augment = build_augment(self.config["aug"], stage.size, self.labels, self.config.get("pca"))
        dataset = CachedImages(self._train_images(images, stage.size), self.fit_targets, self.fit_rows, augment,
                               self.config["seed"])
        if self.config.get("aug_static"):  # K copies made once; epoch e reads copy e mod K
            t0 = time.time()
            dataset = make_static(dataset, int(self.config["aug_static"]))
            log.info("static augmentation: %d copies of %d images at %d px in %.1f s",
                     len(dataset.copies), len(dataset), stage.size, time.time() - t0)
        step_fn = Step(model, self.loss_fn, optimizer, scheduler, self.scaler, self.amp_dtype, self.device,
                       self.mean, self.std, self.opts.channels_last, gpu_augment=gpu_aug, seed=self.config["seed"],
                       after_update=(lambda: self.ema.update(raw)) if self.ema is not None else None,
                       accumulation=acc, mix=build_mix(self.config.get("mix"), sum(s.epochs for s in self.stages)))
        self._maybe_die("stage_start", si)
        while self.state["epoch"] < stage.epochs:
            ge = self.state["global_epoch"]
            order = fixed_length(epoch_indices(self.config["sampler"], self.fit_y, self.config["seed"], ge),
                                 n_epoch)
            mine = dist.shard(order)
            start = self.state["step"]
            stats = self.state["stats"] or {"loss_sum": 0.0, "n": 0, "steps": 0, "data_s": 0.0,
                                            "compute_s": 0.0, "seen": len(order), "lr": scheduler.lr}
            self.state["stats"] = stats
            dataset.epoch = step_fn.epoch = ge
            loader = make_loader(dataset, mine[start * bs_local:], bs_local, self.opts.workers,
                                 self.device, drop_last)
            model.train()
            freeze_bn(raw, all_layers=stage.bn == "frozen")  # frozen BatchNorm layers keep their statistics

            def on_step(i):
                self.state["step"] = i
                self.state["global_step"] += 1
                self._maybe_die("step", self.state["global_step"])
                if self.die_what == "sigint" and self.die_n == self.state["global_step"]:
                    os.kill(os.getpid(), signal.SIGINT)  # test hook: Ctrl-C at this step
                if not acc.boundary(i):
                    return  # inside an accumulation group: checkpoints wait for its optimizer step
                due = (self.opts.ckpt_every and acc.updates_done(i) % self.opts.ckpt_every == 0) or \
                    (time.time() - self._last_ckpt_time > 60 * self.opts.ckpt_minutes)
                if (due or stop.requested) and i < steps:
                    self.save_last(optimizer, scheduler)
                    if stop.requested:
                        raise _Interrupted()

            desc = f"s{si + 1}/{len(self.stages)} e{self.state['epoch'] + 1}/{stage.epochs}"
            try:
                train_one_epoch(step_fn, loader, start, steps, stats, on_step, desc)
            except _Interrupted:
                log.warning("stopped; resume with: python train.py --resume --name %s --out %s",
                            self.run_dir.name, self.run_dir.parent)
                return None, None
            except torch.cuda.OutOfMemoryError:
                raise DataError(f"batch size {stage.bs} at {stage.size}px does not fit in GPU memory; "
                                f"try --bs {max(1, stage.bs // 2)} (or a smaller --size)")
            self._end_epoch(si, stage, model, scheduler, stats)
            if self.state["epoch"] >= stage.epochs:
                self.state.update(stage=si + 1, epoch=0)
                self.save_last()  # stage boundary: the next stage starts fresh optimizer/scheduler
                self._maybe_die("stage_end", si)
                break
            self.save_last(optimizer, scheduler)
            self._maybe_die("epoch_end", self.state["global_epoch"])
            if stop.requested:
                break
        if stop.requested:
            log.warning("stopped; resume with: python train.py --resume --name %s --out %s",
                        self.run_dir.name, self.run_dir.parent)
        return None, None

    def _end_epoch(self, si, stage, model, scheduler, stats):
        """Validate, log a history row, keep the best weights, plot; advance the position.
        stats' loss_sum and n are already every rank's (train_one_epoch)."""
        probs, val_loss = self.evaluate(model, stage)
        thr, f2 = greedy_thresholds(self.y_val, probs)
        f2_02 = fbeta_samples(self.y_val, probs >= 0.2)
        per_label = fbeta_per_label(self.y_val, probs >= thr)
        scheduler.step_epoch(f2)
        ema = self._validate_ema(stage)
        elapsed = stats["data_s"] + stats["compute_s"]
        row = {"stage": si + 1, "epoch": self.state["global_epoch"] + 1, "stage_epoch": self.state["epoch"] + 1,
               "lr": stats.get("lr", scheduler.lr), "size": stage.size, "bs": stage.bs, "seen": stats["seen"],
               "train_loss": stats["loss_sum"] / max(stats["n"], 1), "val_loss": val_loss, "val_f2": f2,
               **({"val_f2_ema": ema["f2"]} if ema else {}), "val_f2_at_0.2": f2_02,
               **{f"f2_{l}": float(v) for l, v in zip(self.labels, per_label)},
               "seconds": elapsed, "img_per_s": stats["n"] / max(elapsed, 1e-9),
               "data_wait": stats["data_s"] / max(elapsed, 1e-9)}
        self.state["history"].append(row)
        self.state["train_seconds"] += elapsed
        if dist.is_main():
            log.info("stage %d epoch %d  loss %.4f  val_loss %.4f  F2 %.4f (at 0.2: %.4f)  %.0f img/s  "
                     "data wait %.0f%%", si + 1, row["epoch"], row["train_loss"], val_loss, f2, f2_02,
                     row["img_per_s"], 100 * row["data_wait"])
            atomic_write_csv(self.run_dir / "history.csv", pd.DataFrame(self.state["history"]))
            if self._tb is not None:
                self._tb.log_epoch(row, probs, self.y_val)
            pick = {"weights": "raw", "module": unwrap(model), "f2": f2, "thr": thr}
            if ema and ema["f2"] > f2:
                pick = ema
            if pick["f2"] > self.state["best"]:
                self.state["best"], self.state["best_epoch"] = pick["f2"], row["epoch"]
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt",
                                {"model": clean_state_dict(pick["module"].state_dict()), "meta": self.meta(stage),
                                 "epoch": row["epoch"], "val_f2": pick["f2"], "thresholds": pick["thr"].tolist(),
                                 "weights": pick["weights"]})
            if self.config.get("keep_epochs"):  # for tools/average_checkpoints.py
                keep_epoch(self.run_dir, row["epoch"], clean_state_dict(unwrap(model).state_dict()),
                           self.meta(stage), f2, self.config["keep_epochs"])
            self._plot(row["epoch"], probs, thr)
        self.state.update(epoch=self.state["epoch"] + 1, step=0, stats=None,
                          global_epoch=self.state["global_epoch"] + 1)

    def _validate_ema(self, stage):
        """The EMA weights' validation: {"weights": "ema", "module", "f2", "thr"}, or None without EMA."""
        if self.ema is None:
            return None
        probs, _ = self.evaluate(self.ema.module, stage)
        thr, f2 = greedy_thresholds(self.y_val, probs)
        return {"weights": "ema", "module": self.ema.module, "f2": f2, "thr": thr}

    def evaluate(self, model, stage):
        """Validation probabilities (N_val, L) and mean loss, gathered over ranks."""
        images = self._images(stage.size)
        mine = dist.shard_eval(len(self.val_idx))
        bs = self.opts.eval_bs or 2 * stage.bs
        logits = predict_logits(model, images, bs, self.device, self.mean, self.std, self.opts.channels_last,
                                self.amp_dtype, self.opts.workers, desc="val", rows=self.val_idx[mine])
        logits = dist.gather_rows(logits, len(self.val_idx))
        with torch.no_grad():
            val_loss = float(self.loss_fn(torch.from_numpy(logits).to(self.device),
                                          torch.from_numpy(self.y_val.astype(np.float32)).to(self.device)))
        return sigmoid(logits), val_loss

    def _plot(self, epoch, probs, thr):
        if self._plotter is None:
            return
        if self.opts.plots == "last" and epoch < sum(s.epochs for s in self.stages):
            return
        from utils.analysis.plots import plot_history, plot_prob_distributions

        if self._plot_job is not None:
            self._plot_job.result()  # one plot at a time; errors surface here
        hist = pd.DataFrame(self.state["history"])
        plots = self.run_dir / "plots"

        def job():
            plot_prob_distributions(self.y_val, probs, self.labels, plots / f"probs_e{epoch:03d}.png",
                                    thresholds=thr, title=f"{self.config['name']} epoch {epoch}")
            plot_history(hist, plots / "history.png")
        self._plot_job = self._plotter.submit(job)

    def finish(self):
        """Predict the validation fold with best.pt, write preds/val.none.csv and result.json."""
        if self._plot_job is not None:
            self._plot_job.result()
        best_path = self.run_dir / "checkpoints" / "best.pt"
        dist.barrier()
        best = load_checkpoint(best_path)
        raw = unwrap(self.model)
        load_weights(raw, best["model"], best_path)
        stage = self.stages[-1]
        probs, _ = self.evaluate(raw, Stage.from_dict({**stage.to_dict(), "size": best["meta"]["size"]}))
        result = {"finished": True, "best_val_f2": self.state["best"], "best_epoch": self.state["best_epoch"],
                  "epochs": self.state["global_epoch"], "train_seconds": self.state["train_seconds"],
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.config.get("exclude"):
            result["excluded_val"] = self.excluded_val
        if dist.is_main():
            names = [self.spec.names[i] for i in self.val_idx]
            write_preds(self.run_dir / "preds" / "val.none.csv", names, self.labels, probs)
            atomic_write_json(self.run_dir / "result.json", result)
            if self._tb is not None:
                self._tb.close(result)
        if self._plotter is not None:
            self._plotter.shutdown()
        return result


class _Interrupted(Exception):
    """Raised inside the epoch loop after a Ctrl-C checkpoint."""
