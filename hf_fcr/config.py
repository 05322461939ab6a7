"""The edit record, ``fcr_config.json`` (peft-style: it names its base model and holds only what changed).

``FCRConfig.from_dict`` validates every field before anything is built from it: a record is untrusted input (anyone
can publish one), so nothing it says reaches a weight before its types, ranges and finiteness are checked, and
``check_edits_match`` checks it against the model before an edit is applied.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import __version__
from .constants import CONFIG_NAME, LIBRARIES
from .edit import WeightEdit, round_to

__all__ = ["SCHEMA_VERSION", "EditRecordError", "FCRConfig", "check_edits_match", "parse_edit"]

SCHEMA_VERSION = 1

_EDIT_KEYS = {"param": str, "row": int, "col": int, "old_value": float, "new_value": float, "r": float}


class EditRecordError(ValueError):
    """An ``fcr_config.json`` (or an edit in it) is malformed or does not match the model."""


@dataclass
class FCRConfig:
    """The edit record saved as ``fcr_config.json`` beside (or instead of) the edited weights."""

    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "The checkpoint the edits were made on (Hub id or folder)."}
    )
    revision: str | None = field(default=None, metadata={"help": "The base checkpoint's revision, if any."})
    library_name: str = field(default="pytorch", metadata={"help": "timm, transformers or pytorch (a plain module)."})
    edits: list[WeightEdit] = field(default_factory=list, metadata={"help": "The edited weights, in order."})
    fcr_version: str = field(default=__version__, metadata={"help": "The hf-fcr version that wrote the record."})
    schema_version: int = field(default=SCHEMA_VERSION, metadata={"help": "The record's format version."})
    extra: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Other keys kept as they are (calls that made the edits, metrics)."}
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "base_model_name_or_path": self.base_model_name_or_path,
            "revision": self.revision,
            "library_name": self.library_name,
            "fcr_version": self.fcr_version,
            "schema_version": self.schema_version,
            "edits": [e.to_dict() for e in self.edits],
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FCRConfig:
        """Read and validate ``fcr_config.json`` (see ``from_dict``).

        Raises:
            CorruptFileError (an OSError): unreadable, too large or too deep JSON.
            EditRecordError: a malformed record.
        """
        from .files import read_json

        return cls.from_dict(read_json(path, "the edit record", "re-save it with hf-fcr, or ask its publisher."))

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write ``fcr_config.json`` into ``save_directory``; returns the file's path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(os.fspath(save_directory), CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        return path

    @classmethod
    def from_dict(cls, data: Any) -> FCRConfig:
        """Validate types, ranges and finiteness of every field before use.

        Raises:
            EditRecordError: the record is malformed (the message names the field).
        """
        if not isinstance(data, dict):
            raise EditRecordError(f"{CONFIG_NAME} must hold a JSON object, got {type(data).__name__}.")
        edits_raw = data.get("edits")
        if not isinstance(edits_raw, list):
            raise EditRecordError(f"{CONFIG_NAME} needs an 'edits' list.")
        for key in ("base_model_name_or_path", "revision"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise EditRecordError(f"{key!r} must be a string or null, got {data[key]!r}.")
        library = data.get("library_name") or "pytorch"
        if library not in LIBRARIES:
            raise EditRecordError(f"'library_name' must be one of {LIBRARIES}, got {library!r}.")
        schema = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(schema, bool) or not isinstance(schema, int) or not 1 <= schema <= SCHEMA_VERSION:
            raise EditRecordError(
                f"'schema_version' {schema!r} is not one this hf-fcr reads (1..{SCHEMA_VERSION}): upgrade hf-fcr."
            )
        edits = [parse_edit(i, e) for i, e in enumerate(edits_raw)]
        _check_calls(data.get("calls", []))
        _check_metrics(data.get("metrics", []))
        known = {"base_model_name_or_path", "revision", "library_name", "fcr_version", "schema_version", "edits"}
        return cls(
            base_model_name_or_path=data.get("base_model_name_or_path"),
            revision=data.get("revision"),
            library_name=str(library),
            edits=edits,
            fcr_version=str(data.get("fcr_version", "unknown")),
            schema_version=schema,
            extra={k: v for k, v in data.items() if k not in known},
        )


CALL_METHODS = ("remove_class", "neutralize", "neutralize_spurious")


def _check_calls(calls: Any) -> None:
    """``calls``: the recorded method calls that made the edits (shown in the card as the way to reproduce them)."""
    if not isinstance(calls, list):
        raise EditRecordError(f"'calls' must be a list, got {type(calls).__name__}.")
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or call.get("method") not in CALL_METHODS:
            raise EditRecordError(f"call {i} must be an object whose 'method' is one of {CALL_METHODS}.")
        for key, value in call.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise EditRecordError(f"call {i}: argument name {key!r} is not an identifier.")
            if not _is_plain(value):
                raise EditRecordError(
                    f"call {i}: argument {key!r} must be a number, string, bool, null or a list of them."
                )


def _is_plain(value: Any, depth: int = 0) -> bool:
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, list) and depth == 0:
        return all(_is_plain(v, 1) for v in value)
    if isinstance(value, dict) and depth == 0:  # e.g. the chosen policy / weights / r
        return all(isinstance(k, str) and _is_plain(v, 1) for k, v in value.items())
    return False


def _check_metrics(metrics: Any) -> None:
    """``metrics``: ``[{"name": str, "value": finite number, "dataset": str (optional)}]`` (the card's results)."""
    if not isinstance(metrics, list):
        raise EditRecordError(f"'metrics' must be a list, got {type(metrics).__name__}.")
    for i, m in enumerate(metrics):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not _is_number(m.get("value")):
            raise EditRecordError(f"metric {i} must be an object with a string 'name' and a finite number 'value'.")
        for key in ("dataset", "split"):
            if m.get(key) is not None and not isinstance(m[key], str):
                raise EditRecordError(f"metric {i}: {key!r} must be a string.")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_edit(index: int, raw: Any) -> WeightEdit:
    """One edit of a record, as a ``WeightEdit``, after checking each field's type, range and finiteness.

    Raises:
        EditRecordError: naming edit ``index`` and the field.
    """
    if not isinstance(raw, dict):
        raise EditRecordError(f"edit {index} must be an object, got {type(raw).__name__}.")
    for key, kind in _EDIT_KEYS.items():
        value = raw.get(key)
        ok = _is_number(value) if kind is float else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise EditRecordError(f"edit {index}: {key!r} must be a finite {kind.__name__}, got {value!r}.")
    if raw["row"] < 0 or raw["col"] < 0:
        raise EditRecordError(f"edit {index}: row and col must be non-negative, got [{raw['row']}, {raw['col']}].")
    if not 0.0 <= raw["r"] <= 1.0:
        raise EditRecordError(f"edit {index}: r must be in [0, 1], got {raw['r']}.")
    for key in ("score", "orthogonal_value"):
        if raw.get(key) is not None and not _is_number(raw[key]):
            raise EditRecordError(f"edit {index}: {key!r} must be a finite number or null, got {raw[key]!r}.")
    if raw.get("class_index") is not None and (
        isinstance(raw["class_index"], bool) or not isinstance(raw["class_index"], int)
    ):
        raise EditRecordError(f"edit {index}: 'class_index' must be an integer or null.")
    for key in ("class_name", "fictitious"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise EditRecordError(f"edit {index}: {key!r} must be a string or null.")
    return WeightEdit.from_dict(raw)


def check_edits_match(model: nn.Module, edits: list[WeightEdit], expect: str) -> None:
    """Check every edit against ``model`` before anything changes.

    Each edit's parameter must exist as a 2-D tensor holding the edited position, with ``old_value``
    (``expect="old"``: the edits are about to be applied, in order, so a weight edited twice must hold the first
    edit's old value) or ``new_value`` (``expect="new"``: the edits are already in the weights, so a weight edited
    twice holds the last edit's new value).

    Raises:
        EditRecordError: naming the first edit that does not match.
    """
    params = dict(model.named_parameters())
    final: dict[tuple[str, int, int], tuple[int, float]] = {}
    pending: dict[tuple[str, int, int], float] = {}
    for i, e in enumerate(edits):
        param = params.get(e.param)
        if param is None:
            raise EditRecordError(
                f"edit {i}: the model has no parameter {e.param!r}: it is not the edited base model."
            )
        if param.ndim != 2 or e.row >= param.shape[0] or e.col >= param.shape[1]:
            raise EditRecordError(
                f"edit {i}: [{e.row}, {e.col}] is out of bounds for {e.param} of shape {tuple(param.shape)}."
            )
        key = (e.param, e.row, e.col)
        if expect == "old":
            _check_value(i, e, pending.get(key, float(param.detach()[e.row, e.col])), e.old_value, param.dtype, "old")
            pending[key] = round_to(e.new_value, param.dtype)
        else:
            final[key] = (i, e.new_value)
    for (name, row, col), (i, wanted) in final.items():
        param = params[name]
        _check_value(i, edits[i], float(param.detach()[row, col]), wanted, param.dtype, "new")


def _check_value(i: int, e: WeightEdit, current: float, wanted: float, dtype: torch.dtype, what: str) -> None:
    if current != round_to(wanted, dtype):
        raise EditRecordError(
            f"edit {i}: {e.param}[{e.row}, {e.col}] is {current!r} but the record expects {what} value {wanted!r}: "
            "the checkpoint is not the one these edits were made for (check the base model and revision)."
        )
