"""One run of train.py.

the flag table is utils/runs/train_flags.py; run_setup (resolve_flags, find_run,
build_config), stage (Stage, parse_stages), stages (resolve_stages), stage_scaling, stage_table
(describe_stages), recipes (RECIPES, recipe_flags), config_file (read_config_file, load_plan_file),
trainer (Trainer), loop (StageParts, train_one_epoch), resume (--resume from the run's
flags: given_flags, restore_flags, check_same_config), run_state (last.pt and exact resume: resume,
last_checkpoint), best_weights (keep_if_best), fold_data (FoldData), accumulation
(Accumulation), schedule (build_optimizer, build_scheduler), losses (build_loss, LOSSES), pseudo
(load_extras), signals (StopRequest), epoch_plots (EpochPlots), tensorboard (TensorBoardLog).
"""
