"""Helpers shared by the tests (imported explicitly, never through conftest)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

TESTS = Path(__file__).parent


def state_equal(a: dict, b: dict) -> bool:
    """Two state dicts with the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model) -> dict:
    """A detached copy of every tensor of ``model``'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def spawn(code: str, *args) -> subprocess.Popen:
    """Run ``code`` in a new Python process (the tests folder importable), reading its stdout line by line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, stdout=subprocess.PIPE, text=True
    )


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    """Read ``proc``'s stdout until a line holds ``marker``; AssertionError if it ends or times out first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"process ended before printing {marker!r}")
    raise AssertionError(f"no {marker!r} within {timeout}s")
