"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``; gloo on CPU, nccl on GPU).

Each global batch of ``batch_size`` frames is cut into ``world_size`` slices, one per process.
Every process divides its loss sums by the *global* counts (:func:`all_reduce_sum` of the counts),
so the sum of the per-process gradients, formed by one all-reduce of the flattened gradients, is
exactly the single-process gradient of the same global batch; the optimiser steps then stay in
lock-step on every process. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_process_group(device: torch.device) -> ProcessGroup:
    """Join the group torchrun set up (env:// rendezvous); a single process otherwise."""
    if not launched_by_torchrun():
        return ProcessGroup()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def local_device(requested: str) -> torch.device:
    """``auto`` → this process's GPU (LOCAL_RANK under torchrun) if CUDA works, else CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def all_reduce_sum(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Sum over processes (in place; returns the tensor)."""
    if group.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_gradients(parameters: Iterable[torch.nn.Parameter], group: ProcessGroup) -> None:
    """Sum the gradients of all processes, with one flattened all-reduce."""
    if not group.active:
        return
    parameters = [p for p in parameters if p.requires_grad]
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in parameters:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def broadcast_parameters(module: torch.nn.Module, group: ProcessGroup) -> None:
    """Make every process start from rank 0's weights."""
    if group.active:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def barrier(group: ProcessGroup) -> None:
    if group.active:
        dist.barrier()


def shutdown(group: ProcessGroup) -> None:
    if group.active and dist.is_initialized():
        dist.destroy_process_group()
