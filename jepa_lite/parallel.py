"""Data parallelism on CPU cores: one training run, several processes, one thread each.

Why: the course's models are small (64-128 wide). On a 2-core CPU one process with 2 OpenMP
threads trains the `tiny` model at ~430 img/s, while two single-thread processes manage ~350 each:
small matmuls, attention and element-wise ops do not split well across threads, whole half-batches
do. So a CPU run can split every batch between `workers` processes (`TrainConfig.workers`):

    step s:  rank 0 (this process)                  rank 1 (a helper process)
             images[0:B/2], masks[0:B/2]           images[B/2:B], masks[B/2:B]
             forward + backward                     forward + backward
             all-reduce: mean of the gradients (and of the loss), one message per step
             the same optimizer step and EMA update on both: the copies stay identical

Every rank draws the whole batch's images, crops and masks from the (seed, step) generators and
keeps its own rows, so the run sees exactly the batches of a one-process run; only the order of
float additions in the mean differs (and, with drop_path > 0, each rank draws its own drop-path
noise). Monitors computed from one step's tokens (target std, RankMe, across-image share) see rank 0's rows.
Rank 0 is the process that called `Trainer.run()`: it keeps the progress bar, the log, the budget
clock, the metrics and the checkpoints, and tells the helpers each step whether to go on and how
long the schedule is. Helpers are started with the "spawn"
method (safe in Jupyter), share the uint8 image cache through shared memory and get rank 0's
full state (weights, optimizer moments, step) when they start.

Nothing hangs: collectives time out (`COLLECTIVE_TIMEOUT_S`), a helper that dies closes its socket
so rank 0's next all-reduce fails at once, and rank 0 terminates its helpers on any exit.
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

from .errors import HelperFailed

# A step of the models meant for CPU takes well under a second; checkpoints are written by rank 0
# between steps while helpers wait in the next all-reduce, so allow minutes, not hours.
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


def auto_workers(device: torch.device, batch_size: int, total_steps: int | None,
                 budget_minutes: float | None) -> int:
    """workers=0 ("auto"): 2 processes on a CPU with at least 2 usable cores, for runs of at least
    AUTO_MIN_STEPS steps or AUTO_MIN_MINUTES minutes and an even batch; otherwise 1.
    (Measured on 2 cores only; with more cores each worker gets cores // 2 threads.)"""
    if device.type != "cpu" or not dist.is_available() or dist.is_initialized():
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
            raise ValueError(f"workers={workers} splits batches between CPU processes; the device is "
                             f"{device.type}: use workers=1 (or 0 = auto)")
        if batch_size % workers:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by workers ({workers})")
        if not dist.is_available():
            raise ValueError(f"workers={workers} needs torch.distributed, which this torch build lacks")


def threads_per_worker(workers: int) -> int:
    return max(1, usable_cpus() // workers)


def init_group(store_file: str, rank: int, world: int) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))


def agree(stop: bool, total_steps: int) -> tuple[bool, int]:
    """Rank 0's decision (stop now? schedule length?) -> every rank."""
    message = torch.tensor([int(stop), total_steps], dtype=torch.int64)
    dist.broadcast(message, src=0)
    return bool(message[0]), int(message[1])


def average_gradients(parameters: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Replace each gradient by its mean over the ranks, in one all-reduce; returns the mean loss
    (the loss of the whole batch: every rank holds the same number of rows)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().float().reshape(1)])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[-1]


def shareable(dataset):
    """What to hand a helper process for `dataset`: the data set itself when /dev/shm has room
    (torch.multiprocessing then moves its tensors to shared memory: no copy per helper), else
    numpy copies that travel through the pipe (Docker's default /dev/shm is only 64 MB)."""
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
        from .data import ImageDataset
        return ImageDataset(**{name: torch.from_numpy(value) if hasattr(value, "dtype") else value
                               for name, value in received.items()})
    return received


def _helper_entry(ready, target, args) -> None:
    """First code of a helper process: report ready, then run `target(*args)`."""
    ready.send(True)
    ready.close()
    target(*args)


def rows_of_rank(batch: int, rank: int, world: int) -> slice:
    share = batch // world
    return slice(rank * share, (rank + 1) * share)


class HelperProcesses:
    """Start ranks 1..world-1 as spawned processes and join the process group as rank 0.
    Use as a context manager around the training loop; on exit the group is destroyed and the
    helpers are joined (or terminated)."""

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
            init_group(store, 0, self.world)
        except BaseException:
            self._stop_helpers()
            raise
        return self

    def _wait_until_ready(self, pipes, timeout: float = COLLECTIVE_TIMEOUT_S) -> None:
        """Wait for each helper's "ready" (sent once it has imported jepa_lite and unpickled its
        arguments) or its death, whichever comes first: a helper that fails to start is an error
        now, not a wait on the process group."""
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
