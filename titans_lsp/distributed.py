"""Data parallelism under ``torchrun``: which process this is, and the few collectives training and eval use.

``torchrun --nproc_per_node N -m titans_lsp train ...`` (or ``eval``) starts N processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`from_env` joins them into one process group (NCCL on
GPUs, gloo on CPUs). Without those variables everything runs as one process and every collective is a
no-op, so the single-process code path is the same code.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def sum(self, value: float) -> float:
        """The sum of ``value`` over all processes."""
        return self._reduce(value, torch.distributed.ReduceOp.SUM)

    def max(self, value: float) -> float:
        return self._reduce(value, torch.distributed.ReduceOp.MAX)

    def _reduce(self, value: float, op) -> float:
        if not self.enabled:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(tensor, op=op)
        return float(tensor.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (a decision only rank 0 may take, e.g. a time limit)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out


SINGLE = Distributed()


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def from_env(device: str = "auto", timeout_s: float = 1800.0) -> Distributed:
    """Join the torchrun job described by the environment (idempotent), or return :data:`SINGLE`.
    NCCL when this process will use a GPU (``device`` auto or cuda, and one is present), else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not torch.distributed.is_initialized():
        use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo",
                                             timeout=datetime.timedelta(seconds=timeout_s))
    return Distributed(rank=rank, world=world, local_rank=local_rank)


def device_for(device: str, dist: Distributed) -> str:
    """The device flag for this process: each rank of a GPU job takes the GPU of its local rank."""
    if dist.enabled and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{dist.local_rank}"
    return device


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
