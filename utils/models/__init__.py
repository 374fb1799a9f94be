"""Networks and their weights.

factory (create_model, model_meta, unwrap_model), weights (local and downloaded ImageNet weights),
channels (N input bands: adapt_first_conv, band_mean_std), layer_groups (set_trainable, param_groups,
freeze_bn), heads (--head pooling heads: parse_head, HEADS, HeadNet), ema (--ema: WeightEMA, build_ema),
checkpoint (save_checkpoint, load_checkpoint, load_for_inference), averaging (--keep-epochs files and
checkpoint averaging: keep_epoch, average_run), fast_path (--amp and --channels-last auto on CPU: resolve,
choose, Setting).
"""
