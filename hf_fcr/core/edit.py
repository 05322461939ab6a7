"""The single-weight edit: orthogonalization (paper Eq. 7, Theorem 2) and partial neutralization (Eq. 8)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

__all__ = [
    "Edit",
    "WeightEdit",
    "ZeroWeightError",
    "check_rate",
    "neutralized_weight",
    "orthogonal_weight",
    "row_edits",
]


class Edit(Protocol):
    """The edit protocol: all the record, the editor and the card use of an edit. ``WeightEdit`` (one weight, Eq.
    7-8) and ``head_edit.HeadEdit`` (the head replaced by a head-level method) implement it."""

    kind: ClassVar[str]  # the record's "type"
    has_rate: ClassVar[bool]  # it can be re-applied at another r (sweeps)
    needs_tensors: ClassVar[bool]  # its tensors live in fcr_head.safetensors, not in the record

    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameters it changes."""
        ...

    def check_target(
        self, weight: torch.Tensor, bias: torch.Tensor | None, weight_name: str, bias_name: str | None
    ) -> None:
        """ValueError unless it targets this head (``weight_name`` / ``bias_name``) with values the head can hold."""
        ...

    def apply_to(self, params: Mapping[str, torch.Tensor]) -> None:
        """Write the new values into ``params`` (a state dict), after checking the old ones are there."""
        ...

    def revert_to(self, params: Mapping[str, torch.Tensor]) -> None:
        """Write the old values back into ``params``."""
        ...

    def apply(self, model: nn.Module) -> None:
        """``apply_to`` the model's parameters."""
        ...

    def revert(self, model: nn.Module) -> None:
        """``revert_to`` the model's parameters."""
        ...

    def tensors(self, prefix: str, include_base: bool) -> dict[str, torch.Tensor]:
        """The tensors to save beside the record, under ``prefix``."""
        ...

    def attach(self, prefix: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take its tensors from a loaded file, checked against the record."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """The record's entry (JSON values)."""
        ...


class ZeroWeightError(ValueError):
    """Eq. 7 divides by the weight being edited: it is undefined for a weight of exactly 0."""


def check_rate(r: float) -> float:
    """Validate a neutralization rate: a real number in [0, 1]."""
    if isinstance(r, bool) or not (isinstance(r, numbers.Real) or (torch.is_tensor(r) and r.numel() == 1)):
        raise ValueError(f"r must be a number in [0, 1], got {r!r}.")
    r = float(r)
    if math.isnan(r) or not 0.0 <= r <= 1.0:
        raise ValueError(f"r must be in [0, 1] (0 leaves the weight as it is, 1 applies Eq. 7 in full), got {r}.")
    return r


def _row_and_weight(row: torch.Tensor, k: int) -> tuple[torch.Tensor, float]:
    row = torch.as_tensor(row).detach()
    if row.ndim != 1:
        raise ValueError(f"row must be a 1-D weight vector W[c], got shape {tuple(row.shape)}.")
    if isinstance(k, bool) or not 0 <= int(k) < row.numel():
        raise ValueError(f"column {k} is outside the row's {row.numel()} weights.")
    row64 = row.to(device="cpu", dtype=torch.float64)
    w = float(row64[int(k)])
    if not torch.isfinite(row64).all():
        raise ValueError("the weight row contains NaN or inf.")
    if w == 0.0:
        raise ZeroWeightError(f"W[., {k}] is 0: Eq. 7 is undefined there; choose another edge.")
    return row64, w


def orthogonal_weight(row: torch.Tensor, k: int) -> float:
    """Eq. 7: the value of ``row[k]`` that makes the hyperplane ``y = row . x + b`` orthogonal to its original state.

    ``f(w_k) = -(||w||^2 - w_k^2 + 1) / w_k``: with it, the normals ``(w, -1)`` and ``(w', -1)`` of the original and
    edited hyperplanes have a zero dot product, and only coordinate ``k`` differs (Theorem 2). Computed in float64.
    """
    row64, w = _row_and_weight(row, k)
    norm2 = float(row64.square().sum())
    return -(norm2 - w * w + 1.0) / w


def neutralized_weight(row: torch.Tensor, k: int, r: float) -> float:
    """Eq. 8, partial feature neutralization: ``r * f(w_k) + (1 - r) * w_k``; ``r`` in [0, 1]."""
    r = check_rate(r)
    _, w = _row_and_weight(row, k)
    return r * orthogonal_weight(row, k) + (1.0 - r) * w


def round_to(value: float, dtype: torch.dtype) -> float:
    """``value`` as a parameter of ``dtype`` stores it."""
    return float(torch.tensor(value, dtype=torch.float64).to(dtype))


@dataclass
class WeightEdit:
    """One edited weight ``param[row, col]``: the record saved in ``fcr_config.json``.

    ``old_value`` and ``new_value`` are the values as stored in the parameter (after rounding to its dtype), so
    applying and reverting are bit-exact. ``orthogonal_value`` is Eq. 7 on the row as it was before this edit, so the
    same edit can be re-applied at any other rate ``r`` (Eq. 8) without the row.
    """

    param: str
    row: int
    col: int
    old_value: float
    new_value: float
    r: float
    score: float | None = None
    class_index: int | None = None
    class_name: str | None = None
    fictitious: str | None = None
    orthogonal_value: float | None = None
    backbone_sha256: str | None = None  # head_edit.backbone_digest of the model it was made on (stamped when saved)

    # the edit protocol (Edit), shared with head_edit.HeadEdit
    kind: ClassVar[str] = "weight"  # the record's "type"
    has_rate: ClassVar[bool] = True  # can be re-applied at another r (sweeps)
    needs_tensors: ClassVar[bool] = False  # all it needs is in the record

    @property
    def param_names(self) -> tuple[str, ...]:
        return (self.param,)

    def check_target(
        self, weight: torch.Tensor, bias: torch.Tensor | None, weight_name: str, bias_name: str | None
    ) -> None:
        """ValueError unless this edit touches the head's ``weight_name`` with values finite in its dtype."""
        if self.param != weight_name:
            raise ValueError(
                f"it targets {self.param!r}; an hf-fcr record may only edit the classifier head's weight "
                f"{weight_name!r}."
            )
        for what, value in (("old", self.old_value), ("new", self.new_value)):
            if not math.isfinite(round_to(value, weight.dtype)):
                raise ValueError(
                    f"its {what} value {value:.6g} of {self.param}[{self.row}, {self.col}] is not finite in the "
                    f"head's dtype {weight.dtype}: use a smaller r, or cast the head to float32 first."
                )

    def tensors(self, prefix: str, include_base: bool) -> dict[str, torch.Tensor]:
        return {}

    def attach(self, prefix: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Nothing to take: a single-weight edit is all in the record."""

    def value_at(self, r: float) -> float:
        """Eq. 8 for this edge at rate ``r`` (before rounding to the parameter's dtype)."""
        r = check_rate(r)
        if self.orthogonal_value is None:
            raise ValueError("this edit has no orthogonal_value: it cannot be re-applied at another rate.")
        return r * self.orthogonal_value + (1.0 - r) * self.old_value

    def with_rate(self, r: float, dtype: torch.dtype = torch.float32) -> WeightEdit:
        """The same edge edited at rate ``r`` instead (Eq. 8 from ``old_value``), its value rounded to ``dtype``."""
        return replace(self, r=check_rate(r), new_value=round_to(self.value_at(r), dtype))

    def _checked_param(self, params: Mapping[str, torch.Tensor], expected: float, what: str) -> torch.Tensor:
        param = params.get(self.param)
        if param is None:
            raise KeyError(f"the model has no parameter {self.param!r}.")
        if param.ndim != 2 or not (0 <= self.row < param.shape[0] and 0 <= self.col < param.shape[1]):
            raise ValueError(
                f"edit [{self.row}, {self.col}] is out of bounds for {self.param} of shape {tuple(param.shape)}."
            )
        current = float(param.detach()[self.row, self.col])
        expected = round_to(expected, param.dtype)
        if current != expected:
            raise ValueError(
                f"{self.param}[{self.row}, {self.col}] is {current!r}, but this edit expects its {what} value "
                f"{expected!r}: the model is not the one this edit was made for."
            )
        return param

    @torch.no_grad()
    def apply_to(self, params: Mapping[str, torch.Tensor]) -> None:
        """Write ``new_value`` into ``params[self.param]`` (tensors by name); refuses (ValueError) if the weight is
        not ``old_value``."""
        param = self._checked_param(params, self.old_value, "original")
        param[self.row, self.col] = round_to(self.new_value, param.dtype)

    @torch.no_grad()
    def revert_to(self, params: Mapping[str, torch.Tensor]) -> None:
        """Write ``old_value`` back; refuses (ValueError) if the weight is not ``new_value``."""
        param = self._checked_param(params, self.new_value, "edited")
        param[self.row, self.col] = self.old_value

    def apply(self, model: nn.Module) -> None:
        """Write ``new_value`` into the model; refuses (ValueError) if the weight is not ``old_value``."""
        self.apply_to(dict(model.named_parameters()))

    def revert(self, model: nn.Module) -> None:
        """Write ``old_value`` back into the model; refuses (ValueError) if the weight is not ``new_value``."""
        self.revert_to(dict(model.named_parameters()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # no "type": records of single-weight edits stay readable by schema-1 readers

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightEdit:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def row_edits(
    param: str,
    row: torch.Tensor,
    cls: int,
    picks: list[tuple[int, float, str | None]],
    r: float,
    dtype: torch.dtype,
    class_name: str | None = None,
) -> list[WeightEdit]:
    """The edits of row ``cls`` (``row`` = its ORIGINAL weights) at rate ``r``, one per ``(col, score, fictitious)``
    in ``picks``: Eq. 8 on the original row, so the result does not depend on the order of the edits."""
    edits = []
    for col, score, fictitious in picks:
        old = float(row[col])
        at_zero = WeightEdit(
            param=param,
            row=cls,
            col=col,
            old_value=old,
            new_value=old,
            r=0.0,
            score=score,
            class_index=cls,
            class_name=class_name,
            fictitious=fictitious,
            orthogonal_value=orthogonal_weight(row, col),
        )
        edits.append(at_zero.with_rate(r, dtype))
    return edits
