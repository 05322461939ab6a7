"""``FeatureSet``: the head's inputs ``[N, D]`` of one pass over a dataset, with the dataset columns kept beside them;
everything after the pass (statistics, probes, sweeps, baselines) works on it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from ..utils.files import open_safetensors, read_json

__all__ = ["FeatureSet", "label_outside", "label_tensor"]

FEATURES_FILE = "features.safetensors"
COLUMNS_FILE = "columns.json"


def label_tensor(values: Any, name: str) -> torch.Tensor:
    """Column ``name``'s ``values`` as a tensor that can hold class indices (integers, bool or floats), where it is;
    the values themselves are not read. ValueError for strings, objects and complex numbers."""
    if not torch.is_tensor(values):
        array = np.asarray(values)
        if array.dtype.kind not in "biuf":
            raise ValueError(
                f"column {name!r} holds {array.dtype} values; class labels must be integer indices (map names to "
                "indices first, e.g. with the model's label2id)."
            )
        values = torch.from_numpy(np.array(array, copy=True))
    if values.dtype.is_complex:
        raise ValueError(f"column {name!r} has dtype {values.dtype}; class labels must be integers.")
    return values


def label_outside(value: int, name: str, row: int, num_classes: int) -> ValueError:
    """The error for label ``value`` at ``row`` of column ``name``, outside a head's ``num_classes`` classes."""
    return ValueError(
        f"label {value} in column {name!r} (row {row}) is outside the head's classes [0, {num_classes}): map the "
        "labels to the model's class indices."
    )


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
        tensor = label_tensor(self[name], name)
        if tensor.dtype.is_floating_point:
            if not torch.isfinite(tensor).all() or not torch.equal(tensor, tensor.round()):
                raise ValueError(f"column {name!r} holds non-integer values; class labels must be integers.")
        return tensor.to(torch.long)  # any integer dtype, signed or not, and bool

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
        """Read a folder written by ``save``.

        Raises:
            FileNotFoundError: the folder holds no saved FeatureSet.
            CorruptFileError (an OSError): a file cannot be read.
            ValueError: the files do not form a consistent FeatureSet.
        """

        fix = "delete the folder and extract the features again."
        with open_safetensors(os.path.join(path, FEATURES_FILE), "the saved features", fix) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "features" not in tensors:
            raise ValueError(f"{os.path.join(path, FEATURES_FILE)} holds no 'features' tensor: {fix}")
        columns: dict[str, Any] = {k[len("column.") :]: v for k, v in tensors.items() if k.startswith("column.")}
        columns_file = os.path.join(path, COLUMNS_FILE)
        if not os.path.isfile(columns_file):  # ``save`` always writes it: without it the folder is incomplete
            raise ValueError(f"{path} lacks {COLUMNS_FILE} (the non-tensor columns and class names): {fix}")
        extra = read_json(columns_file, "the saved columns", fix)
        columns.update(extra.get("columns", {}))
        return cls(tensors["features"], columns, extra.get("label_names", {}))
