"""One job's predictions in memory: its model, fast path, images and TTA (predict_job).

Nothing is written here: predict.py writes every job's files once all of them are predicted.
"""
import logging
from pathlib import Path

log = logging.getLogger("predict")


def predict_job(job, splits, args, device):
    """Load the job's model and predict each split into job.out (nothing written)."""
    from utils.data.bands import image_options
    from utils.data.cache import default_cache_dir, is_cached, load_images
    from utils.models.fast_path import network_name, resolve
    from utils.predict.tta import predict_tta
    from utils.models.checkpoint import load_for_inference

    model, meta = load_for_inference(job.ckpt, device, job.run.labels)
    labels, size, spec = list(meta["labels"]), int(args.size or meta["size"]), job.spec
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(spec.root)
    cuda = device.type == "cuda"
    channels = int(meta.get("channels") or len(meta["mean"]))
    setting, how = resolve(device, args.amp, args.channels_last, model,
                           network_name(meta["arch"], meta.get("head"), channels), size, "infer", args.bs, channels)
    kw = dict(tta=args.tta, merge=args.merge, mean=meta["mean"], std=meta["std"], bs=args.bs,
              device=device, crop_frac=args.crop_frac, amp=setting.amp == "bf16",
              channels_last=setting.channels_last,
              max_views_per_forward=args.max_views_per_forward or (None if cuda else 1))
    log.info("%s: %s at %d px, TTA %s (%s merge), %s (%s)", job.run.name, meta["arch"], size, args.tta,
             args.merge, setting.name, how)
    # the bands and 8-bit scaling the model was trained with (from the checkpoint alone)
    bands = image_options(meta)
    if "val" in splits:
        if is_cached(spec.files, size, cache_dir, desc=spec.images, **bands):  # train.py's cache: no decoding
            images, rows = load_images(spec.files, size, cache_dir, desc=spec.images, **bands), job.val_rows
        else:  # only this fold's images are decoded (and were checked)
            images, rows = load_images([spec.files[i] for i in job.val_rows], size, cache_dir,
                                       desc=f"{spec.images}-fold{job.run.fold}", **bands), None
        job.out["val"] = (job.val_names, labels, predict_tta(model, images, rows=rows, **kw))
    if "test" in splits:
        images = load_images(spec.test_files, size, cache_dir, desc=spec.test_images, **bands)
        job.out["test"] = (spec.test_names, labels, predict_tta(model, images, **kw))
