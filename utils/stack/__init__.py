"""Stacking: the model library, level-1 ensembles, level-2 stackers with cross-fitting."""
