"""Training one run: the Trainer, its loops, stage plans, schedules, losses, pseudo-labels, TensorBoard."""
