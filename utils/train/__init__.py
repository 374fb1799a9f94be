"""Training one run: the Trainer and its loops, run state and exact resume, the best weights, plots, Ctrl-C, stage plans, schedules, losses, pseudo-labels, TensorBoard."""
