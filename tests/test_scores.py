"""Eq. 5-6 against element-by-element loops, and the choice of edges."""

import math

import pytest
import torch

from hf_fcr.core.scores import EPS, ca_score, class_entropy, sca_row, sca_score, top_edges
from hf_fcr.core.stats import edge_statistics


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
    from hf_fcr.core.stats import edge_statistics as es  # same data, only row 2 kept

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


# ---------------------------------------------------------------------------------------- the registry of scores


def test_the_registered_scores_are_the_papers_quantities():
    from hf_fcr.core.scores import edge_score

    stats = _stats()
    for c in range(stats.num_classes):
        torch.testing.assert_close(edge_score("sca", stats, c), sca_score(stats, c)[c])
        torch.testing.assert_close(edge_score("ca", stats, c), ca_score(stats)[c])
        torch.testing.assert_close(edge_score("grad_x_act", stats, c), stats.gradient[c, c] * stats.activation[c])
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        torch.testing.assert_close(edge_score("random", stats, c, g1), edge_score("random", stats, c, g2))


def test_a_user_score_ranks_edges_for_both_algorithms(digits_model, digits):
    import hf_fcr
    from hf_fcr import FeatureSet, FictitiousClassRemover
    from hf_fcr.core.scores import _SCORES

    def activation(stats, cls, *, generator=None):  # rank edges by class cls's mean |a_k| alone
        return stats.activation[cls]

    hf_fcr.register_score("activation", activation)
    try:
        remover = FictitiousClassRemover(digits_model)
        feats = remover.extract_features(digits["train"], device=None)
        weight = remover.head.weight.detach().clone()
        (edit,) = remover.remove_class(3, feats, score="activation")
        # brute force: the supporting, non-zero edge of row 3 with the largest mean |a_k| over class 3
        x, y = feats.features.double(), feats.labels("label")
        mean_abs, mean = x[y == 3].abs().mean(0), x[y == 3].mean(0)
        allowed = (weight[3].double() * mean > 0) & (weight[3] != 0)
        assert edit.col == int(torch.where(allowed, mean_abs, -torch.inf).argmax())
        assert remover.edit_record().to_dict()["calls"][-1]["score"] == "activation"
        remover.revert()
        data = FeatureSet(feats.features, {"label": y, "big": (y >= 5).long()})
        fict = remover.fit_fictitious(data, "big")
        edits = remover.neutralize(fict, classes=[0], selection="activation", policy="dominant")
        assert edits[0].col == fict.ranked_features(fict.dominant(0), "activation")[0][0]
        with pytest.raises(ValueError, match="score must be one of"):
            remover.remove_class(3, feats, score="nope")
    finally:
        _SCORES.pop("activation", None)


def test_non_finite_scores_are_skipped_alike_by_both_algorithms(digits_model, digits):
    """A score with NaN and inf entries: Algorithm 1 skipped them, Algorithm 2 sorted NaN first and edited exactly
    those weights. Both now pick the best finite entry (brute force: argmax over the finite ones)."""
    import hf_fcr
    from hf_fcr import FeatureSet, FictitiousClassRemover
    from hf_fcr.core.scores import _SCORES

    def poisoned(stats, cls, *, generator=None):
        score = stats.activation[cls].clone()
        score[::3] = torch.nan
        score[1::3] = torch.inf
        return score

    hf_fcr.register_score("poisoned", poisoned)
    try:
        remover = FictitiousClassRemover(digits_model)
        feats = remover.extract_features(digits["train"], device=None)
        y = feats.labels("label")
        data = FeatureSet(feats.features, {"label": y, "big": (y >= 5).long()})
        fict = remover.fit_fictitious(data, "big")
        v = fict.dominant(0)
        ranked = fict.ranked_features(v, "poisoned")
        finite = poisoned(fict.stats, v)
        assert [k for k, _ in ranked] == sorted(
            (k for k in range(len(finite)) if torch.isfinite(finite[k])), key=lambda k: -float(finite[k])
        )
        edits = remover.neutralize(fict, classes=[0], selection="poisoned", policy="dominant", candidates="all")
        assert edits[0].col % 3 == 2 and torch.isfinite(torch.tensor(edits[0].score))
        remover.revert()
        (edit,) = remover.remove_class(3, feats, score="poisoned", candidates="all")
        assert edit.col % 3 == 2
    finally:
        _SCORES.pop("poisoned", None)
