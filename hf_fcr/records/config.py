"""The edit record, ``fcr_config.json`` (peft-style: it names its base model and holds only what changed).

``FCRConfig.from_dict`` validates every field before anything is built from it: a record is untrusted input (anyone
can publish one), so nothing it says reaches a weight before its types, ranges and finiteness are checked, and
``check_edits_match`` checks it against the model before an edit is applied.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from safetensors.torch import save_file
from torch import nn

from .. import __version__
from ..core.edit import Edit, WeightEdit
from ..core.head_edit import FIT_KEYS, HeadEdit
from ..core.head_edit import RECORD_KEYS as HEAD_RECORD_KEYS
from ..utils.constants import CONFIG_NAME, HEAD_EDITS_NAME, LIBRARIES
from ..utils.files import open_safetensors, read_json

__all__ = ["SCHEMA_VERSION", "EditRecordError", "FCRConfig", "check_edits_match", "is_plain", "parse_edit"]

SCHEMA_VERSION = 3  # 2: head-level edits (``"type": "head"``); 3: their settings all in "hyperparameters"


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
    edits: list[Edit] = field(
        default_factory=list, metadata={"help": "The edits (single weights, or the whole head), in order."}
    )
    fcr_version: str = field(default=__version__, metadata={"help": "The hf-fcr version that wrote the record."})
    schema_version: int = field(default=SCHEMA_VERSION, metadata={"help": "The record's format version."})
    weights_sha256: str | None = field(
        default=None,
        metadata={
            "help": "A full checkpoint's checksum of the weights saved beside the record (head_edit.weights_digest): "
            "a loader refuses weights that are not those, e.g. read while another process replaced the folder."
        },
    )
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
            # the oldest format that holds these edits, so readers without head-level edits still read the rest
            "schema_version": SCHEMA_VERSION if self.head_edits else 1,
            "edits": [e.to_dict() for e in self.edits],
            **({"weights_sha256": self.weights_sha256} if self.weights_sha256 else {}),
        }

    def to_json_string(self) -> str:
        """The record as written: refuses (ValueError) what its own reader ``from_dict`` would refuse, e.g. a NaN
        metric or a value JSON cannot hold, so nothing is ever written that cannot be loaded back."""
        try:
            text = json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as err:
            raise ValueError(f"the edit record cannot be written as JSON: {err} (pass finite numbers).") from None
        try:
            type(self).from_dict(json.loads(text))
        except EditRecordError as err:
            raise ValueError(f"the edit record would not load back: {err}") from None
        return text

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FCRConfig:
        """Read and validate ``fcr_config.json`` (see ``from_dict``).

        Raises:
            CorruptFileError (an OSError): unreadable, too large or too deep JSON.
            EditRecordError: a malformed record.
        """

        return cls.from_dict(read_json(path, "the edit record", "re-save it with hf-fcr, or ask its publisher."))

    @property
    def head_edits(self) -> list[tuple[int, Edit]]:
        """``(index, edit)`` of the edits whose tensors live in ``fcr_head.safetensors`` (head-level edits)."""
        return [(i, e) for i, e in enumerate(self.edits) if e.needs_tensors]

    def save_pretrained(self, save_directory: str | os.PathLike, include_base: bool = True) -> str:
        """Write ``fcr_config.json`` into ``save_directory`` and, when there are head-level edits, their tensors in
        ``fcr_head.safetensors`` (the base heads too with ``include_base``: a full checkpoint needs them to revert);
        returns the record's path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(os.fspath(save_directory), CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())
        if self.head_edits:
            tensors = {k: v for i, e in self.head_edits for k, v in e.tensors(f"{i}.", include_base).items()}
            save_file(tensors, os.path.join(os.fspath(save_directory), HEAD_EDITS_NAME))
        return path

    def attach_tensors(self, path: str | os.PathLike | None) -> None:
        """Read the head-level edits' tensors from ``fcr_head.safetensors`` at ``path``, checking their checksums.

        Raises:
            EditRecordError: the file is missing or does not match the record.
            CorruptFileError (an OSError): the file is unreadable.
        """
        if not self.head_edits:
            return
        if path is None or not os.path.isfile(path):
            raise EditRecordError(f"{CONFIG_NAME} has head-level edits but {HEAD_EDITS_NAME} is missing beside it.")

        with open_safetensors(path, "the head-level edits", "save or download the artifact again.") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        for i, e in self.head_edits:
            try:
                e.attach(f"{i}.", tensors)
            except ValueError as err:
                raise EditRecordError(f"edit {i} ({HEAD_EDITS_NAME}): {err}") from None

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
        weights = data.get("weights_sha256")
        if weights is not None and not _is_sha256(weights):
            raise EditRecordError(f"'weights_sha256' must be a SHA-256 hex digest or absent, got {weights!r}.")
        edits = [parse_edit(i, e) for i, e in enumerate(edits_raw)]
        _check_calls(data.get("calls", []))
        _check_metrics(data.get("metrics", []))
        _check_diagnosis(data.get("diagnosis"))
        known = {
            "base_model_name_or_path",
            "revision",
            "library_name",
            "fcr_version",
            "schema_version",
            "edits",
            "weights_sha256",
        }
        return cls(
            base_model_name_or_path=data.get("base_model_name_or_path"),
            revision=data.get("revision"),
            library_name=str(library),
            edits=edits,
            fcr_version=str(data.get("fcr_version", "unknown")),
            schema_version=schema,
            weights_sha256=weights,
            extra={k: v for k, v in data.items() if k not in known},
        )


CALL_METHODS = ("remove_class", "neutralize", "neutralize_spurious")


def _check_calls(calls: Any) -> None:
    """``calls``: the recorded method calls that made the edits (shown in the card as the way to reproduce them).
    ``method`` names the call; ``neutralize_spurious``'s own ``method`` argument is kept as ``fix``."""
    if not isinstance(calls, list):
        raise EditRecordError(f"'calls' must be a list, got {type(calls).__name__}.")
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or call.get("method") not in CALL_METHODS:
            raise EditRecordError(f"call {i} must be an object whose 'method' is one of {CALL_METHODS}.")
        for key, value in call.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise EditRecordError(f"call {i}: argument name {key!r} is not an identifier.")
            if not is_plain(value):
                raise EditRecordError(
                    f"call {i}: argument {key!r} must be a number, string, bool, null or a list of them."
                )


def _check_diagnosis(diagnosis: Any) -> None:
    """``diagnosis``: ``Diagnosis.to_dict()`` (numbers, strings, lists and dicts of them, and a ``verdict`` string)."""
    if diagnosis is None:
        return
    if not isinstance(diagnosis, dict) or not isinstance(diagnosis.get("verdict"), str) or not is_plain(diagnosis, 2):
        raise EditRecordError("'diagnosis' must be an object of plain values with a 'verdict' string.")


def is_plain(value: Any, levels: int = 1) -> bool:
    """A finite number, string, bool or null, or (``levels`` deep) a list (or tuple) or string-keyed object of them:
    what a record may hold, and what JSON writes back as it was."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)) and levels > 0:
        return all(is_plain(v, levels - 1) for v in value)
    if isinstance(value, dict) and levels > 0:  # e.g. the chosen policy / weights / r
        return all(isinstance(k, str) and is_plain(v, levels - 1) for k, v in value.items())
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


NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a registered method's name
_SHA = set("0123456789abcdef")


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _SHA


def check_fit_fields(raw: dict[str, Any], where: str = "") -> None:
    """The built-ins' settings (``head_edit.FIT_KEYS``) wherever a head-level record's hyperparameters hold them:
    ``C`` positive, the counts non-negative integers, ``selection`` a string; each may be null.

    Raises:
        EditRecordError: naming the field (after ``where``).
    """
    if raw.get("C") is not None and not (_is_number(raw["C"]) and raw["C"] > 0):
        raise EditRecordError(f"{where}'C' must be a positive number or null, got {raw['C']!r}.")
    for key in ("num_samples", "samples_per_fit", "num_fits"):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise EditRecordError(f"{where}{key!r} must be a non-negative integer or null, got {value!r}.")
    if raw.get("selection") is not None and not isinstance(raw["selection"], str):
        raise EditRecordError(f"{where}'selection' must be a string or null.")


def _parse_head_edit(index: int, raw: dict[str, Any]) -> HeadEdit:
    if not isinstance(raw.get("weight_param"), str) or not (
        raw.get("bias_param") is None or isinstance(raw["bias_param"], str)
    ):
        raise EditRecordError(f"edit {index}: 'weight_param' must be a string and 'bias_param' a string or null.")
    if not isinstance(raw.get("method"), str) or not NAME_PATTERN.fullmatch(raw["method"]):
        raise EditRecordError(f"edit {index}: 'method' must be a head-level method's name, got {raw.get('method')!r}.")
    extra = raw.get("hyperparameters")
    if extra is not None and not (isinstance(extra, dict) and is_plain(extra, 2)):
        raise EditRecordError(f"edit {index}: 'hyperparameters' must be an object of plain values (numbers, strings).")
    for key in ("base_sha256", "new_sha256", "backbone_sha256"):
        value = raw.get(key)
        if key == "backbone_sha256" and value is None:  # older records (a byte checksum of the head) name no backbone
            continue
        if not _is_sha256(value):
            raise EditRecordError(f"edit {index}: {key!r} must be a SHA-256 hex digest, got {value!r}.")
    legacy = {k: raw[k] for k in FIT_KEYS if raw.get(k) is not None}  # schema 2 kept these beside hyperparameters
    hyperparameters = {**legacy, **(extra or {})}
    check_fit_fields(hyperparameters, f"edit {index}: ")
    fields = {k: raw.get(k) for k in HEAD_RECORD_KEYS if k != "hyperparameters"}
    return HeadEdit(**fields, hyperparameters=hyperparameters)


def parse_edit(index: int, raw: Any) -> Edit:
    """One edit of a record, as a ``WeightEdit`` (or a ``HeadEdit`` for ``"type": "head"``), after checking each
    field's type, range and finiteness.

    Raises:
        EditRecordError: naming edit ``index`` and the field.
    """
    if not isinstance(raw, dict):
        raise EditRecordError(f"edit {index} must be an object, got {type(raw).__name__}.")
    if raw.get("type", "weight") not in ("weight", "head"):
        raise EditRecordError(f"edit {index}: 'type' must be 'weight' or 'head', got {raw.get('type')!r}.")
    if raw.get("type") == "head":
        return _parse_head_edit(index, raw)
    _check_weight_fields(index, raw)
    return WeightEdit.from_dict(raw)


def _check_weight_fields(index: int, raw: dict[str, Any]) -> None:
    """Each field of a weight edit: its type, range and finiteness (``EditRecordError`` naming edit ``index``)."""
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
    if raw.get("backbone_sha256") is not None and not _is_sha256(raw["backbone_sha256"]):
        raise EditRecordError(f"edit {index}: 'backbone_sha256' must be a SHA-256 hex digest or null.")


def check_edits_match(model: nn.Module, edits: Sequence[Edit], expect: str) -> None:
    """Check every edit against ``model`` before anything changes, by replaying them on copies of the parameters
    they touch.

    ``expect="old"``: the edits are about to be applied, in order: each must find its old value (the base head's
    checksum for a head-level edit) where the previous edits left it. ``expect="new"``: the edits are already in the
    weights: undone newest first, each must find its new value.

    Raises:
        EditRecordError: naming the first edit that does not match.
    """
    params = dict(model.named_parameters())
    touched = {p for e in edits for p in e.param_names}
    copies = {name: params[name].detach().clone() for name in touched if name in params}
    order = list(enumerate(edits))
    for i, e in order if expect == "old" else reversed(order):
        try:
            e.apply_to(copies) if expect == "old" else e.revert_to(copies)
        except KeyError:
            raise EditRecordError(
                f"edit {i}: the model has no parameter {' / '.join(e.param_names)!r}: it is not the edited base model."
            ) from None
        except ValueError as err:
            raise EditRecordError(
                f"edit {i}: {err} Check the base model and revision: the checkpoint is not the one these edits were "
                "made for."
            ) from None
