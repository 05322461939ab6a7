"""Batched logistic regression in torch: a family of problems on one shared feature matrix, solved together.

DFR and class-balanced retraining fit the same logistic regression many times: each C of a grid on a few balanced
subsets of the validation rows, then twenty balanced subsets at the chosen C. Here the whole family is one problem:
problem ``p`` weighs row ``i`` by ``masks[i, p]`` (1 for the rows of its subset, 0 for the others) and has its own
``C[p]``, so every iteration is two matrix products of the shared features ``x [N, D]`` with the ``P`` problems'
weights, on ``x``'s device (the GPU when the model is there). ``x`` is used as it is when every row serves some
problem and it is row-major float32 or float64; otherwise the rows used are copied once.

Objectives, as scikit-learn's ``LogisticRegression`` states them (its solvers are the reference in the tests):

- ``penalty="l1"`` (two classes): liblinear's ``|w|_1 + |b| + C * sum_i log(1 + exp(-s_i (w . x_i + b)))``, with
  ``s_i = 2 y_i - 1``. liblinear fits the intercept as the weight of a constant feature, so it is penalized too (the
  objective DFR's reference code minimises with ``solver="liblinear"``).
- ``penalty="l2"`` (any number of classes): lbfgs's multinomial ``|W|^2 / 2 + C * sum_i CE(W x_i + b, y_i)``, the
  intercept not penalized.

Solvers. The l1 family by FISTA (Beck & Teboulle 2009; the L1 term by soft-thresholding) with a step ``1 / L[p]``
per problem from a power iteration on its rows (``L = C * lambda_max(X_p~^T X_p~) / 4``, ``X~`` with a column of
ones for the intercept) and the gradient restart of O'Donoghue & Candes (2015); a problem that has converged leaves
the products. The l2 family by one L-BFGS over the sum of its problems' objectives, each divided by its own stopping
threshold (they are independent, so the sum's minimum is every problem's). A problem has converged when its
gradient mapping (the gradient, for l2; 0 exactly at the optimum) is at most ``tol`` times the gradient's norm at
zero; the family stops when every problem has, or at ``max_iter``. Arithmetic: the products in ``x``'s dtype, the
weights and sums in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["LogisticFamily", "fit_logistic_family", "subset_masks"]

POWER_ITERATIONS = 30
POWER_MARGIN = 1.05  # the power iteration approaches lambda_max from below: the step is taken a little shorter


@dataclass
class LogisticFamily:
    """The ``P`` solutions: ``weight [P, K, D]`` and ``bias [P, K]`` (float64, on ``x``'s device; ``K = 1`` for the
    binary l1 family: the coefficients of the positive class, as scikit-learn's ``coef_``), the iterations each
    problem took and whether it converged before ``max_iter``."""

    weight: torch.Tensor
    bias: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


def subset_masks(subsets: list[torch.Tensor], num_rows: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[num_rows, P]`` float masks: column ``p`` is 1 on the rows listed in ``subsets[p]``, 0 elsewhere."""
    masks = torch.zeros(num_rows, len(subsets), device=device)
    for p, rows in enumerate(subsets):
        masks[torch.as_tensor(rows, device=device), p] = 1.0
    return masks


class _Family:
    """The smooth part of the objectives: losses, gradients and the products they need, for every problem at once."""

    def __init__(  # noqa: PLR0913 -- the family's data and objective
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        masks: torch.Tensor,
        C: torch.Tensor,
        *,
        num_classes: int,
        binary: bool,
        intercept: bool,
    ):
        self.x, self.binary, self.intercept = x, binary, intercept
        self.targets = targets
        self.masks = masks.to(x.dtype)
        self.weights = self.masks * C.to(x.dtype)  # [N, P]: C folded into each row's weight
        self.sign = (2.0 * targets - 1.0).to(x.dtype)[:, None] if binary else None
        self.onehot = None if binary else torch.nn.functional.one_hot(targets, num_classes).to(x.dtype)
        self._cols: torch.Tensor | None = None
        self._weights = self.weights
        if binary:  # FISTA's step: 1/4 is the binary loss' largest second derivative
            self.step = 1.0 / (C * 0.25 * self.lipschitz())  # [P]

    def prox(self, w: torch.Tensor, b: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The non-smooth part's proximal step: soft-thresholding for l1 (intercept included, as liblinear); the
        intercept held at 0 without one."""
        if self.binary:
            w = torch.sign(w) * torch.clamp(w.abs() - step[:, None, None], min=0.0)
            b = torch.sign(b) * torch.clamp(b.abs() - step[:, None], min=0.0)
        return w, b if self.intercept else torch.zeros_like(b)

    def scores(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[N, P, K]`` logits of every row under every problem's head."""
        p, k, d = w.shape
        return (self.x @ w.reshape(p * k, d).T.to(self.x.dtype)).view(-1, p, k) + b.to(self.x.dtype)

    def gradient(
        self, w: torch.Tensor, b: torch.Tensor, cols: torch.Tensor, value: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """The smooth part's gradient in ``w`` and ``b`` (float64) of the problems ``cols``: the weighted data loss,
        and the l2 term's ``w``; with ``value`` (multinomial only) also the objectives ``[P]``."""
        z = self.scores(w, b)
        if cols is not self._cols:  # the running problems' row weights, gathered once per compaction
            self._cols, self._weights = cols, self.weights[:, cols]
        weights = self._weights
        if self.binary:  # d/dz log(1 + exp(-s z)) = -s sigmoid(-s z)
            residual = (-self.sign * torch.sigmoid(-self.sign * z[..., 0]) * weights)[..., None]
        else:  # d/dz CE(z, y) = softmax(z) - onehot(y), in place (torch.softmax over 2-5 classes was 3x slower)
            top = z.amax(-1, keepdim=True)
            residual = (z - top).exp_()
            total = residual.sum(-1, keepdim=True)
            if value:  # CE = logsumexp(z) - z_y
                loss = (total.log() + top).squeeze(-1) - (z * self.onehot[:, None, :]).sum(-1)
                objective = (loss * weights).sum(0, dtype=torch.float64) + 0.5 * w.square().sum((1, 2))
            residual.div_(total).sub_(self.onehot[:, None, :]).mul_(weights[..., None])
        n, p, k = residual.shape
        grad_w = (residual.reshape(n, p * k).T @ self.x).view(p, k, -1).to(torch.float64)
        if not self.binary:
            grad_w = grad_w + w
        grad_b = residual.sum(0, dtype=torch.float64) if self.intercept else torch.zeros_like(b)
        return (grad_w, grad_b, objective) if value else (grad_w, grad_b)

    def lipschitz(self) -> torch.Tensor:
        """``[P]`` largest eigenvalues of each problem's masked ``X~^T X~``: a power iteration's estimate (from below),
        raised by ``POWER_MARGIN``."""
        generator = torch.Generator(device="cpu").manual_seed(0)
        p = self.weights.shape[1]
        v = torch.randn(p, self.x.shape[1] + 1, generator=generator, dtype=torch.float64).to(self.x.device)
        if not self.intercept:
            v[:, -1] = 0
        value = torch.zeros(p, dtype=torch.float64, device=self.x.device)
        for _ in range(POWER_ITERATIONS):
            v = v / v.norm(dim=1, keepdim=True)
            u = (self.x @ v[:, :-1].T.to(self.x.dtype) + v[:, -1].to(self.x.dtype)) * self.masks  # [N, P]
            v = torch.cat([(u.T @ self.x).to(torch.float64), u.sum(0, dtype=torch.float64)[:, None]], dim=1)
            if not self.intercept:
                v[:, -1] = 0
            value = v.norm(dim=1)  # ||A v|| for the unit v: the Rayleigh estimate of lambda_max
        return value * POWER_MARGIN


def fit_logistic_family(  # noqa: PLR0913 -- one family's data and settings
    x: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    C: torch.Tensor,
    *,
    num_classes: int,
    penalty: str,
    intercept: bool = True,
    max_iter: int = 3000,
    tol: float = 1e-4,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int], object] | None = None,
) -> LogisticFamily:
    """Solve ``P`` logistic regressions on the shared ``x [N, D]`` (module docstring): problem ``p`` weighs row
    ``i`` by ``masks[i, p]`` (``[N, P]``, e.g. ``subset_masks``) and has inverse regularization ``C[p]``;
    ``targets [N]`` in ``[0, num_classes)``. ``penalty="l1"`` needs two classes (liblinear's objective);
    ``"l2"`` is the multinomial one (lbfgs's). ``start``: ``(weight [K, D] or [P, K, D], bias)`` every problem
    starts from instead of zero (a warm start: a solution of a neighbouring problem). ``progress(n)`` is told
    when ``n`` more problems have converged (a progress bar's ``update``)."""
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}.")
    if penalty == "l1" and num_classes != 2:
        raise ValueError(f"the l1 family is binary (liblinear's); got {num_classes} classes: use penalty='l2'.")
    device = x.device
    masks = masks.to(device)
    targets = targets.to(device)
    used = masks.ne(0).any(1)
    if not bool(used.all()):  # rows no problem uses cost every product: left out (a copy of the rows used)
        x, targets, masks = x[used], targets[used], masks[used]
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # half precision cannot hold the sums
    x = x.contiguous()  # a column-major x made every product ten times slower (measured on 19,867 x 2,048)
    C = torch.as_tensor(C, dtype=torch.float64, device=device)
    family = _Family(x, targets, masks, C, num_classes=num_classes, binary=penalty == "l1", intercept=intercept)
    p, k = masks.shape[1], 1 if penalty == "l1" else num_classes
    w = torch.zeros(p, k, x.shape[1], dtype=torch.float64, device=device)
    b = torch.zeros(p, k, dtype=torch.float64, device=device)
    gw, gb = family.gradient(w, b, torch.arange(p, device=device))
    scale = torch.sqrt(gw.square().sum((1, 2)) + gb.square().sum(1))  # the stopping rule's, whatever the start
    if start is not None:
        w += start[0].to(w)
        b += start[1].to(b)
    solve = _fista if family.binary else _lbfgs
    return solve(family, w, b, scale * tol, max_iter, progress)


def _lbfgs(  # noqa: PLR0913 -- the iteration's state
    family: _Family,
    w: torch.Tensor,
    b: torch.Tensor,
    threshold: torch.Tensor,
    max_iter: int,
    progress: Callable[[int], object] | None,
) -> LogisticFamily:
    """The smooth (l2) family by one L-BFGS on the sum of its objectives: they are independent, so the sum's minimum
    is every problem's, and each problem's gradient is checked against its own ``threshold`` every ten iterations
    (a host read). On 20 multinomial fits of 12,000 x 84 features it took 61 evaluations where FISTA took 307
    iterations."""
    p = len(w)
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    cols = torch.arange(p, device=w.device)
    residual = torch.full((p,), float("inf"), dtype=torch.float64, device=w.device)
    chunk = min(10, max_iter)
    opt = torch.optim.LBFGS(
        [w, b], lr=1, max_iter=chunk, tolerance_grad=0.0, tolerance_change=0.0, history_size=20,
        line_search_fn="strong_wolfe",
    )  # fmt: skip

    weight = threshold.clamp(min=torch.finfo(torch.float64).tiny).reciprocal()

    def closure() -> torch.Tensor:
        nonlocal residual
        with torch.no_grad():
            gw, gb, objective = family.gradient(w, b, cols, value=True)
            residual = torch.sqrt(gw.square().sum((1, 2)) + gb.square().sum(1))
        # each problem's objective over its own threshold: the sum weighs every problem alike (unweighted, the
        # problems of a small C, whose gradients are small, stalled at the cap on float32 features)
        w.grad, b.grad = gw * weight[:, None, None], gb * weight[:, None]
        return (objective * weight).sum()

    done = torch.zeros(p, dtype=torch.bool, device=w.device)
    iterations = torch.full((p,), max_iter, dtype=torch.long, device=w.device)
    for it in range(chunk, max_iter + 1, chunk):
        opt.step(closure)
        newly = ~done & (residual <= threshold)
        iterations[newly] = it
        done |= newly
        finished = int(newly.sum())
        if progress is not None and finished:
            progress(finished)
        if bool(done.all()):
            break
    return LogisticFamily(w.detach(), b.detach(), iterations, done)


def _fista(  # noqa: PLR0913 -- the iteration's state
    family: _Family,
    w: torch.Tensor,
    b: torch.Tensor,
    threshold: torch.Tensor,
    max_iter: int,
    progress: Callable[[int], object] | None,
) -> LogisticFamily:
    """FISTA with gradient restarts from ``(w, b)`` until each problem's gradient mapping is at most its
    ``threshold`` (module docstring); a converged problem leaves the products at the next host read."""
    p = len(w)
    out_w, out_b = w.clone(), b.clone()
    iterations = torch.full((p,), max_iter, dtype=torch.long, device=w.device)
    done = torch.zeros(p, dtype=torch.bool, device=w.device)
    cols = torch.arange(p, device=w.device)  # the problems still running
    yw, yb, t = w.clone(), b.clone(), torch.ones(p, dtype=torch.float64, device=w.device)
    for it in range(1, max_iter + 1):
        h = family.step[cols]
        gw, gb = family.gradient(yw, yb, cols)
        nw, nb = family.prox(yw - h[:, None, None] * gw, yb - h[:, None] * gb, h)
        dw, db = nw - yw, nb - yb  # the gradient mapping, times the step
        newly = torch.sqrt(dw.square().sum((1, 2)) + db.square().sum(1)) / h <= threshold[cols]
        iterations[cols[newly & ~done[cols]]] = it
        done[cols] |= newly
        # O'Donoghue & Candes' gradient restart: momentum that points uphill is dropped
        uphill = (dw * (nw - w)).sum((1, 2)) + (db * (nb - b)).sum(1) < 0
        t = torch.where(uphill, torch.ones_like(t), t)
        t_next = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        beta = (t - 1) / t_next
        yw, yb = nw + beta[:, None, None] * (nw - w), nb + beta[:, None] * (nb - b)
        w, b, t = nw, nb, t_next
        out_w[cols], out_b[cols] = w, b  # each problem's latest iterate (at most 9 past its convergence)
        if it % 10 == 0:  # one host read per ten iterations: the converged problems leave the products
            running = ~done[cols]
            finished = int((~running).sum())
            if progress is not None and finished:
                progress(finished)
            if not bool(running.any()):
                break
            if not bool(running.all()):
                cols, w, b, yw, yb, t = (v[running] for v in (cols, w, b, yw, yb, t))
    return LogisticFamily(out_w, out_b, iterations, done)
