"""Head-level fixes (DFR, class-balanced retraining) as users publish them: the fits never silently drop a class,
their records check every stored tensor and the backbone they were fit on before a weight changes, identities that
survive a change of dtype, sweeps and metrics against the head the model has now, records that always load back,
and pushes that carry every file the artifact needs. Each test failed on the code before issue 17's fixes."""

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from utils import snapshot, state_equal

from hf_fcr import FeatureSet, FictitiousClassRemover
from hf_fcr.config import EditRecordError, FCRConfig
from hf_fcr.constants import CONFIG_NAME, HEAD_EDITS_NAME
from hf_fcr.head_edit import head_digest
from hf_fcr.metrics import group_metrics


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


def test_a_head_level_edit_refuses_another_backbone_with_the_same_head(tmp_path):
    remover, base = _timm(tmp_path)
    feats = remover.extract_features([_batch()], columns=("label", "place"))
    remover.neutralize_spurious(feats, feats, method="dfr", diagnose=False)
    tiny = remover.save_pretrained(tmp_path / "tiny", edits_only=True)
    # the same base head on a backbone fine-tuned a little: the new head was not fit to its features
    other = timm.create_model("local-dir:" + str(base), pretrained=True).eval()
    with torch.no_grad():
        other.conv1[0].weight.mul_(1.01)
    other_base = tmp_path / "other-base"
    timm.models.save_for_hf(other, str(other_base), safe_serialization=True)
    record = json.loads((tiny / CONFIG_NAME).read_text())
    record["base_model_name_or_path"] = str(other_base)
    (tiny / CONFIG_NAME).write_text(json.dumps(record))
    with pytest.raises(EditRecordError, match=r"backbone .* is not the one this dfr head was fitted on"):
        FictitiousClassRemover.from_pretrained(str(tiny))


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

    from hf_fcr.retrain import retrain_head

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 20, generator=g), torch.arange(300) % 2
    x[:, 0] += 1.5 * (2 * y - 1)
    groups = y * 2 + (torch.rand(300, generator=g) < 0.5).long()
    heads = []
    for state in (1, 2):
        np.random.seed(state)
        heads.append(retrain_head(x, y, groups, 2, seed=0))
    assert torch.equal(heads[0].weight, heads[1].weight) and torch.equal(heads[0].bias, heads[1].bias)
