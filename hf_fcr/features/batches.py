"""Reading data sources in batches: a ``datasets.Dataset`` (from Arrow, so array columns never become Python
lists), a streaming ``datasets.IterableDataset``, or a torch ``DataLoader`` / iterable of dicts; each process reads
only its share. Image columns become tensors (PIL images through the checkpoint's preprocessing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

# datasets (and its pyarrow) is imported where a dataset is read: a DataLoader of tensors needs neither.

__all__ = [
    "class_label_names",
    "concat_column",
    "images_to_tensor",
    "iter_batches",
    "prepare_images",
    "to_tensor_column",
]


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
    """The batches of a map-style ``datasets.Dataset`` as items (read from Arrow, then ``prepare``d), so
    that a DataLoader's workers can prepare them."""

    def __init__(
        self,
        data: Any,
        columns: list[str],
        starts: list[int],
        end: int,
        batch_size: int,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None,
    ) -> None:
        self.columns, self.starts, self.end, self.batch_size, self.prepare = columns, starts, end, batch_size, prepare
        # a Dataset's own format or transform (set_format, with_transform) is honoured: rows are read through it
        self.formatted = data if has_own_format(data) else None
        image_like = (
            set() if self.formatted is not None else {c for c in columns if _is_image_feature(data.features[c])}
        )
        self.arrow_columns = [] if self.formatted is not None else [c for c in columns if c not in image_like]
        self.table_view = data.select_columns(self.arrow_columns).with_format("arrow") if self.arrow_columns else None
        self.python_view = data.select_columns(sorted(image_like)) if image_like else None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, Any]]:
        start = self.starts[i]
        end = min(start + self.batch_size, self.end)
        batch: dict[str, Any] = {}
        if self.formatted is not None:
            rows = self.formatted[start:end]
            missing = [c for c in self.columns if c not in rows]
            if missing:
                raise KeyError(
                    f"columns {missing} are not in the dataset's formatted rows (their keys: {list(rows)})."
                )
            batch = {c: rows[c] for c in self.columns}
        elif self.table_view is not None:
            table = self.table_view[start:end]
            batch.update({c: to_tensor_column(_arrow_to_numpy(table.column(c))) for c in self.arrow_columns})
        if self.python_view is not None:
            batch.update(self.python_view[start:end])
        return torch.arange(start, end), batch if self.prepare is None else self.prepare(batch)


def has_own_format(data: Any) -> bool:
    """True for a ``datasets.Dataset`` with a format or transform of its own (``set_format``, ``with_format``,
    ``set_transform``, ``with_transform``): its rows are read through it, as its owner would read them."""
    fmt = getattr(data, "format", None)
    return isinstance(fmt, dict) and fmt.get("type") is not None


def iter_batches(
    data: Any,
    columns: Sequence[str],
    batch_size: int,
    *,
    shard: tuple[int, int] = (0, 1),
    skip_batches: int = 0,
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """Yield ``(positions, {column: batch values})`` from a Dataset, IterableDataset, DataLoader or iterable of
    dicts; ``positions`` is each row's int64 key in the order of the whole source.

    With ``shard=(rank, world_size)``, ``world_size > 1``, this process reads only its share, each sample in exactly
    one process: a contiguous slice of a ``Dataset``; every ``world_size``-th example of a stream
    (``split_dataset_by_node``, strategy ``"examples"``); every ``world_size``-th batch of a DataLoader.
    ``skip_batches`` leaves out this process' first batches (to resume): a Dataset starts further on, a stream skips
    examples, a DataLoader's batches are read and dropped. Missing columns raise KeyError before any batch is read
    where the source knows its columns.

    For a ``Dataset``, ``prepare(batch)`` runs here on each batch read (e.g. ``prepare_images``), and
    ``num_workers`` > 0 has DataLoader workers do the reading and ``prepare`` (``pin_memory`` for GPU copies).
    """
    columns = list(dict.fromkeys(columns))
    known = getattr(data, "column_names", None)
    if known is not None and not has_own_format(data):  # a transform may add columns: checked on the rows
        missing = [c for c in columns if c not in known]
        if missing:
            raise KeyError(f"columns {missing} are not in the dataset (its columns: {list(known)}).")
    import datasets

    if isinstance(data, datasets.Dataset):
        n = len(data)
        rank, world_size = shard
        lo, hi = rank * n // world_size, (rank + 1) * n // world_size
        starts = list(range(lo + skip_batches * batch_size, hi, batch_size))
        reader = _DatasetBatches(data, columns, starts, hi, batch_size, prepare)
        if num_workers == 0:
            return (reader[i] for i in range(len(reader)))
        # workers read (and prepare) the next batches while the model runs
        return iter(
            torch.utils.data.DataLoader(reader, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
        )
    if isinstance(data, datasets.IterableDataset):
        return _stream_batches(data, columns, batch_size, shard, skip_batches)
    if isinstance(data, Iterable):
        return _loader_batches(data, columns, shard, skip_batches)
    raise TypeError(
        f"cannot read images from a {type(data).__name__}: pass a datasets.Dataset, a datasets.IterableDataset or "
        "a torch DataLoader yielding dicts."
    )


def _stream_batches(
    data: Any, columns: list[str], batch_size: int, shard: tuple[int, int], skip_batches: int
) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """``iter_batches`` of a streaming ``datasets.IterableDataset``: every ``world_size``-th example."""
    rank, world_size = shard
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


def _loader_batches(
    data: Iterable, columns: list[str], shard: tuple[int, int], skip_batches: int
) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
    """``iter_batches`` of a DataLoader or iterable of dicts: every ``world_size``-th batch."""
    rank, world_size = shard
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


def to_tensor_column(values: Any) -> Any:
    if torch.is_tensor(values):
        return values.detach().cpu()
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return torch.from_numpy(np.array(array, copy=True))
    return list(values)


def concat_column(parts: list[Any]) -> Any:
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


def prepare_images(
    batch: dict[str, Any], image_column: str, transform: Callable[[list[Any]], torch.Tensor] | None
) -> dict[str, Any]:
    """``batch`` with its ``image_column`` as a tensor (``images_to_tensor``); for ``iter_batches(prepare=...)``
    through ``functools.partial``, which DataLoader workers can pickle."""
    if image_column not in batch:
        return batch
    return {**batch, image_column: images_to_tensor(batch[image_column], transform)}


def class_label_names(data: Any, columns: Sequence[str]) -> dict[str, list[str]]:
    """``{column: names}`` for the columns of ``data`` that are ``datasets.ClassLabel`` features."""
    features = getattr(data, "features", None)
    if not isinstance(features, dict):
        return {}
    return {c: list(features[c].names) for c in columns if type(features.get(c)).__name__ == "ClassLabel"}
