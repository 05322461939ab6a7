"""Eq. 5-6 against element-by-element loops, and the choice of edges."""

import math

import pytest
import torch

from hf_fcr.scores import EPS, ca_score, class_entropy, sca_row, sca_score, top_edges
from hf_fcr.stats import edge_statistics


def _entropy(values):
    total = sum(values)
    if total == 0:
        return 0.0
    return -sum(v / total * math.log(v / total) for v in values if v > 0)


def _stats(n=60, d=5, k=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g, dtype=torch.float64)
    feats[:, 0] = 0.0  # a dead feature: all-zero activations (0 log 0 = 0)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    return edge_statistics(feats, logits, labels, k)


def test_ca_and_sca_match_loops():
    stats = _stats()
    c_, k_, d_ = stats.gradient.shape
    ca = ca_score(stats)
    for j in range(k_):
        for k in range(d_):
            h_g = _entropy([float(stats.gradient[c, j, k]) for c in range(c_)])
            h_a = _entropy([float(stats.activation[c, k]) for c in range(c_)])
            assert ca[j, k].item() == pytest.approx(h_g / (h_a + EPS), rel=1e-12, abs=1e-12)
            for cls in range(c_):
                expected = ca[j, k].item() * float(stats.gradient[cls, j, k]) * float(stats.activation[cls, k])
                assert sca_score(stats, cls)[j, k].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
                assert sca_row(stats, cls, j)[k].item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_entropy_bounds_and_zero():
    values = torch.tensor([[0.0, 1.0, 5.0, 1.0], [0.0, 1.0, 0.0, 3.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    h = class_entropy(values, dim=0)
    assert h[0] == 0
    assert h[2] == 0  # all-zero slice and a one-class slice
    assert h[1].item() == pytest.approx(math.log(3))  # uniform: the maximum
    assert h[3].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


def test_restricted_rows_score_nan_elsewhere():
    stats = _stats()
    full = sca_score(stats, 2)
    from hf_fcr.stats import edge_statistics as es  # same data, only row 2 kept

    g = torch.Generator().manual_seed(1)
    feats = torch.randn(60, 5, generator=g, dtype=torch.float64)
    feats[:, 0] = 0.0
    logits = torch.randn(60, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (60,), generator=g)
    part = sca_score(es(feats, logits, labels, 4, rows=[2]), 2)
    torch.testing.assert_close(part[2], full[2])
    assert torch.isnan(part[[0, 1, 3]]).all()


def test_top_edges_order_zero_weights_and_supporting():
    stats = _stats()
    scores = sca_score(stats, 1)[1]
    order = torch.argsort(scores, descending=True).tolist()
    assert [col for _, col, _ in top_edges(stats, 1, k=3)] == order[:3]
    weight = torch.ones(5, dtype=torch.float64)
    weight[order[0]] = 0.0
    assert top_edges(stats, 1, k=1, weight_row=weight)[0][1] == order[1]  # zero weight skipped
    # supporting: the weight's sign must agree with the class's mean activation
    signs = torch.sign(stats.signed_activation[1])
    weight = -signs.clone()
    weight[order[2]] = signs[order[2]]
    assert signs[order[2]] != 0  # the fixture's activations are non-zero: the check below always runs
    supporting = top_edges(stats, 1, k=5, weight_row=weight, candidates="supporting")
    assert [col for _, col, _ in supporting] == [order[2]]
    with pytest.raises(ValueError, match="weight_row"):
        top_edges(stats, 1, candidates="supporting")
    with pytest.raises(ValueError, match="candidates"):
        top_edges(stats, 1, candidates="best")
