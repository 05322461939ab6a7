"""Work on an ``[N, D]`` feature matrix a block of rows at a time, in float64 where the sums need it: on CelebA's
162,770 x 2,048 training features a whole-matrix float64 copy is 2.7 GB, and a whole-matrix ``isfinite`` held about
2 GB of temporaries."""

from __future__ import annotations

import torch

__all__ = ["ROWS", "all_finite", "column_mean", "float64_logits"]

ROWS = 8192  # rows held at a time


def all_finite(tensor: torch.Tensor, rows: int = ROWS) -> bool:
    """``torch.isfinite(tensor).all()``, ``rows`` rows at a time."""
    return all(bool(torch.isfinite(part).all()) for part in tensor.split(rows))


def column_mean(x: torch.Tensor, rows: int = ROWS) -> torch.Tensor:
    """The float64 mean of each column of ``x``, summed ``rows`` rows at a time."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for part in x.split(rows):
        total += part.to(torch.float64).sum(0)
    return total / len(x)


def float64_logits(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A linear head's float64 logits ``[N, V]`` on ``features``, ``ROWS`` rows at a time, on the features' device."""
    weight, bias = weight.to(features.device, torch.float64), bias.to(features.device, torch.float64)
    parts = [part.to(torch.float64) @ weight.T + bias for part in features.split(ROWS)]
    return torch.cat(parts) if parts else torch.zeros(0, len(bias), dtype=torch.float64, device=features.device)
