"""Algorithm 1 on a small CNN trained on sklearn's real digits; the feature pass from every kind of source."""

import datasets
import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn
from utils import snapshot, state_equal

from hf_fcr import FeatureSet, FictitiousClassRemover


def _per_class_accuracy(remover, feats):
    pred = remover.logits(feats.features).argmax(1)
    labels = feats.labels("label")
    return torch.stack([(pred[labels == c] == c).double().mean() for c in range(10)]), pred


@pytest.fixture
def setup(digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    train = remover.extract_features(digits["train"])
    test = remover.extract_features(digits["test"])
    return remover, train, test


def test_head_and_features_are_the_models(digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    assert remover.head_name == "6"
    assert remover.param_name == "6.weight"
    assert remover.param_name in digits_model.state_dict()
    feats = remover.extract_features(digits["test"], batch_size=50)
    x = torch.tensor(digits["test"]["image"])
    with torch.no_grad():
        torch.testing.assert_close(feats.features, digits_model[:-1](x))
        torch.testing.assert_close(remover.logits(feats.features), digits_model(x))
    assert feats["label"].tolist() == digits["test"]["label"]


def test_feature_sources_agree(digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    data = digits["test"]
    ref = remover.extract_features(data, batch_size=32)
    streamed = remover.extract_features(data.to_iterable_dataset(num_shards=2), batch_size=32)
    loader = torch.utils.data.DataLoader(data.with_format("torch"), batch_size=29)
    from_loader = remover.extract_features(loader)
    for other in (streamed, from_loader):
        torch.testing.assert_close(other.features, ref.features)
        assert other["label"].tolist() == ref["label"].tolist()


def test_featureset_save_load_round_trip(setup, tmp_path):
    _, _, test = setup
    test.columns["name"] = [str(i) for i in test["label"].tolist()]
    test.save(tmp_path / "feats")
    back = FeatureSet.load(tmp_path / "feats")
    assert torch.equal(back.features, test.features)
    assert torch.equal(back["label"], test["label"])
    assert back["name"] == test["name"]
    assert back.label_names == test.label_names == {"label": [str(i) for i in range(10)]}  # a ClassLabel column


def test_remove_each_class_with_one_weight(setup):
    """Sec. 5.1 / Fig. 6 analogue: each class drops to <= 5%, others lose <= 1 point on average, one weight changes,
    revert() restores every tensor bit for bit."""
    remover, train, test = setup
    base, _ = _per_class_accuracy(remover, test)
    assert base.mean() > 0.9
    original = snapshot(remover.model)
    for c in range(10):
        edits = remover.remove_class(c, train, r=1.0)
        acc, _ = _per_class_accuracy(remover, test)
        others = [i for i in range(10) if i != c]
        assert acc[c] <= 0.05, (c, acc[c])
        assert (base[others] - acc[others]).mean() <= 0.01, (c, acc)
        changed = sum(int((remover.model.state_dict()[k] != v).sum()) for k, v in original.items())
        assert changed == 1
        assert len(edits) == 1
        assert edits[0].row == c
        remover.revert()
        assert state_equal(snapshot(remover.model), original)


def test_all_candidates_mode_can_amplify_the_class(setup):
    """The paper's literal argmax can pick an edge of the other sign: Eq. 7 then makes the class take over."""
    remover, train, test = setup
    takeovers = []
    for c in range(10):
        remover.remove_class(c, train, candidates="all")
        _acc, pred = _per_class_accuracy(remover, test)
        if (pred == c).double().mean() > 0.9:
            takeovers.append(c)
        remover.revert()
        remover.remove_class(c, train, candidates="supporting")
        _, pred = _per_class_accuracy(remover, test)
        assert (pred == c).double().mean() < 0.05
        remover.revert()
    assert takeovers, "expected at least one class to take over every prediction in 'all' mode"


def test_remove_eight_classes_keeps_the_other_two(setup):
    """Fig. 7 analogue: remove 8 of 10 classes with one weight each."""
    remover, train, test = setup
    base, _ = _per_class_accuracy(remover, test)
    removed = [0, 1, 2, 3, 5, 6, 8, 9]
    for c in removed:
        remover.remove_class(c, train)
    acc, _ = _per_class_accuracy(remover, test)
    assert acc[removed].max() <= 0.05
    assert (acc[[4, 7]] >= base[[4, 7]]).all()
    assert len(remover.edits) == 8


def test_several_weights_use_the_original_row(setup):
    remover, train, _ = setup
    row = remover.head.weight.detach()[3].clone()
    edits = remover.remove_class(3, train, r=0.4, num_weights=3)
    assert len({e.col for e in edits}) == 3
    from hf_fcr import neutralized_weight

    for e in edits:
        assert e.new_value == pytest.approx(neutralized_weight(row, e.col, 0.4), rel=1e-6)
        assert float(remover.head.weight.detach()[3, e.col]) == e.new_value


def test_class_by_name_and_rate_zero(setup):
    remover, train, _ = setup
    remover.class_names = [f"digit{i}" for i in range(10)]
    original = snapshot(remover.model)
    (edit,) = remover.remove_class("digit7", train, r=0.0)
    assert edit.class_name == "digit7"
    assert edit.class_index == 7
    assert state_equal(snapshot(remover.model), original)


def test_zero_weights_are_skipped(setup):
    remover, train, _ = setup
    (first,) = remover.remove_class(2, train)
    remover.revert()
    with torch.no_grad():
        remover.head.weight[2, first.col] = 0.0
    (second,) = remover.remove_class(2, train)
    assert second.col != first.col


def _bad_calls(remover, train):
    nan = FeatureSet(train.features.clone(), dict(train.columns))
    nan.features[0, 0] = float("nan")
    beyond = FeatureSet(train.features, {"label": train["label"] + 5})
    no_four = train.select(train["label"] != 4)
    named = FeatureSet(train.features, {"label": [f"d{i}" for i in train["label"].tolist()]})
    halves = FeatureSet(train.features, {"label": train["label"] / 2})
    return [
        (lambda: remover.remove_class(1, train, r=1.5), ValueError, "r must be"),
        (lambda: remover.remove_class(1, train, r=float("nan")), ValueError, "r must be"),
        (lambda: remover.remove_class(10, train), ValueError, "outside the head's classes"),
        (lambda: remover.remove_class("cat", train), KeyError, "unknown class name"),
        (lambda: remover.remove_class(1, train, label_column="digit"), KeyError, "not in this FeatureSet"),
        (lambda: remover.remove_class(1, beyond), ValueError, "outside the head's classes"),
        (lambda: remover.remove_class(1, nan), ValueError, "NaN"),
        (lambda: remover.remove_class(1, train.select([])), ValueError, "empty"),
        (lambda: remover.remove_class(4, no_four), ValueError, "no samples"),
        (lambda: remover.remove_class(1, train, num_weights=0), ValueError, "num_weights"),
        (lambda: remover.remove_class(1, train, candidates="best"), ValueError, "candidates"),
        (lambda: remover.remove_class(1, named), ValueError, "integer indices"),
        (lambda: remover.remove_class(1, halves), ValueError, "non-integer"),
        (
            lambda: remover.remove_class(1, FeatureSet(train.features[:, :5], dict(train.columns))),
            ValueError,
            "dimensions",
        ),
    ]


def test_bad_input_leaves_the_model_untouched(setup):
    remover, train, _ = setup
    original = snapshot(remover.model)
    for call, error, message in _bad_calls(remover, train):
        with pytest.raises(error, match=message):
            call()
        assert state_equal(snapshot(remover.model), original)
        assert not remover.edits


def test_missing_image_column_or_label_column(digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    with pytest.raises(KeyError, match="not in the dataset"):
        remover.extract_features(digits["test"], image_column="pixels")
    with pytest.raises(KeyError, match="not in the dataset"):
        remover.extract_features(digits["test"], columns=("place",))
    with pytest.raises(ValueError, match="empty"):
        remover.extract_features(digits["test"].select([]))


class _Scaled(nn.Module):
    """Logits are the Linear's output times 2: the Linear does not produce them."""

    def __init__(self):
        super().__init__()
        self.body = nn.Flatten()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.body(x)) * 2


def test_a_model_without_a_linear_is_refused():
    with pytest.raises(TypeError, match="no usable linear head"):
        FictitiousClassRemover(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()))


def test_a_named_head_that_is_not_a_linear_is_refused():
    with pytest.raises(TypeError, match="not an nn.Linear"):
        FictitiousClassRemover(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), head_name="1")


@pytest.mark.parametrize(
    "model",
    [_Scaled(), nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Tanh())],
    ids=["scaled-logits", "non-linear-after-the-head"],
)
def test_a_linear_whose_output_is_not_the_logits_is_refused(digits, model):
    remover = FictitiousClassRemover(model)
    with pytest.raises(TypeError, match="not the model's logits"):
        remover.extract_features(digits["test"])


def test_feature_cache_skips_the_backbone(digits, digits_model, tmp_path):
    remover = FictitiousClassRemover(digits_model)
    calls = []
    digits_model[0].register_forward_hook(lambda *args: calls.append(1))
    first = remover.extract_features(digits["test"], cache_dir=tmp_path)
    n_first = len(calls)
    assert n_first > 0
    assert len(list(tmp_path.iterdir())) == 1
    remover.remove_class(3, first)  # editing the head keeps the cached features valid
    second = remover.extract_features(digits["test"], cache_dir=tmp_path)
    assert len(calls) == n_first  # no forward pass
    assert torch.equal(second.features, first.features)
    assert torch.equal(second["label"], first["label"])
    remover.extract_features(digits["test"].select(range(10)), cache_dir=tmp_path)  # other data: another entry
    assert len(calls) > n_first
    assert len(list(tmp_path.iterdir())) == 2
    with torch.no_grad():
        digits_model[0].weight.mul_(1.5)  # other backbone weights: another entry
    remover.extract_features(digits["test"], cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


def test_dataloader_workers_give_the_same_features(digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    ref = remover.extract_features(digits["test"], batch_size=40)
    workers = remover.extract_features(digits["test"], batch_size=40, num_workers=2)
    assert torch.equal(workers.features, ref.features)
    assert torch.equal(workers["label"], ref["label"])
    stats = remover.collect(digits["test"], batch_size=40, num_workers=2)
    torch.testing.assert_close(stats.activation, remover.collect(ref).activation)


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


def test_nan_pixels_are_blamed_on_the_data(digits_model):
    x = torch.zeros(4, 1, 8, 8)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"holds NaN or inf values \(batch 0, row 1\)"):
        FictitiousClassRemover(digits_model).extract_features([{"image": x, "label": torch.arange(4)}], device=None)


def _three_batches(bad):
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(12, 1, 8, 8, generator=g), torch.arange(12) % 10
    if bad == "pixels":
        images[9, 0, 2, 2] = float("nan")  # batch 2, row 1 (batches of 4)
    else:
        labels[9] = 10
    return datasets.Dataset.from_dict({"image": images.numpy(), "label": labels.numpy()})


@pytest.mark.parametrize("run, bad", [("extract", "pixels"), ("collect", "pixels"), ("collect", "label")])
def test_a_bad_last_batch_is_named_and_leaves_nothing_behind(digits_model, tmp_path, bad, run):
    """Values are checked on the pass's device and read when the pass ends (labels on the host, as read): a NaN
    image or an out-of-range label in the last batch still raises, naming batch 2 and row 1, no cache entry is
    written, the checkpoints cover the two good batches only, and the model is back where and as it was."""
    data = _three_batches(bad)
    remover = FictitiousClassRemover(digits_model)
    device, options = next(digits_model.parameters()).device, dict(batch_size=4, checkpoint_every=1, device=None)
    match = r"\(batch 2, row 1\)" if bad == "pixels" else r"batch 2: label 10 in column 'label' \(row 1\)"
    with pytest.raises(ValueError, match=match):
        if run == "extract":
            remover.extract_features(data, cache_dir=tmp_path / "cache", checkpoint_dir=tmp_path / "parts", **options)
        else:
            remover.collect(data, checkpoint_dir=tmp_path / "parts", **options)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    saved = sorted(p.name for p in (tmp_path / "parts").glob("*.safetensors"))
    if run == "extract":
        assert saved == [f"features.rank0.part{i:06d}.safetensors" for i in (0, 1)]
    else:
        with safe_open(tmp_path / "parts" / "collect.rank0.state.safetensors", "pt") as f:
            assert f.metadata()["batches"] == "2"
            assert int(f.get_tensor("count").sum()) == 8
    assert next(digits_model.parameters()).device == device and not digits_model.training


def test_numpy_class_indices_and_unsigned_labels_are_accepted(digits_model):
    remover = FictitiousClassRemover(digits_model)
    assert remover.class_index(np.int64(3)) == 3
    labels = np.arange(20, dtype=np.uint32) % 10
    feats = FeatureSet(torch.rand(20, remover.head.in_features), {"label": torch.from_numpy(labels)})
    assert remover.collect(feats).count.tolist() == [2] * 10


def test_same_inputs_same_edits(digits, digits_model):
    from hf_fcr import FeatureSet

    remover = FictitiousClassRemover(digits_model)
    feats = remover.extract_features(digits["train"])
    data = FeatureSet(feats.features, {"label": feats["label"] % 2, "attr": (feats["label"] >= 5).long()})
    runs = []
    for _ in range(2):
        search = remover.neutralize_spurious(data, data, attribute_column="attr", seed=3, selection="random")
        runs.append([e.to_dict() for e in search.edits])
        remover.revert()
    assert runs[0] == runs[1]
    assert runs[0]


def test_class_removal_controls_against_direct_computations(setup):
    """The output-mask control equals the model with the class's bias set to -1e9 (an edit of the real head, not
    the helper's logit mask), the random-weight control is one edit of the class's row, and the probe figure is a
    balanced accuracy well above chance on features that encode the class."""
    from research.removal import removal_controls

    remover, train, test = setup
    rows = removal_controls(remover, train, test, seed=0)
    assert remover.edits == []  # every control reverted
    labels = test.labels("label")
    for row in rows[:3]:
        c = row["class"]
        with torch.no_grad():
            old = remover.head.bias[c].clone()
            remover.head.bias[c] = -1e9
            pred = remover.logits(test.features).argmax(1)  # the head as it is now: its bias edited
            remover.head.bias[c] = old
        others = [i for i in range(remover.num_classes) if i != c]
        direct = sum(float((pred[labels == i] == i).double().mean()) for i in others) / len(others)
        assert row["mask_forget"] == 0.0
        assert row["mask_retain"] == pytest.approx(direct, abs=1e-12)
        assert 0.5 < row["probe_balanced_accuracy"] <= 1.0
    # on a subset of the classes (an ImageNet head on a few photos): the same forget and probe, retain over the subset
    subset = removal_controls(remover, train, test, seed=0, classes=[5, 2])
    assert [row["class"] for row in subset] == [5, 2]
    for row in subset:
        full = rows[row["class"]]
        for key in ("mask_forget", "random_forget", "probe_balanced_accuracy"):
            assert row[key] == full[key]
    with torch.no_grad():
        old = remover.head.bias[5].clone()
        remover.head.bias[5] = -1e9
        pred = remover.logits(test.features).argmax(1)
        remover.head.bias[5] = old
    assert subset[0]["mask_retain"] == float((pred[labels == 2] == 2).double().mean())


def test_an_autocast_pass_runs_only_the_model_in_low_precision(digits_model):
    """bf16 autocast covers the model's call alone: the features are those of a plain autocast loop, and the
    statistics streamed under it equal those computed afterwards in full precision from the extracted features."""
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.rand(16, 1, 8, 8, generator=g), "label": torch.arange(16) % 10} for _ in range(3)]
    remover = FictitiousClassRemover(digits_model)
    options = dict(device="cpu", autocast_dtype=torch.bfloat16)
    feats = remover.extract_features(batches, **options)
    captured = []
    hook = remover.head.register_forward_pre_hook(lambda m, args: captured.append(args[0].float()))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for b in batches:
            digits_model(b["image"])
    hook.remove()
    torch.testing.assert_close(feats.features, torch.cat(captured), rtol=0, atol=0)
    streamed = remover.collect(batches, **options)
    for name, tensor in remover.collect(feats).tensors().items():
        torch.testing.assert_close(streamed.tensors()[name], tensor, rtol=1e-12, atol=1e-12)


def test_revert_keeps_the_first_edits_when_asked(digits_model, digits):
    """revert(keep=n) undoes the edits made after the first n (a loaded checkpoint's own), bit for bit."""
    remover = FictitiousClassRemover(digits_model)
    feats = remover.extract_features(digits["train"], device=None)
    start = snapshot(remover.model)
    remover.remove_class(3, feats)
    after_first = snapshot(remover.model)
    remover.remove_class(5, feats, num_weights=2)
    with pytest.raises(ValueError, match=r"keep must be an integer in \[0, 3\]"):
        remover.revert(keep=4)
    remover.revert(keep=1)
    assert len(remover.edits) == 1 and state_equal(snapshot(remover.model), after_first)
    remover.revert()
    assert remover.edits == [] and state_equal(snapshot(remover.model), start)


def test_a_head_with_nan_weights_is_named_when_the_streamed_statistics_end(digits_model):
    """The statistics are summed without reading values back; a head whose logits are NaN is still refused when the
    pass ends (naming the first batch and row), not summed into NaN statistics."""
    remover = FictitiousClassRemover(digits_model)
    with torch.no_grad():
        remover.head.weight[3, 0] = float("nan")
    batches = [{"image": torch.rand(4, 1, 8, 8), "label": torch.arange(4)} for _ in range(2)]
    with pytest.raises(ValueError, match=r"logits are NaN or inf \(batch 0, row 0\): check the head's weights"):
        remover.collect(batches, device="cpu")


class _Ended(Exception):
    """Raised by a source after its last batch: the pass stops there, before it reads its checks once at the end."""


@pytest.mark.parametrize("labels_on", ["cpu", "meta"])
@pytest.mark.parametrize("run", ["extract", "collect", "collect one row"])
def test_no_batch_of_a_pass_reads_a_value_on_the_device(run, labels_on):
    """No batch waits for the accelerator: the per-batch work of extract_features and collect (value and label
    checks, logits, Eq. 3-4 sums) reads nothing from the device, whether the source yields the labels on the host or
    on the device. Run on the meta device, whose tensors have shapes but no values, so that any read (``item``,
    ``bool``, ``tolist``, a copy to the host) raises; the source raises ``_Ended`` after its third batch, so every
    batch ran and nothing past them did."""
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    read = []

    def source():
        for _ in range(3):
            read.append(1)
            yield {"image": torch.empty(4, 3, 32, 32, device="meta"), "label": torch.arange(4, device=labels_on)}
        raise _Ended

    remover = FictitiousClassRemover(model)
    options = dict(device=None, batch_size=4, channels_last=True)
    with pytest.raises(_Ended):
        if run == "extract":
            remover.extract_features(source(), **options)
        else:
            remover.collect(source(), rows=[0] if run == "collect one row" else None, **options)
    assert len(read) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "features"])
def test_nonfinite_rows_agree_with_isfinite(dtype, layout):
    """The pass's one-read check (each row's min and max, in memory order) against ``isfinite`` on every value, for
    NaN, inf and -inf anywhere, in the layouts a pass meets."""
    from hf_fcr.features.feature_pass import _nonfinite_rows

    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        x = torch.randn(9, 3, 6, 5, generator=g).to(dtype) * 1e3
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "sliced":
            x = x[:, 1:, ::2]
        elif layout == "features":
            x = x.flatten(1)
        flat = x.reshape(-1) if x.is_contiguous() else None
        for row in torch.randperm(len(x), generator=g)[: trial % 4].tolist():
            value = (float("nan"), float("inf"), -float("inf"))[(row + trial) % 3]
            index = tuple(torch.randint(0, s, (1,), generator=g).item() for s in x.shape[1:])
            x[(row, *index)] = value
        assert flat is None or flat.data_ptr() == x.data_ptr()
        expected = ~torch.isfinite(x).reshape(len(x), -1).all(1)
        assert torch.equal(_nonfinite_rows(x), expected)
    assert _nonfinite_rows(torch.zeros(3, 0)).tolist() == [False] * 3


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_labels_yielded_on_the_device_give_what_labels_on_the_host_give(digits_model, device):
    """A source that yields its batches on the device (as a DataLoader prepared by Accelerate does): the labels are
    checked there, ``extract_features`` returns them on the host with the features, and ``collect`` sums what it
    sums with the labels on the host."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(12, 1, 8, 8, generator=g), torch.arange(12) % 10
    on_host = [{"image": images[i : i + 4], "label": labels[i : i + 4]} for i in range(0, 12, 4)]
    on_device = [{k: v.to(device) for k, v in batch.items()} for batch in on_host]
    remover = FictitiousClassRemover(digits_model)
    want, got = (remover.extract_features(b, device=device, batch_size=4) for b in (on_host, on_device))
    assert got["label"].device.type == "cpu" and torch.equal(got["label"], labels)
    torch.testing.assert_close(got.features, want.features)
    want, got = (remover.collect(b, device=device, batch_size=4, rows=[3]) for b in (on_host, on_device))
    for name, tensor in want.tensors().items():
        torch.testing.assert_close(got.tensors()[name], tensor, msg=name)


@pytest.mark.parametrize(
    "values, match",
    [
        (torch.tensor([0.0, 1.0, 2.5, 3.0]), r"batch 1: column 'label' holds non-integer values \(row 2: 2.5\)"),
        (torch.tensor([0.0, float("nan"), 2.0, 3.0]), r"batch 1: column 'label' holds non-integer values \(row 1"),
        (torch.tensor([3, 2, 240, 1], dtype=torch.uint8), r"batch 1: label 240 in column 'label' \(row 2\)"),
        (torch.tensor([3, -1, 0, 1]), r"batch 1: label -1 in column 'label' \(row 1\) is outside the head's classes"),
        (["a", "b", "c", "d"], r"column 'label' holds <U1 values; class labels must be integer indices"),
    ],
)
def test_bad_labels_are_named_with_their_batch_row_and_value(digits_model, values, match):
    """Labels are checked where they are (here the host, through the same code as on a device): fractions, NaN,
    values a uint8 column holds beyond the head's 10 classes (compared in int64, not wrapped) and negative labels
    are named with their batch, row and value; strings are refused at once. Bool labels are class indices."""
    good = {"image": torch.rand(4, 1, 8, 8), "label": torch.tensor([True, False, True, True])}
    with pytest.raises(ValueError, match=match):
        FictitiousClassRemover(digits_model).collect([good, {**good, "label": values}], device="cpu", batch_size=4)
    stats = FictitiousClassRemover(digits_model).collect([good], device="cpu", batch_size=4)
    assert stats.count.tolist() == [1, 3] + [0] * 8


def test_the_first_bad_label_is_named_with_its_own_value():
    """Bad labels in two batches, as the checks keep them for labels on a device: the earlier batch's row and value
    are named, not the later batch's (the value kept follows the first bad row). Labels on the host raise at once,
    at their own batch."""
    from hf_fcr.features.feature_pass import BatchChecks

    checks = BatchChecks(num_classes=10)
    checks.record("labels", torch.tensor([False, False, False, True]), 0, values=torch.tensor([1, 2, 3, 11.0]))
    checks.record("labels", torch.tensor([True, False, False, False]), 1, values=torch.tensor([12.0, 2, 3, 4]))
    checks.record("labels", torch.tensor([False, False, False, False]), 2, values=torch.tensor([1.0, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"batch 0: label 11 in column 'label' \(row 3\)"):
        checks.raise_first()
    host = BatchChecks(num_classes=10)  # labels on the host raise at once, at their batch
    assert torch.equal(host.labels(torch.tensor([1, 2, 3, 4], dtype=torch.int16), 0), torch.tensor([1, 2, 3, 4]))
    with pytest.raises(ValueError, match=r"batch 1: label 13 in column 'label' \(row 1\)"):
        host.labels(torch.tensor([1, 13, 14, 4]), 1)
