"""Prediction: test-time augmentation."""
