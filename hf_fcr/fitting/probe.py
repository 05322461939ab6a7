"""Algorithm 2's M': a new head fit on the frozen features against the spurious attribute (the fictitious classes)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.scores import edge_score
from ..core.stats import EdgeStatistics, edge_statistics
from ..utils.distributed import all_gather_object, reduce_sum
from ..utils.rows import float64_logits
from ..utils.threads import one_blas_thread
from .logistic import fit_logistic_probe, fit_logistic_probes, two_rows

# scikit-learn is imported where M' is fit by it (its import costs a second).

__all__ = [
    "POLICIES",
    "check_fictitious",
    "EdgeRule",
    "FictitiousHead",
    "default_probe",
    "fit_fictitious_head",
    "fit_fictitious_heads",
    "fit_linear_probe",
    "plan_neutralization",
]

logger = logging.getLogger(__name__)

POLICIES = ("dominant", "other")


def default_probe() -> Any:
    """scikit-learn's ``LogisticRegression(C=1.0)`` (lbfgs, multinomial), fit on the features as they are: the
    objective of the default fit (``logistic.fit_logistic_probe``), as an estimator to pass as ``probe=``."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000)


def fit_linear_probe(
    features: torch.Tensor, targets: torch.Tensor, num_values: int, probe: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a linear head ``[V, D]``, ``[V]`` on ``features`` against ``targets`` in ``[0, V)``.

    By default (``probe=None``) ``logistic.fit_logistic_probe``: scikit-learn's ``LogisticRegression(C=1.0)``
    objective and stopping rule, by L-BFGS in torch on the features' device, the features never copied. ``probe``
    is otherwise a scikit-learn style estimator (``fit``, then ``coef_`` and ``intercept_``; fit on a float64 copy)
    or a callable ``(features, targets) -> (weight, bias)``. A binary estimator's single coefficient vector ``w``
    (intercept ``b``) becomes the softmax-equivalent rows ``-w/2, +w/2`` (intercepts ``-b/2, +b/2``).
    """
    if probe is None:
        weight, bias = fit_logistic_probe(features, targets, num_values)
    elif callable(probe) and not hasattr(probe, "fit"):
        weight, bias = probe(features, targets)
        weight, bias = torch.as_tensor(weight, dtype=torch.float64), torch.as_tensor(bias, dtype=torch.float64)
    else:
        x = features.detach().cpu().to(torch.float64).numpy()
        with one_blas_thread():
            probe.fit(x, targets.detach().cpu().numpy())
        coef = np.asarray(probe.coef_, dtype=np.float64)
        intercept = np.broadcast_to(np.asarray(probe.intercept_, dtype=np.float64), (coef.shape[0],))
        if coef.shape[0] == 1 and num_values == 2:
            coef, intercept = two_rows(coef, intercept)
        weight, bias = torch.from_numpy(coef.copy()), torch.from_numpy(intercept.copy())
    if weight.shape != (num_values, features.shape[1]) or bias.shape != (num_values,):
        raise ValueError(
            f"the probe returned a head of shape {tuple(weight.shape)} / {tuple(bias.shape)}; expected "
            f"({num_values}, {features.shape[1]}) / ({num_values},)."
        )
    return weight, bias


@dataclass(frozen=True)
class EdgeRule:
    """How Algorithm 2 picks an input from M''s ranking: ``selection`` (a registered score: ``"sca"``, the method),
    ``candidates`` (``"all"``, the plain argmax, or ``"supporting"``) and the ``seed`` of a random score."""

    selection: str = "sca"
    candidates: str = "all"
    seed: int = 0


@dataclass
class FictitiousHead:
    """M': the fictitious-class head, its accuracy, its edge statistics, and how attribute values sit in real classes.

    Attributes:
        weight, bias: the head ``[V, D]``, ``[V]`` over the attribute's values.
        values: the attribute value of each fictitious class (index ``v`` -> value).
        attribute_column: the column the values came from.
        accuracy: M''s accuracy on the features it was fit on.
        stats: Eq. 3-4 of M' on those features (labels = the fictitious classes).
        crosstab: ``[C, V]`` sample counts of real class x attribute value (None without a label column).
        value_names: a name per value (from a ``datasets.ClassLabel`` attribute column), or None.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    values: list[Any]
    attribute_column: str
    accuracy: float
    stats: EdgeStatistics
    crosstab: torch.Tensor | None = None
    value_names: list[str] | None = None

    def value_name(self, value_index: int) -> str:
        """How the fictitious class is called in edit records: the ClassLabel name when known, else the value."""
        if self.value_names is not None:
            return self.value_names[value_index]
        return str(self.values[value_index])

    @property
    def num_values(self) -> int:
        return len(self.values)

    def value_index(self, value: Any) -> int:
        """Index of an attribute value (or of its string form, or of its ClassLabel name)."""
        for i, v in enumerate(self.values):
            if v == value or str(v) == str(value) or (self.value_names and self.value_names[i] == str(value)):
                return i
        raise KeyError(f"{value!r} is not a value of {self.attribute_column!r} (values: {self.values}).")

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return float64_logits(features, self.weight, self.bias)

    def ranked_features(
        self, value_index: int, selection: str = "sca", generator: torch.Generator | None = None
    ) -> list[tuple[int, float]]:
        """Head inputs ``k`` ranked for M' row ``v``, best first, as ``(k, score)``: by SCA (Eq. 6, plain argmax
        order as in Algorithm 2), by ``"grad_x_act"`` (``G[v, v, k] * A[v, k]``, no CA ratio), ``"random"`` or any
        registered score (``scores.register_score``). Inputs with a NaN or infinite score are left out, as
        Algorithm 1's ``top_edges`` leaves them out (a descending sort would put NaN first)."""
        scores = edge_score(selection, self.stats, value_index, generator)
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[torch.isfinite(scores[order])]
        return list(zip(order.tolist(), scores[order].tolist()))

    def dominant(self, cls: int) -> int:
        """The attribute value most frequent among the samples of real class ``cls``."""
        counts = self._class_counts(cls)
        return int(torch.argmax(counts))

    def values_for(self, cls: int, policy: str) -> list[int]:
        """Fictitious classes to neutralize in real class ``cls``: ``dominant`` -> its most frequent value;
        ``other`` -> every other value (those that are rare in the class)."""
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}.")
        dom = self.dominant(cls)
        return [dom] if policy == "dominant" else [v for v in range(self.num_values) if v != dom]

    def _class_counts(self, cls: int) -> torch.Tensor:
        if self.crosstab is None:
            raise ValueError("this fictitious head was fit without a label column: refit with label_column=.")
        if not 0 <= cls < self.crosstab.shape[0]:
            raise ValueError(f"class {cls} is outside the real classes [0, {self.crosstab.shape[0]}).")
        counts = self.crosstab[cls]
        if counts.sum() == 0:
            raise ValueError(
                f"class {cls} has no samples in the data M' was fit on: its dominant attribute value is unknown."
            )
        return counts


def encode_values(values: Sequence[Any] | torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
    """Map attribute values (numbers or strings) to indices ``0..V-1`` in sorted order of the distinct values."""
    raw = values.tolist() if torch.is_tensor(values) else list(values)
    for v in raw:
        if isinstance(v, float) and math.isnan(v):
            raise ValueError("the attribute column contains NaN.")
    distinct = sorted(set(raw), key=lambda v: (str(type(v)), v))
    lookup = {v: i for i, v in enumerate(distinct)}
    return torch.tensor([lookup[v] for v in raw], dtype=torch.long), distinct


def fit_fictitious_head(  # noqa: PLR0913 -- M''s data and how it is fit
    features: torch.Tensor,
    attribute: Sequence[Any] | torch.Tensor,
    attribute_column: str,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    probe: Any | Callable = None,
    names: Sequence[str] | None = None,
    sharded: bool = False,
) -> FictitiousHead:
    """Fit M' on frozen ``features`` against ``attribute`` values and collect its edge statistics (Alg. 2, 1-5).

    ``sharded=True``: the rows are this process' share of the data (under ``accelerate launch`` / ``torchrun``); M'
    is fit by ``logistic.fit_logistic_probe`` with its gradients summed across processes, and the statistics, counts
    and accuracy are sums over every process, so each process gets what one process would from all rows.
    """
    return fit_fictitious_heads(
        features, [attribute], [attribute_column], labels, num_classes, probe, [names], sharded=sharded
    )[0]


def fit_fictitious_heads(  # noqa: PLR0913 -- M''s data and how it is fit
    features: torch.Tensor,
    attributes: Sequence[Sequence[Any] | torch.Tensor],
    attribute_columns: Sequence[str],
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    probe: Any | Callable = None,
    names: Sequence[Sequence[str] | None] | None = None,
    sharded: bool = False,
) -> list[FictitiousHead]:
    """``fit_fictitious_head`` for several attributes of the same rows (``names``: each one's value names, or
    None): one M' per attribute. With the default probe, the attributes with the same number of values are fit
    together (``logistic.fit_logistic_probes``: every step reads the features once for all of them), each to the
    head it would get alone, to the solver's tolerance."""
    names = [None] * len(attributes) if names is None else names
    if sharded and probe is not None:
        raise ValueError("under several processes M' is fit by hf-fcr's own logistic probe: leave probe=None.")
    encoded = [_encoded(attribute, column, sharded) for attribute, column in zip(attributes, attribute_columns)]
    heads: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for num_values in dict.fromkeys(len(values) for _, values in encoded):
        group = [i for i, (_, values) in enumerate(encoded) if len(values) == num_values]
        if probe is None:
            targets = torch.stack([encoded[i][0] for i in group], 1)
            heads.update(zip(group, fit_logistic_probes(features, targets, num_values, sharded=sharded)))
        else:
            heads.update((i, fit_linear_probe(features, encoded[i][0], num_values, probe)) for i in group)
    return [
        _fictitious(features, targets, values, column, heads[i], labels, num_classes, value_names, sharded)
        for i, ((targets, values), column, value_names) in enumerate(zip(encoded, attribute_columns, names))
    ]


def _encoded(
    attribute: Sequence[Any] | torch.Tensor, attribute_column: str, sharded: bool
) -> tuple[torch.Tensor, list[Any]]:
    """The attribute as value indices and its values (``encode_values``; the same map on every process)."""
    raw = attribute.tolist() if torch.is_tensor(attribute) else list(attribute)
    if sharded:  # the same value -> index map on every process
        raw_all = sorted({v for part in all_gather_object(sorted(set(raw), key=str)) for v in part}, key=str)
        _, values = encode_values(raw_all)
        lookup = {v: i for i, v in enumerate(values)}
        targets = torch.tensor([lookup[v] for v in raw], dtype=torch.long)
    else:
        targets, values = encode_values(raw)
    if len(values) < 2:
        raise ValueError(
            f"the attribute {attribute_column!r} has a single value {values}: a fictitious head needs at least two."
        )
    return targets, values


def _fictitious(  # noqa: PLR0913 -- M' and what it is measured on
    features: torch.Tensor,
    targets: torch.Tensor,
    values: list[Any],
    attribute_column: str,
    head: tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor | None,
    num_classes: int | None,
    names: Sequence[str] | None,
    sharded: bool,
) -> FictitiousHead:
    """M' ``head`` with its accuracy, edge statistics and class x value counts on ``features`` (summed over every
    process when ``sharded``)."""
    weight, bias = head
    logits = float64_logits(features, weight, bias)
    sums = {
        "correct": (logits.argmax(1) == targets).double().sum().reshape(1),
        "n": torch.tensor([len(targets)], dtype=torch.float64),
    }
    stats = edge_statistics(features, logits, targets, len(values))
    crosstab = None
    if labels is not None:
        crosstab = torch.zeros(num_classes, len(values), dtype=torch.long)
        crosstab.index_put_((labels, targets), torch.ones_like(labels), accumulate=True)
        sums["crosstab"] = crosstab
    if sharded:
        reduce_sum({**sums, **stats.tensors()})
    accuracy = float(sums["correct"][0] / sums["n"][0])
    value_names = None
    if names is not None and all(isinstance(v, int) and 0 <= v < len(names) for v in values):
        value_names = [str(names[v]) for v in values]
    return FictitiousHead(weight, bias, values, attribute_column, accuracy, stats, crosstab, value_names)


def plan_neutralization(
    weight: torch.Tensor,
    fictitious: FictitiousHead,
    classes: Sequence[int] | None,
    num_weights: int,
    policy: str,
    values: Sequence[int] | None = None,
    rule: EdgeRule = EdgeRule(),
) -> dict[int, list[tuple[int, float, str]]]:
    """Algorithm 2's choice of weights (validated arguments; nothing is applied): for each real class ``c`` the
    head inputs ``k*`` to edit in ``W[c]``, as ``{c: [(k*, score, fictitious class name), ...]}``.

    For each fictitious class chosen by ``policy`` in ``c`` (or each of ``values``, attribute value indices), up to
    ``num_weights`` inputs in M''s ranking by ``rule.selection``; inputs whose ``weight[c, k]`` is 0 are skipped (Eq. 7
    is undefined there) and each input is edited once per class. ``classes`` defaults to every class with samples
    in the data M' was fit on (every class when M' was fit without labels).

    ``rule.candidates="all"`` is Algorithm 2's plain argmax; ``"supporting"`` keeps only inputs whose weight supports
    ``c`` on the value's samples (``weight[c, k] * mean_{s in v} a_k(s) > 0``, class removal's rule applied to a
    fictitious class), so that Eq. 7 lowers class ``c`` for that value instead of raising it.
    """
    if classes is None:
        if fictitious.crosstab is not None:
            classes = [
                c for c in range(min(len(fictitious.crosstab), weight.shape[0])) if fictitious.crosstab[c].sum()
            ]
        else:
            classes = list(range(weight.shape[0]))
    generator = torch.Generator().manual_seed(rule.seed)
    signed = fictitious.stats.signed_activation.cpu()
    plan: dict[int, list[tuple[int, float, str]]] = {}
    for c in dict.fromkeys(classes):
        chosen: dict[int, tuple[int, float, str]] = {}
        for v in fictitious.values_for(c, policy) if values is None else values:
            picked = 0
            for col, score in fictitious.ranked_features(v, rule.selection, generator):
                if picked == num_weights:
                    break
                if weight[c, col] == 0:
                    logger.warning("W[%d, %d] is 0 (Eq. 7 is undefined there): using the next best edge.", c, col)
                    continue
                if col in chosen:  # another value of this class took it: each value gets its own weights
                    continue
                if rule.candidates == "supporting" and float(weight[c, col]) * float(signed[v, col]) <= 0:
                    continue
                chosen[col] = (col, score, fictitious.value_name(v))
                picked += 1
        plan[c] = list(chosen.values())
    return plan


def check_fictitious(fictitious: Any, in_features: int) -> None:
    """M' must be a ``FictitiousHead`` fit on features of this head's width."""
    if not isinstance(fictitious, FictitiousHead):
        raise TypeError(f"expected the FictitiousHead returned by fit_fictitious, got {type(fictitious).__name__}.")
    if fictitious.weight.shape[1] != in_features:
        raise ValueError(
            f"the fictitious head takes {fictitious.weight.shape[1]} features but this model's head takes "
            f"{in_features}: it was fit on another model's features."
        )
