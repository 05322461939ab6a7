"""ERM, FCR, DFR and FCR's controls side by side on the same cached features (one backbone pass per split)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..features import FeatureSet
from ..metrics import group_ids, group_metrics
from .baselines import dfr

__all__ = ["METHOD_ORDER", "compare_methods", "run_spurious"]

METHOD_ORDER = ("erm", "fcr", "dfr", "fcr_grad_x_act", "fcr_random_edge")


def _groups(feats: FeatureSet, label_column: str, attribute_column: str) -> tuple[torch.Tensor, list[str]]:
    columns = {label_column: feats.labels(label_column), attribute_column: feats.labels(attribute_column)}
    return group_ids(columns, [label_column, attribute_column])


def compare_methods(
    remover: Any,
    train: FeatureSet,
    val: FeatureSet,
    test: FeatureSet,
    label_column: str = "label",
    attribute_column: str = "place",
    rule: str = "min_gap",
    seed: int = 0,
    output_dir: str | Path | None = None,
    title: str = "FCR",
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Evaluate ERM (the model as it is), FCR (``neutralize_spurious``, chosen on ``val``), DFR (fit on ``val``),
    and FCR with grad x act or random edges instead of SCA, on ``test``. Groups are (label, attribute). Leaves the
    FCR edits applied to ``remover.model``; writes the sweep plots to ``output_dir`` when given. Returns the
    metrics per method and the FCR search."""
    train_ids, train_names = _groups(train, label_column, attribute_column)
    counts = torch.bincount(train_ids, minlength=len(train_names)).double()
    train_props = {name: float(c / counts.sum()) for name, c in zip(train_names, counts)}
    test_ids, test_names = _groups(test, label_column, attribute_column)
    test_labels = test.labels(label_column)

    def evaluate(logits: torch.Tensor) -> dict[str, Any]:
        return group_metrics(logits.argmax(1), test_labels, test_ids, test_names, train_props)

    methods: dict[str, dict[str, Any]] = {"erm": evaluate(remover.logits(test.features))}
    kwargs = {"label_column": label_column, "attribute_column": attribute_column, "rule": rule, "seed": seed}
    # the controls first (each reverted), then FCR itself, whose edits stay applied
    for name, selection in (("fcr_grad_x_act", "grad_x_act"), ("fcr_random_edge", "random")):
        t0 = time.perf_counter()
        search = remover.neutralize_spurious(train, val, selection=selection, **kwargs)
        elapsed = time.perf_counter() - t0
        methods[name] = {**evaluate(remover.logits(test.features)), "choice": search.choice, "edit_time_s": elapsed}
        remover.revert()

    t0 = time.perf_counter()
    val_ids, _ = _groups(val, label_column, attribute_column)
    head = dfr(val.features, val.labels(label_column), val_ids, num_classes=remover.num_classes, seed=seed)
    methods["dfr"] = {**evaluate(head.logits(test.features)), "C": head.C, "fit_time_s": time.perf_counter() - t0}

    t0 = time.perf_counter()
    search = remover.neutralize_spurious(train, val, **kwargs)
    elapsed = time.perf_counter() - t0
    methods["fcr"] = {
        **evaluate(remover.logits(test.features)),
        "choice": search.choice,
        "edit_time_s": elapsed,
        "fictitious_head_accuracy": search.fictitious.accuracy,
        "edits": [e.to_dict() for e in search.edits],
    }
    if output_dir is not None:
        out = Path(output_dir)
        chosen = next(
            t for t in search.tried if (t["policy"], t["num_weights"]) == (search.policy, search.num_weights)
        )
        chosen["sweep"].plot(out / "sweep_validation.png", rule=rule, title=f"{title} (validation)")
        test_sweep = remover.sweep(test, label_column=label_column, group_columns=(attribute_column,))
        test_sweep.plot(out / "sweep_test.png", title=f"{title} (test)", chosen_r=search.r)
    return {k: methods[k] for k in METHOD_ORDER}, search


def run_spurious(
    output_dir: str | Path,
    remover: Any,
    data: Any,
    benchmark: str,
    label_column: str = "label",
    attribute_column: str = "place",
    image_column: str = "image",
    splits: tuple[str, str, str] = ("train", "validation", "test"),
    seed: int = 0,
    rule: str = "min_gap",
    command: str = "",
    batch_size: int = 256,
    cache_dir: str | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Features of the three splits (one pass each), ``compare_methods``, then ``output_dir``: the edited model
    (``fcr-model/``, with its record and card), the sweep plots and ``results.json``."""
    import json

    from .. import __version__

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    timings = extra.pop("timings", {})
    t0 = time.perf_counter()
    columns = (label_column, attribute_column)
    feats = [
        remover.extract_features(
            data[split],
            image_column=image_column,
            columns=columns,
            batch_size=batch_size,
            cache_dir=cache_dir,
            progress=progress,
        )
        for split in splits
    ]
    timings["feature_pass_s"] = time.perf_counter() - t0
    methods, search = compare_methods(
        remover,
        *feats,
        label_column=label_column,
        attribute_column=attribute_column,
        rule=rule,
        seed=seed,
        output_dir=out,
        title=f"FCR on {benchmark}",
    )
    metrics = [
        {"name": name, "value": methods["fcr"][key], "dataset": benchmark, "split": splits[2]}
        for name, key in (("accuracy", "average"), ("worst_group_accuracy", "worst_group"))
    ]
    remover.save_pretrained(
        out / "fcr-model",
        overwrite=True,
        metrics=metrics,
        command=command,
        dataset_name=benchmark,
        model_name=f"{benchmark}-fcr",
    )
    results = {
        "benchmark": benchmark,
        "seed": seed,
        **extra,
        "hf_fcr_version": __version__,
        "methods": methods,
        "fcr_choice": search.choice,
        "candidates": [{k: v for k, v in t.items() if k != "sweep"} for t in search.tried],
        "timings": timings,
        "command": command,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results
