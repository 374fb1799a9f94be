"""Training-time augmentation.

transforms (the --aug language and per-sample pipeline: parse_augment, build_augment, OPS, PRESETS,
pca_stats), ops (geometric and colour ops, the Op base), torchvision_ops (erase, randaug, trivialaug,
autoaug), gpu (the --aug-device gpu path: GpuAugment), static (--aug-static copies: make_static),
mix (--mix batch mixing: parse_mix, build_mix).
"""
