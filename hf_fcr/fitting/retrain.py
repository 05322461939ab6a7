"""Last-layer retraining on cached features, the head-level fixes: DFR (Kirichenko et al., "Last layer re-training is
sufficient for robustness to spurious correlations"; group-balanced, needs group labels) and class-balanced
retraining (the same recipe balanced by class, needs no group labels).

DFR as its authors describe it: standardize the features (statistics of the validation set), fit an L1-regularized
logistic regression on group-balanced subsets of the validation set, choose the inverse regularization ``C`` by the
worst-group accuracy on the other half of the validation set, then refit on group-balanced subsets of the whole
validation set several times and average the weights. Class-balanced retraining balances and chooses ``C`` by
class (worst-class accuracy) instead. With more than two classes the fit is a multinomial L2
logistic regression (liblinear's L1 is binary; one-vs-rest L1 fits took minutes each on MNIST features).

Robust to ill-conditioned features (those of a briefly fine-tuned or collapsed model):

- near-constant columns (standard deviation at most ``NEAR_CONSTANT`` times the median column's) are left out of the
  fit (weight 0, their mean absorbed by the bias) instead of being blown up to unit variance by the standardization;
- each multinomial (lbfgs) fit starts where the latest fit at its C ended, or the latest at the C before it on the
  path (warm starts, as scikit-learn's ``LogisticRegressionCV`` does along its C path): the balanced subsets are
  drawn from the same rows, so their optima are close and a fit ends within the solver's tolerance of where it would
  have from zero, in a third of the iterations for class-balanced retraining's final fits;
- scikit-learn's fits run with one BLAS thread (``utils.threads.one_blas_thread``: most of the time was threads
  fighting over the cores);
- a fit that stops at its iteration cap is reported (``RetrainedHead.unconverged``: C and iterations), and the
  registered methods log a warning naming the method.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..utils.progress import stage
from ..utils.threads import one_blas_thread
from .logistic import two_rows

# scikit-learn is imported where a head is fit (its import costs a second).

__all__ = ["DFR_C_GRID", "MAX_ITER", "NEAR_CONSTANT", "RetrainedHead", "check_every_class", "retrain_head"]

DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
MAX_ITER = 1000  # a fit's iteration cap
NEAR_CONSTANT = 1e-4  # a column whose std is at most this times the median column std is left out of the fit


@dataclass
class RetrainedHead:
    """A linear head ``weight [K, D]``, ``bias [K]`` on the raw features; the chosen ``C``, the tuning table (C ->
    held-out worst-group or worst-class accuracy), the rows used and the size of each balanced subset; the columns
    left out as near-constant and the fits that stopped at ``MAX_ITER`` (``(C, iterations)``)."""

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
        return features.to(torch.float64) @ self.weight.T + self.bias


def _balanced_subset(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with every group subsampled (without replacement) to the smallest group's size."""
    present = np.unique(groups)
    size = min(int((groups == g).sum()) for g in present)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), size, replace=False) for g in present])


def _fit(  # noqa: PLR0913 -- one fit's data and settings
    x: np.ndarray,
    y: np.ndarray,
    C: float,
    num_classes: int,
    intercept: bool,
    seed: int,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(weight [num_classes, D], bias [num_classes], iterations)``; classes absent from ``y`` get a -1e9 bias.
    ``start``: a head ``(weight, bias)`` the multinomial solver starts from instead of zero (liblinear, the binary
    L1 solver, always starts from zero)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y)
    if start is not None and not np.all(start[1][classes] > -1e9):  # a class the start never saw: from zero
        start = None
    if len(classes) > 2:
        # liblinear's L1 is binary, and one-vs-rest L1 fits ran for minutes each on 5-class MNIST features: with
        # more than two classes the head is a multinomial L2 fit (lbfgs): a documented departure from DFR
        model = LogisticRegression(C=C, max_iter=MAX_ITER, fit_intercept=intercept, warm_start=start is not None)
        if start is not None:  # read by fit() with warm_start: the rows of the classes present, in their order
            model.coef_, model.intercept_ = start[0][classes].copy(), start[1][classes].copy()
    else:
        # liblinear shuffles its coordinates; without random_state it draws from numpy's global generator, so the
        # head depended on whatever ran before (measured: one test sample's prediction in the demo's DFR)
        model = LogisticRegression(
            C=C, l1_ratio=1.0, solver="liblinear", max_iter=MAX_ITER, fit_intercept=intercept, random_state=seed
        )
    with warnings.catch_warnings():  # (retrain_head runs the fits under one_blas_thread)
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported by the caller, with C and the iterations
        model.fit(x, y)
    coef, b = model.coef_, np.broadcast_to(model.intercept_, (model.coef_.shape[0],))
    if coef.shape[0] == 1:  # binary: softmax-equivalent two rows
        coef, b = two_rows(coef, b)
    full_w, full_b = np.zeros((num_classes, x.shape[1])), np.full(num_classes, -1e9)
    full_w[model.classes_], full_b[model.classes_] = coef, b
    return full_w, full_b, int(np.max(model.n_iter_))


def _standardized(x: np.ndarray, intercept: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(standardized columns, mean, scale, indices of those columns)``. A near-constant column (std at most
    ``NEAR_CONSTANT`` times the median column std) is left out when the bias can absorb its mean; without a bias
    (no centring) it is kept, scaled by the median std instead of its own."""
    std = x.std(0)
    typical = float(np.median(std[std > 0])) if (std > 0).any() else 1.0
    near_constant = std <= NEAR_CONSTANT * typical
    if intercept:
        mean, keep = x.mean(0), np.flatnonzero(~near_constant)
    else:
        mean, keep = np.zeros(x.shape[1]), np.arange(x.shape[1])
    scale = np.where(near_constant, typical, std)
    return (x[:, keep] - mean[keep]) / scale[keep], mean, scale, keep


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
    with one_blas_thread():  # entered once: threadpoolctl's limit costs tens of milliseconds each time
        return _retrain_head(features, labels, groups, num_classes, seed, num_fits, c_grid, intercept, C, name)


def _retrain_head(  # noqa: PLR0913 -- retrain_head's arguments, checked
    features: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    num_classes: int,
    seed: int,
    num_fits: int,
    c_grid: Sequence[float],
    intercept: bool,
    given_c: float | None,
    name: str,
) -> RetrainedHead:
    """``retrain_head``'s work (under one BLAS thread)."""
    check_every_class(labels, num_classes)
    if int(torch.bincount(torch.unique(groups, return_inverse=True)[1]).min()) < 2:
        raise ValueError("every group needs at least two validation rows to balance and tune on.")

    x = features.detach().double().cpu().numpy()
    y, g = labels.cpu().numpy(), groups.cpu().numpy()
    rng = np.random.default_rng(seed)
    xs, mean, scale, keep = _standardized(x, intercept)
    unconverged = []

    last: dict[float, tuple[np.ndarray, np.ndarray]] = {}  # each C's latest fit

    def fit(rows: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
        # warm starts (module docstring): the latest fit at this C, else the latest at the C before it on the path
        start = last.get(float(C), last[next(reversed(last))] if last else None)
        w, b, iterations = _fit(xs[rows], y[rows], C, num_classes, intercept, seed, start)
        if iterations >= MAX_ITER:
            unconverged.append((float(C), iterations))
        last[float(C)] = (w, b)
        return w, b

    tuning = {}
    if given_c is None:
        order = rng.permutation(len(y))
        tune, held = order[: len(y) // 2], order[len(y) // 2 :]
        with stage(len(c_grid), f"{name}: C grid") as bar:
            for C in c_grid:
                scores = []
                for _ in range(3):
                    w, b = fit(tune[_balanced_subset(g[tune], rng)], C)
                    scores.append(_worst_group((xs[held] @ w.T + b).argmax(1), y[held], g[held]))
                tuning[float(C)] = float(np.mean(scores))
                bar.update()
        best_c = max(tuning, key=lambda c: (tuning[c], -list(tuning).index(c)))
    else:
        best_c = float(given_c)
    ws, bs = [], []
    with stage(num_fits, f"{name}: balanced fits") as bar:
        for _ in range(num_fits):
            sub = _balanced_subset(g, rng)
            w, b = fit(sub, best_c)
            ws.append(w)
            bs.append(b)
            bar.update()
    w, b = np.mean(ws, axis=0), np.mean(bs, axis=0)
    # fold the standardization into the head: (x - mu) / sigma . w + b; left-out columns get weight 0
    w_raw = np.zeros((num_classes, x.shape[1]))
    w_raw[:, keep] = w / scale[keep]
    b_raw = b - w_raw @ mean if intercept else np.asarray(b, dtype=np.float64)
    return RetrainedHead(
        torch.from_numpy(w_raw),
        torch.from_numpy(b_raw),
        best_c,
        tuning,
        len(y),
        len(sub),
        num_fits,
        constant_columns=tuple(int(c) for c in np.setdiff1d(np.arange(x.shape[1]), keep)),
        unconverged=tuple(unconverged),
    )
