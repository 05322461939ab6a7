"""Class association scores of the last layer's edges (paper Eq. 5-6) and the choice of edges to edit.

``H`` is the Shannon entropy (natural log) of per-class values normalized to sum to one over the classes, with
``0 log 0 = 0``. Rows of the head that the statistics did not keep (``EdgeStatistics.rows``) score NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .stats import EdgeStatistics

__all__ = [
    "EPS",
    "ca_score",
    "class_entropy",
    "edge_score",
    "register_score",
    "sca_row",
    "sca_score",
    "score_names",
    "supporting_mask",
    "top_edges",
]

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


# ------------------------------------------------------------------------------------ the registry of edge scores

ScoreFn = Callable[..., torch.Tensor]
_SCORES: dict[str, ScoreFn] = {}


def register_score(name: str, fn: ScoreFn, *, overwrite: bool = False) -> None:
    """Register ``fn(stats, cls, *, generator) -> Tensor[D]`` as the edge score ``name``: the score of each edge
    ``(cls, k)`` for class ``cls`` (``generator``: a ``torch.Generator`` for scores that draw at random). Algorithm 1
    (``remove_class(score=...)``, ``top_edges(score=...)``) and Algorithm 2 (``neutralize(selection=...)``) rank
    edges by it; ``sca`` (Eq. 6, the method), ``ca`` (Eq. 5), ``grad_x_act`` and ``random`` are registered here.

    Raises:
        ValueError: a name that is not a plain identifier, or already registered (without ``overwrite=True``).
        TypeError: ``fn`` is not callable.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a score's name is a plain identifier, got {name!r}.")
    if not callable(fn):
        raise TypeError(f"a score is a function, got {type(fn).__name__}.")
    if name in _SCORES and _SCORES[name] is not fn and not overwrite:
        raise ValueError(f"a score {name!r} is already registered; pass overwrite=True to replace it.")
    _SCORES[name] = fn


def score_names() -> tuple[str, ...]:
    return tuple(_SCORES)


def edge_score(name: str, stats: EdgeStatistics, cls: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The registered score ``name`` of the edges of row ``cls`` for class ``cls``, a float64 ``[D]`` vector.

    Raises:
        ValueError: an unknown score (the message lists the registered ones), or one of the wrong shape.
    """
    if name not in _SCORES:
        raise ValueError(f"unknown score {name!r}: registered scores are {score_names()} (see register_score).")
    scores = torch.as_tensor(_SCORES[name](stats, cls, generator=generator)).to(torch.float64)
    if scores.shape != (stats.num_features,):
        raise ValueError(f"score {name!r} returned shape {tuple(scores.shape)}; expected ({stats.num_features},).")
    return scores


def _sca(stats: EdgeStatistics, cls: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    return sca_row(stats, cls)


def _ca(stats: EdgeStatistics, cls: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    grad = stats.gradient_row(_check_class(stats, cls))
    return class_entropy(grad, dim=0) / (class_entropy(stats.activation, dim=0) + EPS)


def _grad_x_act(stats: EdgeStatistics, cls: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``G[cls, cls, k] * A[cls, k]``: SCA without the CA entropy ratio (the paper's Figure 8 left)."""
    cls = _check_class(stats, cls)
    return stats.gradient_row(cls)[cls] * stats.activation[cls]


def _random(stats: EdgeStatistics, cls: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random scores (a control), drawn from ``generator``."""
    return torch.rand(stats.num_features, generator=generator, dtype=torch.float64)


for _name, _fn in (("sca", _sca), ("ca", _ca), ("grad_x_act", _grad_x_act), ("random", _random)):
    register_score(_name, _fn)


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
    score: str = "sca",
    generator: torch.Generator | None = None,
) -> list[tuple[int, int, float]]:
    """The ``k`` best edges of row ``cls`` by SCA score (Eq. 6; or another registered ``score``, see
    ``register_score``), best first, as ``(row, col, score)``.

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
    scores = edge_score(score, stats, cls, generator)  # KeyError with a clear message if row `cls` was not kept
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
