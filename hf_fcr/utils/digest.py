"""The one tensor checksum of hf-fcr: SHA-256 over names, shapes and values, independent of dtype and device.

Edit records identify heads and backbones with it, full checkpoints the weights saved beside their record, and the
feature cache and resumable passes what their results belong to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

__all__ = ["values_digest", "without_module"]


def values_digest(named: Iterable[tuple[str, torch.Tensor | None]]) -> str:
    """SHA-256 over names, shapes and values (floats as float64, integers as int64): equal digests mean equal
    values, whatever the dtype (bfloat16, float16 and float32 values are exact in float64) or the device."""
    h = hashlib.sha256()
    for name, t in named:
        if t is None:
            h.update(f"{name};none;".encode())
            continue
        t = t.detach().to("cpu")
        t = t.to(torch.float64 if t.is_floating_point() else torch.int64).contiguous()
        h.update(f"{name};{t.dtype};{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def without_module(
    named: Iterable[tuple[str, torch.Tensor]], module: torch.nn.Module
) -> list[tuple[str, torch.Tensor]]:
    """``named`` without the parameters and buffers of ``module`` (e.g. a model's tensors below its head)."""
    own = {id(t) for t in (*module.parameters(), *module.buffers())}
    return [(name, t) for name, t in named if id(t) not in own]
