"""Resumable statistics: ``collect``'s running sums saved atomically every N batches, and loaded to resume."""

from __future__ import annotations

import json
import os
from typing import Any

from .stats import EdgeStatistics

__all__ = ["load_collect_state", "save_collect_state"]


def _path(directory: str | os.PathLike, rank: int) -> str:
    return os.path.join(os.fspath(directory), f"collect_state.rank{rank}.safetensors")


def save_collect_state(
    directory: str | os.PathLike, rank: int, stats: EdgeStatistics, identity: dict[str, Any], batches: int
) -> None:
    """Write the sums, what they belong to and the number of batches done as one file, replaced atomically."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    path = _path(directory, rank)
    metadata = {"identity": json.dumps(identity, sort_keys=True), "batches": str(batches)}
    save_file({k: v.contiguous() for k, v in stats.tensors().items()}, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)


def load_collect_state(
    directory: str | os.PathLike, rank: int, stats: EdgeStatistics, identity: dict[str, Any]
) -> int:
    """Load saved sums into ``stats`` (in place) and return the number of batches they cover; 0 if there is no
    state yet. Raises ValueError if the state belongs to another model, dataset, batch size or rows."""
    from safetensors import safe_open

    path = _path(directory, rank)
    if not os.path.isfile(path):
        return 0
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("identity") != json.dumps(identity, sort_keys=True):
            raise ValueError(
                f"the collect state in {directory!s} was saved for another model, dataset, batch size or rows; "
                "resume with the same arguments, or start afresh without resume_from."
            )
        for name, tensor in stats.tensors().items():
            saved = f.get_tensor(name)
            if saved.shape != tensor.shape:
                raise ValueError(f"the saved {name} has shape {tuple(saved.shape)}, expected {tuple(tensor.shape)}.")
            tensor.copy_(saved)
    return int(metadata["batches"])
