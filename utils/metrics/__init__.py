"""Scores and decisions: F-beta, thresholds, constrained decisions."""
