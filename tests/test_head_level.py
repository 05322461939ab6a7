"""Head-level fixes (DFR, class-balanced retraining) as users publish them: recorded like single-weight edits (save,
reload, edits only, wrong base, tampered tensors, stacking, revert) and `auto`'s choice; the fits never silently drop
a class; records check every stored tensor and the backbone they were fit on before a weight changes; identities
survive a change of dtype; sweeps and metrics use the head the model has now; records always load back; pushes carry
every file the artifact needs."""

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from utils import cue_data, erm_remover, snapshot, state_equal

from hf_fcr import FeatureSet, FictitiousClassRemover
from hf_fcr.core.head_edit import HeadEdit, head_digest
from hf_fcr.core.metrics import group_metrics
from hf_fcr.fitting.retrain import retrain_head
from hf_fcr.records.config import EditRecordError, FCRConfig
from hf_fcr.utils.constants import CONFIG_NAME, HEAD_EDITS_NAME


def _timm(tmp_path, seed=0, num_classes=3, dtype=torch.float32):
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=num_classes).eval()
    base = tmp_path / f"base{seed}"
    timm.models.save_for_hf(model, str(base), safe_serialization=True)
    remover = FictitiousClassRemover.from_pretrained(str(base))
    remover.model.to(dtype)  # e.g. a model edited in bfloat16
    return remover, base


def _batch(n=60, num_classes=3, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(n, 3, 32, 32, generator=g).to(dtype),
        "label": torch.arange(n) % num_classes,
        "place": (torch.arange(n) // num_classes) % 2,
    }


@pytest.mark.parametrize("method", ["dfr", "class_balanced"])
def test_a_class_without_rows_is_refused_by_name_not_deleted(tmp_path, method):
    remover, _ = _timm(tmp_path)
    remover.class_names = ["cat", "dog", "bird"]
    batch = _batch()
    keep = batch["label"] != 2  # no bird in the data the head is fit on
    feats = remover.extract_features([{k: v[keep] for k, v in batch.items()}], columns=("label", "place"))
    before = snapshot(remover.model)
    with pytest.raises(ValueError, match=r"class 2 \('bird'\) has no rows"):
        remover.neutralize_spurious(feats, feats, method=method, diagnose=False)
    assert state_equal(snapshot(remover.model), before) and not remover.edits


def _stored(folder):
    return load_file(folder / HEAD_EDITS_NAME)


def _restamp(folder, tensors):
    """Write ``tensors`` and make the record's checksums agree with them (an attacker can always do this)."""
    save_file(tensors, folder / HEAD_EDITS_NAME)
    record = json.loads((folder / CONFIG_NAME).read_text())
    new = head_digest(tensors["0.new.weight"], tensors.get("0.new.bias"))
    record["edits"][0]["new_sha256"] = new
    if "0.old.weight" in tensors:
        record["edits"][0]["base_sha256"] = head_digest(tensors["0.old.weight"], tensors.get("0.old.bias"))
    (folder / CONFIG_NAME).write_text(json.dumps(record))


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda t: t["0.old.weight"].__setitem__((0, 0), float("nan")), r"base head's weight \(old.weight\).*finite"),
        (lambda t: t["0.old.bias"].__setitem__(1, float("inf")), r"base head's bias \(old.bias\).*finite"),
        (lambda t: t.__setitem__("0.old.weight", t["0.old.weight"][:, :-1].clone()), r"old.weight\) has shape"),
        (lambda t: t.__setitem__("0.new.bias", torch.zeros(4)), r"new head's bias \(new.bias\) has shape"),
    ],
)
def test_stored_head_tensors_are_checked_like_single_weights(tmp_path, tamper, message):
    remover, _ = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.neutralize_spurious(feats, feats, method="class_balanced", val_attribute_column=None, diagnose=False)
    full = remover.save_pretrained(tmp_path / "full")
    tensors = _stored(full)
    tamper(tensors)
    _restamp(full, tensors)
    with pytest.raises(EditRecordError, match=message):
        FictitiousClassRemover.from_pretrained(str(full))
    # applied to a live model, the same record is refused before anything changes (so revert() never writes NaN)
    record = FCRConfig.from_file(full / CONFIG_NAME)
    record.attach_tensors(full / HEAD_EDITS_NAME)
    remover.revert()
    before = snapshot(remover.model)
    with pytest.raises(EditRecordError, match=message):
        remover.apply_edits(record)
    assert state_equal(snapshot(remover.model), before)


def _point_at_another_backbone(artifact, base, tmp_path):
    """Make the edits-only ``artifact`` name a copy of ``base`` whose backbone was fine-tuned a little (the head
    kept as it was: the edits were not made on its features); returns the record as rewritten."""
    other = timm.create_model("local-dir:" + str(base), pretrained=True).eval()
    with torch.no_grad():
        other.conv1[0].weight.mul_(1.01)
    other_base = tmp_path / "other-base"
    timm.models.save_for_hf(other, str(other_base), safe_serialization=True)
    record = json.loads((artifact / CONFIG_NAME).read_text())
    record["base_model_name_or_path"] = str(other_base)
    (artifact / CONFIG_NAME).write_text(json.dumps(record))
    return record


def test_a_head_level_edit_refuses_another_backbone_with_the_same_head(tmp_path):
    remover, base = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.neutralize_spurious(feats, feats, method="dfr", diagnose=False)
    tiny = remover.save_pretrained(tmp_path / "tiny", edits_only=True)
    _point_at_another_backbone(tiny, base, tmp_path)
    with pytest.raises(EditRecordError, match=r"backbone .* is not the one this dfr head was fitted on"):
        FictitiousClassRemover.from_pretrained(str(tiny))


def test_a_single_weight_edit_refuses_another_backbone_and_an_older_record_warns(tmp_path, caplog):
    """Single-weight records name their backbone too: an edits-only artifact whose base's backbone changed (the head
    kept as it was) is refused; the same record without the checksum (an earlier hf-fcr's) loads, with a warning."""
    remover, base = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.remove_class(1, feats, r=0.5)
    tiny = remover.save_pretrained(tmp_path / "tiny", edits_only=True)
    record = _point_at_another_backbone(tiny, base, tmp_path)
    assert len(record["edits"][0]["backbone_sha256"]) == 64
    with pytest.raises(EditRecordError, match=r"backbone .* is not the one this single-weight edit was made on"):
        FictitiousClassRemover.from_pretrained(str(tiny))
    for edit in record["edits"]:
        del edit["backbone_sha256"]
    (tiny / CONFIG_NAME).write_text(json.dumps(record))
    loaded = FictitiousClassRemover.from_pretrained(str(tiny))
    assert len(loaded.edits) == 1 and "do not name the backbone" in caplog.text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_model_edited_in_half_precision_reloads_with_its_edits(tmp_path, dtype):
    remover, _ = _timm(tmp_path, dtype=dtype)
    base_state = snapshot(remover.model)
    feats = remover.extract_features([_batch(dtype=dtype)], columns=("label", "place"))
    remover.neutralize_spurious(feats, feats, method="dfr", diagnose=False)
    edited = snapshot(remover.model)
    assert remover.head.weight.dtype == dtype
    full = remover.save_pretrained(tmp_path / "full")
    reloaded = FictitiousClassRemover.from_pretrained(str(full))  # timm builds float32 and loads the saved values
    assert reloaded.head.weight.dtype == torch.float32
    for name, tensor in snapshot(reloaded.model).items():
        torch.testing.assert_close(tensor, edited[name].to(tensor.dtype), rtol=0, atol=0)
    reloaded.revert()
    for name, tensor in snapshot(reloaded.model).items():
        torch.testing.assert_close(tensor, base_state[name].to(tensor.dtype), rtol=0, atol=0)


def test_sweep_after_a_head_level_fix_starts_from_the_head_the_model_has(tmp_path):
    remover, _ = _timm(tmp_path, num_classes=2)
    feats = remover.extract_features([_batch(num_classes=2)], columns=("label", "place"))
    ids = feats.labels("label") * 2 + feats.labels("place")

    def metrics():  # of the model as it is now
        return group_metrics(remover.logits(feats.features).argmax(1), feats.labels("label"), ids)

    original = metrics()
    remover.neutralize_spurious(feats, feats, method="class_balanced", val_attribute_column=None, diagnose=False)
    retrained = metrics()
    assert retrained["average"] > original["average"] + 0.2  # the retrained head differs from the original
    fict = remover.fit_fictitious(feats, "place")
    edits = remover.neutralize(fict, r=0.5, num_weights=2)
    now = metrics()  # the retrained head plus two weights at r=0.5
    with pytest.raises(ValueError, match="head-level edits have no rate"):
        remover.sweep(feats, [0.5], group_columns=["place"])
    table = remover.sweep(feats, [0.0, 0.5], group_columns=["place"], edits=edits).table
    for row, expected in zip(table, (retrained, now)):
        assert row["average"] == pytest.approx(expected["average"])
        assert row["worst_group"] == pytest.approx(expected["worst_group"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.9", torch.tensor(0.9)])
def test_a_metric_the_record_cannot_hold_is_refused_before_anything_is_written(tmp_path, bad):
    remover, _ = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.remove_class(0, feats)
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="record"):
        remover.save_pretrained(target, metrics=[{"name": "accuracy", "value": bad}])
    assert not target.exists()
    remover.save_pretrained(target, metrics=[{"name": "accuracy", "value": 0.9}])
    assert FictitiousClassRemover.from_pretrained(str(target)).edit_record().extra["metrics"][0]["value"] == 0.9


def test_an_edits_only_save_of_a_plain_module_needs_a_base(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    remover = FictitiousClassRemover(model)
    feats = FeatureSet(torch.randn(30, 4, generator=torch.Generator().manual_seed(0)), {"label": torch.arange(30) % 3})
    remover.remove_class(0, feats)
    with pytest.raises(ValueError, match="names none"):
        remover.save_pretrained(tmp_path / "edits", edits_only=True)
    assert not (tmp_path / "edits").exists()


def test_push_edits_only_of_a_head_level_folder_carries_the_new_head_and_loads(tmp_path, capsys):
    from hf_fcr.cli import main

    remover, _ = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.neutralize_spurious(feats, feats, method="dfr", diagnose=False)
    full = remover.save_pretrained(tmp_path / "full")
    argv = ["push", "--model_name_or_path", str(full), "--hub_model_id", "me/x", "--dry_run", "--json"]
    assert main([*argv, "--edits_only"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["README.md", CONFIG_NAME, HEAD_EDITS_NAME]
    (full / HEAD_EDITS_NAME).unlink()  # a folder that would not load is refused before anything is uploaded
    assert main(argv) != 0
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "EditRecordError" and "fcr_head.safetensors is missing" in error["message"]


def _separable(n, seed):
    """Two classes a linear head separates perfectly, with an attribute unrelated to them."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 6, generator=g)
    x[:, 0] = 4.0 * (2 * y - 1) + 0.1 * x[:, 0]
    return FeatureSet(x, {"label": y, "place": (torch.arange(n) // 2) % 2})


def test_auto_changes_nothing_when_no_fix_beats_the_model(caplog):
    train, val = _separable(200, 0), _separable(80, 1)
    head = torch.nn.Linear(6, 2)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1, 0], head.weight[0, 0] = 1.0, -1.0  # already perfect on every group
    remover = FictitiousClassRemover(torch.nn.Sequential(head))
    before = snapshot(remover.model)
    search = remover.neutralize_spurious(train, val, method="auto", diagnose=False)
    assert search.method == "none" and search.edits == [] and not remover.edits
    assert set(search.candidates) == {"none", "fcr", "dfr", "class_balanced"}
    assert search.candidates["none"]["worst_group"] == 1.0 and search.validation["worst_group"] == 1.0
    assert state_equal(snapshot(remover.model), before)
    assert "nothing changed" in caplog.text


def test_auto_on_a_tiny_group_says_which_and_chooses_on_the_whole_split(caplog):
    train, val = _separable(200, 0), _separable(80, 1)
    keep = torch.ones(80, dtype=torch.bool)
    in_group = torch.nonzero((val.labels("label") == 1) & (val.labels("place") == 0)).flatten()
    keep[in_group[3:]] = False  # label=1, place=0 keeps 3 rows: half of it cannot be held out
    val = val.select(keep)
    remover = FictitiousClassRemover(torch.nn.Sequential(torch.nn.Linear(6, 2)))
    search = remover.neutralize_spurious(train, val, method="auto", diagnose=False)
    assert "group label=1,place=0 has 3 row(s)" in caplog.text and "needs 4" in caplog.text
    assert search.method in {"fcr", "dfr", "class_balanced", "none"}


# ------------------------------------------------------------------------------ folders replaced while read


def test_a_record_refuses_weights_of_another_save(tmp_path):
    """A folder assembled from two saves (what a reader could see if it read the record before another process
    replaced the folder and the weights after): the same edit on two backbones, refused by the weights' checksum."""
    remover, base = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.remove_class(1, feats)
    first = remover.save_pretrained(tmp_path / "first")
    with torch.no_grad():
        remover.model.conv1[0].weight.mul_(1.01)  # the backbone moves; the head and its edit do not
    second = remover.save_pretrained(tmp_path / "second")
    (second / CONFIG_NAME).write_bytes((first / CONFIG_NAME).read_bytes())
    with pytest.raises(EditRecordError, match="weights are not the ones fcr_config.json was saved with"):
        FictitiousClassRemover.from_pretrained(str(second))
    assert FictitiousClassRemover.from_pretrained(str(first)).edits  # each save alone loads


def test_overwrite_through_a_symlink_replaces_the_folder_it_points_to(tmp_path):
    remover, _ = _timm(tmp_path)
    real = remover.save_pretrained(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.remove_class(2, feats)
    edited = snapshot(remover.model)
    remover.save_pretrained(link, overwrite=True)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert state_equal(snapshot(FictitiousClassRemover.from_pretrained(str(link)).model), edited)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left behind


@pytest.mark.parametrize("method", ["fcr", "dfr", "auto"])
def test_a_numpy_seed_is_recorded_as_an_int_and_saves(tmp_path, method):
    import numpy as np

    remover, _ = _timm(tmp_path, num_classes=2)
    feats = remover.extract_features([_batch(num_classes=2)], columns=("label", "place"))
    remover.neutralize_spurious(feats, feats, method=method, seed=np.int64(3), diagnose=False)
    folder = remover.save_pretrained(tmp_path / "out")
    assert json.loads((folder / CONFIG_NAME).read_text())["calls"][-1]["seed"] == 3
    with pytest.raises(TypeError, match="seed must be an integer"):
        remover.neutralize_spurious(feats, feats, method=method, seed="3", diagnose=False)


def test_a_retrained_head_does_not_depend_on_numpys_global_generator():
    """liblinear shuffles coordinates: with no random_state it drew from numpy's global generator, so DFR's head
    changed with whatever ran before it (seen as a one-sample difference in the demo)."""
    import numpy as np

    from hf_fcr.fitting.retrain import retrain_head

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 20, generator=g), torch.arange(300) % 2
    x[:, 0] += 1.5 * (2 * y - 1)
    groups = y * 2 + (torch.rand(300, generator=g) < 0.5).long()
    heads = []
    for state in (1, 2):
        np.random.seed(state)
        heads.append(retrain_head(x, y, groups, 2, seed=0))
    assert torch.equal(heads[0].weight, heads[1].weight) and torch.equal(heads[0].bias, heads[1].bias)


# ------------------------------------------------------------------------------ head-level edits as records


def test_retrained_head_without_bias_has_none_and_class_balancing_needs_no_groups():
    train, val = cue_data(1000, 0.95, 0, False), cue_data(600, 0.5, 1, False)
    remover = erm_remover(train, bias=False)
    search = remover.neutralize_spurious(train, val, method="class_balanced", val_attribute_column=None)
    (edit,) = search.edits
    assert isinstance(edit, HeadEdit) and edit.bias_param is None
    assert edit.hyperparameters["selection"] == "worst_class"
    assert torch.equal(remover.head.weight.detach(), edit.new_weight)
    head = retrain_head(val.features, val.labels("label"), val.labels("label"), 2, intercept=False)
    assert torch.equal(head.bias, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="needs group labels"):
        remover.neutralize_spurious(train, val, method="dfr", val_attribute_column=None)


def test_auto_picks_by_held_out_worst_group_preferring_fcr_within_a_point():
    train, val = cue_data(2000, 0.95, 0, True), cue_data(1000, 0.5, 1, True)
    remover = erm_remover(train)
    search = remover.neutralize_spurious(train, val, method="auto", diagnose=False)
    c = search.candidates
    assert set(c) == {"none", "fcr", "dfr", "class_balanced"}
    best = max(("fcr", "dfr", "class_balanced"), key=lambda m: c[m]["worst_group"])
    assert c[best]["worst_group"] > c["none"]["worst_group"]  # a fix helps here: "none" is not chosen
    expected = "fcr" if c["fcr"]["worst_group"] >= c[best]["worst_group"] - 0.01 else best
    assert search.method == expected
    record = remover.edit_record().to_dict()
    assert record["calls"][-1]["fix"] == "auto" and record["calls"][-1]["chosen"]["method"] == expected


def _timm_remover(tmp_path, seed=0):
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    base = tmp_path / f"base{seed}"
    timm.models.save_for_hf(model, str(base), safe_serialization=True)
    remover = FictitiousClassRemover.from_pretrained(str(base))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 3, 32, 32, generator=g)
    y = torch.arange(60) % 3
    batch = {"image": x, "label": y, "place": (torch.arange(60) // 3) % 2}
    feats = remover.extract_features([batch], columns=("label", "place"))
    return remover, feats, base


def test_a_schema_2_record_with_typed_fit_fields_reads_them_into_hyperparameters(tmp_path):
    """Records written before schema 3 kept C and the other fit settings beside ``hyperparameters``: the reader moves
    them into it, checks them as before, and the model reloads with the same head."""
    remover, feats, _ = _timm_remover(tmp_path)
    (edit,) = remover.neutralize_spurious(feats, feats, method="dfr", diagnose=False).edits
    edited_state = snapshot(remover.model)
    full = remover.save_pretrained(tmp_path / "full")
    record = json.loads((full / CONFIG_NAME).read_text())
    entry = record["edits"][0]
    assert set(edit.hyperparameters) >= {"C", "num_samples", "samples_per_fit", "num_fits", "selection"}
    entry.update(entry.pop("hyperparameters"))  # the schema-2 layout: every fit field typed, beside no extras
    entry["hyperparameters"] = {}
    record["schema_version"] = 2
    (full / CONFIG_NAME).write_text(json.dumps(record))
    reloaded = FictitiousClassRemover.from_pretrained(str(full))
    assert reloaded.edits[0].hyperparameters == edit.hyperparameters
    assert state_equal(snapshot(reloaded.model), edited_state)
    entry["C"] = -1.0
    (full / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(EditRecordError, match="'C' must be a positive number"):
        FictitiousClassRemover.from_pretrained(str(full))


@pytest.mark.parametrize("method", ["dfr", "class_balanced"])
def test_head_level_edit_saves_reloads_applies_edits_only_and_reverts(tmp_path, method):
    remover, feats, base = _timm_remover(tmp_path)
    base_state = snapshot(remover.model)
    search = remover.neutralize_spurious(feats, feats, method=method, diagnose=False)
    edited_state = snapshot(remover.model)
    changed = {k for k in base_state if not torch.equal(base_state[k], edited_state[k])}
    assert changed == {"fc.weight", "fc.bias"}  # the head only
    (edit,) = search.edits
    assert edit.method == method and edit.hyperparameters["C"] in (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
    assert edit.hyperparameters["num_samples"] == 60
    assert edit.base_sha256 == head_digest(base_state["fc.weight"], base_state["fc.bias"])

    full = remover.save_pretrained(tmp_path / "full")
    assert (full / HEAD_EDITS_NAME).is_file()
    assert json.loads((full / CONFIG_NAME).read_text())["schema_version"] == 3  # readers of 1 refuse head edits
    reloaded = FictitiousClassRemover.from_pretrained(str(full))
    assert state_equal(snapshot(reloaded.model), edited_state)
    reloaded.revert()  # bit for bit, from the base head kept in the full checkpoint
    assert state_equal(snapshot(reloaded.model), base_state)

    tiny = remover.save_pretrained(tmp_path / "tiny", edits_only=True)
    assert sorted(p.name for p in tiny.iterdir()) == ["README.md", CONFIG_NAME, HEAD_EDITS_NAME]
    applied = FictitiousClassRemover.from_pretrained(str(tiny))
    assert state_equal(snapshot(applied.model), edited_state)
    applied.revert()
    assert state_equal(snapshot(applied.model), base_state)
    card = (tiny / "README.md").read_text()
    assert "### Head-level edits" in card and f"| fc.weight, fc.bias | {method} |" in card

    remover.revert()
    assert state_equal(snapshot(remover.model), base_state)
    remover.remove_class(0, feats)  # single-weight edits alone stay readable by schema-1 readers
    assert remover.edit_record().to_dict()["schema_version"] == 1


def test_head_level_edit_refuses_another_base_and_tampered_tensors(tmp_path):
    remover, feats, base = _timm_remover(tmp_path)
    remover.neutralize_spurious(feats, feats, method="class_balanced", val_attribute_column=None)
    tiny = remover.save_pretrained(tmp_path / "tiny", edits_only=True)
    other, _, other_base = _timm_remover(tmp_path, seed=1)  # same architecture, another head
    record = json.loads((tiny / CONFIG_NAME).read_text())
    record["base_model_name_or_path"] = str(other_base)
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / CONFIG_NAME).write_text(json.dumps(record))
    (moved / HEAD_EDITS_NAME).write_bytes((tiny / HEAD_EDITS_NAME).read_bytes())
    with pytest.raises(EditRecordError, match="SHA-256 differs"):
        FictitiousClassRemover.from_pretrained(str(moved))
    before = snapshot(other.model)
    with pytest.raises(EditRecordError, match="SHA-256 differs"):
        other.apply_edits(FCRConfig.from_dict(record))  # checked before anything changes
    assert state_equal(snapshot(other.model), before)

    from safetensors.torch import load_file, save_file

    tensors = load_file(tiny / HEAD_EDITS_NAME)
    tensors["0.new.weight"][0, 0] += 1.0
    save_file(tensors, tiny / HEAD_EDITS_NAME)
    with pytest.raises(EditRecordError, match="do not match the record's new_sha256"):
        FictitiousClassRemover.from_pretrained(str(tiny))
    (tiny / HEAD_EDITS_NAME).unlink()
    with pytest.raises(EditRecordError, match="is missing"):
        FictitiousClassRemover.from_pretrained(str(tiny))


def test_head_and_weight_edits_stack_and_revert_in_order(tmp_path):
    remover, feats, base = _timm_remover(tmp_path)
    base_state = snapshot(remover.model)
    remover.remove_class(1, feats)
    remover.neutralize_spurious(feats, feats, method="class_balanced", val_attribute_column=None)
    remover.remove_class(2, feats)
    edited = snapshot(remover.model)
    folder = remover.save_pretrained(tmp_path / "stack", edits_only=True)
    again = FictitiousClassRemover.from_pretrained(str(folder))
    assert state_equal(snapshot(again.model), edited)
    assert [type(e).__name__ for e in again.edits] == ["WeightEdit", "HeadEdit", "WeightEdit"]
    again.revert()
    assert state_equal(snapshot(again.model), base_state)
    bad = json.loads(Path(folder / CONFIG_NAME).read_text())
    bad["edits"][1]["base_sha256"] = "0" * 64
    fresh = FictitiousClassRemover.from_pretrained(str(base))
    with pytest.raises(EditRecordError, match="edit 1"):
        fresh.apply_edits(FCRConfig.from_dict(bad))  # the record is checked by replaying it, in order
    assert state_equal(snapshot(fresh.model), base_state)
    with pytest.raises(EditRecordError, match="SHA-256"):
        FCRConfig.from_dict({**bad, "edits": [{**bad["edits"][1], "new_sha256": "xyz"}]})


def test_auto_refits_its_choice_with_the_C_it_validated_on_half_of_validation(monkeypatch):
    """auto tunes each head-level candidate on half of validation; the chosen one is refit on all of it with the C
    that half validated (not tuned a second time): the head equals retrain_head at that C on all rows, called
    directly."""
    from hf_fcr.fitting import methods as head_methods

    train, val = cue_data(1000, 0.95, 1, True), cue_data(500, 0.5, 2, True)
    remover = erm_remover(train)
    calls = []
    real = head_methods.retrain_head

    def spy(features, *args, **kwargs):
        head = real(features, *args, **kwargs)
        calls.append((len(features), kwargs.get("C"), head.C))
        return head

    monkeypatch.setattr(head_methods, "retrain_head", spy)
    search = remover.neutralize_spurious(train, val, method="auto", diagnose=False)
    assert search.method == "class_balanced"  # this case's choice; the refit below is what is checked
    (dfr_half, balanced_half, refit) = calls
    assert dfr_half[1] is None and balanced_half[1] is None and balanced_half[0] < len(val)  # tuned on a half
    assert refit == (len(val), balanced_half[2], balanced_half[2])  # all rows, the validated C, no new tuning
    labels = val.labels("label")
    direct = real(val.features, labels, labels, 2, seed=0, C=balanced_half[2])
    assert direct.tuning == {}
    torch.testing.assert_close(remover.head.weight.detach(), direct.weight.float(), rtol=0, atol=0)
    (edit,) = search.edits
    assert edit.hyperparameters["C"] == balanced_half[2]
    assert edit.hyperparameters["selection"] == "worst_class, validated by auto on half of validation"
    with pytest.raises(ValueError, match="positive number"):
        real(val.features, labels, labels, 2, C=0.0)
