"""The one way files are read: every file hf-fcr reads (records, configs, cards, weights, feature parts, collect
states, cache entries) may come from someone else, so a read that fails names the file and the fix, in the
``OSError`` family for unreadable files and ``ValueError`` for content that is well-formed but not acceptable.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from safetensors import SafetensorError, safe_open

__all__ = ["CorruptFileError", "MAX_JSON_BYTES", "MAX_JSON_DEPTH", "open_safetensors", "read_json", "write_json"]

MAX_JSON_BYTES = 16 * 2**20  # an edit record of ~50,000 edits; configs and records are far smaller
MAX_JSON_DEPTH = 32


class CorruptFileError(OSError):
    """A file exists but cannot be read as what it should be (truncated, garbage, wrong type or too large)."""


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a parsed JSON value, iteratively (a deep value cannot exhaust the stack)."""
    stack, deepest = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def read_json(path: str | os.PathLike, what: str, fix: str, expect: type = dict) -> Any:
    """Parse the JSON file ``path`` (``what`` it is, ``fix`` what to do if it is broken) and check its size, nesting
    depth and top-level type.

    Raises:
        FileNotFoundError: no such file.
        CorruptFileError: not UTF-8 JSON, larger than ``MAX_JSON_BYTES``, nested deeper than ``MAX_JSON_DEPTH``, or
            not of type ``expect``.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size > MAX_JSON_BYTES:
        raise CorruptFileError(f"{what} {path} is {size} bytes (at most {MAX_JSON_BYTES} are read): {fix}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CorruptFileError(f"{what} {path} is not valid JSON ({type(err).__name__}: {err}): {fix}") from None
    if _depth(data, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise CorruptFileError(f"{what} {path} is nested deeper than {MAX_JSON_DEPTH} levels: {fix}")
    if not isinstance(data, expect):
        raise CorruptFileError(
            f"{what} {path} holds a JSON {type(data).__name__}, expected a JSON {expect.__name__}: {fix}"
        )
    return data


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as sorted, indented JSON, replacing ``path`` atomically."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@contextmanager
def open_safetensors(path: str | os.PathLike, what: str, fix: str) -> Iterator[Any]:
    """``safetensors.safe_open(path)`` whose failures (truncated, garbage, missing tensors) name the file and the fix.

    Raises:
        FileNotFoundError: no such file.
        CorruptFileError: the file is not a readable safetensors file, or a tensor it should hold is missing.
    """

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist: {fix}")
    try:
        with safe_open(path, framework="pt") as handle:
            yield handle
    except (SafetensorError, KeyError, OSError) as err:
        if isinstance(err, FileNotFoundError | CorruptFileError):
            raise
        raise CorruptFileError(f"{what} {path} cannot be read ({type(err).__name__}: {err}): {fix}") from None
