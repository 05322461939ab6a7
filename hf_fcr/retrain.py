"""Last-layer retraining on cached features, the head-level fixes: DFR (Kirichenko et al., "Last layer re-training is
sufficient for robustness to spurious correlations"; group-balanced, needs group labels) and class-balanced
retraining (the same recipe balanced by class, needs no group labels).

DFR as its authors describe it: standardize the features (statistics of the validation set), fit an L1-regularized
logistic regression on group-balanced subsets of the validation set, choose the inverse regularization ``C`` by the
worst-group accuracy on the other half of the validation set, then refit on group-balanced subsets of the whole
validation set several times and average the weights. Class-balanced retraining balances and chooses ``C`` by
class (worst-class accuracy) instead. With more than two classes the fit is a multinomial L2
logistic regression (liblinear's L1 is binary; one-vs-rest L1 fits took minutes each on MNIST features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .logistic import two_rows

__all__ = ["DFR_C_GRID", "RetrainedHead", "check_every_class", "retrain_head"]

DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)


@dataclass
class RetrainedHead:
    """A linear head ``weight [K, D]``, ``bias [K]`` on the raw features; the chosen ``C``, the tuning table (C ->
    held-out worst-group or worst-class accuracy), the rows used and the size of each balanced subset."""

    weight: torch.Tensor
    bias: torch.Tensor
    C: float
    tuning: dict[float, float]
    num_samples: int = 0
    samples_per_fit: int = 0
    num_fits: int = 0

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(torch.float64) @ self.weight.T + self.bias


def _balanced_subset(groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices with every group subsampled (without replacement) to the smallest group's size."""
    present = np.unique(groups)
    size = min(int((groups == g).sum()) for g in present)
    return np.concatenate([rng.choice(np.flatnonzero(groups == g), size, replace=False) for g in present])


def _fit(
    x: np.ndarray, y: np.ndarray, C: float, num_classes: int, intercept: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) > 2:
        # liblinear's L1 is binary, and one-vs-rest L1 fits ran for minutes each on 5-class MNIST features: with
        # more than two classes the head is a multinomial L2 fit (lbfgs): a documented departure from DFR
        model = LogisticRegression(C=C, max_iter=1000, fit_intercept=intercept).fit(x, y)
    else:
        # liblinear shuffles its coordinates; without random_state it draws from numpy's global generator, so the
        # head depended on whatever ran before (measured: one test sample's prediction in the demo's DFR)
        liblinear = LogisticRegression(
            C=C, l1_ratio=1.0, solver="liblinear", max_iter=1000, fit_intercept=intercept, random_state=seed
        )
        model = liblinear.fit(x, y)
    coef, intercept = model.coef_, np.broadcast_to(model.intercept_, (model.coef_.shape[0],))
    if coef.shape[0] == 1:  # binary: softmax-equivalent two rows
        coef, intercept = two_rows(coef, intercept)
    full_w, full_b = np.zeros((num_classes, x.shape[1])), np.full(num_classes, -1e9)
    full_w[model.classes_], full_b[model.classes_] = coef, intercept
    return full_w, full_b


def _worst_group(pred: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    return min(float((pred[groups == g] == y[groups == g]).mean()) for g in np.unique(groups))


def check_every_class(labels: torch.Tensor, num_classes: int, class_names: Sequence[str] | None = None) -> None:
    """ValueError naming the classes in ``[0, num_classes)`` without rows in ``labels``: a head retrained without
    them would never predict them (giving them an arbitrary row would silently delete them from the model)."""
    present = set(torch.unique(labels).tolist())
    missing = [c for c in range(num_classes) if c not in present]
    if missing:
        names = [f"{c} ({class_names[c]!r})" if class_names else str(c) for c in missing]
        raise ValueError(
            f"class {', '.join(names)} has no rows in the data the head is retrained on: the new head would never "
            "predict it. Retrain on data with rows of every class (or remove the class with remove_class)."
        )


def retrain_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    num_classes: int,
    seed: int = 0,
    num_fits: int = 20,
    c_grid: Sequence[float] = DFR_C_GRID,
    intercept: bool = True,
) -> RetrainedHead:
    """Retrain a head on validation ``features`` with class ``labels``, balanced by ``groups``: label x attribute
    ids for DFR, the labels themselves for class-balanced retraining. ``C`` is chosen by the worst accuracy over
    ``groups`` on a held-out half; the final head averages ``num_fits`` fits on balanced subsets of all rows, with
    the standardization folded in. ``intercept=False`` for a head without a bias.

    Every one of the ``num_classes`` classes must have rows: a retrained head cannot score a class it never saw, and
    giving that class an arbitrary row would silently delete it from the model (refused instead).

    Raises:
        ValueError: a class without rows, or a group with fewer than two rows.
    """
    from sklearn.preprocessing import StandardScaler

    check_every_class(labels, num_classes)
    if int(torch.bincount(torch.unique(groups, return_inverse=True)[1]).min()) < 2:
        raise ValueError("every group needs at least two validation rows to balance and tune on.")

    x = features.detach().double().cpu().numpy()
    y, g = labels.cpu().numpy(), groups.cpu().numpy()
    rng = np.random.default_rng(seed)
    scaler = StandardScaler(with_mean=intercept).fit(x)  # no centring without a bias to absorb it
    xs = scaler.transform(x)
    order = rng.permutation(len(y))
    tune, held = order[: len(y) // 2], order[len(y) // 2 :]
    tuning = {}
    for C in c_grid:
        scores = []
        for _ in range(3):
            sub = tune[_balanced_subset(g[tune], rng)]
            w, b = _fit(xs[sub], y[sub], C, num_classes, intercept, seed)
            scores.append(_worst_group((xs[held] @ w.T + b).argmax(1), y[held], g[held]))
        tuning[float(C)] = float(np.mean(scores))
    best_c = max(tuning, key=lambda c: (tuning[c], -list(tuning).index(c)))
    ws, bs = [], []
    for _ in range(num_fits):
        sub = _balanced_subset(g, rng)
        w, b = _fit(xs[sub], y[sub], best_c, num_classes, intercept, seed)
        ws.append(w)
        bs.append(b)
    w, b = np.mean(ws, axis=0), np.mean(bs, axis=0)
    # fold the standardization into the head: (x - mu) / sigma . w + b
    w_raw = w / scaler.scale_
    b_raw = b - w_raw @ scaler.mean_ if intercept else np.asarray(b, dtype=np.float64)
    per_fit = len(sub)
    return RetrainedHead(torch.from_numpy(w_raw), torch.from_numpy(b_raw), best_c, tuning, len(y), per_fit, num_fits)
