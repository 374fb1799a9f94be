"""One run: a stage plan trained on one fold, with exact resume.

Reading order: `Trainer.fit` runs each remaining stage; `_run_stage` builds the stage's
optimizer, data and StageParts, then runs its epochs: `_train_epoch` hands the epoch's loader to
utils/train/loop.py train_one_epoch (one epoch, top to bottom), whose checkpoint hook is
`_after_step` (the position, mid-epoch last.pt), and `_end_epoch` validates, records history and
keeps the best weights.
The collaborators: utils/train/run_state.py (the position and last.pt, exact resume),
utils/train/best_weights.py (raw or EMA weights into best.pt), utils/train/epoch_plots.py,
utils/train/tensorboard.py, utils/train/signals.py (Ctrl-C, SIGTERM), utils/train/divergence.py
(a NaN or infinite loss or weights stop the run), utils/train/loop.py (one epoch)
and utils/data/loader.py (the dataset over the image cache).
Before each write rank 0 checks that the run directory is still the one training started
in (utils/runs/run_guard.py RunFolder): a deleted folder stops the run, never recreated.
"""
import functools
import logging
import time

import numpy as np
import pandas as pd
import torch

from utils.augment.mix import build_mix
from utils.augment.static import make_static
from utils.augment.gpu import GpuAugment
from utils.augment.transforms import build_augment
from utils.common import distributed as dist
from utils.common.atomic import atomic_write_csv, atomic_write_json
from utils.common.errors import DataError
from utils.data.loader import CachedImages, batch_plan
from utils.data.sampling import epoch_indices
from utils.metrics.fbeta import fbeta_per_label, fbeta_samples
from utils.models.averaging import keep_epoch
from utils.models.ema import build_ema
from utils.models.layer_groups import param_groups
from utils.models.factory import unwrap_model as unwrap
from utils.models.fast_path import Setting
from utils.models.checkpoint import clean_state_dict, save_checkpoint
from utils.runs.pred_files import write_preds
from utils.runs.run_guard import RunFolder
from utils.train import best_weights
from utils.train.accumulation import Accumulation
from utils.train.best_weights import Candidate
from utils.train.divergence import finite_loss, stop_on_divergence
from utils.train.epoch_plots import EpochPlots
from utils.train.fold_data import RunImages
from utils.predict.logits import predict_logits
from utils.train.loop import StageParts, epoch_loader, sigmoid, train_one_epoch
from utils.train.losses import build_loss
from utils.train.optimizers import eval_weights, record_param_groups, weights_mode
from utils.train.pseudo import WeightedLoss
from utils.train.run_state import (checkpoint_meta, last_checkpoint, last_path, new_epoch_stats, new_state,
                                   restore_optimizer)
from utils.train.run_state import resume as resume_run
from utils.train.schedule import build_optimizer, build_scheduler
from utils.train.signals import Interrupted, StopRequest
from utils.train.stage import Stage
from utils.train.tensorboard import TensorBoardLog

log = logging.getLogger(__name__)


def amp_dtype(device, mode):
    """Autocast dtype for `mode` on `device` (None = full precision).

    CUDA: auto is bf16 where supported, else fp16. CPU: bf16 when asked ('bf16'; train.py
    resolves auto to 'bf16' or 'off' by measuring, utils/models/fast_path.py), else None.
    """
    if mode == "off" or (device.type != "cuda" and mode != "bf16"):
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


def fold_loss(loss_spec, data):
    """The training loss for FoldData `data`: built from its training tags, weighted per row
    (the targets' last column) when pseudo-labelled rows train too."""
    loss_fn, _ = build_loss(loss_spec, data.y_train)
    return WeightedLoss(loss_fn) if data.extras else loss_fn


def wrap_model(raw, device, compile_=False):
    """`raw` as the stage trains it: in DistributedDataParallel under torchrun, compiled if asked."""
    model = raw
    if dist.world_size() > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if compile_ else model


def history_row(state, si, stage, lr, labels, y_val, probs, val_loss, raw, ema=None):
    """The history.csv row (dict) of the epoch just trained (stage si, 0-based).

    state: the run's position dict (its "stats" hold the epoch's totals); lr: the scheduler's
    current rate; probs: (V, L) validation probabilities of the raw weights; raw, ema:
    their best_weights.Candidate (ema None without --ema). A label without a validation positive
    has F2 NaN (0/0; n/a in the plots and the report), not the metric's convention 1.0.
    """
    stats, f2 = state["stats"], raw.f2
    elapsed = stats["data_s"] + stats["compute_s"]
    per_label = fbeta_per_label(y_val, probs >= raw.thr)
    per_label[np.asarray(y_val).sum(0) == 0] = np.nan  # no validation positive: F2 is 0/0, n/a (not 1.0)
    return {"stage": si + 1, "epoch": state["global_epoch"] + 1, "stage_epoch": state["epoch"] + 1,
            "lr": stats.get("lr", lr), "size": stage.size, "bs": stage.bs, "seen": stats["seen"],
            "train_loss": stats["loss_sum"] / max(stats["n"], 1), "val_loss": val_loss, "val_f2": f2,
            **({"val_f2_ema": ema.f2} if ema else {}), "val_f2_at_0.2": fbeta_samples(y_val, probs >= 0.2),
            **{f"f2_{l}": float(v) for l, v in zip(labels, per_label)},
            "seconds": elapsed, "img_per_s": stats["n"] / max(elapsed, 1e-9),
            "data_wait": stats["data_s"] / max(elapsed, 1e-9)}


def stage_dataset(images, data, config, stage, gpu=False):
    """The stage's training items over `images` (uint8 cache, test cache appended for pseudo rows)
    and its GPU augmentation: (dataset, GpuAugment or None). On the CPU path the dataset
    augments each item; with --aug-static it holds K augmented copies made once."""
    labels, pca = config["labels"], config.get("pca")
    augment = (GpuAugment if gpu else build_augment)(config["aug"], stage.size, labels, pca)
    dataset = CachedImages(images, data.fit_targets, data.fit_rows, None if gpu else augment, config["seed"])
    if config.get("aug_static"):  # K copies made once; epoch e reads copy e mod K
        t0 = time.time()
        dataset = make_static(dataset, int(config["aug_static"]))
        log.info("static augmentation: %d copies of %d images at %d px in %.1f s",
                 len(dataset.copies), len(dataset), stage.size, time.time() - t0)
    return dataset, augment if gpu else None


def run_result(state, config, excluded_val):
    """result.json's dict for a finished run (state: the run's position dict)."""
    result = {"finished": True, "best_val_f2": state["best"], "best_epoch": state["best_epoch"],
              **({"best_weights": state["best_weights"]} if "best_weights" in state else {}),
              "epochs": state["global_epoch"], "train_seconds": state["train_seconds"],
              "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if config.get("exclude"):
        result["excluded_val"] = excluded_val
    return result


def epoch_line(row):
    """One line per epoch for people (the history row has it all for machines). Its F2 is at
    thresholds fitted on this same validation fold (optimistic; stack.py cross-fits them), and
    with --ema the EMA weights' score follows the raw one's, so the closing line's best F2
    (raw or EMA, at its epoch) is one printed here."""
    ema = f"  EMA val F2 {row['val_f2_ema']:.4f}" if "val_f2_ema" in row else ""
    return (f"stage {row['stage']} epoch {row['epoch']}  loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}"
            f"  val F2 {row['val_f2']:.4f} (thresholds fitted on this fold; at 0.2: {row['val_f2_at_0.2']:.4f})"
            f"{ema}  {row['img_per_s']:.0f} img/s  data wait {100 * row['data_wait']:.0f}%")


def log_epoch(row):
    log.info("%s", epoch_line(row))


class Trainer:
    """Trains `model` on one fold following config["stages"]; writes the run directory.

    config: the resolved run config (config.json); data: utils.train.fold_data.FoldData;
    run_dir: the run directory (Path); device: torch.device; opts: TrainOptions.
    """
    # Tests only: an object whose event(name, n, **detail) is told when the run reaches a named
    # point ("stage_start", "step", "ckpt", "epoch_end", "stage_end"; see _event). None in production.
    hooks = None

    def __init__(self, model, config, data, run_dir, device, opts):
        self.model, self.config, self.data = model, config, data
        self.run_dir, self.device, self.opts = run_dir, device, opts
        self.stages = [Stage.from_dict(s) for s in config["stages"]]
        self.labels, self.mean, self.std = config["labels"], config["mean"], config["std"]
        self.loss_fn = fold_loss(config["loss_spec"], data).to(device)
        self.amp_dtype = amp_dtype(device, opts.amp)
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None)
        self.state = new_state()
        self.plots = EpochPlots(run_dir, self.labels, data.y_val, config["name"],
                                opts.plots if dist.is_main() else "none", sum(s.epochs for s in self.stages))
        self._tb = TensorBoardLog(run_dir, self.labels, config) if dist.is_main() and opts.tensorboard else None
        self._last_ckpt_time = time.time()
        self.folder = RunFolder(run_dir) if dist.is_main() else None
        self.images = RunImages(data.spec, config, opts.cache_dir)
        self.ema = build_ema(unwrap(model), config.get("ema"), config.get("ema_warmup", True))

    def fit(self, resume=False):
        """Train every remaining stage, then predict the validation fold with the best weights.

        Returns the result.json dict; SystemExit(130/143) after Ctrl-C/SIGTERM; Diverged when NaN/inf.
        """
        opt_sd = sched_sd = None
        if resume:
            state, opt_sd, sched_sd = resume_run(self.run_dir, self.model, self.config, self.scaler, self.ema)
            self.state.update(state)
        with StopRequest() as stop, stop_on_divergence(self.run_dir, self.state, self.amp_dtype):
            while self.state["stage"] < len(self.stages):
                self._run_stage(self.state["stage"], opt_sd, sched_sd, stop)
                opt_sd = sched_sd = None  # a later stage starts with a fresh optimizer and scheduler
                if stop.requested:
                    raise SystemExit(stop.exit_status)
        return self.finish()

    def _event(self, name, n, **detail):
        """The run reached point `name` for the n-th time: tell the test hooks, if any."""
        if self.hooks is not None:
            self.hooks.event(name, n, **detail)

    def _save_last(self, optimizer=None, scheduler=None):
        """Write checkpoints/last.pt with the full state at the current position (rank 0 only)."""
        if not dist.is_main():
            return
        self.folder.check()
        self.state["n_ckpt"] = self.state.get("n_ckpt", 0) + 1
        stage = self.stages[min(self.state["stage"], len(self.stages) - 1)]
        ckpt = last_checkpoint(self.model, checkpoint_meta(self.config, stage), self.state, self.config["stages"],
                               optimizer, scheduler, self.scaler, self.ema)
        self._event("ckpt", self.state["n_ckpt"], path=last_path(self.run_dir), ckpt=ckpt)
        save_checkpoint(last_path(self.run_dir), ckpt)
        self._last_ckpt_time = time.time()

    def _build_stage(self, si, stage, opt_sd, sched_sd):
        """The stage's StageParts: model wrapper, optimizer, scheduler (restored from opt_sd/sched_sd
        when given), loss, augmentation, EMA and data."""
        raw, cfg = unwrap(self.model), self.config
        groups = param_groups(raw, stage.train, stage.lr, stage.lr_mult, stage.wd,
                              stage.layer_decay)  # before DDP sees the model
        model = wrap_model(raw, self.device, self.opts.compile)
        optimizer = build_optimizer(stage, groups)
        n_epoch = len(epoch_indices(cfg["sampler"], self.data.fit_y, cfg["seed"], 0))
        plan = batch_plan(n_epoch, stage.bs, dist.world_size(), f"stage {si + 1}")  # never a batch of 1
        acc = Accumulation.of(stage.accum, plan)
        scheduler = build_scheduler(stage, optimizer, acc.updates_per_epoch)
        restore_optimizer(optimizer, scheduler, opt_sd, sched_sd, last_path(self.run_dir), f"stage {si + 1}")
        if dist.is_main():
            self.folder.check()
            record_param_groups(self.run_dir / "param_groups.csv", si + 1, optimizer)
        dataset, gpu_augment = stage_dataset(self.images.with_test(stage.size, self.data.extras), self.data, cfg, stage,
                                             self.opts.aug_device == "gpu")
        return StageParts(model, self.loss_fn, optimizer, scheduler, self.device, self.mean, self.std,
                          amp_dtype=self.amp_dtype, scaler=self.scaler, channels_last=self.opts.channels_last,
                          accumulation=acc, gpu_augment=gpu_augment, ema=self.ema, bn_frozen=stage.bn == "frozen",
                          mix=build_mix(cfg.get("mix"), sum(s.epochs for s in self.stages)), seed=cfg["seed"],
                          dataset=dataset, plan=plan, n_epoch=n_epoch)

    def _run_stage(self, si, opt_sd, sched_sd, stop):
        """Train stage si from the current position to its end, or until a Ctrl-C (`stop`)."""
        stage = self.stages[si]
        parts = self._build_stage(si, stage, opt_sd, sched_sd)
        self._event("stage_start", si)
        while self.state["stage"] == si and not stop.requested:
            try:
                self._train_epoch(si, stage, parts, stop)
            except Interrupted:
                break
            self._end_epoch(si, stage, parts.model, parts.scheduler)
            if self.state["epoch"] < stage.epochs:
                self._save_last(parts.optimizer, parts.scheduler)
                self._event("epoch_end", self.state["global_epoch"], run_dir=self.run_dir)
            else:
                self.state.update(stage=si + 1, epoch=0)
                self._save_last()  # stage boundary: the next stage starts fresh optimizer/scheduler
                self._event("stage_end", si)
        if stop.requested:
            log.warning("stopped; resume with: python train.py --resume --name %s --out %s",
                        self.run_dir.name, self.run_dir.parent)

    def _train_epoch(self, si, stage, parts, stop):
        """The rest of the current epoch from state["step"] (train_one_epoch), checkpointing on the
        way (_after_step); raises Interrupted once a Ctrl-C's checkpoint is written."""
        cfg, epoch, start = self.config, self.state["global_epoch"], self.state["step"]
        stats = self.state["stats"] = self.state["stats"] or new_epoch_stats(parts.n_epoch, parts.scheduler.lr)
        loader = epoch_loader(parts, cfg["sampler"], self.data.fit_y, cfg["seed"], epoch, start, self.opts.workers)
        desc = f"s{si + 1}/{len(self.stages)} e{self.state['epoch'] + 1}/{stage.epochs}"
        try:
            train_one_epoch(parts, loader, epoch, start, parts.plan.steps, stats,
                            functools.partial(self._after_step, parts=parts, stop=stop), desc)
        except torch.cuda.OutOfMemoryError:
            raise DataError(f"batch size {stage.bs} at {stage.size}px does not fit in GPU memory; "
                            f"try --bs {max(1, stage.bs // 2)} (or a smaller --size)")

    def _after_step(self, done, parts, stop):
        """train_one_epoch's checkpoint hook: `done` batches of the epoch are done. Records the position;
        at an optimizer step writes last.pt when --ckpt-every/--ckpt-minutes say so or a Ctrl-C asked
        (then raises Interrupted), except after the epoch's last batch (its end writes one)."""
        self.state["step"] = done
        self.state["global_step"] += 1
        self._event("step", self.state["global_step"])
        acc = parts.accumulation
        if not acc.boundary(done):
            return  # inside an accumulation group: checkpoints wait for its optimizer step
        due = (self.opts.ckpt_every and acc.updates_done(done) % self.opts.ckpt_every == 0) or \
            (time.time() - self._last_ckpt_time > 60 * self.opts.ckpt_minutes)
        if (due or stop.requested) and done < parts.plan.steps:
            with eval_weights(parts.optimizer):  # on every rank, so their weights stay equal
                self._save_last(parts.optimizer, parts.scheduler)
            if stop.requested:
                raise Interrupted()

    def _end_epoch(self, si, stage, model, scheduler):
        """Validate, log a history row, keep the best weights, plot; advance the position.
        The stats' loss_sum and n are already every rank's (train_one_epoch)."""
        weights_mode(scheduler.optimizer, train=False)  # schedule-free: validate and save the averaged weights
        probs, val_loss = self.evaluate(model, stage)
        raw = Candidate.scored("raw", unwrap(model), self.data.y_val, probs)
        scheduler.step_epoch(raw.f2)
        ema = None if self.ema is None else Candidate.scored("ema", self.ema.module, self.data.y_val,
                                                             self.evaluate(self.ema.module, stage)[0])
        row = history_row(self.state, si, stage, scheduler.lr, self.labels, self.data.y_val, probs, val_loss, raw, ema)
        row["precision"] = Setting.of(self.amp_dtype, self.opts.channels_last).name  # utils/models/fast_path.py
        self.state["history"].append(row)
        self.state["train_seconds"] += row["seconds"]
        if dist.is_main():
            log_epoch(row)
            self.folder.check()
            atomic_write_csv(self.run_dir / "history.csv", pd.DataFrame(self.state["history"]))
            if self._tb is not None:
                self._tb.log_epoch(row, probs, self.data.y_val)
            best_weights.keep_if_best(self.run_dir / "checkpoints" / "best.pt", self.state,
                                      best_weights.choose(raw, ema), row["epoch"], checkpoint_meta(self.config, stage))
            if self.config.get("keep_epochs"):  # for tools/average_checkpoints.py
                keep_epoch(self.run_dir, row["epoch"], clean_state_dict(unwrap(model).state_dict()),
                           checkpoint_meta(self.config, stage), raw.f2, self.config["keep_epochs"])
            self.plots.draw(row["epoch"], self.state["history"], probs, raw.thr)
        self.state.update(epoch=self.state["epoch"] + 1, step=0, stats=None,
                          global_epoch=self.state["global_epoch"] + 1)

    def evaluate(self, model, stage):
        """Validation probabilities (V, L) float64 and mean loss (float), gathered over ranks."""
        images, val_idx = self.images.train(stage.size), self.data.val_idx
        mine = dist.shard_eval(len(val_idx))
        logits = predict_logits(model, images, 2 * stage.bs, self.device, self.mean,
                                self.std, self.opts.channels_last, self.amp_dtype, self.opts.workers, desc="val",
                                rows=val_idx[mine])
        logits = dist.gather_rows(logits, len(val_idx))
        with torch.no_grad():
            val_loss = float(self.loss_fn(torch.from_numpy(logits).to(self.device),
                                          torch.from_numpy(self.data.y_val.astype(np.float32)).to(self.device)))
        return sigmoid(logits), finite_loss(val_loss)  # NonFinite: the run diverged

    def finish(self):
        """Predict the validation fold with best.pt, write preds/val.none.csv and result.json."""
        self.plots.wait()
        dist.barrier()
        raw = unwrap(self.model)
        best = best_weights.load_best(self.run_dir / "checkpoints" / "best.pt", raw)
        probs, _ = self.evaluate(raw, Stage.from_dict({**self.stages[-1].to_dict(), "size": best["meta"]["size"]}))
        result = run_result(self.state, self.config, self.data.excluded_val)
        if dist.is_main():
            self.folder.check()
            write_preds(self.run_dir / "preds" / "val.none.csv", [self.data.spec.names[i] for i in self.data.val_idx],
                        self.labels, probs)
            atomic_write_json(self.run_dir / "result.json", result)
            if self._tb is not None:
                self._tb.close(result)
        self.plots.close()
        return result
