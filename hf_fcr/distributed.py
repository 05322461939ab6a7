"""Several processes (``accelerate launch`` / ``torchrun``): shard the data, then gather or sum.

Every sample is seen by exactly one process and carries its global position, so gathered features come back in the
order one process would produce them (no padding duplicates, unlike ``even_batches=True``). Statistics are sums and
are reduced with a plain sum. Without a launcher (one process) everything here is a no-op.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["all_gather_object", "gather_rows", "is_main_process", "process_info", "reduce_sum"]


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_info() -> tuple[int, int]:
    """``(rank, world_size)``; under a launcher (``accelerate launch`` / ``torchrun``: ``WORLD_SIZE`` > 1) with no
    process group yet, creates one from the environment: gloo on CPU, nccl on GPU."""
    if not _launched():
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """True on the process that writes shared files and uploads (rank 0; the only one without a launcher)."""
    return process_info()[0] == 0


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of process 0, obj of process 1, ...]`` on every process (``[obj]`` without a launcher)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def gather_rows(positions: torch.Tensor, features: torch.Tensor, columns: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """Gather every process' rows and put them in global order by ``positions`` (an int64 key per row)."""
    if torch.distributed.get_world_size() == 1:
        return features, columns
    parts = all_gather_object((positions.cpu(), features.cpu(), {k: v for k, v in columns.items()}))
    all_pos = torch.cat([p[0] for p in parts])
    order = torch.argsort(all_pos, stable=True)
    if len(torch.unique(all_pos)) != len(all_pos):
        raise RuntimeError("two processes produced the same sample position: the data was not sharded exactly once.")
    feats = torch.cat([p[1] for p in parts])[order]
    merged: dict[str, Any] = {}
    for name in columns:
        values = [p[2][name] for p in parts]
        if all(torch.is_tensor(v) for v in values):
            merged[name] = torch.cat(values)[order]
        else:
            flat = [x for v in values for x in (v.tolist() if torch.is_tensor(v) else v)]
            merged[name] = [flat[i] for i in order.tolist()]
    return feats, merged


def reduce_sum(tensors: dict[str, torch.Tensor]) -> None:
    """Sum each tensor across processes, in place."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    for t in tensors.values():
        moved = t.to(device) if device is not None else t
        torch.distributed.all_reduce(moved, op=torch.distributed.ReduceOp.SUM)
        if moved is not t:
            t.copy_(moved)
