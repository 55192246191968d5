"""Data parallelism with torch.distributed: one training run, several processes, DistributedDataParallel.

A run is one process unless a launcher starts several. torchrun does, for scripts and clusters
(one process per GPU, or per group of CPU cores):

    torchrun --standalone --nproc_per_node=2 -m jepa_lite train --data shapes --steps 2000 --out runs/ddp
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 -m jepa_lite train ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; the Trainer joins the group (NCCL on CUDA, one GPU
per process at LOCAL_RANK; gloo on CPU) and runs the same loop on every rank (train.py).

Every rank draws its rows of the global batch from the (seed, step) generators (the masks of the
whole batch, since their lengths are cut batch-wide), so the run sees exactly the batches and
masks of a one-process run. DDP averages the gradients, so every rank takes the same optimizer
step and EMA update; SIGReg's statistic is taken over the global batch (core/sigreg.py). What a
one-process run computes, two processes compute, up to the order of float additions
(tests/test_distributed.py checks every target mode and objective).

Rank 0 alone logs, shows progress and writes checkpoints. Collectives beyond DDP's own happen at
log steps only: the logged losses are averaged over the ranks there (one all-reduce, which also
decides a NaN stop on every rank), and the ranks agree there on when to stop (rank 0's time budget,
any rank's signal). A multi-process run therefore reacts to a signal within `log_every` steps.
"""
from __future__ import annotations

import inspect
import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from jepa_lite.errors import BadValue

# A step of the models meant for CPU takes well under a second; checkpoints are written by rank 0
# between steps while the others wait in the next collective, so allow minutes, not hours.
COLLECTIVE_TIMEOUT_S = 300


def launched_by_torchrun() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun (or another launcher that sets RANK, WORLD_SIZE
    and LOCAL_RANK) started this process as one of several; else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def join_group(device: torch.device, batch_size: int, world: int) -> None:
    """Join the group torchrun describes in the environment (NCCL for CUDA, gloo otherwise)."""
    if batch_size % world:
        raise BadValue(f"batch_size ({batch_size}) must be divisible by the number of processes ({world})")
    if not dist.is_available():
        raise BadValue(f"WORLD_SIZE={world} asks for {world} processes, and this torch build has no "
                         f"torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the JEPA module: it averages the gradients of the trainable
    networks (context encoder, predictor, pixel head; the target encoder too when it is trained by
    gradient) during backward. The EMA target encoder has no gradients and is updated identically
    on every rank. The module's buffers are constants (the 2-D positions): not re-broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    options = inspect.signature(DistributedDataParallel.__init__).parameters
    # newer torch names the per-step buffer sync forward_sync_buffers; older torch broadcast_buffers
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def agree(stop: bool, total_steps: int, stop_signal: int, rank: int, device: torch.device) -> tuple[bool, int, int]:
    """One collective -> (stop, schedule length, signal): stop if rank 0 says so (its clock sets a
    time budget's length) or if any rank received a stop signal (it may reach one process only)."""
    message = torch.tensor([int(stop) if rank == 0 else 0, total_steps if rank == 0 else 0, stop_signal],
                           dtype=torch.int64, device=device)
    dist.all_reduce(message, op=dist.ReduceOp.MAX)
    return bool(message[0]), int(message[1]), int(message[2])


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """The mean over the ranks of a tensor of sums (one all-reduce for the whole interval's losses)."""
    values = values.detach().float().clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def broadcast_state(state: dict | None, device: torch.device) -> dict | None:
    """Rank 0's checkpoint (or None) to every rank, so that only rank 0 needs to read the file."""
    box = [state]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]
