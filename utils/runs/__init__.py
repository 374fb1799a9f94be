"""Run folders and the files in them.

train_flags (train.py's flag table: FLAGS, add_flags, TrainOptions, what each flag is for a run),
directory (load_run, find_runs, model_key), run_name (default_run_name), run_guard (RunLock, RunFolder),
checkpoint_origin (check_val_origin), pred_files (read_preds, write_preds, submission_frame), prob_file (read_probs),
oof (assemble_oof), filter (parse_where, matches).
Grids and budgets of jobs over runs: utils/grid.
"""
