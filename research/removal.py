"""The paper's class-removal experiments on cached features: Sec. 5.1 (Figures 6-7) and Sec. 5.2 (Figure 8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from hf_fcr.features.feature_set import FeatureSet

__all__ = ["class_removal", "removal_controls", "subclass_removal"]


def _per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Accuracy on each of ``classes``' samples, in that order."""
    return torch.stack([(pred[labels == c] == c).double().mean() for c in classes])


def _present(labels: torch.Tensor, classes: Sequence[int] | None) -> list[int]:
    """The classes to remove: ``classes``, or every class with test samples (a 1000-class ImageNet head on a few
    photos has samples of a few classes only)."""
    return sorted(set(labels.tolist())) if classes is None else [int(c) for c in classes]


def class_removal(
    remover: Any,
    train: FeatureSet,
    test: FeatureSet,
    label_column: str = "label",
    max_weights: int = 3,
    max_removed: int = 8,
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Figure 6: remove each class alone with 1..``max_weights`` weights (forget = its test accuracy, retain = the
    mean accuracy of the others). Figure 7: remove 1..``max_removed`` random classes at once, one weight each.
    Figure 6 runs with both candidate rules (``single["supporting"]``, ``single["all"]``, the paper's plain argmax).
    Every removal is reverted before the next; accuracies are fractions, over ``classes`` (default: the classes
    with test samples; ``base_per_class``, ``controls`` and the rows follow their order)."""
    labels = test.labels(label_column)
    present = _present(labels, classes)
    k = len(present)
    base = _per_class_accuracy(remover.logits(test.features).argmax(1), labels, present)
    single: dict[str, list[dict[str, Any]]] = {}
    for mode in ("supporting", "all"):
        rows = []
        for i, c in enumerate(present):
            for n in range(1, max_weights + 1):
                remover.remove_class(c, train, label_column=label_column, num_weights=n, candidates=mode)
                acc = _per_class_accuracy(remover.logits(test.features).argmax(1), labels, present)
                remover.revert()
                others = [j for j in range(k) if j != i]
                rows.append(
                    {
                        "class": c,
                        "num_weights": n,
                        "forget": float(acc[i]),
                        "retain": float(acc[others].mean()),
                        "retain_change": float((acc[others] - base[others]).mean()),
                    }
                )
        single[mode] = rows
    controls = removal_controls(remover, train, test, label_column, seed, classes=present)
    gen = torch.Generator().manual_seed(seed)
    multi = []
    for m in range(1, min(max_removed, k - 1) + 1):
        removed = sorted(torch.randperm(k, generator=gen)[:m].tolist())  # positions in `present`
        for i in removed:
            remover.remove_class(present[i], train, label_column=label_column)
        acc = _per_class_accuracy(remover.logits(test.features).argmax(1), labels, present)
        remover.revert()
        kept = [i for i in range(k) if i not in removed]
        multi.append(
            {
                "num_removed": m,
                "removed": [present[i] for i in removed],
                "removed_accuracy": float(acc[removed].mean()),
                "retained_accuracy": float(acc[kept].mean()),
                "retained_change": float((acc[kept] - base[kept]).mean()),
            }
        )
    return {"base_per_class": base.tolist(), "single": single, "multi": multi, "controls": controls}


def removal_controls(
    remover: Any,
    train: FeatureSet,
    test: FeatureSet,
    label_column: str = "label",
    seed: int = 0,
    classes: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The controls beside removing each of ``classes`` (default: those with test samples) with one weight, per
    class (retain: the mean accuracy of the other classes of ``classes``):

    - ``mask_forget`` / ``mask_retain``: the output mask (the class's logit set to -inf, what a very negative bias
      does): also one parameter, and it removes the class exactly;
    - ``random_forget`` / ``random_retain``: one random supporting weight of the class's row through Eq. 7
      (``remove_class(score="random")``);
    - ``probe_balanced_accuracy``: what remains: a linear probe on the head's input (fit on ``train``, scored on
      ``test``) recognising the class, balanced accuracy (0.5 = chance). The edit leaves the features unchanged, so
      this is the same before and after it.
    """
    from hf_fcr.fitting.probe import fit_linear_probe

    labels = test.labels(label_column)
    present = _present(labels, classes)
    logits = remover.logits(test.features)
    train_labels = train.labels(label_column)
    rows = []
    for i, c in enumerate(present):
        others = [j for j in range(len(present)) if j != i]
        masked = logits.clone()
        masked[:, c] = float("-inf")
        mask = _per_class_accuracy(masked.argmax(1), labels, present)
        remover.remove_class(c, train, label_column=label_column, num_weights=1, score="random", seed=seed)
        rand = _per_class_accuracy(remover.logits(test.features).argmax(1), labels, present)
        remover.revert()
        w, b = fit_linear_probe(train.features, (train_labels == c).long(), 2)
        said = (test.features.double() @ w.T + b).argmax(1) == 1
        truth = labels == c
        balanced = 0.5 * (float(said[truth].double().mean()) + float((~said[~truth]).double().mean()))
        rows.append(
            {
                "class": c,
                "mask_forget": float(mask[i]),
                "mask_retain": float(mask[others].mean()),
                "random_forget": float(rand[i]),
                "random_retain": float(rand[others].mean()),
                "probe_balanced_accuracy": balanced,
            }
        )
    return rows


def subclass_removal(
    remover: Any,
    train: FeatureSet,
    test: FeatureSet,
    label_column: str = "label",
    subclass_column: str = "digit",
    r_values: Sequence[float] = (0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0),
    selections: Sequence[str] = ("sca", "grad_x_act"),
    candidates: Sequence[str] = ("all", "supporting"),
) -> dict[str, Any]:
    """Figure 8: M' is fit on the sub-classes; each sub-class ``v`` is removed from its superclass (one weight) at
    every rate ``r``; forget = accuracy on ``v``'s test samples, retain = accuracy on the others, retain_same_class
    = on the other sub-classes of ``v``'s superclass (each averaged over ``v``), for SCA against grad x act
    selection, each with the plain argmax (``"all"``, Algorithm 2; curves keyed by the selection) and with the
    supporting-sign rule (curves keyed ``"<selection>_supporting"``)."""
    fict = remover.fit_fictitious(train, attribute_column=subclass_column, label_column=label_column)
    labels, sub = test.labels(label_column), test.labels(subclass_column)
    train_labels, train_sub = train.labels(label_column), train.labels(subclass_column)
    superclass = {value: int(torch.mode(train_labels[train_sub == value]).values) for value in fict.values}
    out: dict[str, Any] = {"fictitious_head_accuracy": fict.accuracy, "curves": {}, "weights": {}}
    for rule in candidates:
        for selection in selections:
            key = selection if rule == "all" else f"{selection}_supporting"
            curve, weights = [], {}
            for r in r_values:
                forget, retain, same = [], [], []
                for value in fict.values:
                    edits = remover.neutralize(
                        fict, classes=[superclass[value]], values=[value], r=r, selection=selection, candidates=rule
                    )
                    weights[str(value)] = [e.col for e in edits]
                    correct = (remover.logits(test.features).argmax(1) == labels).double()
                    remover.revert()
                    forget.append(float(correct[sub == value].mean()))
                    retain.append(float(correct[sub != value].mean()))
                    same.append(float(correct[(sub != value) & (labels == superclass[value])].mean()))
                curve.append(
                    {
                        "r": r,
                        "forget": sum(forget) / len(forget),
                        "retain": sum(retain) / len(retain),
                        "retain_same_class": sum(same) / len(same),
                    }
                )
            out["curves"][key] = curve
            out["weights"][key] = weights
    return out
