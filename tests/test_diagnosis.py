"""The diagnosis' edge cases: it never gives a verdict that claims a control that was not run or a comparison across
attribute values that do not exist, and string attribute values give exactly what their integer codes give."""

import pytest
import torch
from test_evidence import _cue_data, _erm_remover

from hf_fcr import FeatureSet


@pytest.fixture(scope="module")
def data():
    train, val = _cue_data(600, 0.95, 0, False), _cue_data(300, 0.5, 1, False)
    return train, val, _erm_remover(train)


@pytest.mark.parametrize("num_draws", [0, -1, 1.5, True])
def test_no_verdict_without_a_random_attribute_draw(data, num_draws):
    train, val, remover = data
    with pytest.raises(ValueError, match="num_draws must be an integer >= 1"):
        remover.diagnose(train, val, num_draws=num_draws)


def test_group_labels_on_validation_only_is_a_clear_error(data):
    train, val, remover = data
    with pytest.raises(KeyError, match="train has no column 'place'.*method='dfr'"):
        remover.diagnose(FeatureSet(train.features, {"label": train["label"]}), val)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_a_one_valued_attribute_is_refused_on_either_split(data, split):
    train, val, remover = data
    feats = train if split == "train" else val
    one = FeatureSet(feats.features, {"label": feats["label"], "place": torch.zeros(len(feats), dtype=torch.long)})
    args = (one, val) if split == "train" else (train, one)
    with pytest.raises(ValueError, match=f"the {split} column 'place' has a single value"):
        remover.diagnose(*args)


def test_string_attribute_values_give_what_their_codes_give(data):
    train, val, remover = data

    def named(feats):
        return FeatureSet(
            feats.features, {"label": feats["label"], "place": ["water" if int(v) else "land" for v in feats["place"]]}
        )

    by_code = remover.diagnose(train, val)
    by_name = remover.diagnose(named(train), named(val))
    assert by_name.to_dict() == by_code.to_dict()
    search = remover.neutralize_spurious(named(train), named(val), method="dfr", diagnose=False)
    assert set(search.validation["per_group"]) == {f"label={y},place={p}" for y in (0, 1) for p in ("land", "water")}
    remover.revert()
