"""The feature cache never returns features computed another way: two preprocessing functions never share an entry
(a callable without a `config` describing it is not cached, and says so), and an incomplete entry is recomputed."""

import datasets
import numpy as np
import torch
from PIL import Image

from hf_fcr import FeatureSet, FictitiousClassRemover


def _pil_digits(digits):
    images = [Image.fromarray((255 * np.asarray(x)[0] / 16).astype(np.uint8)) for x in digits["test"]["image"][:40]]
    return datasets.Dataset.from_dict(
        {"image": images, "label": digits["test"]["label"][:40]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )


def _as_tensor(scale):
    def transform(images):
        return torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32))[None] * scale for im in images])

    return transform


def test_two_plain_functions_never_share_an_entry(tmp_path, digits, digits_model, caplog):
    data = _pil_digits(digits)
    one = FictitiousClassRemover(digits_model, transform=_as_tensor(1 / 16)).extract_features(data, cache_dir=tmp_path)
    other = FictitiousClassRemover(digits_model, transform=_as_tensor(1 / 255))
    two = other.extract_features(data, cache_dir=tmp_path)
    assert not torch.equal(one.features, two.features)  # computed with its own transform, not read from the cache
    reference = FictitiousClassRemover(digits_model, transform=_as_tensor(1 / 255)).extract_features(data)
    assert torch.equal(two.features, reference.features)
    assert list(tmp_path.iterdir()) == [] and "has no stable identity" in caplog.text
    described = _as_tensor(1 / 16)
    described.config = {"scale": 1 / 16}  # a callable that says what it does is cached under that
    remover = FictitiousClassRemover(digits_model, transform=described)
    first = remover.extract_features(data, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 1
    assert torch.equal(remover.extract_features(data, cache_dir=tmp_path).features, first.features)


def test_an_entry_without_its_columns_file_is_recomputed(tmp_path, digits, digits_model, caplog):
    remover = FictitiousClassRemover(digits_model)
    first = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    (entry,) = list(tmp_path.iterdir())
    (entry / "columns.json").unlink()
    again = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    assert torch.equal(again.features, first.features) and again.label_names == first.label_names
    assert "recomputing" in caplog.text
    assert FeatureSet.load(entry).label_names == first.label_names  # the entry was rewritten


def test_a_damaged_cache_entry_is_recomputed(tmp_path, digits_model, digits, caplog):
    remover = FictitiousClassRemover(digits_model)
    first = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    (entry,) = list(tmp_path.iterdir())
    (entry / "features.safetensors").write_bytes(b"garbage")
    again = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    assert torch.equal(again.features, first.features)
    assert "recomputing" in caplog.text
    assert torch.equal(FeatureSet.load(entry).features, first.features)  # the entry was rewritten


def test_a_cache_that_cannot_be_written_returns_the_features(tmp_path, digits_model, digits, caplog, monkeypatch):
    """An unwritable cache folder (a path below a file) or a full disk during the write: the computed pass is
    returned with a warning, and no half-written entry stays."""
    remover = FictitiousClassRemover(digits_model)
    reference = remover.extract_features(digits["test"], device=None)
    (tmp_path / "a-file").write_text("")
    got = remover.extract_features(digits["test"], cache_dir=tmp_path / "a-file" / "cache", device=None)
    assert torch.equal(got.features, reference.features) and "could not be cached" in caplog.text

    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FeatureSet, "save", full_disk)
    got = remover.extract_features(digits["test"], cache_dir=tmp_path / "cache", device=None)
    assert torch.equal(got.features, reference.features)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_pooling_changed_in_place_is_not_served_from_the_cache(tmp_path):
    """reset_classifier(global_pool="max") leaves every backbone weight as it was but changes the features: the
    pass's identity holds the module tree, so the cached average-pooled features are not returned."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    data = datasets.Dataset.from_dict(
        {"image": torch.rand(8, 3, 128, 128).numpy(), "label": [0, 1, 2, 0, 1, 2, 0, 1]}
    ).with_format(None)
    average = FictitiousClassRemover(model, transform=None).extract_features(data, cache_dir=tmp_path, device=None)
    model.reset_classifier(3, global_pool="max")
    remover = FictitiousClassRemover(model, transform=None)
    got = remover.extract_features(data, cache_dir=tmp_path, device=None)
    assert torch.equal(got.features, remover.extract_features(data, device=None).features)
    assert not torch.equal(got.features, average.features) and len(list(tmp_path.iterdir())) == 2


def test_the_feature_cache_keys_dtype_and_layout(tmp_path, digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    remover.extract_features(digits["test"], cache_dir=tmp_path, autocast_dtype=torch.bfloat16, device=None)
    plain = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    reference = FictitiousClassRemover(digits_model).extract_features(digits["test"], device=None)
    assert torch.equal(plain.features, reference.features)  # not the cached bf16 features
    remover.extract_features(digits["test"], cache_dir=tmp_path, channels_last=True, device=None)
    assert len(list(tmp_path.iterdir())) == 3
