"""Preprocessing HF users expect: an edited transformers checkpoint keeps its image processor and works in
`pipeline()`, a timm model built in code uses its own data config for PIL images, and an explicit transform wins."""

import numpy as np
import torch
from PIL import Image
from utils import tiny_transformers

from hf_fcr import FictitiousClassRemover


def _vit():
    from transformers import ViTImageProcessor

    return tiny_transformers("vit"), ViTImageProcessor(size={"height": 32, "width": 32})


def _photos(n=6):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(n)]


def test_an_edited_transformers_checkpoint_keeps_its_processor_and_works_in_a_pipeline(tmp_path):
    from transformers import pipeline

    model, processor = _vit()
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    remover = FictitiousClassRemover.from_pretrained(str(tmp_path / "base"))
    feats = remover.extract_features(
        [{"image": processor(_photos(), return_tensors="pt")["pixel_values"], "label": torch.arange(6) % 3}]
    )
    remover.remove_class("dog", feats, r=0.5)
    remover.save_pretrained(tmp_path / "edited")
    assert (tmp_path / "edited" / "preprocessor_config.json").is_file()
    classify = pipeline("image-classification", model=str(tmp_path / "edited"))
    expected = remover.model(processor(_photos()[:1], return_tensors="pt")["pixel_values"]).logits.softmax(-1)
    top = classify(_photos()[0], top_k=3)
    assert {row["label"] for row in top} == {"cat", "dog", "bird"}
    best = max(top, key=lambda row: row["score"])
    assert best["label"] == remover.class_names[int(expected.argmax())]
    reloaded = FictitiousClassRemover.from_pretrained(str(tmp_path / "edited"))
    assert reloaded.transform is not None
    torch.testing.assert_close(reloaded.transform(_photos()), remover.transform(_photos()))


def test_a_model_built_in_code_uses_its_own_preprocessing_and_an_explicit_one_wins():
    import timm

    model = timm.create_model("test_resnet", num_classes=3).eval()
    remover = FictitiousClassRemover(model)
    config = timm.data.resolve_data_config(model=model)
    expected = torch.stack([timm.data.create_transform(**config)(p) for p in _photos()])
    torch.testing.assert_close(remover.transform(_photos()), expected)
    ds_feats = remover.extract_features([{"image": _photos(), "label": torch.arange(6) % 3}])
    assert ds_feats.features.shape == (6, remover.head.in_features)
    vit, processor = _vit()
    with_processor = FictitiousClassRemover(vit, transform=processor)
    torch.testing.assert_close(
        with_processor.transform(_photos()), processor(_photos(), return_tensors="pt")["pixel_values"]
    )
    mine = FictitiousClassRemover(model, transform=lambda images: torch.zeros(len(images), 3, 16, 16))
    assert mine.transform(_photos()).abs().sum() == 0


def test_from_pretrained_with_a_transform(tmp_path):
    import timm

    timm.models.save_for_hf(
        timm.create_model("test_resnet", num_classes=3), str(tmp_path / "m"), safe_serialization=True
    )
    mine = lambda images: torch.zeros(len(images), 3, 16, 16)  # noqa: E731
    assert FictitiousClassRemover.from_pretrained(str(tmp_path / "m"), transform=mine).transform is mine
