"""Eq. 3-4: closed-form statistics against per-sample autograd and brute-force loops."""

import pytest
import torch
from torch import nn

from hf_fcr.core.stats import EdgeStatistics, edge_statistics


def _problem(n=37, d=6, k=4, seed=0, signed=True):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g, dtype=torch.float64)
    if not signed:
        feats = feats.relu()
    head = nn.Linear(d, k).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        head.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    labels = torch.randint(0, k, (n,), generator=g)
    return feats, head, labels


def _autograd_statistics(feats, head, labels, num_classes):
    """Per-sample autograd of the cross-entropy loss w.r.t. the head's weight, summed per class by a Python loop."""
    k, d = head.weight.shape
    grad = torch.zeros(num_classes, k, d, dtype=torch.float64)
    act = torch.zeros(num_classes, d, dtype=torch.float64)
    for a, y in zip(feats, labels):
        head.zero_grad()
        nn.functional.cross_entropy(head(a[None]), y[None]).backward()
        grad[y] += head.weight.grad.abs()
        act[y] += a.abs()
    return act, grad


@pytest.mark.parametrize("shape", [(37, 6, 4), (25, 3, 9), (90, 5, 20)])  # one-hot product and per-class paths
def test_gradient_matches_per_sample_autograd(shape):
    n, d, k = shape
    feats, head, labels = _problem(n, d, k)
    with torch.no_grad():
        logits = head(feats)
    stats = edge_statistics(feats, logits, labels, k)
    act, grad = _autograd_statistics(feats, head, labels, k)
    torch.testing.assert_close(stats.gradient, grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats.activation, act, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats.signed_activation, torch.stack([feats[labels == c].sum(0) for c in range(k)]))
    assert stats.count.tolist() == [int((labels == c).sum()) for c in range(k)]


@pytest.mark.parametrize("k", [6, 20])
def test_rows_equal_full_computation_on_those_rows(k):
    feats, head, labels = _problem(80, 7, k)
    logits = head(feats).detach()
    full = edge_statistics(feats, logits, labels, k)
    part = edge_statistics(feats, logits, labels, k, rows=[4, 1])
    assert part.gradient.shape == (k, 2, 7)
    torch.testing.assert_close(part.gradient_row(4), full.gradient[:, 4])
    torch.testing.assert_close(part.gradient_row(1), full.gradient[:, 1])
    torch.testing.assert_close(part.activation, full.activation)
    with pytest.raises(KeyError, match="rows"):
        part.gradient_row(0)


def test_merge_of_two_halves_equals_one_pass_and_batches_equal_one_pass():
    feats, head, labels = _problem(41, 5, 3)
    logits = head(feats).detach()
    whole = edge_statistics(feats, logits, labels, 3)
    first = edge_statistics(feats[:20], logits[:20], labels[:20], 3)
    second = edge_statistics(feats[20:], logits[20:], labels[20:], 3)
    merged = first.merge(second)
    batched = edge_statistics(feats, logits, labels, 3, batch_size=4)
    for other in (merged, batched):
        for name, tensor in whole.tensors().items():
            torch.testing.assert_close(other.tensors()[name], tensor)


def test_merge_refuses_different_rows():
    a = EdgeStatistics.empty(3, 4, rows=[0])
    b = EdgeStatistics.empty(3, 4, rows=[1])
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(b)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f, z, y: (f, z, y + 10), "outside the head's classes"),
        (
            lambda f, z, y: (
                f.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(float("nan"), dtype=torch.float64)),
                z,
                y,
            ),
            "NaN",
        ),
        (lambda f, z, y: (f[:0], z[:0], y[:0]), "no samples"),
        (lambda f, z, y: (f, z[:3], y), "logits must be"),
        (lambda f, z, y: (f, z, y.double()), "integer"),
    ],
)
def test_bad_input_is_named(mutate, message):
    feats, head, labels = _problem(10, 4, 3)
    logits = head(feats).detach()
    with pytest.raises(ValueError, match=message):
        edge_statistics(*mutate(feats, logits, labels), 3)


def test_huge_head_needs_rows():
    with pytest.raises(ValueError, match="rows="):
        EdgeStatistics.empty(1000, 1280, 1000)
    stats = EdgeStatistics.empty(1000, 1280, 1000, rows=[3])
    assert stats.gradient.shape == (1000, 1, 1280)


def _per_sample_sums(feats, logits, labels, num_classes, rows):
    """Eq. 3-4 one sample at a time: |softmax(z) - onehot(y)| outer |a|, added to the sample's class."""
    rows = list(range(logits.shape[1])) if rows is None else list(rows)
    act = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64)
    signed, grad = act.clone(), torch.zeros(num_classes, len(rows), feats.shape[1], dtype=torch.float64)
    for a, z, y in zip(feats, logits, labels.tolist()):
        err = torch.softmax(z, 0) - nn.functional.one_hot(torch.tensor(y), len(z))
        act[y] += a.abs()
        signed[y] += a
        grad[y] += torch.outer(err[rows].abs(), a.abs())
    return act, signed, grad


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k, rows", [(2, None), (2, [1]), (1000, None), (1000, [3, 997])])
def test_sums_added_on_the_device_equal_per_sample_loops(device, k, rows):
    """The pass's path (sums on the model's device, values not read back: check_values=False) against a per-sample
    loop on the CPU, to 1e-12, for a 2-class and a 1,000-class head (the one-hot product and the index_add path)."""
    feats, head, labels = _problem(300, 6, k, seed=3)
    logits = head(feats).detach()
    stats = EdgeStatistics.empty(k, 6, k, rows=rows, device=device)
    for start in range(0, 300, 64):
        batch = slice(start, start + 64)
        stats.update(
            feats[batch].float().to(device), logits[batch].to(device), labels[batch].to(device), check_values=False
        )
    assert stats.activation.device.type == device
    stats = stats.to("cpu")
    act, signed, grad = _per_sample_sums(feats.float().double(), logits, labels, k, rows)
    for got, want in ((stats.activation, act), (stats.signed_activation, signed), (stats.gradient, grad)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert stats.count.tolist() == torch.bincount(labels, minlength=k).tolist()
