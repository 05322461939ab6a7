"""Hugging Face round trips: timm and transformers checkpoints in, edited checkpoints (or edits alone) out, with
fcr_config.json and a model card; reloads are compared tensor by tensor with the edited model."""

import json

import pytest
import torch
from utils import snapshot, state_equal, tiny_transformers

from hf_fcr import FeatureSet, FictitiousClassRemover
from hf_fcr.records.config import EditRecordError, FCRConfig
from hf_fcr.utils.constants import CONFIG_NAME


def _timm(name, num_classes=3):
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()


def _images(model, n=24, size=None):
    size = size or (model.pretrained_cfg["input_size"][1] if hasattr(model, "pretrained_cfg") else 32)
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=g)


def _edit(remover, size=None):
    """Extract features of random images through the real model, then remove class 1 with two weights."""
    x = _images(remover.model, size=size)
    labels = torch.arange(len(x)) % remover.num_classes
    # the pass on the CPU, where the reference forward runs (a GPU's TF32 convolutions differ by about 1e-4)
    feats = remover.extract_features([{"image": x, "label": labels}], device="cpu")
    with torch.no_grad():
        out = remover.model(x)
        logits = out.logits if hasattr(out, "logits") else out
    torch.testing.assert_close(remover.logits(feats.features), logits, rtol=1e-4, atol=1e-5)
    remover.remove_class(1, feats, r=0.7, num_weights=2)
    return feats


@pytest.mark.parametrize("name, head", [("test_resnet", "fc"), ("test_vit", "head"), ("test_convnext", "head.fc")])
def test_timm_round_trip(tmp_path, name, head):
    import timm

    remover = FictitiousClassRemover(_timm(name))
    assert remover.head_name == head
    assert remover.param_name in remover.model.state_dict()
    base = snapshot(remover.model)
    _edit(remover, size=64 if name != "test_vit" else None)
    edited = snapshot(remover.model)
    remover.save_pretrained(tmp_path / "edited")
    reloaded = timm.create_model("local-dir:" + str(tmp_path / "edited"), pretrained=True)
    assert state_equal(snapshot(reloaded), edited)
    again = FictitiousClassRemover.from_pretrained(str(tmp_path / "edited"))
    assert state_equal(snapshot(again.model), edited)
    assert len(again.edits) == 2
    again.revert()  # the record travels with the checkpoint: revert gives the base weights back
    assert state_equal(snapshot(again.model), base)


@pytest.mark.parametrize("kind, head", [("vit", "classifier"), ("resnet", "classifier.1"), ("convnext", "classifier")])
def test_transformers_round_trip(tmp_path, kind, head):
    from transformers import AutoModelForImageClassification

    remover = FictitiousClassRemover(tiny_transformers(kind))
    assert remover.head_name == head
    assert remover.class_names == ["cat", "dog", "bird"]
    _edit(remover, size=32)
    edited = snapshot(remover.model)
    remover.save_pretrained(tmp_path / "edited")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "edited")
    assert state_equal(snapshot(reloaded), edited)
    again = FictitiousClassRemover.from_pretrained(str(tmp_path / "edited"))
    assert state_equal(snapshot(again.model), edited)
    assert again.class_names == ["cat", "dog", "bird"]


def test_edits_only_artifact_reapplies_bit_for_bit(tmp_path):
    import timm.models

    model = _timm("test_resnet")
    timm.models.save_for_hf(model, str(tmp_path / "base"), safe_serialization=True)
    remover = FictitiousClassRemover.from_pretrained(str(tmp_path / "base"))
    _edit(remover, size=64)
    remover.save_pretrained(tmp_path / "edits", edits_only=True)
    assert sorted(p.name for p in (tmp_path / "edits").iterdir()) == ["README.md", CONFIG_NAME]
    card = (tmp_path / "edits" / "README.md").read_text()
    assert "library_name: hf-fcr" in card
    again = FictitiousClassRemover.from_pretrained(str(tmp_path / "edits"))
    assert state_equal(snapshot(again.model), snapshot(remover.model))

    # a different base is refused before anything changes
    other = _timm("test_resnet")
    with torch.no_grad():
        other.fc.weight.mul_(2)
    timm.models.save_for_hf(other, str(tmp_path / "base"), safe_serialization=True)
    with pytest.raises(EditRecordError, match="not the one these edits were made for"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "edits"))


def test_config_and_card_contents(tmp_path):
    remover = FictitiousClassRemover(_timm("test_resnet"))
    remover.base_model_name_or_path = "timm/test_resnet.r160_in1k"
    _edit(remover, size=64)
    remover.save_pretrained(tmp_path / "m", metrics=[{"name": "accuracy", "value": 0.5, "dataset": "val"}])
    config = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert config["base_model_name_or_path"] == "timm/test_resnet.r160_in1k"
    keys = {"param", "row", "col", "old_value", "new_value", "r", "score", "class_index", "class_name", "fictitious"}
    assert all(keys <= set(e) for e in config["edits"])
    assert len(config["edits"]) == 2
    card = (tmp_path / "m" / "README.md").read_text()
    e = config["edits"][0]
    assert f"| fc.weight | {e['row']} | {e['col']} |" in card
    assert "library_name: timm" in card
    assert "- hf-fcr" in card
    assert "- model-editing" in card
    assert "base_model: timm/test_resnet.r160_in1k" in card
    assert "model-index" in card
    # a class removal says what it does and does not (suppression at the output, not forgetting or unlearning)
    said = " ".join(card.split("### What removing a class does, and does not")[1].split("###")[0].split())
    assert said.startswith("The edit suppresses class 1 at the output")
    assert "still encodes it" in said and "not unlearning of the training data" in said

    # updating keeps what the user wrote, and refuses to overwrite without being asked
    (tmp_path / "m" / "README.md").write_text(
        card.replace("<!-- hf-fcr:start -->", "My own notes.\n\n<!-- hf-fcr:start -->")
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        remover.save_pretrained(tmp_path / "m")
    remover.save_pretrained(tmp_path / "m", overwrite=True)
    updated = (tmp_path / "m" / "README.md").read_text()
    assert "My own notes." in updated
    assert updated.count("hf-fcr:start") == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        remover.save_pretrained(tmp_path / "file")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["edits"][0].update(row=-1), "non-negative"),
        (lambda c: c["edits"][0].update(r=2.0), "r must be in"),
        (lambda c: c["edits"][0].update(old_value="1.0"), "finite float"),
        (lambda c: c["edits"][0].update(param=None), "param"),
        (lambda c: c.update(edits="all"), "edits"),
        (lambda c: c["edits"][0].update(score=float("inf")), "score"),
    ],
)
def test_edit_records_are_validated(tmp_path, mutate, message):
    good = {"edits": [{"param": "fc.weight", "row": 0, "col": 1, "old_value": 0.5, "new_value": -3.0, "r": 1.0}]}
    FCRConfig.from_dict(json.loads(json.dumps(good)))
    bad = json.loads(json.dumps(good))
    mutate(bad)
    with pytest.raises(EditRecordError, match=message):
        FCRConfig.from_dict(bad)


def test_distilled_and_non_linear_heads_are_refused():
    import timm

    distilled = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, num_classes=3)
    with pytest.raises(TypeError, match="2 heads"):
        FictitiousClassRemover(distilled)


def test_missing_or_corrupt_checkpoints(tmp_path):
    with pytest.raises(OSError):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="no config.json"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(OSError, match="corrupt"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "bad"))


def test_a_folder_removed_after_it_was_checked_is_not_looked_up_on_the_hub(tmp_path):
    """load_checkpoint checks the folder, then reads its files: a folder another process removes in between (an
    overwrite=True re-save) is a FileNotFoundError naming it, not a Hub lookup of a path (HFValidationError)."""
    from hf_fcr.records.hub import read_record

    with pytest.raises(FileNotFoundError, match="no checkpoint folder at"):
        read_record(str(tmp_path / "removed"))


def test_private_into_an_existing_public_repo_is_refused(tmp_path, monkeypatch):
    """Against a local server that speaks the Hub protocol (huggingface.co cannot be reached): create_repo leaves
    an existing repo's visibility as it is, so a push with private=True into a public repo is refused before any
    file is uploaded, and a new repo is created private."""
    import huggingface_hub.constants as constants

    from hf_fcr.records.hub import upload_folder

    from hub_server import HubServer

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "README.md").write_text("card")
    with HubServer() as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        upload_folder(folder, "tester/public", private=False, token="hf_x")
        commits = list(hub.state.commits["tester/public"])
        with pytest.raises(ValueError, match="already exists and is public"):
            upload_folder(folder, "tester/public", private=True, token="hf_x")
        assert hub.state.commits["tester/public"] == commits
        upload_folder(folder, "tester/new", private=True, token="hf_x")
        assert hub.state.private["tester/new"] is True and "README.md" in hub.state.repos["tester/new"]


def test_card_metadata_model_tree_datasets_license_and_results(tmp_path):
    import timm

    model = timm.create_model("test_resnet", num_classes=3).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "license": "apache-2.0"}
    remover = FictitiousClassRemover(model, base_model_name_or_path="timm/test_resnet.r160_in1k")
    remover.remove_class(1, FeatureSet(torch.rand(30, remover.head.in_features), {"label": torch.arange(30) % 3}))
    metrics = [{"name": "accuracy", "value": 0.5, "dataset": "grodino/waterbirds", "split": "test"}]
    remover.save_pretrained(tmp_path / "m", metrics=metrics, dataset_name="grodino/waterbirds", tags=["waterbirds"])
    from huggingface_hub import ModelCard

    data = ModelCard.load(tmp_path / "m" / "README.md").data
    assert data.base_model == "timm/test_resnet.r160_in1k"
    assert data.base_model_relation == "finetune"
    assert data.datasets == ["grodino/waterbirds"]
    assert data.license == "apache-2.0"
    assert data.library_name == "timm"
    assert {"hf-fcr", "model-editing", "waterbirds"} <= set(data.tags)
    (result,) = data.eval_results
    assert result.dataset_type == "grodino/waterbirds"
    assert result.dataset_split == "test"
    remover.save_pretrained(tmp_path / "e", edits_only=True)
    assert ModelCard.load(tmp_path / "e" / "README.md").data.base_model_relation == "adapter"
