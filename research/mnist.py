"""Real MNIST for training the small CNNs (``hf_fcr.data.load_mnist``): arrays, ParityMNIST for the paper's Figure 8
(``digit``: the fictitious sub-class) and the CNN. The SpuCoMNIST-style benchmark is ``hf_fcr.data.spuco``."""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_fcr.data.spuco import mnist_pixels

__all__ = ["PARITY_TRAINING", "lenet_cnn", "mnist_arrays", "mnist_cnn", "parity_mnist_arrays", "train_parity_cnn"]

PARITY_TRAINING = {"epochs": 2, "lr": 1e-3, "batch_size": 64}
"""How Figure 8's parity CNN is trained: two epochs of Adam (98.9-99.2% parity test accuracy)."""

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


def lenet_cnn(num_classes: int, width: int = 64) -> Any:
    """A LeNet-like CNN for 28x28 inputs: two 5x5 conv layers (16 and 32 channels), each with ReLU and a 2x2
    max-pool, a ``width``-unit ReLU layer (the penultimate layer: the head's input, what FCR edits), and a linear
    head. Figure 8's parity model (a reader expects ~99% parity accuracy from a LeNet; ``mnist_cnn`` gives ~92%)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, width),
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )


def train_parity_cnn(data: Any, seed: int) -> tuple[Any, float]:
    """Figure 8's model: ``lenet_cnn(2)`` trained on ParityMNIST's ``train`` split (``parity_mnist_arrays``) by
    ``PARITY_TRAINING``; returns the model (eval mode) and the training time in seconds."""
    import time

    import torch

    from hf_fcr.demo.erm import train_classifier

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = train_classifier(lenet_cnn(2), data["train"], seed=seed, **PARITY_TRAINING)
    return model, time.perf_counter() - t0


def mnist_cnn(num_classes: int, in_channels: int = 1, width: int = 16) -> Any:
    """The two-layer CNN of the digit experiments (``erm.digits_cnn``) at MNIST's scale (the paper's Conv-2Net
    size): a max-pool after each conv layer keeps an epoch over 50,000 images near a minute on 2 CPU cores."""
    from hf_fcr.demo.erm import digits_cnn

    return digits_cnn(num_classes, in_channels, width, max_pool=True)
