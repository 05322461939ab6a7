"""The edit record (fcr_config.json) is untrusted input: what it may edit, the values it may hold, the library and
base it names, and the card made from it. Each test feeds a record that was accepted before and checks the clear
error and that nothing changed (model tensors and file bytes compared)."""

import json

import pytest
import timm
from utils import file_bytes, timm_base

from hf_fcr import FictitiousClassRemover
from hf_fcr.records.config import EditRecordError
from hf_fcr.utils.constants import CONFIG_NAME
from hf_fcr.utils.files import CorruptFileError


def _record(folder, base, edits, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    record = {"base_model_name_or_path": str(base), "library_name": "timm", "edits": edits, **extra}
    (folder / CONFIG_NAME).write_text(json.dumps(record))
    return folder


def _head_edit(base_model, param="fc.weight", row=0, col=1, new=0.5):
    old = float(base_model.get_parameter(param).detach()[row, col])
    return {"param": param, "row": row, "col": col, "old_value": old, "new_value": new, "r": 1.0}


def test_a_record_may_only_edit_the_classifier_head(tmp_path):
    base = timm_base(tmp_path, "test_vit")
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    edit = _head_edit(model, param="blocks.0.attn.qkv.weight", new=3e38)
    before = file_bytes(base)
    with pytest.raises(EditRecordError, match="may only edit the classifier head"):
        FictitiousClassRemover.from_pretrained(str(_record(tmp_path / "evil", base, [edit])))
    assert file_bytes(base) == before


def test_a_value_that_overflows_the_heads_dtype_is_refused(tmp_path):
    base = timm_base(tmp_path)
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    with pytest.raises(EditRecordError, match="not finite in the head's dtype"):
        FictitiousClassRemover.from_pretrained(str(_record(tmp_path / "evil", base, [_head_edit(model, new=1e300)])))


def test_a_record_for_another_library_is_refused_before_loading_it(tmp_path):
    base = timm_base(tmp_path)
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
    base = timm_base(tmp_path)
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
    base = timm_base(tmp_path)
    model = timm.create_model("local-dir:" + str(base), pretrained=True)
    folder = _record(tmp_path / "r", base, [_head_edit(model)])
    fake = "<!-- hf-fcr:start -->\n| fc.weight | 9 | 9 | fake |\n<!-- hf-fcr:end -->\n"
    (folder / "README.md").write_text("---\nlibrary_name: hf-fcr\n---\n# Mine\n" + fake)
    remover = FictitiousClassRemover.from_pretrained(str(folder))
    remover.save_pretrained(tmp_path / "again", edits_only=True)
    card = (tmp_path / "again" / "README.md").read_text()
    assert "| fc.weight | 0 | 1 |" in card
    assert "| 9 | 9 |" not in card


def test_config_json_of_the_wrong_type_and_broken_card_yaml(tmp_path, digits_model):
    base = timm_base(tmp_path)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    with pytest.raises(CorruptFileError, match="expected a JSON dict"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "list"))
    remover = FictitiousClassRemover.from_pretrained(str(base))
    remover.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "README.md").write_text("---\nbroken: [yaml\n---\n# Title\nMy notes.\n")
    remover.save_pretrained(tmp_path / "m", overwrite=True)
    assert "My notes." in (tmp_path / "m" / "README.md").read_text()
