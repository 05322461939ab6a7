"""The feature pass: images -> model -> the head's input, with the requested dataset columns alongside.

The backbone runs once per dataset; everything after works on the ``FeatureSet`` (features ``[N, D]`` plus columns).
Sources: a ``datasets.Dataset`` (read in batches from Arrow, so array columns never become Python lists), a streaming
``datasets.IterableDataset``, or a torch ``DataLoader`` yielding dicts. PIL images go through ``transform`` (the
checkpoint's own preprocessing); arrays and tensors already shaped for the model are used as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .heads import HeadCapture

__all__ = ["FeatureSet", "extract_features", "iter_batches", "iter_features"]

FEATURES_FILE = "features.safetensors"
COLUMNS_FILE = "columns.json"


@dataclass
class FeatureSet:
    """Head inputs ``features`` ``[N, D]`` (float32) and the dataset columns kept with them (1-D, length N);
    ``label_names`` holds the names of integer columns that were ``datasets.ClassLabel`` features."""

    features: torch.Tensor
    columns: dict[str, Any] = field(default_factory=dict)
    label_names: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(self.features)
        if self.features.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {tuple(self.features.shape)}.")
        for name, values in self.columns.items():
            if len(values) != len(self.features):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.features)} feature rows.")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def __getitem__(self, name: str) -> Any:
        if name not in self.columns:
            raise KeyError(
                f"column {name!r} is not in this FeatureSet (columns: {self.column_names}); pass it in "
                "columns= when extracting features."
            )
        return self.columns[name]

    def labels(self, name: str) -> torch.Tensor:
        """Column ``name`` as an int64 tensor of class indices (ValueError if it is not integer-valued)."""
        values = self[name]
        if not torch.is_tensor(values):
            array = np.asarray(values)
            if array.dtype.kind not in "biuf":
                raise ValueError(
                    f"column {name!r} holds {array.dtype} values; class labels must be integer indices (map names to "
                    "indices first, e.g. with the model's label2id)."
                )
            values = torch.from_numpy(np.array(array, copy=True))
        tensor = values
        if tensor.dtype.is_floating_point:
            if not torch.isfinite(tensor).all() or not torch.equal(tensor, tensor.round()):
                raise ValueError(f"column {name!r} holds non-integer values; class labels must be integers.")
        elif tensor.dtype == torch.bool:
            pass
        elif not (tensor.dtype.is_signed or tensor.dtype == torch.uint8):
            raise ValueError(f"column {name!r} has dtype {tensor.dtype}; class labels must be integers.")
        return tensor.to(torch.long)

    def select(self, indices: Sequence[int] | torch.Tensor) -> FeatureSet:
        """The rows at ``indices`` (a list, index tensor or boolean mask)."""
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.to(torch.long)
        columns = {}
        for name, values in self.columns.items():
            if torch.is_tensor(values):
                columns[name] = values[index]
            else:
                columns[name] = [values[i] for i in index.tolist()]
        return FeatureSet(self.features[index], columns, dict(self.label_names))

    def save(self, path: str | os.PathLike) -> None:
        """Write ``features.safetensors`` (features and tensor columns) and ``columns.json`` (other columns)."""
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        tensors = {"features": self.features.contiguous()}
        other = {}
        for name, values in self.columns.items():
            if torch.is_tensor(values):
                tensors[f"column.{name}"] = values.contiguous()
            else:
                other[name] = list(values)
        save_file(tensors, os.path.join(path, FEATURES_FILE))
        with open(os.path.join(path, COLUMNS_FILE), "w") as f:
            json.dump({"columns": other, "label_names": self.label_names}, f)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureSet:
        from safetensors.torch import load_file

        file = os.path.join(path, FEATURES_FILE)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"no {FEATURES_FILE} in {path!s}: not a saved FeatureSet.")
        tensors = load_file(file)
        columns: dict[str, Any] = {k[len("column.") :]: v for k, v in tensors.items() if k.startswith("column.")}
        columns_file = os.path.join(path, COLUMNS_FILE)
        label_names = {}
        if os.path.isfile(columns_file):
            with open(columns_file) as f:
                extra = json.load(f)
            columns.update(extra.get("columns", {}))
            label_names = extra.get("label_names", {})
        return cls(tensors["features"], columns, label_names)


def _arrow_to_numpy(column: Any) -> np.ndarray:
    """A (chunked) Arrow column of scalars or fixed-shape nested lists as an ``[n, *shape]`` array (no Python
    objects in between)."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(array.type, pa.ExtensionType):  # datasets' ArrayND columns
        array = array.storage
    n = len(array)
    shape: list[int] = []
    while (
        pa.types.is_list(array.type) or pa.types.is_large_list(array.type) or pa.types.is_fixed_size_list(array.type)
    ):
        if array.null_count:
            raise ValueError("the column has missing (null) entries.")
        lengths = pa.compute.list_value_length(array).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise ValueError("the column's nested lists have different lengths; images in a batch must share a shape.")
        shape.append(int(lengths[0]) if len(lengths) else 0)
        array = array.flatten()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return np.asarray(array.to_pylist(), dtype=object)
    return array.to_numpy(zero_copy_only=False).reshape(n, *shape)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.")


def _is_image_feature(feature: Any) -> bool:
    return type(feature).__name__ == "Image"


def _batch_len(batch: dict[str, Any]) -> int:
    return len(next(iter(batch.values())))


class _DatasetBatches(torch.utils.data.Dataset):
    """The batches of a map-style ``datasets.Dataset`` as items (read from Arrow; images through ``transform``), so
    that a DataLoader's workers can prepare them."""

    def __init__(
        self,
        data: Any,
        columns: list[str],
        starts: list[int],
        end: int,
        batch_size: int,
        image_column: str | None,
        transform: Callable[[list[Any]], torch.Tensor] | None,
    ) -> None:
        self.columns, self.starts, self.end, self.batch_size = columns, starts, end, batch_size
        self.image_column, self.transform = image_column, transform
        image_like = {c for c in columns if _is_image_feature(data.features[c])}
        self.arrow_columns = [c for c in columns if c not in image_like]
        self.table_view = data.select_columns(self.arrow_columns).with_format("arrow") if self.arrow_columns else None
        self.python_view = data.select_columns(sorted(image_like)) if image_like else None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        start = self.starts[i]
        end = min(start + self.batch_size, self.end)
        batch: dict[str, Any] = {}
        if self.table_view is not None:
            table = self.table_view[start:end]
            batch.update({c: _to_tensor_column(_arrow_to_numpy(table.column(c))) for c in self.arrow_columns})
        if self.python_view is not None:
            batch.update(self.python_view[start:end])
        if self.image_column in batch:
            batch[self.image_column] = images_to_tensor(batch[self.image_column], self.transform)
        return torch.arange(start, end), batch


def iter_batches(
    data: Any,
    columns: Sequence[str],
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    skip_batches: int = 0,
    image_column: str | None = None,
    transform: Callable[[list[Any]], torch.Tensor] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """Yield ``(positions, {column: batch values})`` from a Dataset, IterableDataset, DataLoader or iterable of
    dicts; ``positions`` is each row's int64 key in the order of the whole source.

    With ``world_size > 1`` this process reads only its share, each sample in exactly one process: a contiguous
    slice of a ``Dataset``; every ``world_size``-th example of a stream (``split_dataset_by_node``, strategy
    ``"examples"``); every ``world_size``-th batch of a DataLoader. ``skip_batches`` leaves out this process' first
    batches (to resume): a Dataset starts further on, a stream skips examples, a DataLoader's batches are read and
    dropped. Missing columns raise KeyError before any batch is read where the source knows its columns.

    For a ``Dataset``, ``image_column`` is turned into a tensor here (PIL images through ``transform``), and
    ``num_workers`` > 0 has DataLoader workers do the reading and preprocessing (``pin_memory`` for GPU copies).
    """
    columns = list(dict.fromkeys(columns))
    known = getattr(data, "column_names", None)
    if known is not None:
        missing = [c for c in columns if c not in known]
        if missing:
            raise KeyError(f"columns {missing} are not in the dataset (its columns: {list(known)}).")
    import datasets

    if isinstance(data, datasets.Dataset):
        n = len(data)
        lo, hi = rank * n // world_size, (rank + 1) * n // world_size
        starts = list(range(lo + skip_batches * batch_size, hi, batch_size))
        reader = _DatasetBatches(data, columns, starts, hi, batch_size, image_column, transform)
        if num_workers == 0:
            yield from (reader[i] for i in range(len(reader)))
        else:  # workers read (and preprocess) the next batches while the model runs
            yield from torch.utils.data.DataLoader(
                reader, batch_size=None, num_workers=num_workers, pin_memory=pin_memory
            )
        return
    if isinstance(data, datasets.IterableDataset):
        stream = data.select_columns(columns)
        if world_size > 1:
            from datasets.distributed import split_dataset_by_node

            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size, strategy="examples")
        seen = skip_batches * batch_size
        if seen:
            stream = stream.skip(seen)
        features = stream.features
        as_arrow = features is not None and not any(_is_image_feature(features[c]) for c in columns)
        if as_arrow:  # read array columns from Arrow batches: no Python lists in between
            stream = stream.with_format("arrow")
        for batch in stream.iter(batch_size=batch_size):
            if as_arrow:
                batch = {c: _arrow_to_numpy(batch.column(c)) for c in columns}
            n = _batch_len(batch)
            yield rank + world_size * torch.arange(seen, seen + n), batch
            seen += n
        return
    if isinstance(data, Iterable):
        for index, batch in enumerate(data):
            if not isinstance(batch, dict):
                raise TypeError(f"expected batches as dicts of columns, got {type(batch).__name__}.")
            missing = [c for c in columns if c not in batch]
            if missing:
                raise KeyError(f"columns {missing} are not in the batches (their keys: {list(batch)}).")
            if index % world_size != rank or index // world_size < skip_batches:
                continue
            batch = {c: batch[c] for c in columns}
            yield index * 2**32 + torch.arange(_batch_len(batch)), batch
        return
    raise TypeError(
        f"cannot read images from a {type(data).__name__}: pass a datasets.Dataset, a datasets.IterableDataset or "
        "a torch DataLoader yielding dicts."
    )


def _to_tensor_column(values: Any) -> Any:
    if torch.is_tensor(values):
        return values.detach().cpu()
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return torch.from_numpy(np.array(array, copy=True))
    return list(values)


def _concat(parts: list[Any]) -> Any:
    if all(torch.is_tensor(p) for p in parts):
        return torch.cat(parts)
    out: list[Any] = []
    for p in parts:
        out.extend(p.tolist() if torch.is_tensor(p) else p)
    return out


def images_to_tensor(values: Any, transform: Callable[[list[Any]], torch.Tensor] | None) -> torch.Tensor:
    """A batch of images as a float tensor: PIL images through ``transform``; arrays and tensors as they are."""
    if isinstance(values, (list, tuple)) and values and _is_pil(values[0]):
        if transform is None:
            raise ValueError(
                "the image column holds PIL images but the model has no preprocessing: pass transform= (a callable "
                "mapping a list of PIL images to a [B, C, H, W] tensor) or load the model with from_pretrained."
            )
        return transform(list(values))
    if torch.is_tensor(values):
        return values
    if isinstance(values, (list, tuple)) and values and torch.is_tensor(values[0]):
        return torch.stack(list(values))
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"cannot turn an image column of dtype {array.dtype} into a tensor.")
    # copy into a fresh (aligned) torch buffer: Arrow slices can start mid-cache-line, which slows convolutions
    out = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype)
    out.numpy()[...] = array
    return out


def iter_features(
    model: nn.Module,
    head: nn.Linear,
    data: Any,
    image_column: str = "image",
    columns: Sequence[str] = ("label",),
    batch_size: int = 64,
    transform: Callable[[list[Any]], torch.Tensor] | None = None,
    head_name: str = "head",
    device: torch.device | str | None = None,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    skip_batches: int = 0,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """Run ``model`` over this process' share of ``data``, yielding ``(positions, head inputs [B, D] float32 on
    the CPU, {column: values})`` per batch: the streaming core of ``extract_features`` and ``collect``."""
    from tqdm.auto import tqdm

    from .distributed import process_info

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    columns = [c for c in dict.fromkeys(columns) if c != image_column]
    rank, world_size = process_info()
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    capture = HeadCapture(model, head, head_name)
    was_training = model.training
    model.eval()
    total = len(data) if hasattr(data, "__len__") and world_size == 1 else None
    bar = tqdm(total=total, disable=not progress or rank != 0, desc="features", unit="img")
    try:
        with capture.hooked(), torch.inference_mode():
            batches = iter_batches(
                data,
                [image_column, *columns],
                batch_size,
                rank,
                world_size,
                skip_batches,
                image_column,
                transform,
                num_workers,
                pin_memory=device.type == "cuda",
            )
            for pos, batch in batches:
                pixels = images_to_tensor(batch[image_column], transform)
                pixels = pixels.to(
                    device=device, dtype=param.dtype if param.dtype.is_floating_point else None, non_blocking=True
                )
                if channels_last and pixels.ndim == 4:
                    pixels = pixels.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                    output = model(pixels)
                f, _ = capture.features(output)
                f = f.float().cpu()
                if not torch.isfinite(f).all():
                    raise ValueError("the model produced NaN or inf features: check the inputs' preprocessing.")
                bar.update(len(f))
                yield pos, f, {c: _to_tensor_column(batch[c]) for c in columns}
    finally:
        bar.close()
        model.train(was_training)


def extract_features(
    model: nn.Module,
    head: nn.Linear,
    data: Any,
    image_column: str = "image",
    columns: Sequence[str] = ("label",),
    batch_size: int = 64,
    gather: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume_from: str | os.PathLike | None = None,
    **kwargs: Any,
) -> FeatureSet:
    """Run ``model`` over ``data`` once and return the head's inputs with the requested ``columns``.

    Keyword arguments go to ``iter_features``: ``transform``, ``head_name``, ``device``, ``progress``,
    ``autocast_dtype`` (e.g. ``torch.bfloat16`` runs the pass under ``torch.autocast``) and ``channels_last``.
    Features are returned as float32 on the CPU.

    Under ``accelerate launch`` / ``torchrun`` each process runs its share of the data; with ``gather=True`` every
    process then gets all rows in the order one process would produce (``gather=False``: only its own rows).

    ``checkpoint_dir`` saves the rows every ``checkpoint_every`` batches (atomically, in parts, one series per
    process); ``resume_from`` (the same folder) loads them and runs only the remaining batches, so an interrupted
    run gives exactly what an uninterrupted one gives. Parts made with another model, dataset, batch size or
    columns are refused.
    """
    from .checkpoint import load_feature_parts, save_feature_part
    from .distributed import gather_rows, process_info

    if resume_from is not None:
        if checkpoint_dir is not None and os.path.abspath(checkpoint_dir) != os.path.abspath(resume_from):
            raise ValueError("resume_from and checkpoint_dir must be the same folder (the parts continue there).")
        checkpoint_dir = resume_from
    rank, world_size = process_info()
    columns = [c for c in dict.fromkeys(columns) if c != image_column]
    feats: list[torch.Tensor] = []
    positions: list[torch.Tensor] = []
    kept: dict[str, list[Any]] = {c: [] for c in columns}
    identity = {
        "model": model_fingerprint(model, head),
        "data": data_fingerprint(data),
        "batch_size": batch_size,
        "image_column": image_column,
        "columns": columns,
    }
    done, parts = (0, []) if resume_from is None else load_feature_parts(resume_from, rank, identity)
    for pos, f, cols in parts:
        positions.append(pos)
        feats.append(f)
        for c in columns:
            kept[c].append(cols[c])
    saved_rows, part_index = len(feats), len(parts)
    batches = iter_features(model, head, data, image_column, columns, batch_size, skip_batches=done, **kwargs)
    for pos, f, cols in batches:
        feats.append(f)
        positions.append(pos)
        for c in columns:
            kept[c].append(cols[c])
        done += 1
        if checkpoint_dir is not None and done % checkpoint_every == 0:
            new = slice(saved_rows, len(feats))
            save_feature_part(
                checkpoint_dir,
                rank,
                part_index,
                len(feats) - saved_rows,
                torch.cat(positions[new]),
                torch.cat(feats[new]),
                {c: _concat(kept[c][new]) for c in columns},
                identity,
            )
            saved_rows, part_index = len(feats), part_index + 1
    features = torch.cat(feats) if feats else torch.zeros(0, head.in_features)
    columns_out = {c: _concat(v) if v else torch.zeros(0, dtype=torch.long) for c, v in kept.items()}
    if world_size > 1 and gather:
        pos = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long)
        features, columns_out = gather_rows(pos, features, columns_out)
    if len(features) == 0 and (world_size == 1 or gather):
        raise ValueError("the dataset is empty: feature extraction needs at least one sample.")
    return FeatureSet(features, columns_out, class_label_names(data, columns))


def class_label_names(data: Any, columns: Sequence[str]) -> dict[str, list[str]]:
    """``{column: names}`` for the columns of ``data`` that are ``datasets.ClassLabel`` features."""
    features = getattr(data, "features", None)
    if not isinstance(features, dict):
        return {}
    return {c: list(features[c].names) for c in columns if type(features.get(c)).__name__ == "ClassLabel"}


def model_fingerprint(model: nn.Module, head: nn.Linear) -> str:
    """SHA-256 of every parameter and buffer except the head's (edits to the head do not change the features)."""
    import hashlib

    head_tensors = {id(t) for t in (*head.parameters(), *head.buffers())}
    digest = hashlib.sha256()
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if id(tensor) in head_tensors:
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(data: Any) -> str | None:
    """The ``datasets.Dataset`` fingerprint (changes with every transform of the data), or None for sources that
    have none (streams, DataLoaders): those are not cached."""
    fingerprint = getattr(data, "_fingerprint", None)
    return fingerprint if isinstance(fingerprint, str) else None
