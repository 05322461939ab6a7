"""Helpers shared by the tests (imported explicitly, never through conftest)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from hf_fcr import FeatureSet, FictitiousClassRemover

TESTS = Path(__file__).parent


def file_bytes(folder) -> dict:
    """``{name: bytes}`` of the files in ``folder`` (to check that nothing on disk changed)."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


def timm_base(tmp_path, name="test_resnet", num_classes=3):
    """A seeded timm model saved with ``save_for_hf`` in ``tmp_path / "base"``: a base checkpoint for records."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
    folder = tmp_path / "base"
    timm.models.save_for_hf(model, str(folder), safe_serialization=True)
    return folder


def state_equal(a: dict, b: dict) -> bool:
    """Two state dicts with the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model) -> dict:
    """A detached copy of every tensor of ``model``'s state dict."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def spawn(code: str, *args) -> subprocess.Popen:
    """Run ``code`` in a new Python process (the tests folder importable), reading its stdout line by line."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, stdout=subprocess.PIPE, text=True
    )


def wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    """Read ``proc``'s stdout until a line holds ``marker``; AssertionError if it ends or times out first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"process ended before printing {marker!r}")
    raise AssertionError(f"no {marker!r} within {timeout}s")


def tiny_transformers(kind: str, num_classes: int = 3):
    """A tiny transformers image classifier built offline (vit, resnet or convnext); classes cat, dog, bird."""
    from transformers import AutoModelForImageClassification, ConvNextConfig, ResNetConfig, ViTConfig

    labels = {i: name for i, name in enumerate(["cat", "dog", "bird"][:num_classes])}
    common = {"num_labels": num_classes, "id2label": labels, "label2id": {v: k for k, v in labels.items()}}
    config = {
        "vit": lambda: ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **common,
        ),
        "resnet": lambda: ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], **common),
        "convnext": lambda: ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, **common),
    }[kind]()
    torch.manual_seed(0)
    return AutoModelForImageClassification.from_config(config).eval()


def cue_data(n: int, correlation: float, seed: int, spread: bool, dim: int = 40) -> FeatureSet:
    """Head inputs where feature 0 carries the class weakly and the attribute is carried by feature 1 alone
    (``spread=False``) or shared by every other feature (``spread=True``)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    a = torch.where(torch.rand(n, generator=g) < correlation, y, 1 - y)
    x = torch.randn(n, dim, generator=g)
    x[:, 0] += 2 * y - 1
    if spread:
        x[:, 1:] += 0.5 * (2 * a[:, None] - 1)
    else:
        x[:, 1] += 3.0 * (2 * a - 1)
    return FeatureSet(x, {"label": y, "place": a})


def erm_remover(train: FeatureSet, bias: bool = True) -> FictitiousClassRemover:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(train.features.shape[1], 2, bias=bias))
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(model(train.features), train.labels("label"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return FictitiousClassRemover(model.eval())
