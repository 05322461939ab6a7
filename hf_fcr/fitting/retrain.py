"""Last-layer retraining on cached features, the head-level fixes: DFR (Kirichenko et al., "Last layer re-training is
sufficient for robustness to spurious correlations"; group-balanced, needs group labels) and class-balanced
retraining (the same recipe balanced by class, needs no group labels).

DFR as its authors describe it: standardize the features (statistics of the validation set), fit an L1-regularized
logistic regression on group-balanced subsets of the validation set, choose the inverse regularization ``C`` by the
worst-group accuracy on the other half of the validation set, then refit on group-balanced subsets of the whole
validation set several times and average the weights. Class-balanced retraining balances and chooses ``C`` by
class (worst-class accuracy) instead. With more than two classes the fit is a multinomial L2 logistic regression
(liblinear's L1 is binary; one-vs-rest L1 fits took minutes each on MNIST features).

The fits are ``solver.fit_logistic_family``'s: the C grid x 3 balanced subsets is one batched problem, the final
balanced fits another (started from the tuning fits at the chosen C), on the features' device, with scikit-learn's
objectives (liblinear's for L1, lbfgs's for L2; scikit-learn is the tests' reference).

Robust to ill-conditioned features (those of a briefly fine-tuned or collapsed model):

- near-constant columns (standard deviation at most ``NEAR_CONSTANT`` times the median column's) are left out of the
  fit (weight 0, their mean absorbed by the bias) instead of being blown up to unit variance by the standardization;
- a fit that stops at its iteration cap is reported (``RetrainedHead.unconverged``: C and iterations), and the
  registered methods log a warning naming the method.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.progress import stage
from ..utils.rows import ROWS, column_mean, float64_logits
from .solver import fit_logistic_family, subset_masks

__all__ = [
    "DFR_C_GRID",
    "MAX_ITER",
    "NEAR_CONSTANT",
    "RetrainedHead",
    "TOL",
    "check_every_class",
    "retrain_head",
]

DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
# a fit's iteration cap: lbfgs's 1,000 for the multinomial family; quasi-Newton steps are weaker than liblinear's
# Newton steps, and at 1e-5 some binary L1 fits on SpuriousDigits features took 850-1,130
MAX_ITER = {"l1": 10_000, "l2": 1000}
# a fit's stopping tolerance (solver.fit_logistic_family). Binary L1: a tenth of scikit-learn's; at 1e-4 the L1
# optimum is flat enough that choices of C moved against the exact optimum's (docs/evidence.md). Multinomial L2
# (strictly convex): at 1e-4 already 6-40x closer to the optimum than scikit-learn's default on SpuCo-style features
TOL = {"l1": 1e-5, "l2": 1e-4}
NEAR_CONSTANT = 1e-4  # a column whose std is at most this times the median column std is left out of the fit


@dataclass
class RetrainedHead:
    """A linear head ``weight [K, D]``, ``bias [K]`` on the raw features; the chosen ``C``, the tuning table (C ->
    held-out worst-group or worst-class accuracy), the rows used and the size of each balanced subset; the columns
    left out as near-constant and the fits that stopped at their cap (``MAX_ITER`` of their family):
    ``(C, iterations)``."""

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    tuning: dict[float, float]
    num_samples: int = 0
    samples_per_fit: int = 0
    num_fits: int = 0
    constant_columns: tuple[int, ...] = ()
    unconverged: tuple[tuple[float, int], ...] = ()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return float64_logits(features, self.weight, self.bias)


def _balanced_subset(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with every group subsampled (without replacement) to the smallest group's size."""
    present = np.unique(groups)
    size = min(int((groups == g).sum()) for g in present)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), size, replace=False) for g in present])


def _column_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column means and standard deviations (``ddof=0``) in float64, ``utils.rows.ROWS`` rows at a time."""
    mean = column_mean(x)
    spread = torch.zeros_like(mean)
    for part in x.split(ROWS):
        spread += (part.to(torch.float64) - mean).square().sum(0)
    return mean, torch.sqrt(spread / len(x))


def _standardized(x: torch.Tensor, intercept: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(standardized columns in float64, mean, scale, indices of those columns)``, on ``x``'s device. A
    near-constant column (std at most ``NEAR_CONSTANT`` times the median column std) is left out when the bias can
    absorb its mean; without a bias (no centring) it is kept, scaled by the median std instead of its own."""
    mean, std = _column_stats(x)
    typical = float(std[std > 0].median()) if bool((std > 0).any()) else 1.0
    near_constant = std <= NEAR_CONSTANT * typical
    if intercept:
        keep = torch.nonzero(~near_constant).flatten()
    else:
        mean, keep = torch.zeros_like(mean), torch.arange(x.shape[1], device=x.device)
    scale = torch.where(near_constant, torch.full_like(std, typical), std)
    # the one copy of the validation features
    xs = torch.empty(len(x), len(keep), dtype=torch.float64, device=x.device)
    for part_in, part_out in zip(x.split(ROWS), xs.split(ROWS)):
        part_out.copy_((part_in[:, keep].to(torch.float64) - mean[keep]) / scale[keep])
    return xs, mean, scale, keep


def _worst_group(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    return min(float((pred[groups == g] == y[groups == g]).mean()) for g in np.unique(groups))


def check_every_class(labels: torch.Tensor, num_classes: int, class_names: Sequence[str] | None = None) -> None:
    """ValueError naming the classes in ``[0, num_classes)`` without rows in ``labels``: a head retrained without
    them would never predict them (giving them an arbitrary row would silently delete them from the model)."""
    present = set(torch.unique(labels).tolist())
    missing = [c for c in range(num_classes) if c not in present]
    if missing:
        names = [f"{c} ({class_names[c]!r})" if class_names else str(c) for c in missing[:10]]
        more = f" and {len(missing) - 10} more ({len(missing)} of {num_classes})" if len(missing) > 10 else ""
        raise ValueError(
            f"class {', '.join(names)}{more} has no rows in the data the head is retrained on: the new head would "
            "never predict it. Retrain on data with rows of every class (or remove the class with remove_class)."
        )


def retrain_head(  # noqa: PLR0913 -- the public API: keyword options with defaults
    features: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    num_classes: int,
    seed: int = 0,
    num_fits: int = 20,
    c_grid: Sequence[float] = DFR_C_GRID,
    intercept: bool = True,
    C: float | None = None,
    name: str = "retraining",
) -> RetrainedHead:
    """Retrain a head on validation ``features`` with class ``labels``, balanced by ``groups``: label x attribute
    ids for DFR, the labels themselves for class-balanced retraining. ``C`` is chosen from ``c_grid`` by the worst
    accuracy over ``groups`` on a held-out half; the final head averages ``num_fits`` fits on balanced subsets of all
    rows, with the standardization folded in. ``intercept=False`` for a head without a bias. A given ``C`` (one
    already validated, as ``method="auto"`` does on half of validation) skips the tuning: ``tuning`` is then empty.
    ``name`` names the progress bars (``"DFR: C grid"``, ``"DFR: balanced fits"``) shown when a stage is slow.

    Every one of the ``num_classes`` classes must have rows: a retrained head cannot score a class it never saw, and
    giving that class an arbitrary row would silently delete it from the model (refused instead).

    Raises:
        ValueError: a class without rows, a group with fewer than two rows, or a ``C`` that is not a positive number.
    """
    if C is not None and (isinstance(C, bool) or not isinstance(C, numbers.Real) or not 0 < C < float("inf")):
        raise ValueError(f"C is the inverse regularization strength, a positive number; got {C!r}.")
    check_every_class(labels, num_classes)
    if int(torch.bincount(torch.unique(groups, return_inverse=True)[1]).min()) < 2:
        raise ValueError("every group needs at least two validation rows to balance and tune on.")

    x = features.detach()
    y, g = labels.cpu().numpy(), groups.cpu().numpy()
    rng = np.random.default_rng(seed)
    penalty = "l1" if num_classes == 2 else "l2"  # liblinear's L1 is binary (module docstring)
    # in float64: in float32 the line searches could not see the last decreases of the objective on real CNNs'
    # features, and fits stalled short of TOL (EfficientNet-Lite0, SpuCo-style MNIST)
    xs, mean, scale, keep = _standardized(x, intercept)
    targets = labels.to(x.device)
    unconverged: list[tuple[float, int]] = []

    def fit(subsets: list[np.ndarray], Cs: list[float], desc: str, start=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The balanced ``subsets`` at ``Cs``, one batched problem: the family's ``(weight [P, K, D], bias [P, K])``
        (``K = 1`` for the binary l1 family: the positive class' coefficients)."""
        masks = subset_masks([torch.from_numpy(rows) for rows in subsets], len(y), x.device)
        with stage(len(subsets), desc) as bar:
            family = fit_logistic_family(
                xs, targets, masks, torch.tensor(Cs), num_classes=num_classes, penalty=penalty,
                intercept=intercept, max_iter=MAX_ITER[penalty], tol=TOL[penalty], start=start,
                progress=bar.update,
            )  # fmt: skip
        for C, iterations, converged in zip(Cs, family.iterations.tolist(), family.converged.tolist()):
            if not converged:
                unconverged.append((float(C), int(iterations)))
        return family.weight, family.bias

    def head_rows(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One row per class: a binary family's ``w`` as the softmax-equivalent rows ``-w/2, +w/2``."""
        if penalty == "l2":
            return w, b
        return torch.cat([-w / 2, w / 2], -2), torch.cat([-b / 2, b / 2], -1)

    tuning: dict[float, float] = {}
    start = None
    if C is None:
        order = rng.permutation(len(y))
        tune, held = order[: len(y) // 2], order[len(y) // 2 :]
        grid = [float(c) for c in c_grid for _ in range(3)]
        subsets = [tune[_balanced_subset(g[tune], rng)] for _ in grid]  # the draws of the fits one by one
        w, b = fit(subsets, grid, f"{name}: C grid")
        held_x = xs[torch.from_numpy(held).to(x.device)]
        rows_w, rows_b = head_rows(w, b)
        predictions = (torch.einsum("nd,pkd->npk", held_x, rows_w) + rows_b).argmax(2).cpu().numpy()
        scores: dict[float, list[float]] = {}
        for i, c in enumerate(grid):
            scores.setdefault(c, []).append(_worst_group(predictions[:, i], y[held], g[held]))
        tuning = {c: float(np.mean(s)) for c, s in scores.items()}
        best_c = max(tuning, key=lambda c: (tuning[c], -list(tuning).index(c)))
        chosen = [i for i, c in enumerate(grid) if c == best_c]
        start = (w[chosen].mean(0), b[chosen].mean(0))  # the final fits start from these
    else:
        best_c = float(C)
    subsets = [_balanced_subset(g, rng) for _ in range(num_fits)]
    w, b = fit(subsets, [best_c] * num_fits, f"{name}: balanced fits", start)
    w, b = head_rows(w.mean(0), b.mean(0))
    # fold the standardization into the head: (x - mu) / sigma . w + b; left-out columns get weight 0
    w_raw = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, device=x.device)
    w_raw[:, keep] = w / scale[keep]
    b_raw = b - w_raw @ mean if intercept else b
    return RetrainedHead(
        w_raw.cpu(),
        b_raw.cpu(),
        best_c,
        tuning,
        len(y),
        len(subsets[-1]),
        num_fits,
        constant_columns=tuple(sorted(set(range(x.shape[1])) - set(keep.tolist()))),
        unconverged=tuple(unconverged),
    )
