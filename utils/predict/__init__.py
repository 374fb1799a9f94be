"""Prediction.

tta (test-time augmentation: TTA_NAMES, MERGES, view_fns, predict_tta, predict_tta_loop).
"""
