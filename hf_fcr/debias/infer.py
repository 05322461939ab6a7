"""Label-free fictitious classes: guess a spurious attribute from the features or the model's own errors.

Offered only with its evidence: on every benchmark docs/evidence.md reports the guess's agreement with the true
attribute (adjusted Rand index within each class) and FCR's result with it against the random-attribute control.
Where the guess does not beat the control, it is not a substitute for group labels.
"""

from __future__ import annotations

import numpy as np
import torch

from ..utils.checks import check_seed
from ..utils.rows import all_finite

# scikit-learn is imported where an attribute is inferred (its import costs a second).

__all__ = ["INFER_METHODS", "agreement", "infer_attribute"]

INFER_METHODS = ("cluster", "margin")


def infer_attribute(
    features: torch.Tensor,
    labels: torch.Tensor,
    method: str = "cluster",
    logits: torch.Tensor | None = None,
    minority_fraction: float = 0.2,
    seed: int = 0,
) -> torch.Tensor:
    """A 0/1 attribute per sample, 1 marking the samples that look like each class's minority group.

    Args:
        features, labels: the head inputs ``[N, D]`` and the classes ``[N]`` (e.g. a ``FeatureSet``'s).
        method: ``"cluster"``: per class, KMeans (k=2) on the standardized features; the smaller cluster is 1.
            ``"margin"``: samples the model gets wrong or classifies with the lowest margins (``logits`` needed),
            ``minority_fraction`` of each class, are 1.
        seed: KMeans' seed.

    Returns:
        An int64 tensor ``[N]``, to pass as the attribute column of ``neutralize_spurious``.

    Raises:
        ValueError: an unknown method, ``"margin"`` without logits (or with logits of the wrong shape, or a
            ``minority_fraction`` outside (0, 1)), mismatched or non-finite inputs, a class with fewer than two
            samples.
        TypeError: a seed that is not an integer.
    """
    if method not in INFER_METHODS:
        raise ValueError(f"method must be one of {INFER_METHODS}, got {method!r}.")
    if method == "margin" and logits is None:
        raise ValueError("method='margin' needs the model's logits (remover.logits(features)).")
    seed = check_seed(seed)
    features, labels = torch.as_tensor(features), torch.as_tensor(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(
            f"features must be [N, D] and labels [N]; got {tuple(features.shape)} and {tuple(labels.shape)}."
        )
    if not all_finite(features):
        raise ValueError("the features contain NaN or inf: re-extract them from finite inputs.")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ValueError("labels must be integer class indices.")
    labels = labels.long()
    if isinstance(minority_fraction, bool) or not (
        isinstance(minority_fraction, (int, float)) and 0 < minority_fraction < 1
    ):
        raise ValueError(f"minority_fraction must be in (0, 1), got {minority_fraction!r}.")
    if method == "margin":
        logits = torch.as_tensor(logits)
        if logits.ndim != 2 or len(logits) != len(labels) or int(labels.max()) >= logits.shape[1]:
            raise ValueError(
                f"logits must be [N, K] with a column for every label; got {tuple(logits.shape)} for "
                f"{len(labels)} labels up to {int(labels.max())}."
            )
    out = torch.zeros(len(labels), dtype=torch.long)
    for c in torch.unique(labels):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < 2:
            raise ValueError(f"class {int(c)} has {len(idx)} sample(s): inference needs at least two per class.")
        if method == "cluster":
            out[idx] = _smaller_cluster(features[idx], seed)
        else:
            z = logits[idx].double()
            own = z[:, int(c)]
            other = z.clone()
            other[:, int(c)] = -torch.inf
            margin = own - other.max(1).values
            k = max(1, int(round(minority_fraction * len(idx))))
            flagged = torch.argsort(margin, stable=True)[:k]
            out[idx[flagged]] = 1
            out[idx[margin < 0]] = 1  # every error too
    return out


def _smaller_cluster(x: torch.Tensor, seed: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    a = x.double().cpu().numpy()
    a = (a - a.mean(0)) / np.where(a.std(0) > 0, a.std(0), 1.0)
    assign = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(a)
    small = int(np.bincount(assign, minlength=2).argmin())
    return torch.from_numpy((assign == small).astype(np.int64))


def agreement(inferred: torch.Tensor, attribute: torch.Tensor, labels: torch.Tensor) -> float:
    """Adjusted Rand index between the inferred and the true attribute within each class, averaged over classes
    weighted by size (1: the same partition, about 0: no better than chance)."""
    from sklearn.metrics import adjusted_rand_score

    total, score = 0, 0.0
    for c in torch.unique(labels):
        m = labels == c
        score += float(m.sum()) * adjusted_rand_score(attribute[m].numpy(), inferred[m].numpy())
        total += int(m.sum())
    return score / total
