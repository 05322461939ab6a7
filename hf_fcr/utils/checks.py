"""Argument checks shared by the public methods (each runs once, at the method the user called)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["check_choice", "check_num_weights", "check_seed"]


def check_seed(seed: Any) -> int:
    """A seed as a plain ``int`` (Python, numpy or 0-d torch integers are accepted; they are recorded as JSON)."""
    if hasattr(seed, "item") and getattr(seed, "ndim", 1) == 0:
        seed = seed.item()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r} ({type(seed).__name__}).")
    return int(seed)


def check_num_weights(num_weights: int) -> int:
    if isinstance(num_weights, bool) or not isinstance(num_weights, int) or num_weights < 1:
        raise ValueError(f"num_weights must be a positive integer, got {num_weights!r}.")
    return num_weights


def check_choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}.")
    return value
