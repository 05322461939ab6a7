"""The main job, fully offline: SpuriousDigits -> ERM (a timm model) -> FCR, DFR and controls -> results.

Every method works on the same cached features (one backbone pass per split). The edited model is saved as a timm
folder with its ``fcr_config.json`` and card; the ERM model it was edited from is saved beside it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__

__all__ = ["run_demo"]


def _timm_model(arch: str, seed: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, num_classes=2)
    from .data.spurious import LABELS, SIZE

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


def _metrics(pred: torch.Tensor, feats: Any, train_props: dict[str, float]) -> dict[str, Any]:
    from .metrics import group_ids, group_metrics

    ids, names = group_ids({"label": feats["label"], "place": feats["place"]}, ["label", "place"])
    return group_metrics(pred, feats["label"], ids, names, train_props)


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
    import timm.models

    from .baselines import dfr
    from .data import train_classifier
    from .data.spurious import spurious_digits
    from .metrics import group_ids
    from .remover import FictitiousClassRemover

    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; pass a folder for --output-dir.")
    for name in ("results.json", "fcr-model", "erm-model"):
        if (out / name).exists() and not overwrite:
            raise FileExistsError(f"{out / name} exists; pass --overwrite to replace the demo's outputs.")
    out.mkdir(parents=True, exist_ok=True)
    log = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    data = spurious_digits(seed=seed, correlation=correlation)
    log(f"SpuriousDigits (correlation {correlation}): " + ", ".join(f"{k} {len(v)}" for k, v in data.items()))
    model = train_classifier(_timm_model(arch, seed), data["train"], epochs=epochs, seed=seed)
    timings["data_and_erm_training_s"] = time.perf_counter() - t0
    log(f"ERM: trained timm {arch} for {epochs} epochs in {timings['data_and_erm_training_s']:.1f}s")
    erm_dir = out / "erm-model"
    if erm_dir.exists():
        import shutil

        shutil.rmtree(erm_dir)
    timm.models.save_for_hf(model, str(erm_dir), safe_serialization=True)

    remover = FictitiousClassRemover(model)
    remover.base_model_name_or_path = str(erm_dir)
    t0 = time.perf_counter()
    columns = ("label", "place", "group")
    feats = {split: remover.extract_features(ds, columns=columns, batch_size=256) for split, ds in data.items()}
    timings["feature_pass_s"] = time.perf_counter() - t0

    train_ids, train_names = group_ids(
        {"label": feats["train"]["label"], "place": feats["train"]["place"]}, ["label", "place"]
    )
    counts = torch.bincount(train_ids, minlength=len(train_names)).double()
    train_props = {name: float(c / counts.sum()) for name, c in zip(train_names, counts)}
    test = feats["test"]
    methods: dict[str, dict[str, Any]] = {}
    methods["erm"] = _metrics(remover.logits(test.features).argmax(1), test, train_props)

    # controls first (each reverted), then FCR itself, whose edits are kept and saved
    for name, selection in (("fcr_grad_x_act", "grad_x_act"), ("fcr_random_edge", "random")):
        t0 = time.perf_counter()
        search = remover.neutralize_spurious(
            feats["train"], feats["validation"], rule=rule, selection=selection, seed=seed
        )
        elapsed = time.perf_counter() - t0
        methods[name] = {
            **_metrics(remover.logits(test.features).argmax(1), test, train_props),
            "choice": search.choice,
            "edit_time_s": elapsed,
        }
        remover.revert()

    t0 = time.perf_counter()
    val = feats["validation"]
    head = dfr(val.features, val["label"], val["group"], num_classes=2, seed=seed)
    methods["dfr"] = {
        **_metrics(head.logits(test.features).argmax(1), test, train_props),
        "C": head.C,
        "fit_time_s": time.perf_counter() - t0,
    }

    t0 = time.perf_counter()
    search = remover.neutralize_spurious(feats["train"], feats["validation"], rule=rule, seed=seed)
    elapsed = time.perf_counter() - t0
    methods["fcr"] = {
        **_metrics(remover.logits(test.features).argmax(1), test, train_props),
        "choice": search.choice,
        "edit_time_s": elapsed,
        "fictitious_head_accuracy": search.fictitious.accuracy,
        "edits": [e.to_dict() for e in search.edits],
    }
    order = ["erm", "fcr", "dfr", "fcr_grad_x_act", "fcr_random_edge"]
    methods = {k: methods[k] for k in order}

    chosen = next(t for t in search.tried if t["policy"] == search.policy and t["num_weights"] == search.num_weights)
    chosen["sweep"].plot(out / "sweep_validation.png", rule=rule, title="FCR on SpuriousDigits (validation)")
    test_sweep = remover.sweep(test, label_column="label", group_columns=("place",))
    test_sweep.plot(out / "sweep_test.png", rule=rule, title="FCR on SpuriousDigits (test)")

    command = (
        f"hf-fcr demo --output-dir {out} --seed {seed} --correlation {correlation} --epochs {epochs} "
        f"--arch {arch} --rule {rule}"
    )
    metrics = [
        {"name": "accuracy", "value": methods["fcr"]["average"], "dataset": "SpuriousDigits test"},
        {"name": "worst_group_accuracy", "value": methods["fcr"]["worst_group"], "dataset": "SpuriousDigits test"},
    ]
    remover.save_pretrained(
        out / "fcr-model",
        overwrite=True,
        metrics=metrics,
        command=command,
        dataset_name="SpuriousDigits",
        model_name=f"{arch}-spurious-digits-fcr",
    )
    results = {
        "benchmark": "spurious_digits",
        "seed": seed,
        "correlation": correlation,
        "arch": arch,
        "epochs": epochs,
        "hf_fcr_version": __version__,
        "methods": methods,
        "fcr_choice": search.choice,
        "candidates": [{k: v for k, v in t.items() if k != "sweep"} for t in search.tried],
        "timings": timings,
        "command": command,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results


def format_table(results: dict[str, Any]) -> str:
    """The demo's results as a plain-text table (accuracies in %)."""
    lines = [f"{'method':<18}{'average':>9}{'worst':>9}{'gap':>8}{'w-avg':>8}  notes"]
    for name, m in results["methods"].items():
        note = ""
        if "choice" in m:
            c = m["choice"]
            note = f"policy={c['policy']} weights/class={c['num_weights']} r={c['r']:.4g}"
        elif "C" in m:
            note = f"C={m['C']}"
        lines.append(
            f"{name:<18}{100 * m['average']:>9.1f}{100 * m['worst_group']:>9.1f}{100 * m['gap']:>8.1f}"
            f"{100 * m.get('weighted_average', float('nan')):>8.1f}  {note}"
        )
    return "\n".join(lines)
