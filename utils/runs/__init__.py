"""Run directories: finding and reading runs, resume, checkpoints, scores, cluster grids."""
