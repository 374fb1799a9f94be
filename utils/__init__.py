"""Library behind train.py, predict.py, stack.py and tools/: one folder per concept, one concept per module.

common (errors, text, atomic writes, exits, option strings, paths), data (datasets, folds, image
cache, loaders), augment, models, train (one run of train.py), predict (TTA), metrics (F-beta,
thresholds, constraints), stack (ensembles and stackers), runs (run folders and their files),
analysis (leaderboard, report, plots). ARCHITECTURE.md describes each module and the file contracts.
"""
