"""Progress bars for the fits and searches that can take a while (the pass has its own): tqdm, on the main process
only, and only once a stage has run for ``DELAY_S`` seconds, so quick fits print nothing."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm.auto import tqdm

from .distributed import is_main_process

__all__ = ["DELAY_S", "over", "stage"]

T = TypeVar("T")

DELAY_S = 3.0  # a stage shows its bar once it has taken this long


def stage(total: int, desc: str) -> tqdm:
    """A progress bar of ``total`` steps named ``desc`` (``"DFR: C grid"``, ``"auto: candidates"``), to stderr."""
    return tqdm(total=total, desc=desc, delay=DELAY_S, leave=False, disable=not is_main_process())


def over(items: Sequence[T], desc: str) -> Iterator[T]:
    """``items`` one by one, with a ``stage`` bar advanced after each."""
    with stage(len(items), desc) as bar:
        for item in items:
            yield item
            bar.update()
