"""Scores and decisions.

fbeta (fbeta_samples, fbeta_per_label), thresholds (strategies: STRATEGIES, fit_thresholds, binarize,
cross_fit, compare_strategies), threshold_search (exact searches: best_label_fbeta, greedy_thresholds,
global_threshold), constraints (decision rules: parse_constraints, constrained_decisions), threshold_file
(--thresholds files: read_thresholds_file).
"""
