"""Property tests (hypothesis) for the math and for parsing edit records: garbage in, a clear error out."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_fcr.core.edit import ZeroWeightError, neutralized_weight, orthogonal_weight
from hf_fcr.core.scores import ca_score, class_entropy, sca_score
from hf_fcr.core.stats import edge_statistics
from hf_fcr.records.config import EditRecordError, FCRConfig

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)
nonzero = finite.filter(lambda x: abs(x) > 1e-3)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=12), nonzero, st.data())
def test_eq7_orthogonality_and_eq8_endpoints(rest, w_k, data):
    k = data.draw(st.integers(0, len(rest)))
    row = torch.tensor(rest[:k] + [w_k] + rest[k:], dtype=torch.float64)
    f = orthogonal_weight(row, k)
    assert math.isfinite(f)
    edited = row.clone()
    edited[k] = f
    dot = float(row @ edited) + 1.0  # normals (w, -1) and (w', -1)
    scale = float(row.norm() * edited.norm()) + 1.0
    assert abs(dot) <= 1e-9 * scale
    assert neutralized_weight(row, k, 0.0) == w_k
    assert neutralized_weight(row, k, 1.0) == f
    r = data.draw(st.floats(0.0, 1.0))
    value = neutralized_weight(row, k, r)
    assert min(w_k, f) - 1e-9 * abs(f) <= value <= max(w_k, f) + 1e-9 * abs(f)


def test_zero_weight_never_edited():
    with pytest.raises(ZeroWeightError):
        orthogonal_weight(torch.tensor([0.0, 1.0]), 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(2, 5), st.integers(0, 2**31 - 1), st.booleans())
def test_statistics_and_scores_are_finite_and_entropy_bounded(n, d, c, seed, sparse):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g, dtype=torch.float64) * 10
    if sparse:
        feats = feats.relu()  # dead features: all-zero activations
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 30
    labels = torch.randint(0, c, (n,), generator=g)
    stats = edge_statistics(feats, logits, labels, c)
    for h in (class_entropy(stats.activation, 0), class_entropy(stats.gradient, 0)):
        assert torch.isfinite(h).all()
        assert (h >= -1e-12).all()
        assert (h <= math.log(c) + 1e-9).all()
    assert torch.isfinite(ca_score(stats)).all()
    for cls in range(c):
        assert torch.isfinite(sca_score(stats, cls)).all()
        assert (sca_score(stats, cls) >= 0).all()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_garbage_edit_records_get_a_clear_error(garbage):
    for data in (garbage, {"edits": garbage}, {"edits": [garbage]}):
        try:
            FCRConfig.from_dict(data)
        except EditRecordError as err:
            assert str(err)
        # a record that parses must hold only well-formed edits
        else:
            assert isinstance(data, dict)
            assert isinstance(data["edits"], list)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "param": st.text(min_size=1, max_size=8) | st.integers(),
            "row": st.integers(-3, 10**6) | st.floats() | st.text(max_size=2),
            "col": st.integers(-3, 10**6),
            "old_value": st.floats() | st.integers() | st.none(),
            "new_value": st.floats(),
            "r": st.floats(),
        }
    )
)
def test_edit_fields_are_checked(edit):
    text = json.dumps({"edits": [edit]})  # NaN / inf survive as JSON extensions, as a tampered file could hold
    try:
        config = FCRConfig.from_dict(json.loads(text))
    except EditRecordError:
        return
    (e,) = config.edits
    assert isinstance(e.param, str)
    assert e.row >= 0
    assert e.col >= 0
    assert math.isfinite(e.old_value)
    assert math.isfinite(e.new_value)
    assert 0 <= e.r <= 1
