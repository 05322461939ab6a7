"""Attribute inference without labels (`hf_fcr.debias.infer.infer_attribute`): it recovers a planted cluster and
not noise, and bad arguments are named, not crashed on."""

import pytest
import torch

from hf_fcr.debias.infer import agreement, infer_attribute

X, Y = torch.randn(50, 4, generator=torch.Generator().manual_seed(0)), torch.arange(50) % 2


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((X, Y[:10]), {}, ValueError, r"features must be \[N, D\] and labels \[N\]"),
        ((X[0], Y), {}, ValueError, r"features must be \[N, D\]"),
        ((X, Y.double() + 0.5), {}, ValueError, "labels must be integer class indices"),
        ((X * float("nan"), Y), {}, ValueError, "NaN or inf"),
        ((X, Y), {"minority_fraction": 2.0}, ValueError, r"minority_fraction must be in \(0, 1\)"),
        ((X, Y), {"minority_fraction": 0}, ValueError, r"minority_fraction must be in \(0, 1\)"),
        ((X, Y), {"method": "margin", "logits": torch.zeros(50, 1)}, ValueError, "a column for every label"),
        ((X, Y), {"method": "margin", "logits": torch.zeros(10, 2)}, ValueError, r"logits must be \[N, K\]"),
        ((X, Y), {"seed": 1.5}, TypeError, "seed must be an integer"),
    ],
)
def test_bad_arguments_are_named(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        infer_attribute(*args, **kwargs)


def test_a_numpy_seed_is_a_seed():
    import numpy as np

    assert torch.equal(infer_attribute(X, Y, seed=np.int64(3)), infer_attribute(X, Y, seed=3))


def test_inferred_attribute_recovers_a_planted_cluster_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (600,), generator=g)
    planted = (torch.rand(600, generator=g) < 0.25).long()
    x = torch.randn(600, 8, generator=g)
    x[:, :4] += 6.0 * planted[:, None]
    inferred = infer_attribute(x, labels, "cluster")
    assert torch.equal(inferred, planted)  # the smaller cluster is the planted minority
    assert agreement(inferred, planted, labels) == pytest.approx(1.0)
    noise = (torch.rand(600, generator=g) < 0.25).long()
    assert abs(agreement(inferred, noise, labels)) < 0.05
    logits = torch.randn(600, 2, generator=g)
    flagged = infer_attribute(x, labels, "margin", logits=logits, minority_fraction=0.1)
    wrong = logits.argmax(1) != labels
    assert bool(flagged[wrong].all())  # every error is flagged
    with pytest.raises(ValueError, match="needs the model's logits"):
        infer_attribute(x, labels, "margin")
