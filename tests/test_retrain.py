"""The head-level fits (``retrain.retrain_head``, behind DFR and class-balanced retraining) on ill-conditioned
features: near-constant columns, fits that stop at the iteration cap, and the same heads as the fits they replaced."""

import logging
import os
import sys

import pytest
import torch

from hf_fcr.fitting import retrain
from hf_fcr.fitting.methods import fit_head
from hf_fcr.fitting.retrain import retrain_head
from hf_fcr.utils.threads import one_blas_thread

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from speed import _cold_retrain, ill_conditioned  # noqa: E402 -- the benchmark's reference fits and data


@pytest.fixture(scope="module")
def well():
    return ill_conditioned(600, 0.3, seed=0, near_constant=False)


@pytest.mark.parametrize("num_classes", [5, 2])
def test_the_batched_fits_choose_what_scikit_learns_fits_chose(well, num_classes):
    """Against scikit-learn's fits one at a time, from zero (liblinear's L1 for 2 classes, lbfgs's multinomial L2 for
    5), on the same balanced subsets and columns: at scikit-learn's default tolerance and at 1e-8 (the exact optimum),
    the same C, tuning scores within half a point, the same predictions on at least 99.5% of rows and worst-group
    accuracy within half a point."""
    from hf_fcr.core.metrics import group_metrics

    labels = well["label"] % num_classes
    groups = labels * 5 + well["colour"]
    new = retrain_head(well["features"], labels, groups, num_classes, seed=3, num_fits=4)
    names = [str(g) for g in range(int(groups.max()) + 1)]
    ours = new.logits(well["features"]).argmax(1)
    for tol in (1e-4, 1e-8):
        old = _cold_retrain(well["features"], labels, groups, num_classes, seed=3, num_fits=4, tol=tol)
        assert new.C == old.C and new.tuning.keys() == old.tuning.keys()
        assert all(abs(new.tuning[c] - old.tuning[c]) <= 0.005 for c in old.tuning)
        theirs = old.logits(well["features"]).argmax(1)
        assert (ours == theirs).double().mean() >= 0.995
        worst = [group_metrics(p, labels, groups, names)["worst_group"] for p in (ours, theirs)]
        assert abs(worst[0] - worst[1]) <= 0.005
    assert new.constant_columns == ()


def test_near_constant_columns_are_left_out(well):
    """A column that varies by 1e-6 gets weight 0 and the rest of the head is the fit without that column."""
    x = well["features"].double()
    tiny = 0.5 + 1e-6 * torch.randn(len(x), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with_tiny = torch.cat([x[:, :10], tiny[:, None], x[:, 10:]], 1)
    labels, groups = well["label"], well["label"] * 5 + well["colour"]
    head = retrain_head(with_tiny, labels, groups, 5, seed=0, num_fits=3)
    reference = retrain_head(x, labels, groups, 5, seed=0, num_fits=3)
    assert head.constant_columns == (10,)
    assert torch.all(head.weight[:, 10] == 0)
    torch.testing.assert_close(torch.cat([head.weight[:, :10], head.weight[:, 11:]], 1), reference.weight)
    torch.testing.assert_close(head.bias, reference.bias - head.weight[:, 10] * 0.5, rtol=1e-6, atol=1e-6)


def test_without_a_bias_a_near_constant_column_is_kept_at_the_typical_scale(well):
    x = torch.cat([well["features"].double(), torch.full((len(well["label"]), 1), 0.25)], 1)
    head = retrain_head(x, well["label"], well["label"], 5, seed=0, num_fits=2, intercept=False)
    assert head.constant_columns == () and torch.isfinite(head.weight).all()
    assert torch.any(head.weight[:, -1] != 0)  # the constant column stands in for the missing bias


def test_a_fit_stopped_at_the_cap_is_reported_with_method_c_and_iterations(well, monkeypatch, caplog):
    monkeypatch.setattr(retrain, "MAX_ITER", {"l1": 2, "l2": 2})
    labels, groups = well["label"], well["label"] * 5 + well["colour"]
    with caplog.at_level(logging.WARNING, logger="hf_fcr.fitting.methods"):
        fit_head("dfr", well["features"], labels, groups, num_classes=5, seed=0)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "dfr:" in message and "iteration cap" in message and ", 2)" in message
    head = retrain_head(well["features"], labels, groups, 5, num_fits=2)
    assert head.unconverged and all(iterations == 2 for _, iterations in head.unconverged)
    caplog.clear()
    monkeypatch.setattr(retrain, "MAX_ITER", {"l1": 10_000, "l2": 1000})
    with caplog.at_level(logging.WARNING, logger="hf_fcr.fitting.methods"):
        fit_head("class_balanced", well["features"], labels, None, num_classes=5, seed=0)
    assert not caplog.records


def test_one_blas_thread_limits_blas_and_restores_it():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    with one_blas_thread():
        assert set(blas_threads().values()) <= {1}
    assert blas_threads() == before


def test_a_thousand_class_head_without_rows_for_most_classes_gets_a_short_message():
    """A 1,000-class head retrained on data of two classes: the message names the first ten missing classes and
    counts the rest (it listed all 998, 12,935 characters, on the studio's page)."""
    from hf_fcr.fitting.retrain import check_every_class

    names = [f"class-{i}" for i in range(1000)]
    with pytest.raises(ValueError, match=r"and 988 more \(998 of 1000\) has no rows") as err:
        check_every_class(torch.tensor([0, 1, 0, 1]), 1000, names)
    assert len(str(err.value)) < 400 and "'class-2'" in str(err.value)
