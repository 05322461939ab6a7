"""A head-level edit: the classifier head's weight (and bias) replaced by a retrained one (DFR, class-balanced
last-layer retraining), recorded like a single-weight edit.

The record (``fcr_config.json``) holds what was done (method, data sizes, C) and SHA-256 checksums of the base head,
of the new one and of the backbone (every saved tensor below the head: the new head was fit to that backbone's
features and means nothing on another); the tensors live in ``fcr_head.safetensors`` beside it: the new head always,
the base head too in a full checkpoint (so that ``revert()`` restores it bit for bit after a reload). An edits-only
artifact holds the new head only and applies to the one base whose head and backbone have the recorded checksums.

Checksums are of the VALUES (every float as float64, with names and shapes), not of the bytes, so they do not
depend on dtype or device: a model edited in bfloat16 and saved reloads with its edits into a float32 model. Records
with a byte checksum of the head and no backbone checksum (the first head-level records) are still read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..utils.digest import values_digest, without_module

__all__ = [
    "FIT_KEYS",
    "RECORD_KEYS",
    "HeadEdit",
    "backbone_digest",
    "head_digest",
    "weights_digest",
]

# the settings the built-in methods record in their hyperparameters (C, rows used, rows per balanced fit, fits
# averaged, what chose C): the record checks their types wherever they appear, and the card gives them columns
FIT_KEYS = ("C", "num_samples", "samples_per_fit", "num_fits", "selection")
# the fields a record keeps (the tensors live in fcr_head.safetensors); a method's own settings are all in
# "hyperparameters" (records of schema 2 kept FIT_KEYS beside it: they are read into it)
RECORD_KEYS = (
    "weight_param",
    "bias_param",
    "method",
    "base_sha256",
    "new_sha256",
    "backbone_sha256",
    "hyperparameters",
)


def head_digest(weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    """The head's checksum (``values_digest`` of weight and bias): equal digests mean equal heads."""
    return values_digest((("weight", weight), ("bias", bias)))


def _bytes_digest(weight: torch.Tensor, bias: torch.Tensor | None) -> str:
    """The head checksum of the first head-level records (dtype, shapes and bytes): read, never written."""
    h = hashlib.sha256()
    for t in (weight, bias):
        if t is None:
            h.update(b"none;")
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype};{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _head_matches(weight: torch.Tensor, bias: torch.Tensor | None, digest: str) -> bool:
    return digest in (head_digest(weight, bias), _bytes_digest(weight, bias))


def weights_digest(model: nn.Module) -> str:
    """The checksum of every saved tensor of ``model`` (``values_digest`` of its ``state_dict``)."""
    return values_digest(sorted(model.state_dict(keep_vars=True).items()))


def backbone_digest(model: nn.Module, head: nn.Module) -> str:
    """The backbone's checksum: ``values_digest`` of every saved tensor (``state_dict``) except the head's."""
    return values_digest(sorted(without_module(model.state_dict(keep_vars=True).items(), head)))


@dataclass
class HeadEdit:
    """The head ``weight_param`` (and ``bias_param``) replaced by a retrained head.

    Attributes:
        method: the head-level method's registered name (``"dfr"``, ``"class_balanced"`` or a user's, see
            ``head_methods``); applying and reverting never need it registered (the tensors are in the artifact).
        base_sha256, new_sha256: ``head_digest`` of the head before and after.
        backbone_sha256: ``backbone_digest`` of the model the head was fit on (None in the first head-level records).
        hyperparameters: the method's own settings, as its fit returned them (the built-ins: ``FIT_KEYS``, i.e.
            C, validation rows used, rows per balanced subset, subsets averaged, what C was chosen by).
        new_weight, new_bias, old_weight, old_bias: the tensors (saved in ``fcr_head.safetensors``, not in JSON).
    """

    # the edit protocol (edit.Edit), shared with edit.WeightEdit
    kind: ClassVar[str] = "head"  # the record's "type"
    has_rate: ClassVar[bool] = False  # a head-level edit has no rate to sweep
    needs_tensors: ClassVar[bool] = True  # its tensors live in fcr_head.safetensors

    weight_param: str
    bias_param: str | None
    method: str
    base_sha256: str
    new_sha256: str
    backbone_sha256: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    new_weight: torch.Tensor | None = field(default=None, repr=False, compare=False)
    new_bias: torch.Tensor | None = field(default=None, repr=False, compare=False)
    old_weight: torch.Tensor | None = field(default=None, repr=False, compare=False)
    old_bias: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_heads(
        cls,
        weight_param: str,
        bias_param: str | None,
        old: tuple[torch.Tensor, torch.Tensor | None],
        new: tuple[torch.Tensor, torch.Tensor | None],
        method: str,
        **info: Any,
    ) -> HeadEdit:
        """An edit from the base head ``old`` to ``new`` (each ``(weight, bias)``), ``new`` cast to ``old``'s dtype."""
        old_w, old_b = (None if t is None else t.detach().to("cpu").clone() for t in old)
        new_w = new[0].detach().to("cpu", old_w.dtype).clone()
        new_b = None if old_b is None else new[1].detach().to("cpu", old_b.dtype).clone()
        return cls(
            weight_param=weight_param,
            bias_param=bias_param,
            method=method,
            base_sha256=head_digest(old_w, old_b),
            new_sha256=head_digest(new_w, new_b),
            new_weight=new_w,
            new_bias=new_b,
            old_weight=old_w,
            old_bias=old_b,
            **info,
        )

    def _head(self, params: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.weight_param not in params or (self.bias_param is not None and self.bias_param not in params):
            raise KeyError(f"the model has no parameter {self.weight_param!r} / {self.bias_param!r}.")
        return params[self.weight_param], None if self.bias_param is None else params[self.bias_param]

    def _check(self, weight: torch.Tensor, bias: torch.Tensor | None, digest: str, what: str) -> None:
        if not _head_matches(weight, bias, digest):
            raise ValueError(
                f"the head {self.weight_param} is not the {what} head this {self.method} edit was made for (its "
                "SHA-256 differs): the model is not the one this edit was made for."
            )

    @torch.no_grad()
    def apply_to(self, params: Mapping[str, torch.Tensor]) -> None:
        """Write the new head into ``params`` (tensors by name); refuses (ValueError) unless the current head is the
        recorded base, bit for bit. Keeps the base head, so that ``revert_to`` can restore it."""
        weight, bias = self._head(params)
        self._check(weight, bias, self.base_sha256, "base")
        if self.new_weight is None:
            raise ValueError(f"this {self.method} edit holds no new head tensors (fcr_head.safetensors).")
        self.check_tensors(weight, bias)
        if self.old_weight is None:
            self.old_weight = weight.detach().to("cpu").clone()
            self.old_bias = None if bias is None else bias.detach().to("cpu").clone()
        weight.copy_(self.new_weight.to(weight.dtype))
        if bias is not None:
            bias.copy_(self.new_bias.to(bias.dtype))

    @torch.no_grad()
    def revert_to(self, params: Mapping[str, torch.Tensor]) -> None:
        """Write the base head back; refuses (ValueError) unless the current head is this edit's new head."""
        weight, bias = self._head(params)
        self._check(weight, bias, self.new_sha256, "edited")
        if self.old_weight is None:
            raise ValueError(f"this {self.method} edit holds no base head to restore.")
        self.check_tensors(weight, bias)
        weight.copy_(self.old_weight.to(weight.dtype))
        if bias is not None:
            bias.copy_(self.old_bias.to(bias.dtype))

    def check_tensors(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Every tensor this edit holds (new head, base head) has exactly the shape of the head's ``weight`` /
        ``bias`` and is finite in its dtype; ValueError naming the tensor otherwise."""
        for kind, (w, b) in (("new", (self.new_weight, self.new_bias)), ("old", (self.old_weight, self.old_bias))):
            for name, stored, target in (("weight", w, weight), ("bias", b, bias)):
                if stored is None:
                    continue
                label = f"the {'new' if kind == 'new' else 'base'} head's {name} ({kind}.{name})"
                if target is None:
                    raise ValueError(f"{label} is stored but the model's head has no {name}.")
                if not stored.is_floating_point() or tuple(stored.shape) != tuple(target.shape):
                    raise ValueError(
                        f"{label} has shape {tuple(stored.shape)} ({stored.dtype}); the model's head {name} is "
                        f"{tuple(target.shape)} ({target.dtype})."
                    )
                if not torch.isfinite(stored.to(target.dtype)).all():
                    raise ValueError(f"{label} holds values that are not finite in the head's dtype {target.dtype}.")

    def apply(self, model: nn.Module) -> None:
        self.apply_to(dict(model.named_parameters()))

    def revert(self, model: nn.Module) -> None:
        self.revert_to(dict(model.named_parameters()))

    @property
    def param_names(self) -> tuple[str, ...]:
        return (self.weight_param,) if self.bias_param is None else (self.weight_param, self.bias_param)

    def check_target(
        self, weight: torch.Tensor, bias: torch.Tensor | None, weight_name: str, bias_name: str | None
    ) -> None:
        """ValueError unless this edit replaces the head ``weight_name`` / ``bias_name`` with tensors of their exact
        shapes, finite in their dtype (``check_tensors``)."""
        if (self.weight_param, self.bias_param) != (weight_name, bias_name):
            raise ValueError(
                f"it replaces {self.weight_param!r} / {self.bias_param!r}; an hf-fcr head-level edit may only replace "
                f"the classifier head {weight_name!r} / {bias_name!r}."
            )
        self.check_tensors(weight, bias)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, **{k: getattr(self, k) for k in RECORD_KEYS}}

    def tensors(self, prefix: str, include_base: bool) -> dict[str, torch.Tensor]:
        """The tensors to save under ``prefix`` (``new.weight``, ``new.bias``, and ``old.*`` with ``include_base``)."""
        out = {}
        for kind, (w, b) in (("new", (self.new_weight, self.new_bias)), ("old", (self.old_weight, self.old_bias))):
            if kind == "old" and not include_base:
                continue
            for name, t in (("weight", w), ("bias", b)):
                if t is not None:
                    out[f"{prefix}{kind}.{name}"] = t.contiguous()
        return out

    def attach(self, prefix: str, tensors: Mapping[str, torch.Tensor]) -> None:
        """Take this edit's tensors from a loaded ``fcr_head.safetensors``, after checking them against the
        record's checksums (ValueError when they do not match)."""
        new_w, new_b = tensors.get(f"{prefix}new.weight"), tensors.get(f"{prefix}new.bias")
        if new_w is None or (self.bias_param is not None) != (new_b is not None):
            raise ValueError("the file lacks this edit's new head (weight and, with a bias, bias).")
        if not _head_matches(new_w, new_b, self.new_sha256):
            raise ValueError("the new head's tensors do not match the record's new_sha256.")
        old_w, old_b = tensors.get(f"{prefix}old.weight"), tensors.get(f"{prefix}old.bias")
        if old_w is not None and not _head_matches(old_w, old_b, self.base_sha256):
            raise ValueError("the base head's tensors do not match the record's base_sha256.")
        self.new_weight, self.new_bias, self.old_weight, self.old_bias = new_w, new_b, old_w, old_b
