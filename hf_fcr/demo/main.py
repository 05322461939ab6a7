"""The main job, fully offline: SpuriousDigits -> ERM (a timm model) -> FCR, DFR and controls -> results.

Every method works on the same cached features (one backbone pass per split). The model ``auto`` recommends is the
main output (``recommended-model/``); FCR's edit (``fcr-model/``) and the ERM model they were made from
(``erm-model/``) are saved beside it, each a timm folder (the edited ones with ``fcr_config.json`` and a card).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .compare import Benchmark, run_spurious
from .erm import spurious_digits_erm

__all__ = ["check_output_dir", "run_demo"]


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

    out = check_output_dir(output_dir, ("results.json", "recommended-model", "fcr-model", "erm-model"), overwrite)
    log = print if progress else (lambda *a, **k: None)
    remover, data, timings = spurious_digits_erm(out, seed, correlation, epochs, arch, log)
    command = (
        f"hf-fcr demo --output_dir {out} --seed {seed} --correlation {correlation} --epochs {epochs} "
        f"--arch {arch} --rule {rule}"
    )
    return run_spurious(
        out,
        remover,
        Benchmark("spurious_digits", data),
        seed=seed,
        rule=rule,
        command=command,
        extra={"correlation": correlation, "arch": arch, "epochs": epochs, "timings": timings},
        pass_options={"progress": progress},
    )
