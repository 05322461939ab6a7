"""The batched logistic solver (``fitting.solver``) against scikit-learn's fits of the same objectives, one problem
at a time: liblinear's L1 (binary, intercept penalized) and lbfgs's multinomial L2 (intercept not penalized)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hf_fcr.fitting.solver import fit_logistic_family, subset_masks


def _data(n=600, d=40, k=2, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    y = rng.integers(0, k, n)
    x = centres[y] * 0.6 + rng.normal(size=(n, d))
    x = (x - x.mean(0)) / x.std(0)
    return x, y


def _l1_objective(w, b, x, y, C):
    s = 2 * y - 1
    return np.abs(w).sum() + abs(b) + C * np.logaddexp(0, -s * (x @ w + b)).sum()


def _l2_objective(w, b, x, y, C):
    z = x @ w.T + b
    ce = (np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(len(y)), y]).sum()
    return 0.5 * np.square(w).sum() + C * ce


def _subsets(n, count, size, seed):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(n, size, replace=False)) for _ in range(count)]


@pytest.mark.parametrize("intercept", [True, False])
def test_the_l1_family_solves_each_problem_as_liblinear_does(intercept):
    """A C grid x subsets family in one call against one liblinear fit per problem (a tight tolerance): the same
    objective value to 1e-4 relative, the same predictions on at least 99.5% of all rows, the same support size
    within a few coefficients."""
    x, y = _data()
    subsets = _subsets(len(y), 6, 300, seed=1)
    Cs = [1.0, 1.0, 0.3, 0.3, 0.05, 0.05]
    masks = subset_masks([torch.tensor(s) for s in subsets], len(y))
    family = fit_logistic_family(
        torch.tensor(x, dtype=torch.float32), torch.tensor(y), masks, torch.tensor(Cs), num_classes=2, penalty="l1",
        intercept=intercept,
    )  # fmt: skip
    assert family.weight.shape == (6, 1, x.shape[1]) and bool(family.converged.all())
    for p, (rows, C) in enumerate(zip(subsets, Cs)):
        ref = LogisticRegression(
            C=C, l1_ratio=1.0, solver="liblinear", tol=1e-10, max_iter=10_000, fit_intercept=intercept
        ).fit(x[rows], y[rows])
        w_ref, b_ref = ref.coef_[0], float(np.atleast_1d(ref.intercept_)[0])
        w, b = family.weight[p, 0].numpy(), float(family.bias[p, 0])
        assert not intercept or b != 0 or b_ref == 0
        ours, theirs = _l1_objective(w, b, x[rows], y[rows], C), _l1_objective(w_ref, b_ref, x[rows], y[rows], C)
        assert ours == pytest.approx(theirs, rel=1e-4)
        assert ((x @ w + b > 0) == (x @ w_ref + b_ref > 0)).mean() >= 0.995
        assert abs(int((np.abs(w) > 1e-8).sum()) - int((w_ref != 0).sum())) <= 3


@pytest.mark.parametrize("intercept", [True, False])
def test_the_l2_family_finds_lbfgs_multinomial_optimum(intercept):
    """Multinomial L2 (strictly convex: one optimum) against lbfgs at a 1e-10 tolerance: at a tight tolerance the
    same weights to 1e-3 of their largest and the same objective to 1e-6 relative; at the default tolerance the same
    predictions on at least 99.5% of rows."""
    x, y = _data(k=4, seed=2)
    subsets = _subsets(len(y), 3, 400, seed=3)
    Cs = [0.5, 0.1, 0.02]
    tight, family = (
        fit_logistic_family(
            torch.tensor(x, dtype=torch.float32),
            torch.tensor(y),
            subset_masks([torch.tensor(s) for s in subsets], len(y)),
            torch.tensor(Cs),
            num_classes=4,
            penalty="l2",
            intercept=intercept,
            tol=tol,
        )  # fmt: skip
        for tol in (1e-7, 1e-4)
    )
    for p, (rows, C) in enumerate(zip(subsets, Cs)):
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000, fit_intercept=intercept).fit(x[rows], y[rows])
        w, b = tight.weight[p].numpy(), tight.bias[p].numpy()
        scale = np.abs(ref.coef_).max()
        np.testing.assert_allclose(w, ref.coef_, atol=1e-3 * scale)
        np.testing.assert_allclose(b, np.broadcast_to(ref.intercept_, (4,)), atol=1e-3 * max(scale, 1))
        theirs = _l2_objective(ref.coef_, ref.intercept_, x[rows], y[rows], C)
        assert _l2_objective(w, b, x[rows], y[rows], C) == pytest.approx(theirs, rel=1e-6)
        ours = (x @ family.weight[p].numpy().T + family.bias[p].numpy()).argmax(1)
        assert (ours == ref.predict(x)).mean() >= 0.995


def test_masks_weigh_rows_as_gathering_them_does_and_a_warm_start_ends_there_sooner():
    """A problem on masked rows of the shared matrix is the problem on those rows alone; started from a
    neighbouring problem's solution it reaches the same optimum in fewer iterations."""
    x, y = _data(seed=4)
    rows = _subsets(len(y), 2, 350, seed=5)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def fit(x_, y_, masks, start=None):
        return fit_logistic_family(x_, y_, masks, torch.tensor([0.2]), num_classes=2, penalty="l1", start=start)

    masked = fit(xt, yt, subset_masks([torch.tensor(rows[0])], len(y)))
    alone = fit(xt[rows[0]], yt[rows[0]], torch.ones(len(rows[0]), 1))
    torch.testing.assert_close(masked.weight, alone.weight, rtol=0, atol=1e-6)
    neighbour = fit(xt, yt, subset_masks([torch.tensor(rows[1])], len(y)))
    warm = fit(xt, yt, subset_masks([torch.tensor(rows[0])], len(y)), (neighbour.weight[0], neighbour.bias[0]))
    assert int(warm.iterations[0]) < int(masked.iterations[0])
    warm_value, cold_value = (
        _l1_objective(f.weight[0, 0].numpy(), float(f.bias[0, 0]), x[rows[0]], y[rows[0]], 0.2) for f in (warm, masked)
    )
    assert warm_value == pytest.approx(cold_value, rel=1e-5)


def test_a_capped_family_says_which_problems_did_not_converge_and_bad_settings_are_refused():
    x, y = _data(seed=6)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    masks = torch.ones(len(y), 2)
    capped = fit_logistic_family(xt, yt, masks, torch.tensor([0.001, 10.0]), num_classes=2, penalty="l1", max_iter=10)
    assert capped.converged.tolist() == [True, False] and capped.iterations.tolist()[1] == 10
    with pytest.raises(ValueError, match="penalty must be"):
        fit_logistic_family(xt, yt, masks, torch.ones(2), num_classes=2, penalty="elasticnet")
    with pytest.raises(ValueError, match="binary"):
        fit_logistic_family(xt, yt, masks, torch.ones(2), num_classes=3, penalty="l1")


def _binary_l2_objective(w, b, x, y, C):
    return 0.5 * np.square(w).sum() + C * np.logaddexp(0, -(2 * y - 1) * (x @ w + b)).sum()


def test_the_binary_l2_family_finds_lbfgs_binary_optimum():
    """``binary=True`` with the l2 penalty is lbfgs's binary objective (M' of a two-valued attribute): one
    coefficient vector, the intercept not penalized; at a tight tolerance the same weights as scikit-learn's at a
    tight one, and a lower or equal objective."""
    x, y = _data(seed=7)
    family = fit_logistic_family(
        torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.ones(len(y), 1), torch.tensor([0.3]),
        num_classes=2, penalty="l2", binary=True, tol=1e-8,
    )  # fmt: skip
    assert family.weight.shape == (1, 1, x.shape[1])
    ref = LogisticRegression(C=0.3, tol=1e-10, max_iter=10_000).fit(x, y)
    w, b = family.weight[0, 0].numpy(), float(family.bias[0, 0])
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-4 * np.abs(ref.coef_).max())
    theirs = _binary_l2_objective(ref.coef_[0], ref.intercept_[0], x, y, 0.3)
    assert _binary_l2_objective(w, b, x, y, 0.3) <= theirs * (1 + 1e-9)
    with pytest.raises(ValueError, match="no multinomial l1"):
        fit_logistic_family(
            torch.tensor(x), torch.tensor(y), torch.ones(len(y), 1), torch.ones(1), num_classes=2, penalty="l1",
            binary=False,
        )  # fmt: skip


@pytest.mark.parametrize(("penalty", "classes"), [("l1", 2), ("l2", 2), ("l2", 3)])
def test_per_problem_targets_solve_each_problem_as_its_own_fit(penalty, classes):
    """``targets [N, P]``: problem ``p`` fit against column ``p`` is, to the solver's tolerance, the fit of that
    column alone (a loop of one-problem fits), with masks and C per problem as before."""
    rng = np.random.default_rng(8)
    x, y = _data(k=classes, seed=8)
    targets = np.stack([y, rng.permutation(y), (y + rng.integers(0, 2, len(y))) % classes], 1)
    xt, tt = torch.tensor(x), torch.tensor(targets)  # float64: 1e-8 is below float32's rounding
    masks = subset_masks([torch.tensor(s) for s in _subsets(len(y), 3, 450, seed=9)], len(y))
    Cs = torch.tensor([0.5, 0.2, 1.0])
    binary = classes == 2
    settings = {"num_classes": classes, "penalty": penalty, "binary": binary, "tol": 1e-8, "max_iter": 5000}
    together = fit_logistic_family(xt, tt, masks, Cs, **settings)
    assert bool(together.converged.all())
    for p in range(3):
        alone = fit_logistic_family(xt, tt[:, p], masks[:, p : p + 1], Cs[p : p + 1], **settings)
        scale = float(alone.weight.abs().max())
        torch.testing.assert_close(together.weight[p], alone.weight[0], rtol=0, atol=1e-4 * scale)
        torch.testing.assert_close(together.bias[p], alone.bias[0], rtol=0, atol=1e-4 * max(scale, 1.0))


def test_scikit_learn_stopping_rule_stops_at_the_first_iterate_that_meets_it():
    """``stop="scikit-learn"``: at the returned head, the gradient of lbfgs's objective (by autograd, not the
    solver's closed form) has no entry above ``tol * C * rows``; at the iterate before it (the same fit capped one
    iteration earlier) some entry is above. An unknown rule is refused."""
    x, y = _data(k=3, seed=10)
    rows = _subsets(len(y), 1, 300, seed=11)[0]
    masks = subset_masks([torch.tensor(rows)], len(y))
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)

    def largest_gradient(family, C):
        w, b = (t[0].clone().requires_grad_(True) for t in (family.weight, family.bias))
        z = torch.tensor(x[rows]) @ w.T + b
        loss = C * torch.nn.functional.cross_entropy(z, torch.tensor(y[rows]), reduction="sum")
        (loss + 0.5 * w.square().sum()).backward()
        return max(float(w.grad.abs().max()), float(b.grad.abs().max()))

    for tol, C in ((1e-2, 0.5), (1e-4, 2.0)):
        settings = {"num_classes": 3, "penalty": "l2", "tol": tol, "stop": "scikit-learn"}
        family = fit_logistic_family(xt, yt, masks, torch.tensor([C]), **settings)
        iterations = int(family.iterations[0])
        assert bool(family.converged[0]) and iterations > 1
        assert largest_gradient(family, C) <= tol * C * len(rows) * (1 + 1e-6)
        before = fit_logistic_family(xt, yt, masks, torch.tensor([C]), max_iter=iterations - 1, **settings)
        assert largest_gradient(before, C) > tol * C * len(rows)
    with pytest.raises(ValueError, match="stop must be"):
        fit_logistic_family(xt, yt, masks, torch.ones(1), num_classes=3, penalty="l2", stop="sklearn")
