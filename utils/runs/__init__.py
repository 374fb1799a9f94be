"""Run folders and the files in them.

directory (load_run, find_runs, model_key), run_name (default_run_name), run_guard (RunLock, RunFolder),
resume (given_flags, restore_flags, check_same_config), checkpoint (save_checkpoint, load_checkpoint,
load_for_inference), checkpoint_origin (check_val_origin), pred_files (read_preds, write_preds,
submission_frame), tta_choice (choose_tta: --tta auto), prob_file (read_probs), scores (load_oof, score_oof), filter (parse_where, matches),
cluster (Slurm grids: read_grid, TrainJob, PredictJob, ProbeJob, StackJob); a competition within a
time budget (tools/submit.py --budget): budget (parse_duration, make_plan, replan), budget_presets
(PRESETS, candidates), budget_probe (measure, usable_archs), budget_setup (budget_setup,
measure_and_plan), budget_run (run_plan), plan_file (plan.json, plan_table, leaderboard_table).
"""
