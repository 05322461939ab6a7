"""Neutralization-rate sweeps in closed form: an edit changes one weight, so the logits change by a rank-1 term.

For an edit of ``W[c, k]`` from ``w`` to ``w'(r)`` (Eq. 8), the logits of every sample change by
``(w'(r) - w) * a_k`` in column ``c`` only. A sweep over ``r`` therefore needs the cached features and the base logits,
never a new forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .edit import WeightEdit, check_rate
from .metrics import group_metrics

# matplotlib (the [demo] extra) is imported where a plot is drawn.

__all__ = [
    "RULES",
    "NeutralizationSearch",
    "SweepResult",
    "default_r_grid",
    "edited_logits",
    "search_edits",
    "sweep_edits",
]

RULES = ("min_gap", "max_worst")


def default_r_grid() -> list[float]:
    """``{0} U logspace(-4, 0, 120) U linspace(0, 1, 101)``, deduplicated and sorted: dense at small r."""
    grid = np.concatenate([[0.0], np.logspace(-4, 0, 120), np.linspace(0.0, 1.0, 101)])
    return sorted({float(np.round(r, 15)) for r in grid})


def edited_logits(
    base_logits: torch.Tensor, features: torch.Tensor, edits: Sequence[WeightEdit], r: float
) -> torch.Tensor:
    """Logits after applying ``edits`` at rate ``r`` to the base weights: ``z + sum_e (w'_e(r) - w_e) a[:, k_e]``."""
    logits = base_logits.to(torch.float64).clone()
    for e in edits:
        logits[:, e.row] += (e.value_at(r) - e.old_value) * features[:, e.col].to(torch.float64)
    return logits


def rule_score(row: dict[str, Any], rule: str) -> float:
    """Higher is better under ``rule``: minus the gap (``min_gap``) or the worst-group accuracy (``max_worst``)."""
    return -row["gap"] if rule == "min_gap" else row["worst_group"]


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    return rule


@dataclass
class SweepResult:
    """One row per rate: ``r``, ``average``, ``worst_group``, ``gap`` and ``per_group`` accuracies."""

    table: list[dict[str, Any]] = field(default_factory=list)

    @property
    def r_values(self) -> list[float]:
        return [row["r"] for row in self.table]

    def best(self, rule: str = "min_gap", floor: float | None = None) -> dict[str, Any]:
        """The row with the smallest gap (the paper's rule) or the best worst-group accuracy; ties go to the
        smallest ``r``.

        ``min_gap`` only considers edited rows whose worst-group accuracy is above ``floor`` (default: that of the
        smallest ``r``, i.e. the unedited model when the grid starts at 0): a classifier that flips most predictions
        also has a small gap, and so does one that only loses average accuracy (measured: on the SpuCo-style
        benchmark with a 4-pixel cue the rule took 20 points of average accuracy for no worst-group change); the
        paper's rule is meant for the region where the worst group improves.
        """
        check_rule(rule)
        if floor is None:
            floor = self.table[0]["worst_group"]
        best = self.table[0]
        for row in self.table[1:]:
            if rule == "min_gap" and row["worst_group"] <= floor:
                continue
            if rule_score(row, rule) > rule_score(best, rule):
                best = row
        return best

    def plot(
        self,
        path: str | None = None,
        rule: str = "min_gap",
        title: str | None = None,
        ax: Any = None,
        chosen_r: float | None = None,
    ) -> Any:
        """Average and worst-group accuracy against ``r`` (the paper's Figure 9), the chosen ``r`` dotted.

        Args:
            path: save the figure there (PNG).
            rule: marks this table's best ``r`` under ``rule``, unless ``chosen_r`` is given (e.g. the ``r`` chosen
                on validation, marked on the test split's plot).
            ax: a matplotlib ``Axes`` to draw into; by default a new ``Figure`` is made without pyplot, so the
                caller's backend and pyplot's figure list are left alone.

        Returns:
            The figure.
        """
        if ax is None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6, 4))
            ax = fig.subplots()
        else:
            fig = ax.figure
        r = self.r_values
        ax.plot(r, [row["average"] * 100 for row in self.table], label="average")
        ax.plot(r, [row["worst_group"] * 100 for row in self.table], label="worst group")
        marked = self.best(rule)["r"] if chosen_r is None else chosen_r
        how = rule if chosen_r is None else "chosen on validation"
        ax.axvline(marked, linestyle=":", color="k", label=f"r = {marked:.4g} ({how})")
        positive = [x for x in r if x > 0]
        if positive:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xlim(0, max(r))
        ax.set_xlabel("neutralization rate r")
        ax.set_ylabel("accuracy (%)")
        if title:
            ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


_TIE_TOLERANCE = 1e-9  # relative: far above float64 rounding, far below any margin a prediction depends on


@dataclass
class _Lines:
    """Each sample's logits as lines in ``r``: the edited rows move (Eq. 8: ``r * (f - w)`` per edit), the best of
    the other rows is a constant. ``at`` evaluates samples at rate indices with the argmax's first-index tie rule."""

    edited_base: torch.Tensor  # [N, E'] the edited rows' logits at r = 0
    other_val: torch.Tensor  # [N] the best unedited row's logit
    other_idx: torch.Tensor  # [N] and its index
    selected: torch.Tensor  # [N, E] each edit's input feature
    edited: torch.Tensor  # [E'] the edited rows, sorted
    slot: torch.Tensor  # [E] each edit's position in ``edited``
    step: torch.Tensor  # [E] each edit's change per unit of r (Eq. 8: f - w)
    rates: torch.Tensor  # [R] the rates, ascending
    slope: torch.Tensor  # [N, E'] each edited row's logit change per unit of r
    position: torch.Tensor  # [K] each class's position in ``edited``, -1 for the unedited ones

    def at(self, samples: torch.Tensor, rate_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(prediction, clear)``: the predicted class of each sample at its rate, and whether it leads the
        runner-up by more than rounding could erase."""
        z = self.edited_base[samples]  # (indexing copies)
        z.index_add_(1, self.slot, self.selected[samples] * (self.rates[rate_idx][:, None] * self.step))
        z_val, z_pos = z.max(1)
        z_idx = self.edited[z_pos]
        other_val, other_idx = self.other_val[samples], self.other_idx[samples]
        pred = torch.where(
            z_val > other_val, z_idx, torch.where(z_val < other_val, other_idx, torch.minimum(z_idx, other_idx))
        )
        top = torch.cat([z, other_val[:, None]], 1).topk(min(2, z.shape[1] + 1), dim=1).values
        margin = top[:, 0] - top[:, -1] if top.shape[1] == 2 else torch.full_like(z_val, torch.inf)
        return pred, margin > _TIE_TOLERANCE * (1.0 + top[:, 0].abs())

    def _line(self, samples: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logit at r = 0, slope in r)`` of class ``cls`` for each sample (an unedited class is the constant best
        of the unedited rows, the only one of them a prediction can be)."""
        pos = self.position[cls]
        edited = pos >= 0
        col = pos.clamp(min=0)[:, None]
        value = torch.where(edited, self.edited_base[samples].gather(1, col)[:, 0], self.other_val[samples])
        slope = torch.where(edited, self.slope[samples].gather(1, col)[:, 0], torch.zeros(()).double())
        return value, slope

    def split(
        self, samples: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, pred_lo: torch.Tensor, pred_hi: torch.Tensor
    ) -> torch.Tensor:
        """A rate index strictly inside each interval ``(lo, hi)`` (``hi - lo >= 2``) to evaluate next: next to the
        rate where the line of ``pred_hi`` overtakes that of ``pred_lo`` (the prediction's one change, when there is
        one: two evaluations settle it), or the midpoint where the two ends agree or the lines do not cross in
        between. Any index inside gives the same counts; this one only takes fewer steps."""
        mid = (lo + hi) // 2
        changed = pred_lo != pred_hi
        if not bool(changed.any()):
            return mid
        s, a, b = samples[changed], pred_lo[changed], pred_hi[changed]
        value_a, slope_a = self._line(s, a)
        value_b, slope_b = self._line(s, b)
        crossing = (value_a - value_b) / (slope_b - slope_a)  # where b's line overtakes a's
        after = torch.searchsorted(self.rates, crossing.nan_to_num(nan=-1.0), right=True)  # first rate past it
        low, high = lo[changed], hi[changed]
        guess = torch.where(after < high, after, after - 1).clamp(min=low + 1, max=high - 1)
        inside = (slope_b > slope_a) & (crossing > self.rates[low]) & (crossing < self.rates[high])
        mid[changed] = torch.where(inside, guess, mid[changed])
        return mid


def _correct_counts(lines: _Lines, labels: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``[R, G]``: how many samples of each group are predicted correctly at each rate, exactly as evaluating every
    sample at every rate would say, evaluating each sample only where its prediction can change.

    Every logit is linear in r, so on an interval of rates where a sample's top class is the same at both ends,
    each time clearly ahead, the margin over every other line (linear too) stays above the smaller end margin: the
    prediction is constant in between. Intervals that are not are split (``_Lines.split``): next to where the line
    of the top class at the upper end overtakes that of the lower end's, so a single change of prediction is settled
    by two more evaluations (halving took about ``log2(R)``); at the midpoint otherwise."""
    n, num_rates = len(labels), len(lines.rates)
    diff = torch.zeros(num_groups, num_rates + 1, dtype=torch.float64)  # +1 where a correct run starts, -1 after

    def fill(samples: torch.Tensor, first: torch.Tensor, stop: torch.Tensor, pred: torch.Tensor) -> None:
        hit = pred == labels[samples]
        g = groups[samples][hit]
        diff.index_put_((g, first[hit]), torch.ones(len(g), dtype=torch.float64), accumulate=True)
        diff.index_put_((g, stop[hit]), -torch.ones(len(g), dtype=torch.float64), accumulate=True)

    samples = torch.arange(n)
    lo, hi = torch.zeros(n, dtype=torch.long), torch.full((n,), num_rates - 1, dtype=torch.long)
    pred_lo, clear_lo = lines.at(samples, lo)
    pred_hi, clear_hi = lines.at(samples, hi)
    fill(samples, hi, hi + 1, pred_hi)  # the last rate; every interval below is half-open [lo, hi)
    while len(samples):
        settled = ((pred_lo == pred_hi) & clear_lo & clear_hi) | (hi - lo <= 1)
        fill(samples[settled], lo[settled], hi[settled], pred_lo[settled])
        keep = ~settled
        samples, lo, hi = samples[keep], lo[keep], hi[keep]
        pred_lo, clear_lo, pred_hi, clear_hi = pred_lo[keep], clear_lo[keep], pred_hi[keep], clear_hi[keep]
        mid = lines.split(samples, lo, hi, pred_lo, pred_hi)
        pred_mid, clear_mid = lines.at(samples, mid)
        samples, lo, hi = samples.repeat(2), torch.cat([lo, mid]), torch.cat([mid, hi])
        pred_lo, pred_hi = torch.cat([pred_lo, pred_mid]), torch.cat([pred_mid, pred_hi])
        clear_lo, clear_hi = torch.cat([clear_lo, clear_mid]), torch.cat([clear_mid, clear_hi])
    return diff.cumsum(1)[:, :num_rates].T


def sweep_edits(
    base_logits: torch.Tensor,
    features: torch.Tensor,
    edits: Sequence[WeightEdit],
    r_values: Sequence[float],
    labels: torch.Tensor,
    groups: torch.Tensor,
    group_names: Sequence[str],
) -> SweepResult:
    """Evaluate ``edits`` at every ``r`` (sorted ascending) on cached features, in closed form."""
    rates = sorted({check_rate(r) for r in r_values})
    if not rates:
        raise ValueError("r_values is empty.")
    if len(labels) == 0:
        raise ValueError("no samples to evaluate.")
    n, k = base_logits.shape
    names = list(group_names)
    counts = torch.bincount(groups, minlength=len(names)).to(torch.float64)
    present = counts > 0
    rows = torch.tensor([e.row for e in edits], dtype=torch.long)
    old = torch.tensor([e.old_value for e in edits], dtype=torch.float64)
    ortho = torch.tensor([e.value_at(1.0) for e in edits], dtype=torch.float64)
    # Eq. 8 minus the old value: (r * f + (1 - r) * w) - w = r * (f - w), one rank-1 update of column `row` per edit
    step = ortho - old
    edited, slot = torch.unique(rows, return_inverse=True)  # sorted, so ties keep argmax's first-index rule
    # the best unedited row, taken in the logits' own dtype (float64 holds every value exactly, in the same order)
    others = base_logits.detach().clone()
    others[:, edited] = -torch.inf
    other_val, other_idx = others.max(1) if len(edited) < k else (torch.full((n,), -torch.inf), torch.zeros(n).long())
    selected = features[:, [e.col for e in edits]].to(torch.float64)  # [N, E]
    edited_base = base_logits[:, edited].to(torch.float64)
    slope = torch.zeros(n, len(edited), dtype=torch.float64).index_add_(1, slot, selected * step)
    position = torch.full((k,), -1, dtype=torch.long)
    position[edited] = torch.arange(len(edited))
    lines = _Lines(
        edited_base,
        other_val.to(torch.float64),
        other_idx,
        selected,
        edited,
        slot,
        step,
        torch.tensor(rates, dtype=torch.float64),
        slope,
        position,
    )
    hits = _correct_counts(lines, labels, groups, len(names))  # [R, G]
    per_group = (hits / counts.clamp(min=1))[:, present]
    worst = per_group.min(1).values.tolist()
    average = (hits.sum(1) / n).tolist()
    present_names = [names[g] for g in range(len(names)) if present[g]]
    table = [
        {
            "r": r,
            "average": average[i],
            "worst_group": worst[i],
            "gap": average[i] - worst[i],
            "per_group": dict(zip(present_names, accs)),
        }
        for i, (r, accs) in enumerate(zip(rates, per_group.tolist()))
    ]
    return SweepResult(table)


@dataclass
class NeutralizationSearch:
    """What ``neutralize_spurious`` chose and tried: the applied ``edits``, the chosen ``policy``,
    ``num_weights`` and ``r`` under ``rule``, M' (``fictitious``), the chosen candidate's ``validation`` metrics, and
    one entry per (policy, num_weights) in ``tried``, each with its ``sweep`` over r.

    With a head-level ``method`` (``"dfr"``, ``"class_balanced"`` or a registered one) ``edits`` holds one
    ``HeadEdit``, ``head`` the retrained head (``head_methods.FittedHead``), and ``policy`` / ``r`` are None;
    with ``"none"`` (``auto`` found no fix better than the model) nothing. ``candidates``: with ``method="auto"``,
    each method's held-out validation metrics; ``diagnosis``: the ``Diagnosis`` when it was asked for; ``note``: one
    sentence when ``auto`` kept a single-weight edit the diagnosis says does not remove the cue."""

    edits: list[Any]
    fictitious: Any
    policy: str | None
    num_weights: int
    r: float | None
    rule: str
    validation: dict[str, Any]
    tried: list[dict[str, Any]] = field(default_factory=list)
    method: str = "fcr"
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    diagnosis: Any = None
    head: Any = None
    note: str | None = None

    @property
    def choice(self) -> dict[str, Any]:
        choice = {"method": self.method, "policy": self.policy, "num_weights": self.num_weights, "r": self.r}
        if self.head is not None and "C" in self.head.params:
            choice["C"] = self.head.params["C"]
        return {**choice, "rule": self.rule}


def search_edits(
    plan: Callable[[str, int], list[WeightEdit]],
    policies: Sequence[str],
    counts: Sequence[int],
    base_logits: torch.Tensor,
    features: torch.Tensor,
    r_values: Sequence[float],
    groups: tuple[torch.Tensor, torch.Tensor, Sequence[str]],
    rule: str,
) -> tuple[dict[str, Any], list[WeightEdit], list[dict[str, Any]]]:
    """The (policy x weights per class x r) grid search of ``neutralize_spurious``, in closed form.

    ``plan(policy, n)`` gives the candidate's edits (at any rate); each is swept over ``r_values`` on ``groups``
    (``(labels, group ids, group names)``) and scored by ``rule`` at its best rate (``SweepResult.best``, with the
    floor at the unedited model's worst group). Ties go to the first candidate in the order (policy, weights,
    smallest r).

    Returns:
        ``(chosen row, the chosen candidate's edits at rate 1 as planned, one row per candidate tried)``.
    """
    labels, ids, names = groups
    floor = group_metrics(base_logits.argmax(1), labels, ids, names)["worst_group"]
    tried: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], list[WeightEdit]] | None = None
    for policy in policies:
        for n in counts:
            edits = plan(policy, n)
            result = sweep_edits(base_logits, features, edits, r_values, labels, ids, names)
            row = result.best(rule, floor=floor)
            tried.append({"policy": policy, "num_weights": n, "sweep": result, **row})
            score = rule_score(row, rule)
            if best is None or score > best[0]:
                best = (score, tried[-1], edits)
    if best is None:
        raise ValueError("need at least one policy and one num_weights to try.")
    return best[1], best[2], tried
