"""Grids of jobs and competitions within a time budget (tools/submit.py).

cluster (grids on Slurm or this machine with submitit: read_grid, TrainJob, PredictJob, ProbeJob,
StackJob); a competition within a time budget (tools/submit.py --budget): budget (durations,
Measured, Job, make_plan), budget_costs (the cost model), budget_rates (rates measured on the
data at hand), budget_replan (corrections, replan, keep_one_to_measure, promote, extend),
budget_presets (PRESETS, candidates), budget_probe (measure, usable_archs), budget_memo (a
recent measurement reused), budget_setup (budget_setup, measure_and_plan), budget_run
(run_plan), plan_file (plan.json, plan_table, leaderboard_table).
"""
