"""The feature pass: images -> model -> the head's input, with the requested dataset columns alongside.

A ``FeaturePass`` is one model's pass: the model, the head whose input it keeps, the preprocessing and how it runs
(``PassOptions``: batch size, device, dtype, layout, workers, checkpoints). ``extract`` keeps the rows (a
``FeatureSet``: features ``[N, D]`` plus columns) and ``collect`` keeps only the running sums of Eq. 3-4, so its
memory does not grow with the data. Both run on this process' share of the data under ``accelerate launch`` /
``torchrun``, both can save a checkpoint every N batches and resume from it, and both key what they save by the
pass's ``identity`` (``pass_state.pass_identity``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.stats import EdgeStatistics
from ..utils import distributed
from ..utils.digest import values_digest
from .batches import (
    class_label_names,
    concat_column,
    images_to_tensor,
    iter_batches,
    prepare_images,
    to_tensor_column,
)
from .feature_set import FeatureSet, label_outside, label_tensor
from .heads import HeadCapture, not_logits
from .pass_state import (
    cache_entry,
    head_fingerprint,
    load_collect_state,
    load_feature_parts,
    pass_identity,
    save_cache_entry,
    save_collect_state,
    save_feature_part,
    start_run,
)

__all__ = ["BatchChecks", "FeaturePass", "PassOptions"]

logger = logging.getLogger(__name__)

# Features an extraction keeps on the device before copying them to the host in one go (one synchronization per
# 256 MiB: 32,768 rows of a 2,048-wide head).
DEVICE_ROWS_BYTES = 2**28


class BatchChecks:
    """The value checks of a pass, kept on the device: each kind of problem keeps the first bad ``(batch, row)``
    as one device integer (and, for labels, the bad value), so that no batch waits for the host; ``raise_first``
    reads them all at once.

    Args:
        image_column, head_name, label_column: named in the errors.
        num_classes: the head's outputs, the range of the labels.
    """

    _NONE = 2**62  # no bad row yet
    _ROW_BITS = 32  # a code is batch * 2**32 + row
    _ORDER = ("images", "head", "features", "labels", "logits")  # at one row, the cause before its effects

    def __init__(
        self,
        image_column: str = "image",
        head_name: str = "head",
        label_column: str = "label",
        num_classes: int | None = None,
    ) -> None:
        self.image_column, self.head_name = image_column, head_name
        self.label_column, self.num_classes = label_column, num_classes
        self.first: dict[str, torch.Tensor] = {}
        self.values: dict[str, torch.Tensor] = {}

    def record(self, kind: str, bad: torch.Tensor, batch: int, values: torch.Tensor | None = None) -> None:
        """Note the rows of batch ``batch`` where ``bad`` (a bool vector) holds, for problem ``kind``: ``"images"``,
        ``"head"``, ``"features"``, ``"labels"`` or ``"logits"``; ``values`` (``[B]``): the value of the first bad
        row is kept for the error (a label)."""
        if bad.numel() == 0:
            return
        rows = torch.arange(len(bad), device=bad.device) + (batch << self._ROW_BITS)
        codes = torch.where(bad, rows, self._NONE)
        code, seen = codes.min(), self.first.get(kind)
        if values is not None:
            value = values.index_select(0, codes.argmin().view(1))[0].double()  # [tensor] would read the index
            self.values[kind] = value if seen is None else torch.where(code < seen, value, self.values[kind])
        self.first[kind] = code if seen is None else torch.minimum(seen, code)

    def raise_first(self) -> None:
        """Raise the error of the first bad row of any kind (one read of the device, two with a value), or
        nothing."""
        if not self.first:
            return
        codes = dict(zip(self.first, torch.stack(list(self.first.values())).tolist()))
        found = sorted((code, self._ORDER.index(kind), kind) for kind, code in codes.items() if code < self._NONE)
        if not found:
            return
        code, _, kind = found[0]
        batch, row = code >> self._ROW_BITS, code & (2**self._ROW_BITS - 1)
        where = f"batch {batch}, row {row}"
        if kind == "images":
            raise ValueError(
                f"the image column {self.image_column!r} holds NaN or inf values ({where}): clean or re-preprocess "
                "the data."
            )
        if kind == "head":
            raise not_logits(self.head_name, f"their values differ at {where}")
        if kind == "labels":
            value = self.values[kind].item()
            if value != value or value != round(value):  # NaN, or a fraction
                raise ValueError(
                    f"batch {batch}: column {self.label_column!r} holds non-integer values (row {row}: {value}); "
                    "class labels must be integers."
                )
            raise ValueError(f"batch {batch}: {label_outside(int(value), self.label_column, row, self.num_classes)}")
        if kind == "logits":
            raise ValueError(f"the head's logits are NaN or inf ({where}): check the head's weights.")
        raise ValueError(f"the model produced NaN or inf features ({where}): check the inputs' preprocessing.")

    def labels(self, values: Any, batch: int) -> torch.Tensor:
        """A batch's label column as int64 class indices on the device it is on, checked there (``record``). On
        the host a bad label raises at once (after any problem of an earlier batch); on a device it is named when
        the pass reads its checks, and is replaced by class 0 meanwhile, so that no index leaves the statistics'
        range (the pass never keeps a batch it raises for).

        Raises:
            ValueError: a bad label on the host, or a column that cannot hold class indices (strings, complex
                numbers).
        """
        values = label_tensor(values, self.label_column)
        # compared in int64 or float64: a uint8 column compared with 1000 would wrap the bound
        labels = values.double() if values.dtype.is_floating_point else values.long()
        bad = (labels < 0) | (labels >= self.num_classes)
        if labels.dtype.is_floating_point:
            bad |= labels != labels.round()  # fractions and NaN
        self.record("labels", bad, batch, values=labels)
        if not _on_device(bad) and bool(bad.any()):  # read on the host, where they are: no wait for a device
            self.raise_first()
        return torch.where(bad, 0, labels).long()


def _nonfinite_rows(t: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: the rows of ``t`` (floating point) with a NaN or inf.

    One read of ``t``: each row's minimum and maximum (``aminmax`` propagates NaN; -inf is a minimum, inf a
    maximum), taken in ``t``'s own memory order, so channels-last images are not first copied by a ``flatten``.
    ``isfinite`` itself makes four passes over the whole tensor and writes a float copy of it (``abs``)."""
    if t.ndim == 1:
        return ~torch.isfinite(t)
    if t.numel() == 0:
        return torch.zeros(len(t), dtype=torch.bool, device=t.device)
    order = sorted(range(1, t.ndim), key=t.stride, reverse=True)
    lo, hi = torch.aminmax(t.permute(0, *order).reshape(len(t), -1), dim=1)  # a view when the rows are dense
    return ~(torch.isfinite(lo) & torch.isfinite(hi))


def _autocast(device_type: str, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` on ``device_type`` to ``dtype`` (disabled when ``dtype`` is None); nothing where autocast
    does not exist (the meta device) and none is asked for."""
    if dtype is None and not _has_autocast(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def _has_autocast(device_type: str) -> bool:
    available = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    return device_type in ("cpu", "cuda") if available is None else available(device_type)


def _host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` without the host waiting for the work queued there. A CUDA copy from pageable memory
    waits for everything queued on the stream, ``non_blocking`` or not, so a CPU tensor is first staged in pinned
    memory (as a DataLoader's ``pin_memory`` does: torch's caching host allocator keeps the block until the copy is
    done)."""
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def _column(values: Any) -> Any:
    """A batch's column as the pass yields it: a tensor stays where the source put it (reading one on an
    accelerator would wait for it; ``extract`` copies the rows to the host in one go), anything else as
    ``to_tensor_column`` reads it."""
    return values.detach() if torch.is_tensor(values) else to_tensor_column(values)


def _on_device(value: Any) -> bool:
    return torch.is_tensor(value) and value.device.type != "cpu"


def _to_host(parts: list[Any], indices: list[int]) -> None:
    """Copy the tensors at ``indices`` of ``parts`` that are on a device to the host, one copy per device (in
    place)."""
    moving = [i for i in indices if _on_device(parts[i])]
    for device in dict.fromkeys(parts[i].device for i in moving):
        same = [i for i in moving if parts[i].device == device]
        host = torch.cat([parts[i] for i in same]).cpu().split([len(parts[i]) for i in same])
        for i, part in zip(same, host):
            parts[i] = part


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` are one device (``cuda`` is the current CUDA device)."""

    def index(d: torch.device) -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and index(a) == index(b)


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` are views of the same memory with the same shape (nothing to compare)."""
    return a.shape == b.shape and a.stride() == b.stride() and a.data_ptr() == b.data_ptr() and a.dtype == b.dtype


def _close(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise closeness of a head's output and the logits, on their device."""
    return torch.isclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


@dataclass(frozen=True)
class PassOptions:
    """How a pass over the data runs.

    Attributes:
        batch_size: images per forward pass.
        device: where the model runs (None: where its parameters are).
        progress: show a tqdm progress bar (main process only).
        autocast_dtype: e.g. ``torch.bfloat16`` to run the pass under ``torch.autocast``.
        channels_last: feed image batches in channels-last memory format.
        num_workers: DataLoader workers that read and preprocess the next batches of a ``datasets.Dataset``.
        checkpoint_dir: save the pass's state there every ``checkpoint_every`` batches (atomically).
        checkpoint_every: batches between two saves.
        resume_from: a ``checkpoint_dir`` of an interrupted run with the same identity: continue from it.
    """

    batch_size: int = 64
    device: torch.device | str | None = None
    progress: bool = False
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    num_workers: int = 0
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = 100
    resume_from: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        for name in ("batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {self.num_workers!r}.")
        if self.resume_from is not None:
            if self.checkpoint_dir is not None and os.path.abspath(self.checkpoint_dir) != os.path.abspath(
                self.resume_from
            ):
                raise ValueError("resume_from and checkpoint_dir must be the same folder (the parts continue there).")
            object.__setattr__(self, "checkpoint_dir", self.resume_from)

    @classmethod
    def for_device(cls, device: Any = "auto", **options: Any) -> PassOptions:
        """Options for a pass; ``device="auto"`` is this process' device from Accelerate's state (its own GPU under a
        launcher, the GPU alone), or None on a CPU machine: the pass runs where the model's parameters are."""
        if device == "auto":
            device = distributed.device()
            if device.type == "cpu":
                device = None
        return cls(device=device, **options)

    def checkpoint_due(self, batches_done: int) -> bool:
        return self.checkpoint_dir is not None and batches_done % self.checkpoint_every == 0


@dataclass(frozen=True)
class FeaturePass:
    """One model's pass over data: ``model`` runs on the images of ``image_column`` (PIL images through
    ``transform``, described by ``transform_config`` for the identity), and the input of ``head`` (named
    ``head_name`` in messages) is kept, the way ``options`` says.
    """

    model: nn.Module
    head: nn.Linear
    transform: Callable[[list[Any]], torch.Tensor] | None = None
    transform_config: Any = None
    head_name: str = "head"
    image_column: str = "image"
    options: PassOptions = field(default_factory=PassOptions)

    def _columns(self, columns: Sequence[str]) -> list[str]:
        return [c for c in dict.fromkeys(columns) if c != self.image_column]

    def identity(self, data: Any, columns: Sequence[str]) -> dict[str, Any]:
        """What the features of this pass over ``data`` depend on (the cache's and the checkpoints' key)."""

        options = self.options
        return pass_identity(
            self.model,
            self.head,
            data,
            self.image_column,
            self._columns(columns),
            options.autocast_dtype,
            options.channels_last,
            self.transform_config,
        )

    def batches(
        self, data: Any, columns: Sequence[str], skip_batches: int = 0
    ) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """This process' share of ``data`` as ``(positions, {column: values})`` batches, the images read as the
        model gets them (``batches.iter_batches``)."""

        options = self.options
        device = self._device()
        return iter_batches(
            data,
            [self.image_column, *self._columns(columns)],
            options.batch_size,
            shard=distributed.process_info(),
            skip_batches=skip_batches,
            prepare=partial(prepare_images, image_column=self.image_column, transform=self.transform),
            num_workers=options.num_workers,
            pin_memory=device.type == "cuda",
        )

    def _device(self) -> torch.device:
        device = self.options.device
        return torch.device(device) if device is not None else next(self.model.parameters()).device

    def features(
        self, data: Any, columns: Sequence[str] = ("label",), skip_batches: int = 0, checks: BatchChecks | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]:
        """Run the model over this process' share of ``data``, yielding ``(positions, head inputs [B, D] float32 on
        the pass's device, {column: values on the CPU})`` per batch: the streaming core of ``extract`` and
        ``collect``.

        The model runs on ``options.device`` and is moved back to where it was when the pass ends (also when it
        fails). No batch waits for the host: the values are checked on the device (``checks``, read when the pass
        ends; a caller that saves a checkpoint reads them first with ``checks.raise_first()``).

        Raises:
            ValueError: NaN or inf images or features, naming the first bad batch and row (or a column cannot be
                read).
            KeyError: a requested column is missing.
            TypeError: the head is not usable (see ``heads.HeadCapture``) or the data is not a supported source.
        """

        columns, image_column, options, model = self._columns(columns), self.image_column, self.options, self.model
        checks = BatchChecks(image_column, self.head_name) if checks is None else checks
        rank, world_size = distributed.process_info()
        param = next(model.parameters())
        home, device = param.device, self._device()
        dtype = param.dtype if param.dtype.is_floating_point else None
        capture = HeadCapture(self.head, self.head_name)
        was_training = model.training
        model.eval()
        total = len(data) if hasattr(data, "__len__") and world_size == 1 else None
        bar = tqdm(total=total, disable=not options.progress or rank != 0, desc="features", unit="img")
        moved = not _same_device(device, home)  # a model spread over devices (a device map) is left as it is
        try:
            if moved:
                model.to(device)
            autocast = options.autocast_dtype
            # one autocast region for the whole pass, as a plain inference loop has: the weights' low-precision
            # copies are cast once, not once per batch (the cache lives until the outermost region ends). Outside
            # the model's call it is disabled, so what consumes the features runs in full precision.
            with capture.hooked(), torch.inference_mode(), _autocast(device.type, None):
                for index, (pos, batch) in enumerate(self.batches(data, columns, skip_batches), skip_batches):
                    pixels = images_to_tensor(batch[image_column], self.transform)
                    pixels = _host_to_device(pixels, device)
                    if dtype is not None:
                        pixels = pixels.to(dtype)
                    if pixels.is_floating_point():
                        checks.record("images", _nonfinite_rows(pixels), index)
                    if options.channels_last and pixels.ndim == 4:
                        pixels = pixels.contiguous(memory_format=torch.channels_last)
                    with _autocast(device.type, autocast):
                        output = model(pixels)
                    f, head_output, logits = capture.split(output)
                    if not _same_tensor(head_output, logits):
                        checks.record("head", ~_close(head_output, logits).all(1), index)
                    f = f.float()
                    checks.record("features", _nonfinite_rows(f), index)
                    bar.update(len(f))
                    yield pos, f, {c: _column(batch[c]) for c in columns}
            checks.raise_first()
        finally:
            bar.close()
            if moved:
                model.to(home)
            model.train(was_training)

    def _cache(self, cache_dir: str | os.PathLike | None, identity: dict[str, Any] | None, data: Any) -> str | None:
        """The cache entry of this pass over ``data`` in ``cache_dir``, or None when it cannot be cached."""

        if cache_dir is None:
            return None
        if self.transform is not None and self.transform_config is None:
            logger.warning(
                "the preprocessing %r has no stable identity (no `config` attribute): two different functions could "
                "share a cache entry, so its features are not cached. Give it a `config` attribute (a JSON-able "
                "description of what it does) to cache them.",
                getattr(self.transform, "__qualname__", self.transform),
            )
            return None
        entry = cache_entry(cache_dir, identity)
        if entry is None:
            logger.info("%s has no fingerprint: its features are not cached.", type(data).__name__)
        return entry

    def extract(
        self,
        data: Any,
        columns: Sequence[str] = ("label",),
        *,
        gather: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> FeatureSet:
        """Run the model over ``data`` once and return the head's inputs (float32, CPU) with the requested
        ``columns``.

        Under ``accelerate launch`` / ``torchrun`` each process runs its share of the data; with ``gather=True``
        every process then gets all rows in the order one process would produce (``gather=False``: only its own).

        ``cache_dir`` keeps the features on disk under the pass's identity (sources without a fingerprint, streams
        and DataLoaders, are not cached, nor are the features of a ``transform`` without a ``config`` attribute that
        describes it: a plain function has no identity the key could hold). ``options.checkpoint_dir`` saves the
        rows every ``options.checkpoint_every`` batches (in parts, one series per process); ``options.resume_from``
        loads them and runs only the remaining batches, so an interrupted run gives exactly what an uninterrupted
        one gives. Parts made with another identity or batch size are refused.

        A cache that cannot be written (an unwritable folder, a full disk) logs a warning; the features are returned.

        Raises:
            ValueError: empty data, non-finite features, or a checkpoint of another run.
            KeyError: a requested column is missing.
        """

        columns, options = self._columns(columns), self.options
        # the identity hashes every weight: computed only for what keys files by it (the cache, checkpoints)
        keyed = cache_dir is not None or options.checkpoint_dir is not None
        identity = self.identity(data, columns) if keyed else None
        entry = self._cache(cache_dir, identity, data)
        damaged = False
        if entry is not None and os.path.isdir(entry):
            try:
                cached = FeatureSet.load(entry)
                missing = [c for c in columns if c not in cached.columns]
                if missing:  # e.g. its columns.json is gone: the entry is incomplete
                    raise ValueError(f"it lacks the columns {missing}")
                logger.info("features loaded from the cache %s", entry)
                return cached
            except (OSError, ValueError) as err:  # a damaged entry is recomputed, never trusted
                logger.warning("the feature cache entry %s cannot be read (%s): recomputing it.", entry, err)
                damaged = True
        rank, world_size = distributed.process_info()
        if identity is not None:
            identity = self._run_identity(identity, data, columns, "features")
        rows = _Rows(columns)
        done, parts = (
            (0, []) if options.resume_from is None else load_feature_parts(options.resume_from, rank, identity)
        )
        for part in parts:
            rows.add(*part)
        rows.saved, part_index = len(rows.features), len(parts)
        checks = BatchChecks(self.image_column, self.head_name)
        for pos, f, cols in self.features(data, columns, done, checks):
            rows.add(pos, f, cols)
            done += 1
            if options.checkpoint_due(done):
                checks.raise_first()  # nothing bad is saved
                save_feature_part(options.checkpoint_dir, rank, part_index, *rows.unsaved(), identity)
                part_index += 1
        features, columns_out = rows.all(self.head.in_features)
        if world_size > 1 and gather:
            pos = torch.cat(rows.positions) if rows.positions else torch.zeros(0, dtype=torch.long)
            features, columns_out = distributed.gather_rows(pos, features, columns_out)
        if len(features) == 0 and (world_size == 1 or gather):
            raise ValueError("the dataset is empty: feature extraction needs at least one sample.")
        result = FeatureSet(features, columns_out, class_label_names(data, columns))
        if entry is not None and gather and distributed.is_main_process():
            try:
                save_cache_entry(entry, result.save, damaged)
            except OSError as err:  # the pass is done: a cache that cannot be written must not lose it
                logger.warning("the features could not be cached in %s (%s): returned without caching.", entry, err)
        return result

    def collect(
        self,
        data: Any,
        logits: Callable[[torch.Tensor], torch.Tensor],
        *,
        label_column: str = "label",
        rows: Sequence[int] | None = None,
    ) -> Any:
        """Eq. 3-4 streamed over ``data`` batch by batch: no feature matrix is kept, so memory does not grow with the
        data.

        The sums are kept in float64 on the pass's device and returned on the CPU. ``logits(features)`` gives the
        head's logits (on the features' device). The labels are checked where the source yields them, with the other
        values (``BatchChecks.labels``): a label outside the head's classes is named when the pass reads its checks (at
        its end and before each checkpoint). Each process sums its own share of the data; the sums are then added
        across processes, so every process returns what one process would. With ``options.checkpoint_dir`` the sums are
        saved every ``checkpoint_every`` batches (one file per process); ``options.resume_from`` continues from them,
        exactly. A state of another identity (the head's bytes, rows and label column included) is refused.

        Raises:
            ValueError: empty data, bad labels, non-finite features, or a checkpoint of another run (every process
                raises the first process' error instead of waiting for a failed one).
            KeyError: the label column is missing.
        """

        head, options, device = self.head, self.options, self._device()
        stats = EdgeStatistics.empty(head.out_features, head.in_features, head.out_features, rows=rows, device=device)
        rank = distributed.process_info()[0]
        problem: Exception | None = None
        try:
            identity = None
            if options.checkpoint_dir is not None:  # the identity hashes every weight: only checkpoints need it
                identity = {
                    **self.identity(data, [label_column]),
                    "head": head_fingerprint(head),
                    "rows": None if rows is None else list(rows),
                }
                identity = self._run_identity(identity, data, [label_column], "collect")
            done = 0 if options.resume_from is None else load_collect_state(options.resume_from, rank, stats, identity)
            checks = BatchChecks(self.image_column, self.head_name, label_column, head.out_features)
            for index, (_, features, columns) in enumerate(self.features(data, [label_column], done, checks), done):
                labels = checks.labels(columns[label_column], index)
                z = logits(features)
                checks.record("logits", _nonfinite_rows(z), index)
                stats.update(features, z, _host_to_device(labels, device), check_values=False)
                done += 1
                if options.checkpoint_due(done):
                    checks.raise_first()  # nothing bad is saved
                    save_collect_state(options.checkpoint_dir, rank, stats, identity, done)
        except Exception as err:  # every kind: under several processes, one failing must not leave the others waiting
            problem = err
        problems = [p for p in distributed.all_gather_object(problem) if p is not None]
        if problems:
            raise problems[0]
        distributed.reduce_sum(stats.tensors())
        stats = stats.to("cpu")
        if int(stats.count.sum()) == 0:
            raise ValueError("the data is empty: FCR needs samples of the classes it edits.")
        return stats

    def _first_batch_digest(self, data: Any, columns: list[str]) -> str:
        """SHA-256 of the first batch this process reads (images as the model gets them, and the columns): the
        identity of a source without a fingerprint (a stream, a DataLoader), so a checkpoint made on other data is
        refused."""

        first = next(iter(replace(self, options=replace(self.options, num_workers=0)).batches(data, columns)), None)
        digest = hashlib.sha256()
        if first is not None:
            _, batch = first
            for name in [self.image_column, *columns]:
                values = (
                    images_to_tensor(batch[name], self.transform)
                    if name == self.image_column
                    else to_tensor_column(batch[name])
                )
                if torch.is_tensor(values):
                    digest.update(f"{name}:{values.dtype}:{values_digest([(name, values)])}".encode())
                else:
                    digest.update(f"{name}:{json.dumps([str(v) for v in values])}".encode())
        return digest.hexdigest()

    def _run_identity(self, identity: dict[str, Any], data: Any, columns: list[str], kind: str) -> dict[str, Any]:
        """The identity a checkpointed pass's files carry: the pass's identity, the batch size, the number of
        processes, the first batch's digest for sources without a fingerprint, and the run's id (see
        ``pass_state.start_run``)."""

        options = self.options
        if options.checkpoint_dir is None:
            return identity
        # each process keeps its own share: a resume under another process count would read other rows
        identity = {**identity, "batch_size": options.batch_size, "processes": distributed.process_info()[1]}
        if identity["data"] is None:
            identity["first_batch"] = self._first_batch_digest(data, columns)
        rank = distributed.process_info()[0]
        return start_run(options.checkpoint_dir, rank, kind, identity, resume=options.resume_from is not None)


class _Rows:
    """The rows of a pass as they arrive (positions, features, columns), and how many of them are saved. Features
    (and columns a source yields on a device) stay there until ``DEVICE_ROWS_BYTES`` of features wait, then go to
    the host in one copy."""

    def __init__(self, columns: list[str]) -> None:
        self.positions: list[torch.Tensor] = []
        self.features: list[torch.Tensor] = []
        self.columns: dict[str, list[Any]] = {c: [] for c in columns}
        self.saved = 0
        self.on_device: list[int] = []  # indices of the batches with something not yet copied to the host

    def add(self, positions: torch.Tensor, features: torch.Tensor, columns: dict[str, Any]) -> None:
        self.positions.append(positions)
        self.features.append(features)
        for c, values in self.columns.items():
            values.append(columns[c])
        if _on_device(features) or any(_on_device(columns[c]) for c in self.columns):
            self.on_device.append(len(self.features) - 1)
            if sum(self.features[i].nbytes for i in self.on_device) >= DEVICE_ROWS_BYTES:
                self.to_host()

    def to_host(self) -> None:
        """Copy the features and columns still on a device to the host, one copy each."""
        for parts in (self.features, *self.columns.values()):
            _to_host(parts, self.on_device)
        self.on_device = []

    def unsaved(self) -> tuple[int, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``(count, positions, features, columns)`` of the rows since the last save, now counted as saved."""
        self.to_host()
        new = slice(self.saved, len(self.features))
        out = (
            len(self.features) - self.saved,
            torch.cat(self.positions[new]),
            torch.cat(self.features[new]),
            {c: concat_column(v[new]) for c, v in self.columns.items()},
        )
        self.saved = len(self.features)
        return out

    def all(self, dim: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Every row, the features on the host."""
        self.to_host()
        features = torch.cat(self.features) if self.features else torch.zeros(0, dim)
        columns = {c: concat_column(v) if v else torch.zeros(0, dtype=torch.long) for c, v in self.columns.items()}
        return features, columns
