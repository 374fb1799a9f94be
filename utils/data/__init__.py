"""Datasets in the Kaggle/Planet layout: reading and validation, folds, bands, the image cache, sampling, exclusion, near-duplicates, the demo and mosaic sets."""
