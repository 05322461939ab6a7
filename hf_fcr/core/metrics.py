"""Group-robustness metrics: average, worst-group, per-group accuracy, gap, and the train-weighted average."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["format_table", "group_ids", "group_metrics"]


def group_ids(
    columns: Mapping[str, Any], names: Sequence[str], values: Mapping[str, Sequence[Any]] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Combine integer columns into one group id per sample; returns ``(ids [N], group names)``.

    Group names read ``"label=1,place=0"`` (with ``values[name]``, the value each index of that column stands for:
    ``"place=water"``); only combinations that occur get an id, in sorted order.
    """
    if not names:
        raise ValueError("need at least one column to form groups.")
    values = values or {}
    stacked = torch.stack([torch.as_tensor(columns[n]).long() for n in names], dim=1)
    keys, ids = torch.unique(stacked, dim=0, return_inverse=True)
    labels = [
        ",".join(f"{n}={values[n][int(v)] if n in values else int(v)}" for n, v in zip(names, key)) for key in keys
    ]
    return ids, labels


def group_metrics(
    pred: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    group_names: Sequence[str] | None = None,
    train_proportions: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Accuracy overall (``average``), of the worst group, per group, the ``gap`` between average and worst group,
    and, with ``train_proportions`` (group name -> fraction of training samples), the ``weighted_average`` that
    DFR and group DRO report for Waterbirds (per-group test accuracy weighted by the training group sizes)."""
    correct = (pred == labels).double()
    if len(correct) == 0:
        raise ValueError("no samples to evaluate.")
    n_groups = int(groups.max()) + 1
    names = list(group_names) if group_names is not None else [str(g) for g in range(n_groups)]
    per_group: dict[str, float] = {}
    for g in range(n_groups):
        mask = groups == g
        if mask.any():
            per_group[names[g]] = float(correct[mask].mean())
    average = float(correct.mean())
    worst = min(per_group.values())
    out: dict[str, Any] = {"average": average, "worst_group": worst, "gap": average - worst, "per_group": per_group}
    if train_proportions is not None:
        weights = _check_proportions(train_proportions, per_group)
        total = sum(weights.values())
        out["weighted_average"] = sum(acc * weights[k] for k, acc in per_group.items()) / total
    return out


def _check_proportions(proportions: Mapping[Any, Any], groups: Sequence[str]) -> dict[str, float]:
    """Training frequencies by group name (keys compared as strings): every evaluated group has one, every one
    names an evaluated group, each a finite number >= 0, not all zero; ValueError naming the problem otherwise."""
    if not isinstance(proportions, Mapping):
        raise ValueError(f"train group frequencies must be a dict of group name -> frequency, got {proportions!r}.")
    weights: dict[str, float] = {}
    for key, value in proportions.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
            raise ValueError(f"the train frequency of group {key!r} must be a finite number >= 0, got {value!r}.")
        weights[str(key)] = float(value)
    missing = [g for g in groups if g not in weights]
    unknown = [k for k in weights if k not in groups]
    if missing or unknown:
        raise ValueError(
            f"train group frequencies must name exactly the evaluated groups {sorted(groups)}: missing {missing}, "
            f"unknown {unknown}."
        )
    if sum(weights.values()) <= 0:
        raise ValueError("the train group frequencies are all zero.")
    return weights


def format_table(methods: dict[str, dict[str, Any]]) -> str:
    """Methods as a plain-text table (accuracies in %)."""
    lines = [f"{'method':<22}{'average':>9}{'worst':>9}{'gap':>8}{'w-avg':>8}  notes"]
    for name, m in methods.items():
        note = ""
        c = m.get("choice")
        if c and c.get("method") == "none":
            note = "unchanged (auto: no fix beat the model on held-out validation data)"
        elif c and c.get("r") is not None:
            note = f"policy={c['policy']} weights/class={c['num_weights']} r={c['r']:.4g}"
        elif c:
            note = f"head retrained ({c.get('method')}) C={c.get('C')}"
        elif "draws" in m:
            note = f"mean of {len(m['draws'])} random attributes (worst-group std {100 * m['worst_group_std']:.1f})"
        lines.append(
            f"{name:<22}{100 * m['average']:>9.1f}{100 * m['worst_group']:>9.1f}{100 * m['gap']:>8.1f}"
            f"{100 * m.get('weighted_average', float('nan')):>8.1f}  {note}"
        )
    return "\n".join(lines)
