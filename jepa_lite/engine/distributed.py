"""Data parallelism with torch.distributed: one training run, several processes, DistributedDataParallel.

Two ways in, one code path (Trainer._loop in train.py, the same on every rank):

- **torchrun**, for scripts and clusters (one process per GPU, or per group of CPU cores):

      torchrun --standalone --nproc_per_node=2 -m jepa_lite train --data shapes --steps 2000 --out runs/ddp
      torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 -m jepa_lite train ...

  torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; the Trainer joins the group (NCCL on CUDA, one GPU
  per process at LOCAL_RANK; gloo on CPU).
- **workers > 1** on a CPU (`TrainConfig.workers`, notebooks and `jepa-lite train --workers 2`): the
  process that calls `Trainer.run()` starts the other ranks itself ("spawn", safe in Jupyter) and
  joins a gloo group with them as rank 0. Small models use 2 cores better as 2 one-thread processes
  than as one process with 2 threads (benchmarks/bench_workers.py).

Either way every rank draws the whole global batch's images, crops and masks from the (seed, step)
generators and keeps its own rows (`rows_of_rank`, data/datasets.py), so the run sees exactly the
batches and masks of a one-process run; DDP averages the gradients, so every rank takes the same
optimizer step and EMA update; only the order of float additions differs. Rank 0 alone logs, shows progress and writes
checkpoints; when to stop (end of schedule, time budget, a signal) is agreed on every step
(`agree`), and the loss that decides a NaN stop is the mean over the ranks, so all ranks stop together.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import fields
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from jepa_lite.data.images import ImageDataset
from jepa_lite.errors import HelperFailed

# A step of the models meant for CPU takes well under a second; checkpoints are written by rank 0
# between steps while the others wait in the next collective, so allow minutes, not hours.
COLLECTIVE_TIMEOUT_S = 300
# Starting a helper costs a few seconds (a fresh Python imports torch); "auto" uses helpers only for
# runs long enough to win that back.
AUTO_MIN_STEPS = 200
AUTO_MIN_MINUTES = 1.0


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (containers
    and Binder often show many cores but grant one or two)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:                                    # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(cpus, 1)


def launched_by_torchrun() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun (or another launcher that sets RANK, WORLD_SIZE
    and LOCAL_RANK) started this process as one of several; else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


def join_torchrun_group(device: torch.device) -> None:
    """Join the group torchrun describes in the environment (NCCL for CUDA, gloo otherwise)."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def auto_workers(device: torch.device, batch_size: int, total_steps: int | None,
                 budget_minutes: float | None) -> int:
    """workers=0 ("auto"): 2 processes on a CPU with at least 2 usable cores, for runs of at least
    AUTO_MIN_STEPS steps or AUTO_MIN_MINUTES minutes and an even batch; otherwise 1 (and always 1
    inside a torchrun group, which already has its processes)."""
    if device.type != "cpu" or not dist.is_available() or dist.is_initialized() or launched_by_torchrun():
        return 1
    if usable_cpus() < 2 or batch_size % 2:
        return 1
    long_enough = ((total_steps is not None and total_steps >= AUTO_MIN_STEPS)
                   or (budget_minutes is not None and budget_minutes >= AUTO_MIN_MINUTES))
    return 2 if long_enough else 1


def check_workers(workers: int, batch_size: int, device: torch.device) -> None:
    """Bad settings for `workers` processes (>= 1; TrainConfig rejects < 0) are a ValueError naming the values."""
    if workers > 1:
        if device.type != "cpu":
            raise ValueError(f"workers={workers} starts CPU processes from this one; the device is "
                             f"{device.type}: use workers=1 and launch with torchrun for several GPUs")
        if launched_by_torchrun():
            raise ValueError(f"workers={workers} inside a torchrun group: torchrun already started the "
                             f"processes; use workers=1 (or 0 = auto)")
        if batch_size % workers:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by workers ({workers})")
        if not dist.is_available():
            raise ValueError(f"workers={workers} needs torch.distributed, which this torch build lacks")


def check_world(batch_size: int, world: int) -> None:
    if batch_size % world:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({world})")


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cpus() // workers)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the JEPA module: it averages the gradients of the trainable
    networks (context encoder, predictor, pixel head) during backward; the EMA target encoder has
    no gradients and is updated identically on every rank. Its buffers are constants (the 2-D
    positions), so they are not re-broadcast every step."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    options = inspect.signature(DistributedDataParallel.__init__).parameters
    # newer torch names the per-step buffer sync forward_sync_buffers; older torch broadcast_buffers
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in options else {"broadcast_buffers": False}
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None, **no_sync)


def agree(stop: bool, total_steps: int, stop_signal: int, rank: int, device: torch.device) -> tuple[bool, int, int]:
    """One collective per step -> (stop, schedule length, signal): stop if rank 0 says so (its clock
    sets a time budget's length) or if any rank received a stop signal (it may reach one process only)."""
    message = torch.tensor([int(stop) if rank == 0 else 0, total_steps if rank == 0 else 0, stop_signal],
                           dtype=torch.int64, device=device)
    dist.all_reduce(message, op=dist.ReduceOp.MAX)
    return bool(message[0]), int(message[1]), int(message[2])


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (the loss of the whole global batch)."""
    value = value.detach().float().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def broadcast_state(state: dict | None, device: torch.device) -> dict | None:
    """Rank 0's checkpoint (or None) to every rank, so that only rank 0 needs to read the file."""
    box = [state]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


# ---------------------------------------------------------------------------------------------
# workers > 1: CPU helper processes started from this one

def init_file_group(store_file: str, rank: int, world: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def shareable(dataset):
    """What to hand a helper process for `dataset`: the data set itself when /dev/shm has room
    (torch.multiprocessing then moves its tensors to shared memory: no copy per helper), else
    numpy copies that travel through the pipe (Docker's default /dev/shm is only 64 MB). A streamed
    folder (stream.ImageFolderStream) travels as it is: it holds file names only."""
    if not hasattr(dataset, "__dataclass_fields__"):
        return dataset
    tensors = {f.name: getattr(dataset, f.name) for f in fields(dataset)}
    size = sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        free = 0
    if free > 2 * size:
        return dataset
    return {name: value.numpy() if isinstance(value, torch.Tensor) else value for name, value in tensors.items()}


def unshare(received):
    """The helper's side of `shareable`: an ImageDataset either way."""
    if isinstance(received, dict):
        return ImageDataset(**{name: torch.from_numpy(value) if hasattr(value, "dtype") else value
                               for name, value in received.items()})
    return received


def _helper_entry(ready, target, args) -> None:
    """First code of a helper process: report ready, then run `target(*args)`."""
    ready.send(True)
    ready.close()
    target(*args)


class HelperProcesses:
    """Start ranks 1..world-1 as spawned processes and join the process group as rank 0.
    Use as a context manager around the training loop; on exit the group is destroyed and the
    helpers are joined (or terminated). Nothing hangs: collectives time out, a helper that dies
    closes its socket so rank 0's next collective fails at once, and a helper that cannot start
    is reported before rank 0 waits on the group."""

    def __init__(self, world: int, target, args: tuple):
        self.world, self.target, self.args = world, target, args
        self.processes = []
        self._tmp = None

    def __enter__(self) -> "HelperProcesses":
        import torch.multiprocessing as mp

        self._tmp = tempfile.TemporaryDirectory(prefix="jepa-lite-group-")
        store = os.path.join(self._tmp.name, "store")
        context = mp.get_context("spawn")
        try:
            ready = []
            for rank in range(1, self.world):
                receiver, sender = context.Pipe(duplex=False)
                process = context.Process(target=_helper_entry, daemon=True,
                                          args=(sender, self.target, (rank, self.world, store, *self.args)))
                process.start()
                sender.close()
                self.processes.append(process)
                ready.append(receiver)
            self._wait_until_ready(ready)
            init_file_group(store, 0, self.world)
        except BaseException:
            self._stop_helpers()
            raise
        return self

    def _wait_until_ready(self, pipes, timeout: float = COLLECTIVE_TIMEOUT_S) -> None:
        from multiprocessing.connection import wait

        for rank, (pipe, process) in enumerate(zip(pipes, self.processes), 1):
            if not wait([pipe, process.sentinel], timeout=timeout):
                raise HelperFailed(f"data-parallel helper rank {rank} did not start within {timeout} s")
            try:
                pipe.recv()
            except EOFError:
                process.join(timeout=5)
                raise HelperFailed(
                    f"data-parallel helper rank {rank} exited (code {process.exitcode}) before starting; its error "
                    f"is printed above. Helpers are started with the 'spawn' method, which re-imports the main "
                    f"script: a script that trains with workers > 1 needs the `if __name__ == \"__main__\":` "
                    f"guard. Or use workers=1.") from None

    def failure(self) -> str:
        """Why a collective failed, if a helper is gone (else "")."""
        dead = [f"rank {rank} exit code {p.exitcode}" for rank, p in enumerate(self.processes, 1)
                if not p.is_alive()]
        return f"data-parallel helper process stopped ({', '.join(dead)}); its error is printed above" if dead else ""

    def _stop_helpers(self, wait: float = 30.0) -> None:
        for process in self.processes:
            process.join(timeout=wait)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)

    def __exit__(self, exc_type, exc, tb) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
        # after an error rank 0 does not wait for helpers stuck in a collective
        self._stop_helpers(wait=30.0 if exc_type is None else 0.5)
        self._tmp.cleanup()
