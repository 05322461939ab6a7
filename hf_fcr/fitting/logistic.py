"""A logistic-regression probe in torch whose data may be sharded across processes.

It minimises scikit-learn's ``LogisticRegression(C)`` objective (lbfgs; the intercept is not penalised):
multinomial ``C * sum_i CE(W x_i + b, y_i) + |W|^2 / 2`` for ``V > 2`` values, and for two values the binary
``C * sum_i log(1 + exp(-s_i (w . x_i + b))) + |w|^2 / 2`` returned as the softmax-equivalent rows ``-w/2, +w/2``
(as ``probe.fit_linear_probe`` does with scikit-learn's binary fit). Each process computes the loss and gradient of
its own rows; Accelerate sums them across processes, so every process takes the same L-BFGS steps and ends with the
same head, and no process ever holds another's features (160k x 2048 float32 CelebA features are 1.3 GB each).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.distributed import reduce_sum

__all__ = ["fit_logistic_probe", "two_rows"]


def fit_logistic_probe(
    features: torch.Tensor, targets: torch.Tensor, num_values: int, C: float = 1.0, max_iter: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``(weight [V, D], bias [V])`` in float64 on this process' rows (all rows without a launcher)."""

    x = features.detach().to(torch.float64).cpu()
    y = targets.detach().long().cpu()
    rows = 1 if num_values == 2 else num_values
    weight = torch.zeros(rows, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(rows, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = x @ weight.T + bias
        if num_values == 2:
            data_loss = F.softplus(-(2.0 * y - 1.0) * z[:, 0]).sum()
        else:
            data_loss = F.cross_entropy(z, y, reduction="sum")
        (C * data_loss).backward()
        shared = {"loss": data_loss.detach().reshape(1).clone(), "weight": weight.grad, "bias": bias.grad}
        reduce_sum(shared)  # the sums over every process' rows
        with torch.no_grad():
            weight.grad += weight
        return C * shared["loss"][0] + 0.5 * weight.detach().square().sum()

    opt.step(closure)
    w, b = weight.detach(), bias.detach()
    return two_rows(w, b) if num_values == 2 else (w, b)


def two_rows(w: Any, b: Any) -> tuple[Any, Any]:
    """A binary logistic head (one coefficient row ``w``, intercept ``b``; torch or numpy) as the softmax-equivalent
    rows ``-w/2, +w/2`` and intercepts ``-b/2, +b/2``: the same decisions and probabilities, one row per value."""
    lib = torch if torch.is_tensor(w) else np
    w, b = w.reshape(1, -1), b.reshape(1)
    return lib.concatenate([-w / 2, w / 2]), lib.concatenate([-b / 2, b / 2])
