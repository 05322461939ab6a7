"""The main job, fully offline: SpuriousDigits -> ERM (a timm model) -> FCR, DFR and controls -> results.

Every method works on the same cached features (one backbone pass per split). The edited model is saved as a timm
folder with its ``fcr_config.json`` and card; the ERM model it was edited from is saved beside it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_output_dir", "run_demo", "spurious_digits_erm"]


def _timm_model(arch: str, seed: int) -> torch.nn.Module:
    import timm

    from .data.spurious import LABELS, SIZE

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


def check_output_dir(output_dir: str | os.PathLike, names: tuple[str, ...], overwrite: bool) -> Path:
    """Create ``output_dir``; refuse (FileExistsError) if it is a file or already holds one of ``names``."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; pass a folder for --output_dir.")
    for name in names:
        if (out / name).exists() and not overwrite:
            raise FileExistsError(f"{out / name} exists; pass --overwrite to replace the outputs of an earlier run.")
    out.mkdir(parents=True, exist_ok=True)
    return out


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
    frozen, with an ERM-trained linear head (see ``data.pretrained.frozen_backbone_erm``)."""
    import timm.models

    from .data import train_classifier
    from .data.spurious import spurious_digits
    from .remover import FictitiousClassRemover

    t0 = time.perf_counter()
    data = spurious_digits(seed=seed, correlation=correlation)
    log(f"SpuriousDigits (correlation {correlation}): " + ", ".join(f"{k} {len(v)}" for k, v in data.items()))
    if arch == "efficientnet_lite0_pretrained":
        from .data.pretrained import frozen_backbone_erm

        model, data = frozen_backbone_erm(data, seed=seed)
        what = "an ERM head on the frozen ImageNet EfficientNet-Lite0"
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
    remover = FictitiousClassRemover(model)
    remover.base_model_name_or_path = str(erm_dir)
    return remover, data, {"data_and_erm_training_s": elapsed}


def run_demo(
    output_dir: str | os.PathLike,
    seed: int = 0,
    correlation: float = 0.95,
    epochs: int = 30,
    arch: str = "test_resnet",
    rule: str = "min_gap",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the SpuriousDigits benchmark and write ``results.json``, sweep plots and the edited model to
    ``output_dir``; returns the results."""
    from .benchmark import run_spurious

    out = check_output_dir(output_dir, ("results.json", "fcr-model", "erm-model"), overwrite)
    log = print if progress else (lambda *a, **k: None)
    remover, data, timings = spurious_digits_erm(out, seed, correlation, epochs, arch, log)
    command = (
        f"hf-fcr demo --output-dir {out} --seed {seed} --correlation {correlation} --epochs {epochs} "
        f"--arch {arch} --rule {rule}"
    )
    return run_spurious(
        out,
        remover,
        data,
        benchmark="spurious_digits",
        seed=seed,
        rule=rule,
        command=command,
        extra={"correlation": correlation, "arch": arch, "epochs": epochs, "timings": timings},
        progress=progress,
    )
