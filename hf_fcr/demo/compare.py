"""ERM, FCR, DFR and FCR's controls side by side on the same cached features (one backbone pass per split)."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..core.metrics import group_ids, group_metrics
from ..debias.diagnosis import RANDOM_COLUMN, random_attribute_draws
from ..debias.infer import agreement, infer_attribute
from ..features.feature_set import FeatureSet

__all__ = ["METHOD_ORDER", "Benchmark", "compare_methods", "run_spurious"]

METHOD_ORDER = (
    "erm",
    "fcr",
    "fcr_random_attribute",
    "fcr_inferred_attribute",
    "fcr_grad_x_act",
    "fcr_random_edge",
    "dfr",
    "dfr_class_balanced",
    "auto",
)


@dataclass(frozen=True)
class Benchmark:
    """A spurious-cue benchmark: its ``name``, its ``data`` (a ``DatasetDict``) and where things are in it."""

    name: str
    data: Any
    label_column: str = "label"
    attribute_column: str = "place"
    image_column: str = "image"
    splits: tuple[str, str, str] = ("train", "validation", "test")


def _groups(feats: FeatureSet, label_column: str, attribute_column: str) -> tuple[torch.Tensor, list[str]]:
    columns = {label_column: feats.labels(label_column), attribute_column: feats.labels(attribute_column)}
    return group_ids(columns, [label_column, attribute_column])


def _mean_of(draws: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("average", "worst_group", "gap", "weighted_average")
    out = {k: statistics.mean(d[k] for d in draws) for k in keys if k in draws[0]}
    out["worst_group_std"] = statistics.stdev(d["worst_group"] for d in draws) if len(draws) > 1 else 0.0
    return {**out, "draws": [{k: d[k] for k in ("average", "worst_group", "choice")} for d in draws]}


def compare_methods(  # noqa: PLR0913 -- keyword options with defaults: the columns, rule, seed and outputs
    remover: Any,
    splits: tuple[FeatureSet, FeatureSet, FeatureSet],
    label_column: str = "label",
    attribute_column: str = "place",
    rule: str = "min_gap",
    seed: int = 0,
    output_dir: str | Path | None = None,
    title: str = "FCR",
    kept: dict[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], Any]:
    """Evaluate on ``test``, every method chosen or fit on ``val`` (``splits``: train, val, test) through
    ``neutralize_spurious``: ERM (the model as it is), FCR, its controls (M' on a random attribute with the true
    class-wise frequencies, mean over ``RANDOM_ATTRIBUTE_DRAWS`` draws; grad x act and random edges instead of SCA),
    FCR with M' on an attribute inferred without labels (``infer.infer_attribute``, per-class clustering;
    ``agreement_ari`` with the truth), DFR, class-balanced retraining (``dfr_class_balanced``, no group labels) and
    ``auto``. Groups are (label, attribute). Leaves the FCR edits applied to ``remover.model`` (with the diagnosis in
    its record); writes the sweep and diagnosis plots to ``output_dir`` when given; ``kept`` (a dict) receives
    ``"auto"``: auto's edits and record extras, as applied before the revert. Returns the metrics per method
    and the FCR search
    (``.diagnosis`` included)."""
    train, val, test = splits
    train_ids, train_names = _groups(train, label_column, attribute_column)
    counts = torch.bincount(train_ids, minlength=len(train_names)).double()
    train_props = {name: float(c / counts.sum()) for name, c in zip(train_names, counts)}
    test_ids, test_names = _groups(test, label_column, attribute_column)
    train_props = {name: train_props.get(name, 0.0) for name in test_names}  # a group absent from train weighs 0
    test_labels = test.labels(label_column)

    def evaluate(logits: torch.Tensor) -> dict[str, Any]:
        return group_metrics(logits.argmax(1), test_labels, test_ids, test_names, train_props)

    def run(data: FeatureSet = train, keep: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """One ``neutralize_spurious`` call (no diagnosis: only FCR's own run keeps one) evaluated on test, then
        reverted (its edits and record extras first kept in ``kept[keep]`` when asked)."""
        t0 = time.perf_counter()
        search = remover.neutralize_spurious(data, val, **{**common, "diagnose": False, **kwargs})
        elapsed = time.perf_counter() - t0
        row = {**evaluate(remover.logits(test.features)), "choice": search.choice, "edit_time_s": elapsed}
        if search.candidates:
            row["candidates"] = {
                m: {k: c[k] for k in ("average", "worst_group", "score")} for m, c in search.candidates.items()
            }
        if keep is not None and kept is not None:
            kept[keep] = (list(remover.edits), dict(remover.fcr_config_extra))
        remover.revert()
        return row

    common = {"label_column": label_column, "attribute_column": attribute_column, "rule": rule, "seed": seed}
    methods: dict[str, dict[str, Any]] = {"erm": evaluate(remover.logits(test.features))}
    # the controls and the other fixes first (each reverted), then FCR itself, whose edits stay applied
    methods["fcr_grad_x_act"] = run(selection="grad_x_act")
    methods["fcr_random_edge"] = run(selection="random")
    labels, attribute = train.labels(label_column), train.labels(attribute_column)
    draws = [
        run(data, attribute_column=RANDOM_COLUMN, val_attribute_column=attribute_column)
        for data in random_attribute_draws(train, label_column, attribute, seed)
    ]
    methods["fcr_random_attribute"] = _mean_of(draws)
    inferred = infer_attribute(train.features, labels, "cluster", seed=seed)
    data = FeatureSet(train.features, {label_column: labels, "inferred_attribute": inferred})
    row = run(data, attribute_column="inferred_attribute", val_attribute_column=attribute_column)
    methods["fcr_inferred_attribute"] = {**row, "agreement_ari": agreement(inferred, attribute, labels)}
    methods["dfr"] = run(method="dfr")
    methods["dfr_class_balanced"] = run(method="class_balanced", val_attribute_column=None)
    methods["auto"] = run(method="auto", keep="auto")

    t0 = time.perf_counter()
    search = remover.neutralize_spurious(train, val, **common)  # with its diagnosis
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
        search.diagnosis.plot(out / "diagnosis.png", title=title)
    return {k: methods[k] for k in METHOD_ORDER}, search


def _save_recommended(
    folder: Path, remover: Any, applied: tuple[list[Any], dict[str, Any]], diagnosis: Any, card: dict[str, Any]
) -> None:
    """Save to ``folder`` the model ``auto`` recommends: its ``applied`` edits and record extras (those of the
    table's ``auto`` row, as ``compare_methods`` kept them), with FCR's ``diagnosis`` in the record and card
    (``card``: ``save_pretrained``'s card options). ``remover`` is left with FCR's edits, as before."""
    fcr_edits, fcr_extra = list(remover.edits), dict(remover.fcr_config_extra)
    auto_edits, auto_extra = applied
    remover.revert()
    remover.commit_edits(auto_edits)
    remover.fcr_config_extra.update(auto_extra, diagnosis=diagnosis.to_dict())
    remover.save_pretrained(folder, overwrite=True, **card)
    remover.revert()
    remover.commit_edits(fcr_edits)
    remover.fcr_config_extra.update(fcr_extra)


def run_spurious(
    output_dir: str | Path,
    remover: Any,
    benchmark: Benchmark,
    seed: int = 0,
    rule: str = "min_gap",
    command: str = "",
    extra: dict[str, Any] | None = None,
    pass_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Features of the three splits (one pass each; ``pass_options``: ``extract_features``' options, e.g.
    ``batch_size``, ``cache_dir``, ``progress``), ``compare_methods``, then ``output_dir``: the model ``auto``
    recommends (``recommended-model/``), FCR's edit (``fcr-model/``), each with its record and card, the sweep plots
    and ``results.json``. ``remover`` is left with FCR's edits."""

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    timings = extra.pop("timings", {})
    t0 = time.perf_counter()
    label_column, attribute_column, splits = benchmark.label_column, benchmark.attribute_column, benchmark.splits
    options = {"batch_size": 256, **(pass_options or {})}
    train, val, test = (
        remover.extract_features(
            benchmark.data[split],
            image_column=benchmark.image_column,
            columns=(label_column, attribute_column),
            **options,
        )
        for split in splits
    )
    timings["feature_pass_s"] = time.perf_counter() - t0
    kept: dict[str, Any] = {}
    methods, search = compare_methods(
        remover,
        (train, val, test),
        label_column=label_column,
        attribute_column=attribute_column,
        rule=rule,
        seed=seed,
        output_dir=out,
        title=f"FCR on {benchmark.name}",
        kept=kept,
    )
    metrics = [
        {"name": name, "value": methods["fcr"][key], "dataset": benchmark.name, "split": splits[2]}
        for name, key in (("accuracy", "average"), ("worst_group_accuracy", "worst_group"))
    ]
    figures = {"diagnosis.png": search.diagnosis.plot(title=f"FCR on {benchmark.name}")}  # drawn once, for both
    common = {"figures": figures, "command": command, "dataset_name": benchmark.name}
    remover.save_pretrained(
        out / "fcr-model", overwrite=True, metrics=metrics, model_name=f"{benchmark.name}-fcr", **common
    )
    chosen = methods["auto"]["choice"]["method"]
    auto_metrics = [{**m, "value": methods["auto"][key]} for m, key in zip(metrics, ("average", "worst_group"))]
    card = {"metrics": auto_metrics, "model_name": f"{benchmark.name}-{chosen}", **common}
    _save_recommended(out / "recommended-model", remover, kept["auto"], search.diagnosis, card)
    recommended = {"method": chosen, "folder": "recommended-model"}
    results = {
        "benchmark": benchmark.name,
        "seed": seed,
        **extra,
        "hf_fcr_version": __version__,
        "methods": methods,
        "fcr_choice": search.choice,
        "recommended": recommended,
        "diagnosis": search.diagnosis.to_dict(),
        "candidates": [{k: v for k, v in t.items() if k != "sweep"} for t in search.tried],
        "timings": timings,
        "command": command,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return results
