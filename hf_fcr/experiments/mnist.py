"""Real MNIST for training the small CNNs (``hf_fcr.data.load_mnist``): arrays, ParityMNIST for the paper's Figure 8
(``digit``: the fictitious sub-class) and the CNN. The SpuCoMNIST-style benchmark is ``hf_fcr.data.spuco``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..data.spuco import mnist_pixels

__all__ = ["mnist_arrays", "mnist_cnn", "parity_mnist_arrays"]

_MEAN, _STD = 0.1307, 0.3081


def mnist_arrays(data: Any, extra: dict[str, Any] | None = None) -> Any:
    """``load_mnist()`` with ``image`` as normalised float32 ``[1, 28, 28]`` arrays (what the small CNNs train on)."""
    import datasets

    out = {}
    for name, split in data.items():
        columns = {"image": ((mnist_pixels(split) - _MEAN) / _STD)[:, None], "label": np.asarray(split["label"])}
        features = {"image": datasets.Array3D((1, 28, 28), "float32"), "label": split.features["label"]}
        for key, (values, feature) in (extra or {}).items():
            columns[key] = values(columns["label"])
            features[key] = feature
        out[name] = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return datasets.DatasetDict(out)


def parity_mnist_arrays(data: Any) -> Any:
    """ParityMNIST as arrays: ``label`` even / odd, ``digit`` the fictitious sub-class."""
    import datasets

    digits = mnist_arrays(data)
    parity = datasets.ClassLabel(names=["even", "odd"])

    def relabel(batch: dict[str, Any]) -> dict[str, Any]:
        return {"digit": batch["label"], "label": [d % 2 for d in batch["label"]]}

    features = datasets.Features(
        {**digits["train"].features, "label": parity, "digit": datasets.ClassLabel(num_classes=10)}
    )
    return digits.map(relabel, batched=True, features=features, desc="ParityMNIST")


def mnist_cnn(num_classes: int, in_channels: int = 1, width: int = 16) -> Any:
    """The two-layer CNN of the digit experiments (``erm.digits_cnn``) at MNIST's scale (the paper's Conv-2Net
    size): a max-pool after each conv layer keeps an epoch over 50,000 images near a minute on 2 CPU cores."""
    from .erm import digits_cnn

    return digits_cnn(num_classes, in_channels, width, max_pool=True)
