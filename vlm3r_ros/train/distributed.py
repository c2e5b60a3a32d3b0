"""Data parallelism for the trainers: torch.distributed under ``torchrun`` (gloo on CPU,
NCCL on GPU), one process per device; a single process when ``WORLD_SIZE`` is unset."""
from __future__ import annotations

import os
from typing import Iterable

import torch


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """Return (rank, world size, device), initialising torch.distributed under torchrun."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    if world > 1:
        backend = 'nccl' if device == 'cuda' else 'gloo'
        torch.distributed.init_process_group(backend)
    if device == 'cuda':
        local = int(os.environ.get('LOCAL_RANK', '0'))
        torch.cuda.set_device(local)
        return rank, world, torch.device('cuda', local)
    return rank, world, torch.device(device)


def average_gradients(params: Iterable[torch.nn.Parameter], world: int) -> None:
    """All-reduce and average the gradients of ``params`` over the ``world`` processes
    (what DistributedDataParallel does, for a loss computed outside one module's forward).
    A parameter without a gradient on this rank takes part with zeros."""
    if world <= 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad.div_(world)


def rank0_decides(flag: bool, world: int, device: torch.device) -> bool:
    """Return rank 0's ``flag`` on every rank (e.g. 'time is up, stop now')."""
    if world <= 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.broadcast(value, 0)
    return bool(value.item())


def barrier(world: int) -> None:
    """Wait for every process (no-op in a single process)."""
    if world > 1:
        torch.distributed.barrier()


def shutdown(world: int) -> None:
    """Tear the process group down (no-op in a single process)."""
    if world > 1:
        torch.distributed.destroy_process_group()
