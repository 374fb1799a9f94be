"""Datasets in the Kaggle/Planet layout, from files to batches.

dataset (load_dataset, DataSpec, read_truth), folds (plan_folds, write_folds, load_or_make_folds),
bands (multi-band/16-bit reading, fit_band_scaling), cache (load_images, default_cache_dir), loader
(CachedImages, make_loader, batch_plan), sampling (resolve_sampler), exclusion (read_exclusion),
duplicates (find_duplicates, group_folds), demo (make_demo, ensure_demo) and mosaic (make_mosaic) sets.
output_paths (check_output_file, check_output_dir, write_together: outputs kept off the dataset's
files, image folders, run folders and inputs).
"""
