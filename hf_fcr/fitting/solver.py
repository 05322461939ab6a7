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

Solvers. The l1 family by OWL-QN (Andrew & Gao 2007: L-BFGS restricted to the orthant of the iterate), every
problem with its own curvature pairs and its own backtracking line search; a problem that has converged leaves the
products. The l2 family by one L-BFGS over the sum of its problems' objectives, each divided by its own stopping
threshold (they are independent, so the sum's minimum is every problem's). A problem has converged when its
pseudo-gradient (the minimum-norm subgradient; the gradient, for l2; 0 exactly at the optimum) is at most ``tol``
times the gradient's norm at zero; the family stops when every problem has, or at ``max_iter``. Arithmetic: the
products in ``x``'s dtype, the weights and sums in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["LogisticFamily", "fit_logistic_family", "subset_masks"]

HISTORY = 5  # curvature pairs each problem keeps (L-BFGS's memory)
LINE_SEARCH_TRIALS = 30  # step halvings before a problem's line search gives up
ARMIJO = 1e-4  # the sufficient decrease a step must make, as a share of the decrease its slope promises


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

    def scores(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[N, P, K]`` logits of every row under every problem's head."""
        p, k, d = w.shape
        return (self.x @ w.reshape(p * k, d).T.to(self.x.dtype)).view(-1, p, k) + b.to(self.x.dtype)

    def row_weights(self, cols: torch.Tensor) -> torch.Tensor:
        """``[N, len(cols)]``: the running problems' row weights (C folded in), gathered once per compaction."""
        if cols is not self._cols:
            self._cols, self._weights = cols, self.weights[:, cols]
        return self._weights

    def binary_value(self, w: torch.Tensor, b: torch.Tensor, z: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``[P]`` l1 objectives of the problems ``cols`` at ``(w, b)``, whose scores are ``z``."""
        loss = torch.nn.functional.softplus(-self.sign * z[..., 0]) * self.row_weights(cols)
        return loss.sum(0, dtype=torch.float64) + w.abs().sum((1, 2)) + b.abs().sum(1)

    def gradient(
        self, w: torch.Tensor, b: torch.Tensor, cols: torch.Tensor, value: bool = False, z: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """The smooth part's gradient in ``w`` and ``b`` (float64) of the problems ``cols``: the weighted data loss,
        and the l2 term's ``w``; with ``value`` also the objectives ``[P]`` (the l1 term's included). ``z``: the
        scores at ``(w, b)`` when they are known (one product fewer)."""
        z = self.scores(w, b) if z is None else z
        weights = self.row_weights(cols)
        if self.binary:  # d/dz log(1 + exp(-s z)) = -s sigmoid(-s z)
            if value:
                objective = self.binary_value(w, b, z, cols)
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
    solve = _owlqn if family.binary else _lbfgs
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
    (a host read). On 20 multinomial fits of 12,000 x 84 features it took 61 evaluations where FISTA, tried first,
    took 307 iterations."""
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


def _owlqn(  # noqa: PLR0913 -- the iteration's state
    family: _Family,
    w: torch.Tensor,
    b: torch.Tensor,
    threshold: torch.Tensor,
    max_iter: int,
    progress: Callable[[int], object] | None,
) -> LogisticFamily:
    """The l1 family by OWL-QN (Andrew & Gao 2007: L-BFGS restricted to the orthant of the iterate), every problem
    with its own curvature pairs and its own backtracking line search, from ``(w, b)``. The coefficients and the
    intercept are one vector ``[D + 1]`` per problem (the intercept penalized, as liblinear's; held at 0 without
    one). A problem has converged when its pseudo-gradient (the objective's minimum-norm subgradient, 0 exactly at
    the optimum) is at most its ``threshold``; it then leaves the products. A problem whose line search fails from
    the steepest direction has stalled at rounding level: it stops there, unconverged. One host read per
    iteration and per line-search trial."""
    p, _, d = w.shape
    device = w.device
    held = torch.zeros(d + 1, dtype=torch.bool, device=device)
    held[-1] = not family.intercept

    def split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v[:, None, :-1], v[:, -1:]

    def objective(v: torch.Tensor, z: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gw, gb, value = family.gradient(*split(v), cols, value=True, z=z)
        return value, torch.cat([gw[:, 0], gb], dim=1).masked_fill_(held, 0.0)

    v = torch.cat([w[:, 0], b], dim=1).masked_fill_(held, 0.0)  # [P, D + 1]
    out = v.clone()
    iterations = torch.full((p,), max_iter, dtype=torch.long, device=device)
    done = torch.zeros(p, dtype=torch.bool, device=device)
    cols = torch.arange(p, device=device)  # the problems still running
    memory = torch.zeros(2, HISTORY, p, d + 1, dtype=torch.float64, device=device)  # curvature pairs (s, y)
    rho = torch.zeros(HISTORY, p, dtype=torch.float64, device=device)  # 1 / (s . y); 0: no pair in that slot
    z = family.scores(*split(v))
    value, grad = objective(v, z, cols)
    stalled = torch.zeros(p, dtype=torch.bool, device=device)
    for it in range(max_iter):
        pseudo = _pseudo_gradient(v, grad)
        newly = torch.linalg.vector_norm(pseudo, dim=1) <= threshold[cols]
        iterations[cols[newly | stalled]] = it
        done[cols[newly]] = True
        out[cols] = v
        if progress is not None and bool(newly.any()):
            progress(int(newly.sum()))
        leaving = newly | stalled
        if bool(leaving.any()):  # converged or stalled problems leave the products
            keep = ~leaving
            if not bool(keep.any()):
                break
            cols, v, z, value, grad, pseudo = cols[keep], v[keep], z[:, keep], value[keep], grad[keep], pseudo[keep]
            memory, rho = memory[:, :, keep], rho[:, keep]
        direction = -_two_loop(pseudo, memory, rho, it)
        direction = torch.where(direction * pseudo < 0, direction, 0.0)  # only the coordinates where it descends
        orthant = torch.where(v != 0, torch.sign(v), -torch.sign(pseudo))
        step = torch.ones(len(cols), dtype=torch.float64, device=device)
        steepest = ~rho.ne(0).any(0)  # no curvature pair: the first step is at most of unit length
        step = torch.where(steepest, torch.clamp(1.0 / torch.linalg.vector_norm(pseudo, dim=1), max=1.0), step)
        new_v, new_z, new_value = v.clone(), z.clone(), value.clone()
        pending = torch.ones(len(cols), dtype=torch.bool, device=device)
        for _ in range(LINE_SEARCH_TRIALS):
            trial = v + step[:, None] * direction
            trial = torch.where(torch.sign(trial) == orthant, trial, 0.0)  # projected back onto the orthant
            trial_z = family.scores(*split(trial))
            trial_value = family.binary_value(*split(trial), trial_z, cols)
            accept = pending & (trial_value <= value + ARMIJO * (pseudo * (trial - v)).sum(1))
            new_v[accept], new_value[accept], new_z[:, accept] = trial[accept], trial_value[accept], trial_z[:, accept]
            pending &= ~accept
            if not bool(pending.any()):
                break
            step = torch.where(pending, step / 2, step)
        stalled = pending & steepest  # no step decreases the objective even along the steepest direction
        new_value, new_grad = objective(new_v, new_z, cols)
        s_, y_ = new_v - v, new_grad - grad
        sy = (s_ * y_).sum(1)
        good = sy > 1e-10 * torch.linalg.vector_norm(s_, dim=1) * torch.linalg.vector_norm(y_, dim=1)
        slot = it % HISTORY
        memory[0, slot], memory[1, slot] = torch.where(good[:, None], s_, 0.0), torch.where(good[:, None], y_, 0.0)
        rho[slot] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        rho[:, pending] = 0.0  # a failed line search forgets the curvature: the steepest direction next
        v, z, value, grad = new_v, new_z, new_value, new_grad
    else:
        out[cols] = v
    return LogisticFamily(*split(out), iterations, done)


def _pseudo_gradient(v: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The minimum-norm subgradient of ``f(v) + |v|_1`` (``grad``: f's gradient; a held coordinate's is 0)."""
    at_zero = torch.where(grad + 1 < 0, grad + 1, torch.where(grad - 1 > 0, grad - 1, 0.0))
    return torch.where(v > 0, grad + 1, torch.where(v < 0, grad - 1, at_zero))


def _two_loop(gradient: torch.Tensor, memory: torch.Tensor, rho: torch.Tensor, it: int) -> torch.Tensor:
    """L-BFGS's two-loop recursion, every problem with its own pairs: ``H gradient`` (``[P, D + 1]``), the initial
    ``H`` scaled by the latest pair's ``s . y / y . y``."""
    q = gradient.clone()
    order = [(it - 1 - k) % HISTORY for k in range(min(it, HISTORY))]  # newest first
    alphas = []
    for k in order:
        alpha = rho[k] * (memory[0, k] * q).sum(1)
        q -= alpha[:, None] * memory[1, k]
        alphas.append(alpha)
    if order:
        s_, y_ = memory[0, order[0]], memory[1, order[0]]
        yy = (y_ * y_).sum(1)
        q *= torch.where(yy > 0, (s_ * y_).sum(1) / torch.where(yy > 0, yy, 1.0), 1.0)[:, None]
    for k, alpha in zip(reversed(order), reversed(alphas)):
        beta = rho[k] * (memory[1, k] * q).sum(1)
        q += (alpha - beta)[:, None] * memory[0, k]
    return q
