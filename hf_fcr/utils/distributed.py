"""Several processes (``accelerate launch`` / ``torchrun``) through Accelerate: shard the data, then gather or sum.

Accelerate's ``PartialState`` gives the process index, count, main process and device (``cpu=True`` without CUDA:
without it, accelerate reports one process on a CPU machine), and its ``gather_object`` / ``reduce`` move the
results. Every sample is seen by exactly one process and carries its global position, so gathered features come
back in the order one process would produce them (no padding duplicates, unlike ``even_batches=True``); statistics
are sums, reduced with a plain sum. Without a launcher (one process) nothing here imports Accelerate.

A clean exit: when hf_fcr is what created the default process group (the first ``state()`` call found none), it
registers an ``atexit`` handler that destroys that group before interpreter shutdown. Without it a gloo group still
alive at shutdown makes one rank abort now and then (``terminate called without an active exception``, SIGABRT)
after all the work is done, and the launcher reports the job as failed. The handler uses no collective (no barrier:
a rank that exits early must not wait for the others), and does nothing when the group is already gone or is no
longer the one hf_fcr created. A group the user created (``torch.distributed.init_process_group``, an
``Accelerator`` or ``PartialState`` built before hf_fcr's first call) is the user's to destroy: end the script with
``torch.distributed.destroy_process_group()``.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any

import torch

# accelerate is imported where processes are counted or talk: one process never needs it.

__all__ = [
    "all_gather_object",
    "device",
    "gather_rows",
    "is_main_process",
    "owns_process_group",
    "process_info",
    "reduce_sum",
    "run_on_main",
    "state",
]

_owned_group: Any = None  # the default process group hf_fcr created, destroyed at exit
_run_calls: dict[str, int] = {}  # run_on_main's calls per label on this process


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def state() -> Any:
    """Accelerate's ``PartialState`` for this process (created on first use: gloo on CPU, nccl on GPU)."""
    from accelerate import PartialState

    created_here = _launched() and not _group_initialized()
    s = PartialState(cpu=not torch.cuda.is_available())
    if created_here and _group_initialized():
        _own_default_group()
    return s


def _group_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _own_default_group() -> None:
    """Remember the default group as hf_fcr's and destroy it at exit (registered once per group)."""
    global _owned_group
    _owned_group = torch.distributed.group.WORLD
    atexit.register(_destroy_owned_group)


def _destroy_owned_group() -> None:
    """The ``atexit`` handler: destroy hf_fcr's default group if it is still the live one (no collective call)."""
    global _owned_group
    group, _owned_group = _owned_group, None
    if group is not None and _group_initialized() and torch.distributed.group.WORLD is group:
        torch.distributed.destroy_process_group()


def owns_process_group() -> bool:
    """True when hf_fcr created the live default process group and will destroy it at exit."""
    return _owned_group is not None and _group_initialized() and torch.distributed.group.WORLD is _owned_group


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


def run_on_main(fn: Any, label: str) -> Any:
    """``fn()`` on the main process only; every other process that calls it for the same ``label`` returns once it is
    done (with None), and raises (RuntimeError with its message) if it failed. Without a launcher, simply ``fn()``.

    No collective call: the main process only posts its outcome in the process group's key-value store, so a script
    that calls this on the main process alone (``if is_main_process(): remover.save_pretrained(...)``) never blocks.
    The others wait for the main process' n-th call with this ``label`` (their own n-th call)."""
    if not _launched():
        return fn()
    state()  # the process group and its store
    n = _run_calls[label] = _run_calls.get(label, 0) + 1
    key = f"hf_fcr/run_on_main/{label}/{n}"
    store = torch.distributed.distributed_c10d._get_default_store()
    if is_main_process():
        try:
            result = fn()
        except Exception as err:
            store.set(key, f"failed: {type(err).__name__}: {err}")
            raise
        store.set(key, "done")
        return result
    store.wait([key], timedelta(days=1))  # as long as the main process takes; a launcher ends us if it dies
    outcome = store.get(key).decode()
    if outcome != "done":
        raise RuntimeError(f"the main process {outcome}")
    return None
