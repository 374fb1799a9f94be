"""torchrun support: process groups, rank-0-only writes, shared files built by rank 0 first, gathered predictions.

Launched with `torchrun --nproc_per_node N train.py ...`, torchrun sets RANK,
WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op (world of 1).
"""
import os

import numpy as np
import torch
import torch.distributed as dist


def init_distributed(device_type):
    """Start the process group when launched by torchrun; return (rank, world, local_rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), local_rank


def is_main():
    """True on rank 0 (or when not distributed): the only process that writes files."""
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size():
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_initialized() else 0


def barrier():
    """Wait until every process gets here (nothing to wait for when not distributed)."""
    if dist.is_initialized():
        dist.barrier()


def shard(indices, world=None, rank_=None):
    """This rank's share of an index list: padded (by wrapping) to a multiple of the
    world size, then every world-th element, so all ranks take the same number of steps.
    world, rank_: default to this process's (given explicitly to test the rule)."""
    w = world_size() if world is None else world
    r = rank() if rank_ is None else rank_
    if w == 1:
        return np.asarray(indices)
    idx = np.asarray(indices)
    pad = (-len(idx)) % w
    if pad:
        idx = np.concatenate([idx, idx[:pad]])
    return idx[r::w]


def all_reduce_sum(values, device):
    """Sum a list of floats over ranks; returns a list of floats."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def gather_rows(array, n_total):
    """Reassemble rows split by `shard_eval` across ranks into one (n_total, ...) array on every rank."""
    if not dist.is_initialized():
        return array
    parts = [None] * world_size()
    dist.all_gather_object(parts, array)
    out = np.empty((n_total,) + array.shape[1:], array.dtype)
    for r, p in enumerate(parts):
        out[r::world_size()] = p[: len(range(r, n_total, world_size()))]
    return out


def shard_eval(n):
    """Row indices this rank evaluates out of n (every world-th row, no padding)."""
    return np.arange(rank(), n, world_size())


def cleanup():
    """End the process group, if one was started."""
    if dist.is_initialized():
        dist.destroy_process_group()


def main_first(make):
    """make() on every process, rank 0 first while the others wait at a barrier.

    For work whose first call writes a shared file (an image cache): rank 0 builds it,
    then the other ranks read what it wrote. Returns this process's make() result.
    """
    if is_main():
        out = make()
    barrier()
    if not is_main():
        out = make()
    return out
