"""sklearn's 1,797 real 8x8 handwritten digits as a ``datasets.DatasetDict``, a small CNN, and an ERM trainer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["digits_cnn", "digits_dataset", "train_classifier"]


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


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> nn.Module:
    """Two conv layers, ReLU, global average pooling and a linear head (the paper's Conv-2Net scale)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def train_classifier(
    model: nn.Module,
    dataset: Any,
    label_column: str = "label",
    image_column: str = "image",
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Plain ERM (cross-entropy, Adam) on a ``datasets.Dataset`` whose image column holds arrays; returns the model
    in eval mode. ``progress`` shows a tqdm bar over the epochs."""
    from tqdm.auto import trange

    torch.manual_seed(seed)
    data = dataset.with_format("torch", columns=[image_column, label_column])[:]
    x = data[image_column].float()
    y = data[label_column].long()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in trange(epochs, desc="ERM training", unit="epoch", disable=not progress):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()
