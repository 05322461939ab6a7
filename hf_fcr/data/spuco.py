"""A SpuCoMNIST-style spurious-correlation benchmark on real MNIST (``load_mnist``).

SpuCoMNIST (Joshi et al., "Towards Mitigating Spurious Correlations in the Wild", the SpuCo package) groups digits
into classes (here 0-1, 2-3, 4-5, 6-7, 8-9), gives each class a background colour, and sets how learnable the cue is
(its magnitude: how much of the background is coloured; its variance: how much the colour varies) and how strongly it
agrees with the class in training. Here: in ``train`` the background has the class's colour with probability
``correlation`` and one of the other four otherwise; ``validation`` (10,000 images held out of the official training
set) and ``test`` (the official 10,000) draw the colour uniformly, so every (class, colour) group is present, with
about 400 test images per group.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# datasets is imported where used: `hf-fcr --help` imports this package.

__all__ = ["COLOURS", "PAIRS", "mnist_pixels", "spuco_mnist"]

PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
COLOURS = {  # name: RGB in [0, 1]
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.1),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "magenta": (0.85, 0.1, 0.85),
}


def mnist_pixels(split: Any) -> np.ndarray:
    """``[N, 28, 28]`` float32 in [0, 1] from a split of ``load_mnist`` (PIL images)."""
    return np.stack([np.asarray(img, dtype=np.float32) for img in split["image"]]) / 255.0


def _colourize(pixels: np.ndarray, colours: np.ndarray, magnitude: int, variance: float, rng: Any) -> np.ndarray:
    """White digits over a coloured background square of side ``magnitude`` (28: the whole background), black
    elsewhere; each image's colour jittered with standard deviation ``variance``."""
    n = len(pixels)
    rgb = np.clip(colours + rng.normal(0.0, variance, size=(n, 3)) if variance else colours, 0, 1).astype(np.float32)
    mask = np.zeros((28, 28), dtype=np.float32)
    lo = (28 - magnitude) // 2
    mask[lo : lo + magnitude, lo : lo + magnitude] = 1.0
    background = rgb[:, :, None, None] * mask[None, None]
    x = pixels[:, None]
    return (x + (1.0 - x) * background).astype(np.float32)


def spuco_mnist(
    data: Any, seed: int = 0, correlation: float = 0.99, magnitude: int = 28, variance: float = 0.0
) -> Any:
    """The SpuCoMNIST-style benchmark from ``load_mnist()``'s DatasetDict: ``train`` (50,000), ``validation``
    (10,000), ``test`` (10,000); ``image`` RGB float32 ``[3, 28, 28]`` in [0, 1]; ``label`` the digit pair;
    ``background`` the colour (the spurious attribute); ``digit``."""
    import datasets

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data["train"]))
    splits = {
        "train": (data["train"], order[10000:]),
        "validation": (data["train"], order[:10000]),
        "test": (data["test"], np.arange(len(data["test"]))),
    }
    names = list(COLOURS)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    features = datasets.Features(
        {
            "image": datasets.Array3D((3, 28, 28), "float32"),
            "label": datasets.ClassLabel(names=[f"{a}-{b}" for a, b in PAIRS]),
            "background": datasets.ClassLabel(names=names),
            "digit": datasets.ClassLabel(num_classes=10),
        }
    )
    out = {}
    for name, (source, index) in splits.items():
        subset = source.select(index)
        digit = np.asarray(subset["label"])
        label = digit // 2
        if name == "train":
            other = (label + rng.integers(1, len(names), size=len(label))) % len(names)
            colour = np.where(rng.random(len(label)) < correlation, label, other)
        else:
            colour = rng.integers(0, len(names), size=len(label))
        images = _colourize(mnist_pixels(subset), palette[colour], magnitude, variance, rng)
        out[name] = datasets.Dataset.from_dict(
            {"image": images, "label": label, "background": colour, "digit": digit}, features=features
        )
    return datasets.DatasetDict(out)
