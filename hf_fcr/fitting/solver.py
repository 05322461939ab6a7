"""Batched logistic regression in torch: a family of problems on one shared feature matrix, solved together.

DFR and class-balanced retraining fit the same logistic regression many times: each C of a grid on a few balanced
subsets of the validation rows, then twenty balanced subsets at the chosen C; the diagnosis fits M' on several random
attributes of the same training rows. Here each such family is one problem: problem ``p`` weighs row ``i`` by
``masks[i, p]`` (1 for the rows of its subset, 0 for the others), has its own ``C[p]`` and, when ``targets`` is
``[N, P]``, its own targets, so every iteration is a few matrix products of the shared features ``x [N, D]`` with
the ``P`` problems' weights (one per line-search trial, one for the gradient), on ``x``'s device (the GPU when the
model is there). ``x`` is used as it is when every row serves some problem and it is row-major float32 or float64;
otherwise the rows used are copied once. With ``sharded=True`` each process holds its own rows and the data sums
are summed across processes (Accelerate), so every process takes the same steps.

Objectives, as scikit-learn's ``LogisticRegression`` states them (its solvers are the reference in the tests):

- ``penalty="l1"`` (two classes): liblinear's ``|w|_1 + |b| + C * sum_i log(1 + exp(-s_i (w . x_i + b)))``, with
  ``s_i = 2 y_i - 1``. liblinear fits the intercept as the weight of a constant feature, so it is penalized too (the
  objective DFR's reference code minimises with ``solver="liblinear"``).
- ``penalty="l2"`` (any number of classes): lbfgs's multinomial ``|W|^2 / 2 + C * sum_i CE(W x_i + b, y_i)``, the
  intercept not penalized; with ``binary=True`` (two classes) lbfgs's binary ``|w|^2 / 2 + C * sum_i log(1 +
  exp(-s_i (w . x_i + b)))`` (M' of a two-valued attribute).

Solver. Every family by L-BFGS in which every problem keeps its own curvature pairs and its own backtracking line
search; the l1 family by its OWL-QN form (Andrew & Gao 2007: the direction from the pseudo-gradient, each step kept
in the orthant of the iterate). A problem has converged when its pseudo-gradient (the minimum-norm subgradient; the
gradient, for l2; 0 exactly at the optimum) is at most ``tol`` times the gradient's norm at zero (``stop=
"relative"``), or, with ``stop="scikit-learn"``, when the gradient's largest entry is at most ``tol`` times the
problem's total row weight (lbfgs's own rule), and then leaves the products; the family stops when every problem has
converged, stalled (no step decreases its objective) or reached ``max_iter``. Arithmetic: the products in ``x``'s
dtype, the weights and sums in float64. Problems do not interact, but a product with several problems' weights rounds
differently from a product with one, and L-BFGS's path can amplify that within the tolerance: a problem solved in a
family and alone agree to the tolerance, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..utils.distributed import reduce_sum

__all__ = ["LogisticFamily", "fit_logistic_family", "subset_masks"]

# curvature pairs each problem keeps (L-BFGS's memory), measured: l1 5 (on 718 x 1,280 EfficientNet-Lite0 features
# 20 pairs took as many iterations and the two-loop recursion cost more; 10 left 16 fits of the frozen backbone at
# the 1,000-iteration cap, where 5 converged); l2 20 (on 10,000 x 26 SpuCo-style CNN features the final fits took
# 480-560 iterations with 5 or 10 pairs, 450-520 with 20)
HISTORY = {"l1": 5, "l2": 20}
LINE_SEARCH_TRIALS = 30  # step halvings before a problem's line search gives up
STOPPING_RULES = ("relative", "scikit-learn")
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
    """The smooth part of the objectives: losses, gradients and the products they need, for every problem at once.
    ``sharded``: ``x`` holds this process' rows; the data sums are summed across processes before they are used."""

    def __init__(  # noqa: PLR0913 -- the family's data and objective
        self,
        x: torch.Tensor,
        targets: torch.Tensor,
        masks: torch.Tensor,
        C: torch.Tensor,
        *,
        penalty: str,
        binary: bool,
        intercept: bool,
        sharded: bool = False,
    ):
        self.x, self.penalty, self.binary, self.intercept, self.sharded = x, penalty, binary, intercept, sharded
        self.weights = masks.to(x.dtype) * C.to(x.dtype)  # [N, P]: C folded into each row's weight
        targets = targets if targets.dim() == 2 else targets[:, None]  # [N, P], or [N, 1] shared by every problem
        # each row's -s = 1 - 2 y (binary: the margin's sign) or its class (multinomial)
        self.labels = (1.0 - 2.0 * targets).to(x.dtype) if binary else targets
        self._cols: torch.Tensor | None = None
        self._running: tuple[torch.Tensor, torch.Tensor] = (self.weights, self.labels)

    def scores(self, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``[N, P, K]`` logits of every row under every problem's head."""
        p, k, d = w.shape
        flat = w.reshape(p * k, d).T.to(self.x.dtype)
        # the bias inside the product: a broadcast add after it took twice the product's time (12,000 x 84 x 100)
        return torch.addmm(b.reshape(1, p * k).to(self.x.dtype), self.x, flat).view(-1, p, k)

    def running(self, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``([N, len(cols)], [N, len(cols)] or [N, 1])``: the running problems' row weights (C folded in) and
        labels, gathered once per compaction."""
        if cols is not self._cols:
            labels = self.labels if self.labels.shape[1] == 1 else self.labels[:, cols]
            self._cols, self._running = cols, (self.weights[:, cols], labels)
        return self._running

    def total_weight(self) -> torch.Tensor:
        """``[P]``: each problem's rows' total weight (``C`` folded in), over every process' rows (float64)."""
        return self._summed(total=self.weights.sum(0, dtype=torch.float64))["total"]

    def _summed(self, **sums: torch.Tensor) -> dict[str, torch.Tensor]:
        """The data sums of every process' rows (in place; nothing to do on one process)."""
        if self.sharded:
            reduce_sum(sums)
        return sums

    def evaluate(self, w: torch.Tensor, b: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The objectives ``[P]`` of the problems ``cols`` at ``(w, b)`` (float64), and what their gradient is made
        of: each row's ``sigmoid(-s z)`` (binary) or ``softmax(z)`` (multinomial), one product and one pass of
        exponentials."""
        z = self.scores(w, b)
        weights, labels = self.running(cols)
        if self.binary:
            margin = labels * z[..., 0]  # -s z
            loss, basis = torch.nn.functional.softplus(margin), torch.sigmoid(margin)
        else:
            z -= z.amax(-1, keepdim=True)  # CE = logsumexp(z) - z_y, shifted by the largest logit
            basis = z.exp()
            total = basis.sum(-1, keepdim=True)
            picked = z.gather(-1, labels[..., None].expand(-1, z.shape[1], 1))
            loss = (total.log() - picked).squeeze(-1)
            basis.div_(total)
        data = self._summed(data=(loss * weights).sum(0, dtype=torch.float64))["data"]
        if self.penalty == "l1":
            return data + w.abs().sum((1, 2)) + b.abs().sum(1), basis
        return data + 0.5 * w.square().sum((1, 2)), basis

    def gradient(self, w: torch.Tensor, basis: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The smooth part's gradient in ``w`` and ``b`` (float64) of the problems ``cols`` from ``evaluate``'s
        ``basis`` at ``w``: the weighted data loss', and the l2 term's ``w``."""
        weights, labels = self.running(cols)
        if self.binary:  # d/dz log(1 + exp(-s z)) = -s sigmoid(-s z)
            residual = (labels * basis * weights)[..., None]
        else:  # d/dz CE(z, y) = softmax(z) - onehot(y)
            residual = basis * weights[..., None]
            index = labels[..., None].expand(-1, residual.shape[1], 1)
            residual.scatter_add_(-1, index, -weights[..., None])
        n, p, k = residual.shape
        grad_b = residual.sum(0, dtype=torch.float64) if self.intercept else w.new_zeros(p, k)
        sums = self._summed(w=(residual.reshape(n, p * k).T @ self.x).view(p, k, -1).to(torch.float64), b=grad_b)
        grad_w = sums["w"] + w if self.penalty == "l2" else sums["w"]
        return grad_w, sums["b"]


def fit_logistic_family(  # noqa: PLR0913 -- one family's data and settings
    x: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    C: torch.Tensor,
    *,
    num_classes: int,
    penalty: str,
    binary: bool | None = None,
    intercept: bool = True,
    max_iter: int = 3000,
    tol: float = 1e-4,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: Callable[[int], object] | None = None,
    sharded: bool = False,
    stop: str = "relative",
) -> LogisticFamily:
    """Solve ``P`` logistic regressions on the shared ``x [N, D]`` (module docstring): problem ``p`` weighs row
    ``i`` by ``masks[i, p]`` (``[N, P]``, e.g. ``subset_masks``) and has inverse regularization ``C[p]``;
    ``targets`` in ``[0, num_classes)``: ``[N]``, the same for every problem, or ``[N, P]``, problem ``p``'s in
    column ``p``. ``penalty="l1"`` is liblinear's binary objective; ``"l2"`` lbfgs's, multinomial unless
    ``binary=True`` (two classes: one coefficient vector, the positive class's; ``binary`` defaults to
    ``penalty == "l1"``). ``start``: ``(weight [K, D] or [P, K, D], bias)`` every problem starts from instead of
    zero (a warm start: a solution of a neighbouring problem). ``progress(n)`` is told when ``n`` more problems
    have converged (a progress bar's ``update``). ``sharded=True``: ``x`` holds this process' rows (under a
    launcher); losses and gradients are summed across processes, so every process takes the same steps and ends
    with the same solutions. ``stop``: ``"relative"`` (the module docstring's rule) or ``"scikit-learn"``, lbfgs's
    own: a problem has converged when the largest entry of its gradient is at most ``tol`` times its rows' total
    weight (``C`` times the rows it uses; scikit-learn scales the objective by that total and stops at ``tol``)."""
    if penalty not in ("l1", "l2"):
        raise ValueError(f"penalty must be 'l1' or 'l2', got {penalty!r}.")
    if stop not in STOPPING_RULES:
        raise ValueError(f"stop must be one of {STOPPING_RULES}, got {stop!r}.")
    binary = penalty == "l1" if binary is None else binary
    if binary and num_classes != 2:
        raise ValueError(f"a binary family has two classes; got {num_classes}: use penalty='l2', binary=False.")
    if penalty == "l1" and not binary:
        raise ValueError("the l1 family is binary (liblinear's): there is no multinomial l1 fit; use penalty='l2'.")
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
    family = _Family(x, targets, masks, C, penalty=penalty, binary=binary, intercept=intercept, sharded=sharded)
    p, k = masks.shape[1], 1 if binary else num_classes
    w = torch.zeros(p, k, x.shape[1], dtype=torch.float64, device=device)
    b = torch.zeros(p, k, dtype=torch.float64, device=device)
    if stop == "relative":  # the gradient's norm at zero, whatever the start
        everyone = torch.arange(p, device=device)
        gw, gb = family.gradient(w, family.evaluate(w, b, everyone)[1], everyone)
        scale, order = torch.sqrt(gw.square().sum((1, 2)) + gb.square().sum(1)), 2.0
    else:  # scikit-learn's: every process' rows' total weight, the largest entry
        scale, order = family.total_weight(), float("inf")
    if start is not None:
        w += start[0].to(w)
        b += start[1].to(b)
    return _quasi_newton(family, w, b, scale * tol, order, max_iter, progress)


def _quasi_newton(  # noqa: PLR0913 -- the iteration's state
    family: _Family,
    w: torch.Tensor,
    b: torch.Tensor,
    threshold: torch.Tensor,
    order: float,
    max_iter: int,
    progress: Callable[[int], object] | None,
) -> LogisticFamily:
    """L-BFGS for every problem at once from ``(w, b)``, each problem with its own curvature pairs and its own
    backtracking (Armijo) line search; for the l1 family OWL-QN (Andrew & Gao 2007): the direction from the
    pseudo-gradient, each step kept in the orthant of the iterate. A problem's coefficients and intercepts are one
    vector; the intercepts are held at 0 without one. A problem has converged when its pseudo-gradient (the
    minimum-norm subgradient; the gradient, for l2) has an ``order``-norm at most its ``threshold``, and then leaves
    the products. A problem whose line search fails along its steepest direction has stalled at rounding level: it
    stops there, unconverged. One host read per iteration and per line-search trial."""
    p, k, d = w.shape
    device = w.device
    l1 = family.penalty == "l1"
    held = torch.zeros(k * (d + 1), dtype=torch.bool, device=device)
    held[k * d :] = not family.intercept

    def split(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return v[:, : k * d].view(-1, k, d), v[:, k * d :]

    def gradient(v: torch.Tensor, basis: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        gw, gb = family.gradient(split(v)[0], basis, cols)
        return torch.cat([gw.flatten(1), gb], dim=1).masked_fill_(held, 0.0)

    v = torch.cat([w.flatten(1), b], dim=1).masked_fill_(held, 0.0)  # [P, K (D + 1)]
    out = torch.empty_like(v)  # each problem's last iterate, written when it leaves or at max_iter
    iterations = torch.full((p,), max_iter, dtype=torch.long, device=device)
    done = torch.zeros(p, dtype=torch.bool, device=device)
    stalled = torch.zeros(p, dtype=torch.bool, device=device)
    cols = torch.arange(p, device=device)  # the problems still running
    history = HISTORY["l1" if l1 else "l2"]
    memory = torch.zeros(2, history, *v.shape, dtype=torch.float64, device=device)  # curvature pairs (s, y)
    rho = torch.zeros(history, p, dtype=torch.float64, device=device)  # 1 / (s . y); 0: no pair in that slot
    value, basis = family.evaluate(*split(v), cols)
    grad = gradient(v, basis, cols)
    for it in range(max_iter):
        pseudo = _pseudo_gradient(v, grad) if l1 else grad
        newly = torch.linalg.vector_norm(pseudo, ord=order, dim=1) <= threshold[cols]
        leaving = newly | stalled
        iterations[cols[leaving]] = it
        done[cols[newly]] = True
        if progress is not None and bool(newly.any()):
            progress(int(newly.sum()))
        if bool(leaving.any()):  # converged or stalled problems leave the products, with their last iterate
            out[cols[leaving]] = v[leaving]
            keep = ~leaving
            if not bool(keep.any()):
                break
            cols, v, basis, value, grad = cols[keep], v[keep], basis[:, keep], value[keep], grad[keep]
            pseudo = pseudo[keep]
            memory, rho = memory[:, :, keep], rho[:, keep]
        direction = -_two_loop(pseudo, memory, rho, it)
        steepest = ~rho.ne(0).any(0)  # no curvature pair: the first step is at most of unit length
        step = torch.where(steepest, torch.clamp(1.0 / torch.linalg.vector_norm(pseudo, dim=1), max=1.0), 1.0)
        orthant = None
        if l1:
            direction = torch.where(direction * pseudo < 0, direction, 0.0)  # only where it descends
            orthant = torch.where(v != 0, torch.sign(v), -torch.sign(pseudo))

        def evaluate(trial: torch.Tensor, cols: torch.Tensor = cols) -> tuple[torch.Tensor, torch.Tensor]:
            return family.evaluate(*split(trial), cols)

        new_v, new_basis, new_value, pending = _line_search(
            evaluate, v, basis, value, pseudo, direction, step, orthant
        )
        stalled = pending & steepest  # no step decreases the objective even along the steepest direction
        new_grad = gradient(new_v, new_basis, cols)
        s_, y_ = new_v - v, new_grad - grad
        sy = (s_ * y_).sum(1)
        good = sy > 1e-10 * torch.linalg.vector_norm(s_, dim=1) * torch.linalg.vector_norm(y_, dim=1)
        slot = it % history
        memory[0, slot], memory[1, slot] = torch.where(good[:, None], s_, 0.0), torch.where(good[:, None], y_, 0.0)
        rho[slot] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        rho[:, pending] = 0.0  # a failed line search forgets the curvature: the steepest direction next
        v, basis, value, grad = new_v, new_basis, new_value, new_grad
    else:
        out[cols] = v
    return LogisticFamily(*split(out), iterations, done)


def _line_search(  # noqa: PLR0913 -- the iterate and its search direction
    evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    v: torch.Tensor,
    basis: torch.Tensor,
    value: torch.Tensor,
    pseudo: torch.Tensor,
    direction: torch.Tensor,
    step: torch.Tensor,
    orthant: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """Backtracking from ``step`` (halved per problem until Armijo's condition holds), each trial point projected
    onto ``orthant`` (OWL-QN) when one is given: ``(new v, its basis, its value, the problems that found no step)``;
    those keep ``v``."""
    new_v, new_basis, new_value = v, basis, value
    pending = torch.ones(len(v), dtype=torch.bool, device=v.device)
    for trial_number in range(LINE_SEARCH_TRIALS):
        trial = v + step[:, None] * direction
        if orthant is not None:
            trial = torch.where(torch.sign(trial) == orthant, trial, 0.0)  # projected back onto the orthant
        trial_value, trial_basis = evaluate(trial)
        accept = pending & (trial_value <= value + ARMIJO * (pseudo * (trial - v)).sum(1))
        if trial_number == 0 and bool(accept.all()):  # the usual case: every first step accepted
            return trial, trial_basis, trial_value, ~accept
        if trial_number == 0:
            new_v, new_basis, new_value = v.clone(), basis.clone(), value.clone()
        new_v[accept], new_value[accept] = trial[accept], trial_value[accept]
        new_basis[:, accept] = trial_basis[:, accept]
        pending &= ~accept
        if not bool(pending.any()):
            break
        step = torch.where(pending, step / 2, step)
    return new_v, new_basis, new_value, pending


def _pseudo_gradient(v: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The minimum-norm subgradient of ``f(v) + |v|_1`` (``grad``: f's gradient; a held coordinate's is 0)."""
    at_zero = torch.where(grad + 1 < 0, grad + 1, torch.where(grad - 1 > 0, grad - 1, 0.0))
    return torch.where(v > 0, grad + 1, torch.where(v < 0, grad - 1, at_zero))


def _two_loop(gradient: torch.Tensor, memory: torch.Tensor, rho: torch.Tensor, it: int) -> torch.Tensor:
    """L-BFGS's two-loop recursion, every problem with its own pairs: ``H gradient`` (``[P, K (D + 1)]``), the initial
    ``H`` scaled by the latest pair's ``s . y / y . y``."""
    q = gradient.clone()
    history = len(rho)
    order = [(it - 1 - k) % history for k in range(min(it, history))]  # newest first
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
