"""Prediction.

logits (predict_logits: a network's logits over cached images, no augmentation), tta (test-time
augmentation: TTA_NAMES, MERGES, view_fns, predict_tta, predict_tta_loop), tta_choice (--tta auto:
choose_tta, make_files_command), jobs (predict.py's jobs: Job,
plan_jobs, checkpoint_path, preds_name), inference (predict_job), submission (check_submission, oof_table,
make_submission, write_submission).
"""
