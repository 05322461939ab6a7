"""Offline data: real images shipped inside installed packages (scikit-learn's digits, scikit-image's photos and
textures) and the benchmarks built from them."""

import os
from typing import Any

from .digits import digits_dataset

__all__ = ["BUILTIN_DATASETS", "digits_dataset", "load_data"]

BUILTIN_DATASETS = ("spurious_digits", "parity_digits", "digits")


def load_data(name: str, config: str | None = None, streaming: bool = False, seed: int = 0) -> Any:
    """A DatasetDict: a built-in (``spurious_digits``, ``parity_digits``, ``digits``; built with ``seed``), a
    ``save_to_disk`` folder, or a Hub dataset (``load_dataset``)."""
    import datasets

    if name in BUILTIN_DATASETS:
        from .spurious import parity_digits, spurious_digits

        return {"spurious_digits": spurious_digits, "parity_digits": parity_digits, "digits": digits_dataset}[name](
            seed=seed
        )
    if os.path.isdir(name) and os.path.isfile(os.path.join(name, "dataset_dict.json")):
        data = datasets.load_from_disk(name)
        return (
            datasets.IterableDatasetDict({k: v.to_iterable_dataset() for k, v in data.items()}) if streaming else data
        )
    return datasets.load_dataset(name, config, streaming=streaming)
