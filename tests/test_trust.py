"""Trust (issue 10): edit records are untrusted input, nothing a save depends on is lost, resumed runs never mix data,
and every failure names the file and the fix. Each test feeds an input that failed before and checks the clear error
(or the correct result) and that nothing was changed: model tensors and file bytes compared."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn
from utils import snapshot, state_equal

from hf_fcr import FeatureSet, FictitiousClassRemover, WeightEdit
from hf_fcr.config import EditRecordError
from hf_fcr.constants import CONFIG_NAME
from hf_fcr.files import CorruptFileError


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def _timm_base(tmp_path, name="test_resnet", num_classes=3):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    folder = tmp_path / "base"
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def _record(folder, base, edits, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"base_model_name_or_path": str(base), "library_name": "timm", "edits": edits, **extra}
    (folder / CONFIG_NAME).write_text(json.dumps(record))
    return folder


def _head_edit(base_model, param="fc.weight", row=0, col=1, new=0.5):
    old = float(base_model.get_parameter(param).detach()[row, col])
    return {"param": param, "row": row, "col": col, "old_value": old, "new_value": new, "r": 1.0}


# ------------------------------------------------------------------------------------ records: a security boundary


def test_a_record_may_only_edit_the_classifier_head(tmp_path):
    base = _timm_base(tmp_path, "test_vit")
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    edit = _head_edit(model, param="blocks.0.attn.qkv.weight", new=3e38)
    before = _files(base)
    with pytest.raises(EditRecordError, match="may only edit the classifier head"):
        FictitiousClassRemover.from_pretrained(str(_record(tmp_path / "evil", base, [edit])))
    assert _files(base) == before


def test_a_value_that_overflows_the_heads_dtype_is_refused(tmp_path):
    base = _timm_base(tmp_path)
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    with pytest.raises(EditRecordError, match="not finite in the head's dtype"):
        FictitiousClassRemover.from_pretrained(str(_record(tmp_path / "evil", base, [_head_edit(model, new=1e300)])))


def test_a_record_for_another_library_is_refused_before_loading_it(tmp_path):
    base = _timm_base(tmp_path)
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    folder = _record(tmp_path / "evil", base, [_head_edit(model)])
    record = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**record, "library_name": "transformers"}))
    with pytest.raises(EditRecordError, match="made for a transformers model, but its base .* is a timm model"):
        FictitiousClassRemover.from_pretrained(str(folder))


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"calls": "not a list"}, "'calls' must be a list"),
        ({"calls": [{"method": "os.system", "cls": 1}]}, "'method' is one of"),
        ({"calls": [{"method": "remove_class", "cls": {"a": {"b": 1}}}]}, "must be a number, string"),
        ({"metrics": [{"name": "accuracy", "value": "high"}]}, "finite number 'value'"),
        ({"schema_version": 99}, "upgrade hf-fcr"),
    ],
)
def test_malformed_calls_metrics_and_versions_are_refused_before_any_edit(tmp_path, extra, match):
    base = _timm_base(tmp_path)
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    with pytest.raises(EditRecordError, match=match):
        FictitiousClassRemover.from_pretrained(str(_record(tmp_path / "r", base, [_head_edit(model)], **extra)))


def test_deep_and_self_referencing_records_get_a_clear_error(tmp_path):
    deep = tmp_path / "deep"
    deep.mkdir()
    for depth, match in ((40, "nested deeper than 32"), (100_000, "RecursionError")):
        (deep / CONFIG_NAME).write_text('{"edits": []' + ', "x": ' + "[" * depth + "]" * depth + "}")
        with pytest.raises(CorruptFileError, match=match):
            FictitiousClassRemover.from_pretrained(str(deep))
    selfish = _record(tmp_path / "self", tmp_path / "self", [])
    with pytest.raises(EditRecordError, match="leads back to itself"):
        FictitiousClassRemover.from_pretrained(str(selfish))


def test_the_card_is_generated_from_the_record_not_trusted(tmp_path):
    base = _timm_base(tmp_path)
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    folder = _record(tmp_path / "r", base, [_head_edit(model)])
    fake = "<!-- hf-fcr:start -->\n| fc.weight | 9 | 9 | fake |\n<!-- hf-fcr:end -->\n"
    (folder / "README.md").write_text("---\nlibrary_name: hf-fcr\n---\n# Mine\n" + fake)
    remover = FictitiousClassRemover.from_pretrained(str(folder))
    remover.save_pretrained(tmp_path / "again", edits_only=True)
    card = (tmp_path / "again" / "README.md").read_text()
    assert "| fc.weight | 0 | 1 |" in card
    assert "| 9 | 9 |" not in card


# ------------------------------------------------------------------------------------------- nothing is lost


def test_edits_only_save_onto_its_own_base_is_refused(tmp_path):
    base = _timm_base(tmp_path)
    remover = FictitiousClassRemover.from_pretrained(str(base))
    feats = FeatureSet(torch.rand(30, remover.head.in_features), {"label": torch.arange(30) % 3})
    remover.remove_class(1, feats, r=0.5)
    before = _files(base)
    with pytest.raises(ValueError, match="holds the base checkpoint"):
        remover.save_pretrained(base, edits_only=True, overwrite=True)
    assert _files(base) == before


def test_a_competing_writer_is_never_replaced_without_overwrite(tmp_path):
    from hf_fcr.hub import _replace_dir

    target, tmp = tmp_path / "model", tmp_path / ".model.tmp"
    target.mkdir()
    (target / "theirs.txt").write_text("written first")
    tmp.mkdir()
    (tmp / "ours.txt").write_text("written second")
    with pytest.raises(FileExistsError, match="written by someone else"):
        _replace_dir(tmp, target, overwrite=False)
    assert _files(target) == {"theirs.txt": b"written first"}


def test_saved_folders_follow_the_umask(tmp_path, digits_model):
    old = os.umask(0o022)
    try:
        FictitiousClassRemover(digits_model).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()} == {0o644}


def test_a_weight_edited_twice_reloads_and_reverts_bit_exact(tmp_path, digits_model):
    remover = FictitiousClassRemover(digits_model)
    base = snapshot(remover.model)
    w = float(remover.head.weight.detach()[2, 5])
    first = WeightEdit(remover.param_name, 2, 5, w, 0.25, 1.0)
    second = WeightEdit(remover.param_name, 2, 5, 0.25, -0.75, 1.0)
    remover.apply_edits([first, second])
    edited = snapshot(remover.model)
    remover.save_pretrained(tmp_path / "m")
    again = FictitiousClassRemover.from_pretrained(str(tmp_path / "m"), model=type(digits_model)(*digits_model))
    assert state_equal(snapshot(again.model), edited)
    again.revert()
    assert state_equal(snapshot(again.model), base)


def test_a_folder_saved_without_edits_is_the_base_of_later_edits(tmp_path):
    base = _timm_base(tmp_path)
    FictitiousClassRemover.from_pretrained(str(base)).save_pretrained(tmp_path / "plain")
    remover = FictitiousClassRemover.from_pretrained(str(tmp_path / "plain"))
    feats = FeatureSet(torch.rand(30, remover.head.in_features), {"label": torch.arange(30) % 3})
    remover.remove_class(2, feats)
    remover.save_pretrained(tmp_path / "edits", edits_only=True)
    assert json.loads((tmp_path / "edits" / CONFIG_NAME).read_text())["base_model_name_or_path"] == str(
        tmp_path / "plain"
    )
    reloaded = FictitiousClassRemover.from_pretrained(str(tmp_path / "edits"))
    assert state_equal(snapshot(reloaded.model), snapshot(remover.model))


def test_a_half_precision_head_refuses_an_overflowing_eq7(digits_model):
    model = nn.Sequential(nn.Identity(), nn.Linear(4, 2)).half()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[300.0, 300.0, 300.0, 1e-3], [1.0, 1.0, 1.0, 1.0]]))
    remover = FictitiousClassRemover(model)
    original = snapshot(model)
    feats = FeatureSet(torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 4), {"label": torch.tensor([0, 0, 1, 1])})
    with pytest.raises(ValueError, match="not finite in the head's dtype"):
        remover.neutralize(remover.fit_fictitious(feats, "label", None), classes=[0], values=[0], r=1.0)
    assert state_equal(snapshot(model), original)


# ------------------------------------------------------------------------------------ resumed runs never mix data


def _loader(offset=0.0, n=64):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + offset
    return torch.utils.data.DataLoader([{"image": x[i], "label": i % 10} for i in range(n)], batch_size=8)


def test_resuming_on_other_data_from_a_dataloader_or_stream_is_refused(tmp_path, digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    remover.extract_features(_loader(), checkpoint_dir=tmp_path / "dl", checkpoint_every=2, device=None)
    with pytest.raises(ValueError, match="belongs to another"):
        remover.extract_features(_loader(offset=1.0), resume_from=tmp_path / "dl", checkpoint_every=2, device=None)
    stream = digits["test"].to_iterable_dataset()
    remover.collect(stream, checkpoint_dir=tmp_path / "st", checkpoint_every=2, device=None)
    other = digits["train"].to_iterable_dataset()
    with pytest.raises(ValueError, match="belongs to another"):
        remover.collect(other, resume_from=tmp_path / "st", checkpoint_every=2, device=None)


def test_parts_of_an_older_run_are_never_read(tmp_path, digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    folder = tmp_path / "parts"
    remover.extract_features(digits["train"], batch_size=16, checkpoint_dir=folder, checkpoint_every=1, device=None)
    small = digits["test"].select(range(200))
    whole = remover.extract_features(small, batch_size=16, checkpoint_dir=folder, checkpoint_every=1, device=None)
    resumed = remover.extract_features(small, batch_size=16, resume_from=folder, checkpoint_every=1, device=None)
    assert len(resumed) == 200
    assert torch.equal(resumed.features, whole.features)


def test_resume_from_a_missing_folder_is_an_error(tmp_path, digits_model, digits):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FictitiousClassRemover(digits_model).collect(digits["test"], resume_from=tmp_path / "nope", device=None)


def test_checkpoint_every_zero_is_refused(digits_model, digits):
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        FictitiousClassRemover(digits_model).extract_features(digits["test"], checkpoint_every=0)


def test_a_datasets_own_transform_is_honoured(digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    data = digits["test"]
    doubled = data.map(lambda b: {"image": (np.asarray(b["image"]) * 2).tolist()}, batched=True)
    expected = remover.extract_features(doubled, device=None)
    transformed = data.with_transform(
        lambda b: {"image": [np.asarray(x) * 2 for x in b["image"]], "label": b["label"]}
    )
    got = remover.extract_features(transformed, device=None)
    torch.testing.assert_close(got.features, expected.features)


# ------------------------------------------------------------------------------------ errors that help


def test_truncated_or_garbage_files_are_named(tmp_path, digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    remover.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "m"), model=type(digits_model)(*digits_model))
    remover.extract_features(digits["test"], checkpoint_dir=tmp_path / "p", checkpoint_every=2, device=None)
    part = next((tmp_path / "p").glob("features.rank0.part*.safetensors"))
    part.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match=part.name):
        remover.extract_features(digits["test"], resume_from=tmp_path / "p", checkpoint_every=2, device=None)


def test_a_damaged_cache_entry_is_recomputed(tmp_path, digits_model, digits, caplog):
    remover = FictitiousClassRemover(digits_model)
    first = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    (entry,) = list(tmp_path.iterdir())
    (entry / "features.safetensors").write_bytes(b"garbage")
    again = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    assert torch.equal(again.features, first.features)
    assert "recomputing" in caplog.text
    assert torch.equal(FeatureSet.load(entry).features, first.features)  # the entry was rewritten


def test_config_json_of_the_wrong_type_and_broken_card_yaml(tmp_path, digits_model):
    base = _timm_base(tmp_path)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match="expected a JSON dict"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "list"))
    remover = FictitiousClassRemover.from_pretrained(str(base))
    remover.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "README.md").write_text("---\nbroken: [yaml\n---\n# Title\nMy notes.\n")
    remover.save_pretrained(tmp_path / "m", overwrite=True)
    assert "My notes." in (tmp_path / "m" / "README.md").read_text()


def test_nan_pixels_are_blamed_on_the_data(digits_model):
    x = torch.zeros(4, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="holds NaN or inf values"):
        FictitiousClassRemover(digits_model).extract_features([{"image": x, "label": torch.arange(4)}], device=None)


def test_numpy_class_indices_and_unsigned_labels_are_accepted(digits_model):
    remover = FictitiousClassRemover(digits_model)
    assert remover.class_index(np.int64(3)) == 3
    labels = np.arange(20, dtype=np.uint32) % 10
    feats = FeatureSet(torch.rand(20, remover.head.in_features), {"label": torch.from_numpy(labels)})
    assert remover.collect(feats).count.tolist() == [2] * 10


def test_json_errors_reach_stdout(tmp_path, capsys):
    from hf_fcr.cli import main

    code = main(["inspect", "--model_name_or_path", str(tmp_path / "missing"), "--dataset_name", "digits", "--json"])
    assert code == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "FileNotFoundError"
    assert "missing" in error["message"]
