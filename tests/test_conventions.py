"""Conventions HF users expect (issue 11): checkpoints that keep their preprocessing and work in pipelines, Hub
options and card metadata, plots that leave matplotlib alone, imports without side effects, a metric module that
loads through `evaluate`, and the models' own preprocessing for PIL images."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from utils import snapshot, state_equal, tiny_transformers

from hf_fcr import FeatureSet, FictitiousClassRemover

ROOT = Path(__file__).resolve().parents[1]


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


def test_sweep_plot_leaves_matplotlib_alone_and_marks_the_given_r(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from hf_fcr.core.sweep import SweepResult

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    table = [{"r": r, "average": 0.9 - r / 10, "worst_group": 0.5 + r / 5, "gap": 0.4 - 0.3 * r} for r in (0, 0.1, 1)]
    fig = SweepResult(table).plot(tmp_path / "a.png", chosen_r=0.1)
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == figures  # nothing left open in pyplot
    assert (tmp_path / "a.png").stat().st_size > 0
    assert [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == ":"] == [0.1]
    own_fig, own_ax = plt.subplots()
    assert SweepResult(table).plot(ax=own_ax) is own_fig
    plt.close(own_fig)


def test_importing_the_speed_benchmark_changes_no_environment():
    benchmarks = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    code = f"import os, sys; sys.path.insert(0, {benchmarks!r}); import speed; print(os.environ.get('HF_HUB_OFFLINE'))"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_the_feature_cache_keys_dtype_and_layout(tmp_path, digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    remover.extract_features(digits["test"], cache_dir=tmp_path, autocast_dtype=torch.bfloat16, device=None)
    plain = remover.extract_features(digits["test"], cache_dir=tmp_path, device=None)
    reference = FictitiousClassRemover(digits_model).extract_features(digits["test"], device=None)
    assert torch.equal(plain.features, reference.features)  # not the cached bf16 features
    remover.extract_features(digits["test"], cache_dir=tmp_path, channels_last=True, device=None)
    assert len(list(tmp_path.iterdir())) == 3


def test_group_robustness_is_an_evaluate_module():
    import evaluate

    metric = evaluate.load(str(ROOT / "metrics" / "group_robustness"))
    out = metric.compute(
        predictions=[0, 1, 1, 0, 1, 1],
        references=[0, 1, 0, 0, 1, 0],
        groups=["a", "a", "b", "b", "c", "c"],
        train_group_frequencies={"a": 0.5, "b": 0.25, "c": 0.25},
    )
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["worst_group_accuracy"] == pytest.approx(0.5)
    assert out["per_group_accuracy"] == {"a": 1.0, "b": 0.5, "c": 0.5}
    assert out["gap"] == pytest.approx(4 / 6 - 0.5)
    assert out["weighted_accuracy"] == pytest.approx(0.5 * 1.0 + 0.25 * 0.5 + 0.25 * 0.5)


def test_hf_fcr_help_is_fast_and_imports_no_torch():
    code = "import sys; from hf_fcr.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_dry_run_writes_nothing(tmp_path, capsys):
    import timm  # the CLI loads timm / transformers folders

    from hf_fcr.cli import main

    timm.models.save_for_hf(
        timm.create_model("test_resnet", num_classes=2), str(tmp_path / "t"), safe_serialization=True
    )
    before = snapshot(FictitiousClassRemover.from_pretrained(str(tmp_path / "t")).model)
    code = main(
        [
            "remove-class",
            "--model_name_or_path",
            str(tmp_path / "t"),
            "--dataset_name",
            "spurious_digits",
            "--class",
            "1",
            "--output_dir",
            str(tmp_path / "out"),
            "--dry_run",
        ]
    )
    assert code == 0
    assert not (tmp_path / "out").exists()
    assert "dry run" in capsys.readouterr().out
    assert state_equal(snapshot(FictitiousClassRemover.from_pretrained(str(tmp_path / "t")).model), before)
