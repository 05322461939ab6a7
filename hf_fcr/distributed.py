"""Several processes (``accelerate launch`` / ``torchrun``) through Accelerate: shard the data, then gather or sum.

Accelerate's ``PartialState`` gives the process index, count, main process and device (``cpu=True`` without CUDA:
without it, accelerate reports one process on a CPU machine), and its ``gather_object`` / ``reduce`` move the
results. Every sample is seen by exactly one process and carries its global position, so gathered features come
back in the order one process would produce them (no padding duplicates, unlike ``even_batches=True``); statistics
are sums, reduced with a plain sum. Without a launcher (one process) nothing here imports Accelerate.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["all_gather_object", "device", "gather_rows", "is_main_process", "process_info", "reduce_sum", "state"]


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state() -> Any:
    """Accelerate's ``PartialState`` for this process (created on first use: gloo on CPU, nccl on GPU)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def process_info() -> tuple[int, int]:
    """``(process index, number of processes)``: ``(0, 1)`` without a launcher."""
    if not _launched():
        return 0, 1
    s = state()
    return s.process_index, s.num_processes


def is_main_process() -> bool:
    """True on the process that writes shared files and uploads (the only one without a launcher)."""
    return not _launched() or state().is_main_process


def device() -> torch.device:
    """This process' device: its own GPU under a launcher (``LOCAL_RANK``), the first GPU alone, else the CPU."""
    if _launched():
        return state().device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def all_gather_object(obj: Any) -> list[Any]:
    """``[obj of process 0, obj of process 1, ...]`` on every process (``[obj]`` without a launcher)."""
    if not _launched():
        return [obj]
    from accelerate.utils import gather_object

    state()
    return gather_object([obj])


def gather_rows(positions: torch.Tensor, features: torch.Tensor, columns: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """Gather every process' rows and put them in global order by ``positions`` (an int64 key per row)."""
    if process_info()[1] == 1:
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
    """Sum each tensor across processes, in place (Accelerate's ``reduce``, on the process' device for nccl)."""
    if not _launched():
        return
    from accelerate.utils import reduce

    s = state()
    for t in tensors.values():
        moved = t.to(s.device) if s.device.type == "cuda" else t
        t.copy_(reduce(moved, reduction="sum").to(t.device))
