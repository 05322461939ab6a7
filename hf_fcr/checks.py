"""Argument checks shared by the public methods (each runs once, at the method the user called)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_choice", "check_fictitious", "check_num_weights"]


def check_num_weights(num_weights: int) -> int:
    if isinstance(num_weights, bool) or not isinstance(num_weights, int) or num_weights < 1:
        raise ValueError(f"num_weights must be a positive integer, got {num_weights!r}.")
    return num_weights


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}.")
    return value


def check_fictitious(fictitious: Any, in_features: int) -> None:
    """M' must be a ``FictitiousHead`` fit on features of this head's width."""
    from .probe import FictitiousHead

    if not isinstance(fictitious, FictitiousHead):
        raise TypeError(f"expected the FictitiousHead returned by fit_fictitious, got {type(fictitious).__name__}.")
    if fictitious.weight.shape[1] != in_features:
        raise ValueError(
            f"the fictitious head takes {fictitious.weight.shape[1]} features but this model's head takes "
            f"{in_features}: it was fit on another model's features."
        )
