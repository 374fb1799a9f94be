"""Stopping the jobs tools/submit.py started when it is itself stopped (Ctrl-C, SIGTERM).

submitit's local executor starts a controller process per job, which starts the job's
worker, which (TrainJob) starts train.py in a session of its own. A SIGTERM to submit.py
reaches none of them, and the controller, when interrupted, kills its worker after a
second, before train.py has written its checkpoint: train.py is left running with no
parent. So `stop_jobs` interrupts each worker itself (TrainJob then gives train.py its
Ctrl-C and waits for the checkpoint; a prediction or the stack is simply ended and redone
by the next run) and waits for them to end. Jobs a cluster owns (Slurm) keep running;
what is said names them and the command that cancels them.
"""
import os
import signal
import subprocess
import time
from pathlib import Path

from utils.grid.cluster import STOP_WAIT_S, is_debug

GRACE_S = 15  # beyond train.py's own STOP_WAIT_S: the worker's and the controller's exits


def child_pids(pid):
    """Process ids whose parent is `pid` (Linux /proc; elsewhere pgrep -P)."""
    proc = Path("/proc")
    if proc.is_dir():
        out = []
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_bytes().decode().rsplit(")", 1)[1].split()  # a kernel file, not a user's text
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
        return out
    try:
        found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(p) for p in found.split()]


def running(jobs):
    """(job, name) of the submitit jobs in `jobs` ([(job, name)]) that have not ended."""
    out = []
    for job, name in jobs:
        try:
            if not job.done():
                out.append((job, name))
        except Exception:  # a job whose state cannot be read is not waited for
            continue
    return out


def stop_jobs(jobs, cluster, say, wait_s=STOP_WAIT_S + GRACE_S):
    """Stop the jobs of `jobs` ([(submitit job, name)]) still running. cluster 'local': each
    worker gets SIGINT (a training run checkpoints and resumes when the command runs again),
    then up to wait_s seconds for them to end; any still running after that is cancelled.
    'slurm': nothing is stopped; say() names the jobs and the scancel command. 'debug': the
    jobs ran in this process. Returns the names of the jobs that were running."""
    live = [(j, n) for j, n in running(jobs) if not is_debug(j)]
    if not live:
        return []
    names = [n for _, n in live]
    if cluster == "slurm":
        ids = [str(j.job_id) for j, _ in live]
        say(f"still running on Slurm: {', '.join(f'{i} ({n})' for i, n in zip(ids, names))}; they go on without "
            f"this command; cancel them with: scancel {' '.join(ids)}")
        return names
    say(f"stopping {', '.join(names)}: a training run writes its checkpoint first and resumes when the same "
        "command runs again")
    for job, _ in live:
        for pid in child_pids(int(job.job_id)):
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + wait_s
    while running(live) and time.monotonic() < deadline:
        time.sleep(0.2)
    for job, name in running(live):
        say(f"{name} did not stop within {wait_s:.0f} s: cancelled")
        job.cancel(check=False)
    return names
