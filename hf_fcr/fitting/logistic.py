"""A logistic-regression probe in torch (M', Algorithm 2) whose data may be sharded across processes.

It minimises scikit-learn's ``LogisticRegression(C)`` objective (lbfgs; the intercept is not penalised):
multinomial ``C * sum_i CE(W x_i + b, y_i) + |W|^2 / 2`` for ``V > 2`` values, and for two values the binary
``C * sum_i log(1 + exp(-s_i (w . x_i + b))) + |w|^2 / 2`` returned as the softmax-equivalent rows ``-w/2, +w/2``
(as ``probe.fit_linear_probe`` does with scikit-learn's binary fit). It stops where scikit-learn's lbfgs stops: when
the gradient's largest entry is at most ``tol`` times the number of rows (scikit-learn scales the objective by
``1 / N`` and stops at ``tol``).

L-BFGS, on the features' device: the products in the features' dtype (float32 features are used as they are, never
copied), the head and the sums in float64. Each process computes the loss and gradient of its own rows; Accelerate
sums them across processes, so every process takes the same L-BFGS steps and ends with the same head, and no
process ever holds another's features (160k x 2048 float32 CelebA features are 1.3 GB each).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..utils.distributed import reduce_sum

__all__ = ["fit_logistic_probe", "two_rows"]


def fit_logistic_probe(  # noqa: PLR0913 -- the objective and the stopping rule
    features: torch.Tensor,
    targets: torch.Tensor,
    num_values: int,
    C: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``(weight [V, D], bias [V])`` in float64 on this process' rows (all rows without a launcher), on the
    features' device; the head is returned on the CPU."""

    x = features.detach()
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # half precision cannot hold the sums
    y = targets.detach().long().to(x.device)
    rows = 1 if num_values == 2 else num_values
    weight = torch.zeros(rows, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(rows, dtype=torch.float64, device=x.device, requires_grad=True)
    count = {"n": torch.tensor([float(len(y))], dtype=torch.float64, device=x.device)}
    reduce_sum(count)  # every process' rows: the stopping rule's scale
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=tol * float(count["n"][0]),
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = (x @ weight.T.to(x.dtype)).to(torch.float64) + bias
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
    w, b = weight.detach().cpu(), bias.detach().cpu()
    return two_rows(w, b) if num_values == 2 else (w, b)


def two_rows(w: Any, b: Any) -> tuple[Any, Any]:
    """A binary logistic head (one coefficient row ``w``, intercept ``b``; torch or numpy) as the softmax-equivalent
    rows ``-w/2, +w/2`` and intercepts ``-b/2, +b/2``: the same decisions and probabilities, one row per value."""
    lib = torch if torch.is_tensor(w) else np
    w, b = w.reshape(1, -1), b.reshape(1)
    return lib.concatenate([-w / 2, w / 2]), lib.concatenate([-b / 2, b / 2])
