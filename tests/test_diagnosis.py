"""The diagnosis: a localized cue says yes and a spread one no (against the random-attribute control, whose
class-wise frequencies are checked by brute force), and its edge cases: it never gives a verdict that claims a
control that was not run or a comparison across attribute values that do not exist, and string attribute values give
exactly what their integer codes give."""

import pytest
import torch
from utils import cue_data, erm_remover, snapshot, state_equal

from hf_fcr import FeatureSet
from hf_fcr.debias.diagnosis import random_attribute


@pytest.fixture(scope="module")
def data():
    train, val = cue_data(600, 0.95, 0, False), cue_data(300, 0.5, 1, False)
    return train, val, erm_remover(train)


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


@pytest.mark.parametrize("method", ["fcr", "auto"])
def test_one_m_prime_fit_serves_auto_the_diagnosis_and_the_search(data, monkeypatch, method):
    """neutralize_spurious fits M' on the attribute once (auto's FCR candidate, the diagnosis and the final search
    used to fit it each) and the random draws' M' in one batched fit, and gives what the separate calls give."""
    from hf_fcr import FictitiousClassRemover

    train, val, remover = data
    fitted = []
    original = FictitiousClassRemover.fit_fictitious_heads

    def counting(self, data, attribute_columns, *args, **kwargs):
        fitted.append(list(attribute_columns))
        return original(self, data, attribute_columns, *args, **kwargs)

    monkeypatch.setattr(FictitiousClassRemover, "fit_fictitious_heads", counting)
    search = remover.neutralize_spurious(train, val, method=method)
    assert sorted(fitted) == [["_random0", "_random1", "_random2"], ["place"]]
    edits, diagnosis, chosen = [e.to_dict() for e in search.edits], search.diagnosis.to_dict(), search.choice
    remover.revert()
    monkeypatch.undo()
    assert remover.diagnose(train, val).to_dict() == diagnosis  # M' fit on its own
    again = remover.neutralize_spurious(train, val, method=method, diagnose=False)
    assert again.choice == chosen
    assert [e.to_dict() for e in again.edits] == edits
    remover.revert()


@pytest.mark.parametrize("spread", [False, True])
def test_the_diagnosis_says_whether_one_weight_carries_the_cue(spread):
    train, val = cue_data(2000, 0.95, 0, spread), cue_data(1000, 0.5, 1, spread)
    remover = erm_remover(train)
    before = snapshot(remover.model)
    d = remover.diagnose(train, val, label_column="label", attribute_column="place")
    assert state_equal(snapshot(remover.model), before)  # nothing changed
    assert len(d.random_gains) == 3
    assert d.one_weight is (not spread)
    if spread:  # the cue is in every feature: the top one alone is near chance, and FCR does not beat the control
        assert d.top_accuracy["top1"] < 0.6 < d.fictitious_accuracy
        assert d.fcr_gain < max(d.random_gains) + 0.01
        assert "does not remove this cue" in d.verdict and "method='dfr'" in d.verdict
    else:  # one feature carries the attribute: alone it predicts it, and FCR beats every random draw
        assert d.top_accuracy["top1"] > 0.95
        assert d.fcr_gain > max(d.random_gains) + 0.01
        assert "removes this cue" in d.verdict and "method='fcr'" in d.verdict
    assert d.logit_share["top100"] == pytest.approx(1.0)  # 40 features: all of them
    assert (d.logit_share["top1"] > 0.5) is (not spread)


def test_random_attribute_keeps_each_class_frequencies_and_breaks_the_link():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (3000,), generator=g)
    attribute = (torch.rand(3000, generator=g) < 0.2 + 0.3 * labels).long()  # differs by class
    shuffled = random_attribute(labels, attribute, seed=1)
    for c in range(3):  # brute-force counts per class
        m = labels == c
        assert int(shuffled[m].sum()) == int(attribute[m].sum())
    assert float((shuffled == attribute).double().mean()) < 0.8
    assert torch.equal(shuffled, random_attribute(labels, attribute, seed=1))


@pytest.mark.parametrize("auto_chose", ["fcr", "dfr"])
def test_auto_keeping_fcr_against_the_verdict_says_so_in_the_result_record_and_card(
    data, tmp_path, monkeypatch, auto_chose
):
    """When auto keeps the single-weight edit while the diagnosis says one weight does not carry the cue, the search,
    the record and the card carry one sentence that says why it was kept; when auto chose a head-level fix, none."""
    import dataclasses
    import json

    from hf_fcr.debias import search as search_module

    train, val, remover = data
    real_diagnose = search_module.diagnose_cue

    def spread_cue(*args, **kwargs):  # the diagnosis as on a cue one weight does not carry
        return dataclasses.replace(real_diagnose(*args, **kwargs), one_weight=False)

    def choose(remover, train, val, settings, shared=None):
        return auto_chose, {"none": {"score": 0.5}, auto_chose: {"score": 0.9}}, {}

    monkeypatch.setattr(search_module, "diagnose_cue", spread_cue)
    monkeypatch.setattr(search_module, "_auto", choose)
    found = remover.neutralize_spurious(train, val, method="auto")
    try:
        assert found.method == auto_chose
        if auto_chose == "dfr":
            assert found.note is None and "note" not in remover.edit_record().extra["diagnosis"]
            return
        assert found.note.startswith("auto kept the single-weight edit") and "not because it removes" in found.note
        folder = remover.save_pretrained(tmp_path / "kept")
        assert json.loads((folder / "fcr_config.json").read_text())["diagnosis"]["note"] == found.note
        assert found.note in (folder / "README.md").read_text()
    finally:
        remover.revert()


def test_slow_stages_show_named_progress_bars(data, capsys, monkeypatch):
    """Every stage that can take a while names itself in a progress bar (shown once it has run DELAY_S seconds:
    here at once), and the pass' bar aside, nothing else is printed."""
    from hf_fcr.utils import progress

    train, val, remover = data
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    remover.neutralize_spurious(train, val, method="auto")
    remover.revert()
    err = capsys.readouterr().err
    for name in ("auto: candidates", "DFR: C grid", "DFR: balanced fits", "diagnosis: random draws"):
        assert name in err, name
    monkeypatch.setattr(progress, "DELAY_S", 60.0)  # the default's behaviour: a quick stage prints nothing
    remover.neutralize_spurious(train, val, method="dfr", diagnose=False)
    remover.revert()
    assert "DFR" not in capsys.readouterr().err


@pytest.mark.parametrize("chunk_rows", [7, 64, 10_000])
def test_logit_share_equals_its_direct_formula_in_any_chunking(chunk_rows):
    """The accumulated form (no [N, D] temporary) against the formula written out over every sample."""
    from hf_fcr.debias.diagnosis import logit_share

    g = torch.Generator().manual_seed(0)
    features, weight = torch.randn(300, 12, generator=g) * 3 + 1, torch.randn(3, 12, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 3, (300,), generator=g)
    x = features.double()
    direct = ((weight[targets] - weight.mean(0)) * (x - x.mean(0))).abs().mean(0)
    torch.testing.assert_close(logit_share(weight, features, targets, chunk_rows), direct / direct.sum())
