"""torch.distributed in one place: set up from torchrun's environment, rank-0 I/O, gathering.

Under ``torchrun --nproc_per_node=N -m harness ...`` the variables RANK, WORLD_SIZE and
LOCAL_RANK are set; without them everything runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


def init(device: str) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); a no-op alone."""
    info = from_environment()
    if not info.enabled:
        return info
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return info


def local_device(device: str, info: DistInfo) -> str:
    """Each process takes its own GPU (cuda:LOCAL_RANK); CPU stays CPU."""
    return f"cuda:{info.local_rank}" if device.startswith("cuda") and info.enabled else device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank 0 (in rank order); ``None`` elsewhere."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def mean_across_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of floats over ranks (same keys everywhere)."""
    if not info.enabled:
        return values
    import torch
    import torch.distributed as dist

    keys = list(values)  # every rank builds the dict in the same order
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return {k: float(v) / info.world for k, v in zip(keys, tensor.tolist())}


def sync_buffers(model, info: DistInfo) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch
    each rank holds its own running statistics; the checkpoint is rank 0's.
    """
    if not info.enabled:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)
