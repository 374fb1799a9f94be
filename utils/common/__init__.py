"""What every script shares.

errors (DataError, report_problems), text (read_text, read_csv, read_json), atomic (atomic_write,
atomic_write_csv/json/text, atomic_save_torch), temp_files (make_temp, sweep), write_errors (WriteFault,
write_fault), termination (Terminated, raise_on_sigterm), cli (run_script, exit_cleanly, pick_device,
add_runs_argument, refuse_idle_flags), options (parse_value, parse_item, parse_items), paths
(resolve_stored, portable, rewrite_record), distributed (torchrun: init_distributed, main_first, shard, gather_rows).
"""
