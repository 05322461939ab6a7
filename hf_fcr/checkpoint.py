"""Resumable statistics: ``collect``'s running sums saved atomically every N batches, and loaded to resume."""

from __future__ import annotations

import json
import os
from typing import Any

from .stats import EdgeStatistics

__all__ = ["load_collect_state", "save_collect_state"]


def _checked_metadata(handle: Any, identity: dict[str, Any], what: str) -> dict[str, str]:
    """A saved file's metadata, after checking that it was made with the same model, data and arguments."""
    metadata = handle.metadata() or {}
    if metadata.get("identity") != json.dumps(identity, sort_keys=True):
        raise ValueError(
            f"{what} belong to another model, dataset, batch size, rows or columns; resume with the same "
            "arguments, or start afresh in an empty folder without resume_from."
        )
    return metadata


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
        metadata = _checked_metadata(f, identity, f"the collect state in {directory!s}")
        for name, tensor in stats.tensors().items():
            saved = f.get_tensor(name)
            if saved.shape != tensor.shape:
                raise ValueError(f"the saved {name} has shape {tuple(saved.shape)}, expected {tuple(tensor.shape)}.")
            tensor.copy_(saved)
    return int(metadata["batches"])


def _part_path(directory: str | os.PathLike, rank: int, index: int) -> str:
    return os.path.join(os.fspath(directory), f"features.rank{rank}.part{index:06d}.safetensors")


def save_feature_part(
    directory: str | os.PathLike,
    rank: int,
    index: int,
    batches: int,
    positions: Any,
    features: Any,
    columns: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    """Write one part of an interrupted feature extraction (the rows of ``batches`` batches), replaced atomically."""
    import torch
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    tensors = {"positions": positions.contiguous(), "features": features.contiguous()}
    other = {}
    for name, values in columns.items():
        if torch.is_tensor(values):
            tensors[f"column.{name}"] = values.contiguous()
        else:
            other[name] = list(values)
    metadata = {
        "identity": json.dumps(identity, sort_keys=True),
        "batches": str(batches),
        "columns": json.dumps(other),
    }
    path = _part_path(directory, rank, index)
    save_file(tensors, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)


def load_feature_parts(
    directory: str | os.PathLike, rank: int, identity: dict[str, Any]
) -> tuple[int, list[tuple[Any, Any, dict[str, Any]]]]:
    """``(batches done, [(positions, features, columns) per part])`` from the parts saved in ``directory``;
    ValueError if they belong to another model, dataset, batch size or columns."""
    from safetensors import safe_open

    parts, batches, index = [], 0, 0
    while os.path.isfile(path := _part_path(directory, rank, index)):
        with safe_open(path, framework="pt") as f:
            metadata = _checked_metadata(f, identity, f"the features saved in {directory!s}")
            columns: dict[str, Any] = {
                k[len("column.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("column.")
            }
            columns.update(json.loads(metadata.get("columns", "{}")))
            parts.append((f.get_tensor("positions"), f.get_tensor("features"), columns))
        batches += int(metadata["batches"])
        index += 1
    return batches, parts
