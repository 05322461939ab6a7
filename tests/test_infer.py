"""Attribute inference without labels (`hf_fcr.infer.infer_attribute`): bad arguments are named, not crashed on."""

import pytest
import torch

from hf_fcr.infer import infer_attribute

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
