"""Class association scores of the last layer's edges (paper Eq. 5-6) and the choice of edges to edit.

``H`` is the Shannon entropy (natural log) of per-class values normalized to sum to one over the classes, with
``0 log 0 = 0``. Rows of the head that the statistics did not keep (``EdgeStatistics.rows``) score NaN.
"""

from __future__ import annotations

import math

import torch

from .stats import EdgeStatistics

__all__ = ["EPS", "ca_score", "class_entropy", "sca_row", "sca_score", "supporting_mask", "top_edges"]

EPS = 1e-12
CANDIDATES = ("supporting", "all")


def class_entropy(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Entropy over ``dim`` of ``values`` (non-negative) normalized to a distribution; all-zero slices give 0."""
    total = values.sum(dim=dim, keepdim=True)
    p = values / torch.where(total > 0, total, torch.ones_like(total))
    plogp = torch.where(p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p))
    return -plogp.sum(dim=dim)


def _scatter_rows(stats: EdgeStatistics, kept: torch.Tensor) -> torch.Tensor:
    """Place ``[R, D]`` scores of the kept rows into a ``[K, D]`` matrix (NaN elsewhere)."""
    if stats.rows is None:
        return kept
    out = torch.full((stats.num_outputs, stats.num_features), math.nan, dtype=kept.dtype)
    out[list(stats.rows)] = kept
    return out


def _ca_kept(stats: EdgeStatistics) -> torch.Tensor:
    """Eq. 5 on the kept rows, ``[R, D]``."""
    h_grad = class_entropy(stats.gradient, dim=0)  # [R, D]
    h_act = class_entropy(stats.activation, dim=0)  # [D]
    return h_grad / (h_act[None, :] + EPS)


def ca_score(stats: EdgeStatistics) -> torch.Tensor:
    """Eq. 5: ``CA[j, k] = H_c(G[c, j, k]) / (H_c(A[c, k]) + eps)``, a ``[K, D]`` matrix."""
    return _scatter_rows(stats, _ca_kept(stats))


def _check_class(stats: EdgeStatistics, cls: int) -> int:
    if isinstance(cls, bool) or not isinstance(cls, int):
        raise TypeError(f"class must be an int index, got {cls!r}.")
    if not 0 <= cls < stats.num_classes:
        raise ValueError(f"class {cls} is outside [0, {stats.num_classes}).")
    return cls


def sca_score(stats: EdgeStatistics, cls: int) -> torch.Tensor:
    """Eq. 6 for class ``cls``: ``SCA[j, k] = CA[j, k] * G[cls, j, k] * A[cls, k]``, a ``[K, D]`` matrix."""
    cls = _check_class(stats, cls)
    return _scatter_rows(stats, _ca_kept(stats) * stats.gradient[cls] * stats.activation[cls][None, :])


def sca_row(stats: EdgeStatistics, cls: int, row: int | None = None) -> torch.Tensor:
    """Eq. 6 for class ``cls`` on the edges of one head output ``row`` (default ``cls``), a ``[D]`` vector: what
    ``sca_score(stats, cls)[row]`` holds, without scoring the other rows."""
    cls = _check_class(stats, cls)
    row = cls if row is None else row
    grad = stats.gradient_row(row)  # [C, D]
    h_act = class_entropy(stats.activation, dim=0)
    return class_entropy(grad, dim=0) / (h_act + EPS) * grad[cls] * stats.activation[cls]


def supporting_mask(stats: EdgeStatistics, cls: int, weight_row: torch.Tensor) -> torch.Tensor:
    """Edges of row ``cls`` that support the class: ``W[cls, k] * mean_{s in cls} a_k(s) > 0``."""
    return weight_row.detach().to(torch.float64).cpu() * stats.signed_activation[cls] > 0


def top_edges(
    stats: EdgeStatistics,
    cls: int,
    k: int = 1,
    *,
    weight_row: torch.Tensor | None = None,
    candidates: str = "all",
) -> list[tuple[int, int, float]]:
    """The ``k`` best edges of row ``cls`` by SCA score (Eq. 6), best first, as ``(row, col, score)``.

    Theorem 2 edits a weight of the class's own hyperplane, so the candidates are the edges of row ``cls``.

    Args:
        weight_row: the head's ``W[cls]``. When given, edges whose weight is exactly 0 are skipped (Eq. 7 is
            undefined there); required for ``candidates="supporting"``.
        candidates: ``"all"`` for the paper's plain argmax, or ``"supporting"`` for edges that support the class
            (see ``supporting_mask``), which class removal needs: Eq. 7 on an edge of the other sign amplifies
            the class.
    """
    cls = _check_class(stats, cls)
    if candidates not in CANDIDATES:
        raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    scores = sca_row(stats, cls)  # KeyError with a clear message if row `cls` was not kept
    allowed = torch.isfinite(scores)
    if weight_row is not None:
        if weight_row.shape != (stats.num_features,):
            raise ValueError(f"weight_row must have shape ({stats.num_features},), got {tuple(weight_row.shape)}.")
        allowed &= weight_row.detach().cpu() != 0
        if candidates == "supporting":
            allowed &= supporting_mask(stats, cls, weight_row)
    elif candidates == "supporting":
        raise ValueError('candidates="supporting" needs weight_row=W[cls] to know which edges support the class.')
    order = torch.argsort(
        torch.where(allowed, scores, torch.full_like(scores, -math.inf)), descending=True, stable=True
    )
    n_allowed = int(allowed.sum())
    return [(cls, int(col), float(scores[col])) for col in order[: min(k, n_allowed)]]
