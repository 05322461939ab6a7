"""sklearn's 1,797 real 8x8 handwritten digits as a ``datasets.DatasetDict``."""

from __future__ import annotations

from typing import Any

import numpy as np

# scikit-learn and datasets are imported where used: `hf-fcr --help` imports this package.

__all__ = ["digits_dataset"]


def digits_dataset(seed: int = 0, test_fraction: float = 0.25) -> Any:
    """Digits split into ``train`` / ``test`` (stratified by a seeded shuffle); ``image`` is a float32 [1, 8, 8]
    array in [0, 1], ``label`` the digit."""
    import datasets
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    features = datasets.Features(
        {"image": datasets.Array3D(shape=(1, 8, 8), dtype="float32"), "label": datasets.ClassLabel(num_classes=10)}
    )

    def split(index: np.ndarray) -> Any:
        return datasets.Dataset.from_dict({"image": images[index], "label": labels[index]}, features=features)

    return datasets.DatasetDict({"train": split(order[n_test:]), "test": split(order[:n_test])})
