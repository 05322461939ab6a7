"""Preprocessing for PIL images, as each library's users expect it: a timm model's own data config
(``resolve_data_config`` + ``create_transform``), a transformers image processor, or the user's callable."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# timm and transformers are imported where their preprocessing is built: a user of one does not import the other.

__all__ = ["processor_transform", "resolve_transform", "timm_transform"]


def timm_transform(model: nn.Module) -> Callable[[list[Any]], torch.Tensor]:
    """timm's eval transform for ``model`` (from its ``pretrained_cfg``), over a list of PIL images."""
    import timm.data

    config = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**config)

    def apply(images: list[Any]) -> torch.Tensor:
        return torch.stack([transform(img.convert("RGB")) for img in images])

    apply.config = config
    return apply


def processor_transform(processor: Any) -> Callable[[list[Any]], torch.Tensor]:
    """A transformers image processor over a list of PIL images; the processor travels along (saved with the
    checkpoint, so that ``pipeline("image-classification", model=folder)`` works on the edited model)."""

    def apply(images: list[Any]) -> torch.Tensor:
        return processor([img.convert("RGB") for img in images], return_tensors="pt")["pixel_values"]

    apply.config = processor.to_dict()
    apply.processor = processor
    return apply


def _is_processor(obj: Any) -> bool:
    return callable(getattr(obj, "to_dict", None)) and callable(getattr(obj, "preprocess", None))


def resolve_transform(model: nn.Module, transform: Any = None) -> Callable[[list[Any]], torch.Tensor] | None:
    """The preprocessing to use: an explicit ``transform`` always wins (a transformers image processor is wrapped);
    else a timm model's own data config; else the image processor saved beside a transformers model's config;
    else None (image columns must then hold arrays or tensors)."""
    if transform is not None:
        return processor_transform(transform) if _is_processor(transform) else transform
    if type(model).__module__.startswith("timm.") and isinstance(getattr(model, "pretrained_cfg", None), dict):
        return timm_transform(model)
    source = getattr(getattr(model, "config", None), "_name_or_path", None)
    if isinstance(source, str) and os.path.isfile(os.path.join(source, "preprocessor_config.json")):
        from transformers import AutoImageProcessor

        return processor_transform(AutoImageProcessor.from_pretrained(source))
    return None
