"""Eq. 7-8 and Theorem 2 numerically; WeightEdit application is exact and guarded."""

import math

import pytest
import torch
from torch import nn
from utils import snapshot, state_equal

from hf_fcr import FeatureSet, FictitiousClassRemover
from hf_fcr.core.edit import WeightEdit, ZeroWeightError, neutralized_weight, orthogonal_weight


@pytest.mark.parametrize("seed", range(5))
def test_theorem2_orthogonal_normals(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, generator=g, dtype=torch.float64)
    k = int(torch.randint(0, 20, (1,), generator=g))
    edited = w.clone()
    edited[k] = orthogonal_weight(w, k)
    # the hyperplane y = w.x + b has normal (w, -1) in (x, y) space
    n0, n1 = torch.cat([w, torch.tensor([-1.0], dtype=torch.float64)]), torch.cat([edited, torch.tensor([-1.0])])
    assert abs(float(n0 @ n1)) < 1e-9 * float(n0.norm() * n1.norm())
    diff = (edited != w).nonzero().flatten().tolist()
    assert diff == [k]


def test_rate_endpoints_and_formula():
    w = torch.tensor([0.5, -2.0, 0.25, 1.5])
    for k in range(4):
        assert neutralized_weight(w, k, 0.0) == float(w[k])
        assert neutralized_weight(w, k, 1.0) == orthogonal_weight(w, k)
        expected = -(float(w.double().square().sum()) - float(w[k]) ** 2 + 1) / float(w[k])
        assert orthogonal_weight(w, k) == pytest.approx(expected, rel=1e-15)
        assert neutralized_weight(w, k, 0.3) == pytest.approx(0.3 * expected + 0.7 * float(w[k]), rel=1e-15)


@pytest.mark.parametrize("r", [-0.1, 1.0001, math.nan, math.inf, "0.5", None, True])
def test_bad_rate(r):
    with pytest.raises(ValueError, match="r must be"):
        neutralized_weight(torch.ones(3), 0, r)


def test_zero_weight_is_refused():
    with pytest.raises(ZeroWeightError, match="undefined"):
        orthogonal_weight(torch.tensor([1.0, 0.0]), 1)
    assert issubclass(ZeroWeightError, ValueError)


def test_weight_edit_apply_revert_exact_and_guarded():
    model = nn.Sequential(nn.Linear(4, 3))
    before = model[0].weight.detach().clone()
    old = float(before[1, 2])
    edit = WeightEdit("0.weight", 1, 2, old, -12.345678, r=1.0)
    edit.apply(model)
    assert float(model[0].weight.detach()[1, 2]) == pytest.approx(-12.345678)
    assert (model[0].weight != before).sum() == 1
    with pytest.raises(ValueError, match="original value"):
        edit.apply(model)  # already applied: the weight is no longer old_value
    edit.revert(model)
    assert torch.equal(model[0].weight, before)
    with pytest.raises(KeyError, match="no parameter"):
        WeightEdit("1.weight", 0, 0, 0.0, 1.0, 1.0).apply(model)
    with pytest.raises(ValueError, match="out of bounds"):
        WeightEdit("0.weight", 5, 0, 0.0, 1.0, 1.0).apply(model)
    assert WeightEdit.from_dict(edit.to_dict()) == edit


def test_a_half_precision_head_refuses_an_overflowing_eq7(digits_model):
    model = nn.Sequential(nn.Identity(), nn.Linear(4, 2)).half()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[300.0, 300.0, 300.0, 1e-3], [1.0, 1.0, 1.0, 1.0]]))
    remover = FictitiousClassRemover(model)
    original = snapshot(model)
    feats = FeatureSet(torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 4), {"label": torch.tensor([0, 0, 1, 1])})
    with pytest.raises(ValueError, match="not finite in the head's dtype"):
        remover.neutralize(remover.fit_fictitious(feats, "label", None), classes=[0], values=[0], r=1.0)
    assert state_equal(snapshot(model), original)
