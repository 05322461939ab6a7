"""What a feature pass's results belong to, and where they are kept between runs.

One identity (``pass_identity``: the model's weights, the data, the dtype and layout of the pass, the preprocessing
and the columns) keys all three things saved from a pass: the feature cache, the collect checkpoint (running sums
of Eq. 3-4) and the extraction checkpoint (feature rows in parts). A saved file whose identity differs is refused
(checkpoints) or not used (cache).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from ..core.stats import EdgeStatistics
from ..utils.digest import values_digest, without_module
from ..utils.files import open_safetensors, read_json, write_json

__all__ = [
    "architecture_fingerprint",
    "cache_entry",
    "data_fingerprint",
    "head_fingerprint",
    "load_collect_state",
    "load_feature_parts",
    "model_fingerprint",
    "pass_identity",
    "save_cache_entry",
    "save_collect_state",
    "save_feature_part",
    "start_run",
]


def model_fingerprint(model: nn.Module, head: nn.Linear) -> str:
    """``values_digest`` of every parameter and buffer except the head's (edits to the head do not change the
    features); the dtype is part of a pass's identity on its own."""
    return values_digest(without_module((*model.named_parameters(), *model.named_buffers()), head))


def architecture_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class and module tree as ``repr`` prints it (each module's type and settings: a
    pooling's type, a layer's shape), which the weights' values do not capture."""
    return hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}".encode()).hexdigest()


def head_fingerprint(head: nn.Linear) -> str:
    """``values_digest`` of the head (statistics depend on the head through the logits)."""
    return values_digest(head.named_parameters())


def data_fingerprint(data: Any) -> str | None:
    """The ``datasets.Dataset`` fingerprint (changes with every transform of the data), or None for sources that
    have none (streams, DataLoaders)."""
    fingerprint = getattr(data, "_fingerprint", None)
    return fingerprint if isinstance(fingerprint, str) else None


def pass_identity(
    model: nn.Module,
    head: nn.Linear,
    data: Any,
    image_column: str,
    columns: list[str],
    autocast_dtype: torch.dtype | None,
    channels_last: bool,
    transform_config: Any,
) -> dict[str, Any]:
    """What the features of a pass depend on: the same for the cache, the collect and the extraction checkpoints.
    The weights alone do not say how they are wired (``reset_classifier(global_pool="max")`` changes the features,
    not the weights): the module tree does."""
    return {
        "model": model_fingerprint(model, head),
        "architecture": architecture_fingerprint(model),
        "data": data_fingerprint(data),
        "dtype": str(next(model.parameters()).dtype),
        "autocast_dtype": str(autocast_dtype),
        "channels_last": bool(channels_last),
        "transform": repr(transform_config),
        "image_column": image_column,
        "columns": list(columns),
    }


def _dumps(identity: dict[str, Any]) -> str:
    return json.dumps(identity, sort_keys=True)


# ------------------------------------------------------------------------------------------------ feature cache


def cache_entry(cache_dir: str | os.PathLike, identity: dict[str, Any]) -> str | None:
    """The cache folder for ``identity``, or None when the data has no fingerprint (streams and DataLoaders are not
    cached: nothing tells two of them apart)."""
    if identity["data"] is None:
        return None
    key = hashlib.sha256(_dumps(identity).encode()).hexdigest()[:32]
    return os.path.join(os.fspath(cache_dir), f"features-{key}")


def save_cache_entry(path: str, save: Any, damaged: bool = False) -> None:
    """Write an entry through ``save(folder)`` into a temporary folder, then rename it into place (a concurrent
    writer of the same entry wins; ours is dropped). A ``damaged`` entry already there is removed first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        save(tmp)
    except BaseException:  # a full disk: no half-written entry stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if damaged:
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.replace(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------- resumable passes


_FIX = "delete the checkpoint folder and start afresh without resume_from."


def start_run(directory: str | os.PathLike, rank: int, kind: str, identity: dict[str, Any], resume: bool) -> dict:
    """Begin (or, with ``resume``, continue) a checkpointed run of ``kind`` (``"features"`` or ``"collect"``) in
    ``directory``; returns the identity its files carry, which includes the run's id.

    A folder belongs to one run per process: a fresh run removes this process' ``kind`` files left by an older run
    and writes its run file first, so parts of another run are never read; a resumed run must find its run file
    with the same identity.

    Raises:
        FileNotFoundError: ``resume`` and the folder does not exist.
        ValueError: ``resume`` and the folder's run belongs to another model, data or arguments.
    """
    directory = os.fspath(directory)
    run_file = os.path.join(directory, f"{kind}.rank{rank}.run.json")
    if resume:
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"resume_from={directory!r} does not exist: start without resume_from.")
        if os.path.isfile(run_file):
            run = read_json(run_file, "the checkpoint's run file", _FIX)
            if run.get("identity") != json.loads(_dumps(identity)):
                raise ValueError(
                    f"the checkpoint in {directory} belongs to another model, dataset, batch size, number of "
                    "processes, rows or columns; resume with the same arguments, or start afresh in an empty folder "
                    "without resume_from."
                )
            return {**identity, "run": run["run"]}
        # the folder exists but this process saved nothing before the interruption: a fresh run
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(glob.escape(directory), f"{kind}*.rank{rank}.*")):
        os.remove(stale)
    run_id = uuid.uuid4().hex
    write_json(run_file, {"run": run_id, "identity": identity})
    return {**identity, "run": run_id}


def _checked_metadata(handle: Any, identity: dict[str, Any], what: str) -> dict[str, str]:
    """A saved file's metadata, after checking that it was made with the same model, data and arguments."""
    metadata = handle.metadata() or {}
    if metadata.get("identity") != _dumps(identity):
        raise ValueError(
            f"{what} belong to another model, dataset, batch size, number of processes, rows or columns; resume "
            "with the same arguments, or start afresh in an empty folder without resume_from."
        )
    return metadata


def _save_atomic(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path + ".tmp", metadata=metadata)
    os.replace(path + ".tmp", path)


def _state_path(directory: str | os.PathLike, rank: int) -> str:
    return os.path.join(os.fspath(directory), f"collect.rank{rank}.state.safetensors")


def save_collect_state(
    directory: str | os.PathLike, rank: int, stats: EdgeStatistics, identity: dict[str, Any], batches: int
) -> None:
    """Write the sums, what they belong to and the number of batches done as one file, replaced atomically."""
    metadata = {"identity": _dumps(identity), "batches": str(batches)}
    _save_atomic(_state_path(directory, rank), {k: v.cpu() for k, v in stats.tensors().items()}, metadata)


def load_collect_state(
    directory: str | os.PathLike, rank: int, stats: EdgeStatistics, identity: dict[str, Any]
) -> int:
    """Load saved sums into ``stats`` (in place) and return the number of batches they cover; 0 if there is no
    state yet. Raises ValueError if the state belongs to another model, dataset, batch size or rows."""
    path = _state_path(directory, rank)
    if not os.path.isfile(path):
        return 0
    with open_safetensors(path, "the collect state", _FIX) as f:
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
    positions: torch.Tensor,
    features: torch.Tensor,
    columns: dict[str, Any],
    identity: dict[str, Any],
) -> None:
    """Write one part of an interrupted feature extraction (the rows of ``batches`` batches), replaced atomically."""
    tensors = {"positions": positions, "features": features}
    other = {}
    for name, values in columns.items():
        if torch.is_tensor(values):
            tensors[f"column.{name}"] = values
        else:
            other[name] = list(values)
    metadata = {"identity": _dumps(identity), "batches": str(batches), "columns": json.dumps(other)}
    _save_atomic(_part_path(directory, rank, index), tensors, metadata)


def load_feature_parts(
    directory: str | os.PathLike, rank: int, identity: dict[str, Any]
) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]]:
    """``(batches done, [(positions, features, columns) per part])`` from the parts saved in ``directory``;
    ValueError if they belong to another model, dataset, batch size or columns."""
    parts, batches, index = [], 0, 0
    while os.path.isfile(path := _part_path(directory, rank, index)):
        with open_safetensors(path, "the feature part", _FIX) as f:
            metadata = _checked_metadata(f, identity, f"the features saved in {directory!s}")
            columns: dict[str, Any] = {
                k[len("column.") :]: f.get_tensor(k) for k in f.keys() if k.startswith("column.")
            }
            columns.update(json.loads(metadata.get("columns", "{}")))
            parts.append((f.get_tensor("positions"), f.get_tensor("features"), columns))
        batches += int(metadata["batches"])
        index += 1
    return batches, parts
