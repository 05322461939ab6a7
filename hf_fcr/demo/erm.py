"""ERM training for the experiments: a small CNN and its trainer, the SpuriousDigits ERM models (a timm model
trained from scratch, or the packaged ImageNet EfficientNet-Lite0 frozen with an ERM head)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from ..data.pretrained import efficientnet_lite0_imagenet
from ..data.spurious import LABELS, SIZE, spurious_digits
from ..features.feature_pass import FeaturePass, PassOptions
from ..remover import FictitiousClassRemover

# timm and datasets are imported where used (their import costs seconds; the stand-ins' callers may not need them).

__all__ = ["digits_cnn", "finetuned_backbone_erm", "frozen_backbone_erm", "spurious_digits_erm", "train_classifier"]


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32, max_pool: bool = False) -> nn.Module:
    """Two conv layers, ReLU, global average pooling and a linear head (the paper's Conv-2Net scale); with
    ``max_pool`` a 2x2 max-pool after each conv layer (for 28x28 inputs)."""

    def pool() -> list[nn.Module]:
        return [nn.MaxPool2d(2)] if max_pool else []

    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        *pool(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        *pool(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


def train_classifier(
    model: nn.Module,
    dataset: Any,
    label_column: str = "label",
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> nn.Module:
    """Plain ERM (cross-entropy, Adam) on a ``datasets.Dataset`` whose ``image`` column holds arrays; returns the
    model in eval mode. ``progress`` shows a tqdm bar over the epochs."""

    torch.manual_seed(seed)
    data = dataset.with_format("torch", columns=["image", label_column])[:]
    x = data["image"].float()
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


def _imagenet_prepared(data: Any, size: int) -> tuple[torch.nn.Module, Any]:
    """The packaged ImageNet EfficientNet-Lite0 with a new 2-class head, and ``data`` resized to ``size`` and
    normalized with ImageNet statistics."""
    import datasets

    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def prepare(batch: dict[str, Any]) -> dict[str, Any]:
        x = F.interpolate(torch.as_tensor(batch["image"]), size=size, mode="bilinear", align_corners=False)
        return {"image": ((x - mean) / std).numpy()}

    features = datasets.Features({**data["train"].features, "image": datasets.Array3D((3, size, size), "float32")})
    data = data.map(prepare, batched=True, batch_size=256, features=features)
    model = efficientnet_lite0_imagenet()
    model.reset_classifier(2)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, size, size), "label_names": list(LABELS)}
    return model, data


def frozen_backbone_erm(data: Any, seed: int = 0, size: int = 64, steps: int = 300) -> tuple[torch.nn.Module, Any]:
    """The pretrained variant of the SpuriousDigits ERM model: the ImageNet EfficientNet-Lite0 backbone, frozen, with
    a new 2-class linear head trained by ERM (cross-entropy, Adam) on the training split's features. The images are
    resized to ``size`` and normalized with ImageNet statistics first; returns the model and the prepared data."""

    model, data = _imagenet_prepared(data, size)
    feature_pass = FeaturePass(model, model.classifier, head_name="classifier", options=PassOptions(batch_size=128))
    train = feature_pass.extract(data["train"])
    torch.manual_seed(seed)
    head = model.classifier
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    labels = train.labels("label")
    for _ in range(steps):
        loss = F.cross_entropy(head(train.features), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), data


def finetuned_backbone_erm(
    data: Any, seed: int = 0, size: int = 64, frozen_blocks: int = 3, epochs: int = 15
) -> tuple[torch.nn.Module, Any]:
    """The fine-tuned pretrained variant (the paper's regime, sized for a CPU): the ImageNet EfficientNet-Lite0 with
    its stem and first ``frozen_blocks`` stages frozen (their outputs computed once and cached), everything after them
    (most of the parameters) trained by ERM (cross-entropy, Adam, batch 64) with a new 2-class head."""

    model, data = _imagenet_prepared(data, size)
    frozen = torch.nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:frozen_blocks]).eval()
    trained = torch.nn.Sequential(*model.blocks[frozen_blocks:], model.conv_head, model.bn2, model.global_pool)
    for p in frozen.parameters():
        p.requires_grad_(False)
    train = data["train"].with_format("torch")
    with torch.no_grad():
        cached = torch.cat([frozen(b["image"]) for b in train.iter(batch_size=256)])
    labels = torch.as_tensor(train["label"])
    params = [*trained.parameters(), *model.classifier.parameters()]
    torch.manual_seed(seed)
    opt = torch.optim.Adam(params, lr=1e-3)
    trained.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels)).split(64):
            loss = F.cross_entropy(model.classifier(trained(cached[idx])), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), data


def _timm_model(arch: str, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=2)
    # the checkpoint describes the data it was trained on: 8x8 RGB arrays in [0, 1], two labels
    model.pretrained_cfg = {
        **{k: v for k, v in model.pretrained_cfg.items() if k not in ("hf_hub_id", "url", "tag")},
        "input_size": (3, SIZE, SIZE),
        "mean": (0.0, 0.0, 0.0),
        "std": (1.0, 1.0, 1.0),
        "crop_pct": 1.0,
        "num_classes": 2,
        "label_names": list(LABELS),
    }
    return model


def spurious_digits_erm(
    output_dir: str | os.PathLike,
    seed: int = 0,
    correlation: float = 0.95,
    epochs: int = 30,
    arch: str = "test_resnet",
    log: Any = print,
) -> tuple[Any, Any, dict[str, float]]:
    """Build SpuriousDigits, train a timm ``arch`` on it by ERM, save it to ``output_dir/erm-model``; returns the
    remover over that model (its base is the saved folder), the DatasetDict and the timings.

    ``arch="efficientnet_lite0_pretrained"`` is the pretrained variant: the packaged ImageNet EfficientNet-Lite0,
    frozen, with an ERM-trained linear head (see ``frozen_backbone_erm``); ``"efficientnet_lite0_finetuned"`` trains
    all but its stem and first stages by ERM (see ``finetuned_backbone_erm``)."""
    import timm.models

    t0 = time.perf_counter()
    data = spurious_digits(seed=seed, correlation=correlation)
    log(f"SpuriousDigits (correlation {correlation}): " + ", ".join(f"{k} {len(v)}" for k, v in data.items()))
    if arch == "efficientnet_lite0_pretrained":
        model, data = frozen_backbone_erm(data, seed=seed)
        what = "an ERM head on the frozen ImageNet EfficientNet-Lite0"
    elif arch == "efficientnet_lite0_finetuned":
        model, data = finetuned_backbone_erm(data, seed=seed)
        trained = sum(p.numel() for p in model.parameters() if p.requires_grad) / sum(
            p.numel() for p in model.parameters()
        )
        what = f"ImageNet EfficientNet-Lite0 fine-tuned ({trained:.0%} of parameters)"
    else:
        model = train_classifier(
            _timm_model(arch, seed), data["train"], epochs=epochs, seed=seed, progress=log is print
        )
        what = f"timm {arch} for {epochs} epochs"
    elapsed = time.perf_counter() - t0
    log(f"ERM: trained {what} in {elapsed:.1f}s")
    erm_dir = Path(output_dir) / "erm-model"
    if erm_dir.exists():
        shutil.rmtree(erm_dir)
    timm.models.save_for_hf(model, str(erm_dir), safe_serialization=True)
    remover = FictitiousClassRemover(model, base_model_name_or_path=str(erm_dir.resolve()))  # a path cards can name
    return remover, data, {"data_and_erm_training_s": elapsed}
