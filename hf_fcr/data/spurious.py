"""Offline spurious-correlation benchmarks built from real images shipped in installed packages.

*SpuriousDigits* (a Waterbirds stand-in): sklearn's real handwritten digits, label ``digit >= 5`` ("small" /
"large"), drawn in white over a real texture from ``skimage.data`` with a colour tint: ``place`` 0 is green grass,
``place`` 1 is blue brick. In ``train`` the place agrees with the label at rate ``correlation`` (default 0.95): the
minority groups are large digits on grass and small digits on brick. In ``validation`` and ``test`` every digit is
drawn on both places, so the groups are balanced. ``group = 2 * label + place``.

*ParityDigits* (the paper's ParityMNIST, Sec. 5.2): even / odd superclasses with the digit as the sub-class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .digits import digits_dataset

# scikit-learn, scikit-image (the [demo] extra) and datasets are imported where used: `hf-fcr --help` imports this
# package.

__all__ = ["PLACES", "parity_digits", "spurious_digits"]

PLACES = ("grass", "brick")
LABELS = ("small", "large")
_TINTS = {"grass": (0.3, 0.34, 0.29), "brick": (0.29, 0.3, 0.34)}
SIZE = 8


def _textures() -> dict[str, np.ndarray]:
    import skimage.data

    return {"grass": skimage.data.grass() / 255.0, "brick": skimage.data.brick() / 255.0}


def _render(digit: np.ndarray, place: int, textures: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A [3, 8, 8] float32 image: the digit in white over a tinted 32x32 texture crop, shrunk x4."""
    name = PLACES[place]
    texture = textures[name]
    y, x = rng.integers(0, texture.shape[0] - 32), rng.integers(0, texture.shape[1] - 32)
    crop = texture[y : y + 32, x : x + 32].reshape(SIZE, 4, SIZE, 4).mean(axis=(1, 3))
    background = np.asarray(_TINTS[name])[:, None, None] * (0.5 + 0.5 * crop)[None]
    ink = digit[None]
    return (ink + (1.0 - ink) * background).astype(np.float32)


def spurious_digits(seed: int = 0, correlation: float = 0.95, fractions: tuple[float, float] = (0.2, 0.2)) -> Any:
    """SpuriousDigits as a ``datasets.DatasetDict`` with ``train`` / ``validation`` / ``test`` splits and columns
    ``image`` (float32 [3, 8, 8]), ``label``, ``place``, ``group`` and ``digit``."""
    import datasets
    from sklearn.datasets import load_digits

    if not 0.0 <= correlation <= 1.0:
        raise ValueError(f"correlation must be in [0, 1], got {correlation}.")
    digits = load_digits()
    images = digits.images / 16.0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    n_val, n_test = (round(len(images) * f) for f in fractions)
    splits = {
        "validation": order[:n_val],
        "test": order[n_val : n_val + n_test],
        "train": order[n_val + n_test :],
    }
    textures = _textures()
    features = datasets.Features(
        {
            "image": datasets.Array3D(shape=(3, SIZE, SIZE), dtype="float32"),
            "label": datasets.ClassLabel(names=list(LABELS)),
            "place": datasets.ClassLabel(names=list(PLACES)),
            "group": datasets.Value("int64"),
            "digit": datasets.Value("int64"),
        }
    )
    out = {}
    for split, index in splits.items():
        rows: dict[str, list] = {k: [] for k in features}
        for i in index:
            label = int(digits.target[i] >= 5)
            if split == "train":
                places = [label if rng.random() < correlation else 1 - label]
            else:
                places = [0, 1]
            for place in places:
                rows["image"].append(_render(images[i], place, textures, rng))
                rows["label"].append(label)
                rows["place"].append(place)
                rows["group"].append(2 * label + place)
                rows["digit"].append(int(digits.target[i]))
        out[split] = datasets.Dataset.from_dict(
            {k: np.stack(v) if k == "image" else v for k, v in rows.items()}, features=features
        )
    return datasets.DatasetDict(out)


def parity_digits(seed: int = 0, test_fraction: float = 0.25) -> Any:
    """ParityDigits: ``label`` = digit parity (0 even, 1 odd), ``digit`` the sub-class, ``image`` [1, 8, 8]."""
    import datasets

    base = digits_dataset(seed=seed, test_fraction=test_fraction)

    def to_parity(split: Any) -> Any:
        digit = np.asarray(split["label"])
        split = split.rename_column("label", "digit").cast_column("digit", datasets.Value("int64"))
        return split.add_column("label", (digit % 2).tolist()).cast_column(
            "label", datasets.ClassLabel(names=["even", "odd"])
        )

    return datasets.DatasetDict({name: to_parity(split) for name, split in base.items()})
