"""Interruptions lose nothing (real kills of saving and collecting processes), and the same inputs give the same
edits."""

import signal
import time

import pytest
import torch
from utils import spawn, wait_for

from hf_fcr import FictitiousClassRemover

SLOW_COLLECT = """
import sys, time, torch
from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.experiments.erm import digits_cnn
torch.manual_seed(0)
model = digits_cnn().eval()
slow = lambda *a: time.sleep(0.2)  # a long run: 0.2 s per batch
model[0].register_forward_hook(slow)
remover = FictitiousClassRemover(model)
data = digits_dataset(seed=0)["train"]
print("started", flush=True)
remover.collect(data, batch_size=32, rows=[1, 4], checkpoint_dir=sys.argv[1], checkpoint_every=5, device=None)
"""


@pytest.mark.slow
def test_killed_collect_resumes_to_the_uninterrupted_result(tmp_path):
    from hf_fcr.data import digits_dataset
    from hf_fcr.experiments.erm import digits_cnn

    proc = spawn(SLOW_COLLECT, tmp_path / "ckpt")
    wait_for(proc, "started")
    state = tmp_path / "ckpt" / "collect.rank0.state.safetensors"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.5)  # a few more batches, past the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists()
    assert proc.returncode == -signal.SIGKILL

    torch.manual_seed(0)
    remover = FictitiousClassRemover(digits_cnn().eval())
    data = digits_dataset(seed=0)["train"]
    calls = []
    remover.model[0].register_forward_hook(lambda *a: calls.append(1))
    resumed = remover.collect(data, batch_size=32, rows=[1, 4], resume_from=tmp_path / "ckpt", device=None)
    n_batches = (len(data) + 31) // 32
    assert 0 < len(calls) < n_batches  # it really skipped the batches done before the kill
    whole = remover.collect(data, batch_size=32, rows=[1, 4], device=None)
    for name, tensor in whole.tensors().items():
        torch.testing.assert_close(resumed.tensors()[name], tensor, rtol=1e-12, atol=1e-9)
    assert int(resumed.count.sum()) == len(data)
    # a state saved for other arguments is refused
    with pytest.raises(ValueError, match="another model, dataset"):
        remover.collect(data, batch_size=16, rows=[1, 4], resume_from=tmp_path / "ckpt", device=None)


SLOW_EXTRACT = """
import sys, time, torch
from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.experiments.erm import digits_cnn
torch.manual_seed(0)
model = digits_cnn().eval()
model[0].register_forward_hook(lambda *a: time.sleep(0.2))
remover = FictitiousClassRemover(model)
print("started", flush=True)
remover.extract_features(digits_dataset(seed=0)["train"], batch_size=32, checkpoint_dir=sys.argv[1],
                         checkpoint_every=4, device=None)
"""


@pytest.mark.slow
def test_killed_extraction_resumes_to_the_uninterrupted_result(tmp_path):
    from hf_fcr.data import digits_dataset
    from hf_fcr.experiments.erm import digits_cnn

    proc = spawn(SLOW_EXTRACT, tmp_path / "parts")
    wait_for(proc, "started")
    deadline = time.time() + 120
    while len(list((tmp_path / "parts").glob("*.safetensors"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    torch.manual_seed(0)
    remover = FictitiousClassRemover(digits_cnn().eval())
    data = digits_dataset(seed=0)["train"]
    calls = []
    remover.model[0].register_forward_hook(lambda *a: calls.append(1))
    resumed = remover.extract_features(data, batch_size=32, resume_from=tmp_path / "parts", checkpoint_every=4)
    assert 0 < len(calls) < (len(data) + 31) // 32  # only the batches after the last saved part ran
    whole = remover.extract_features(data, batch_size=32)
    assert torch.equal(resumed.features, whole.features)
    assert torch.equal(resumed["label"], whole["label"])
    with pytest.raises(ValueError, match="another model, dataset"):
        remover.extract_features(data, batch_size=16, resume_from=tmp_path / "parts")


SLOW_SAVE = """
import sys, time, torch, timm
import safetensors.torch as st
from hf_fcr import FictitiousClassRemover
torch.manual_seed(1)
remover = FictitiousClassRemover(timm.create_model("test_resnet", num_classes=3))
real_save = st.save_file
def slow_save(*args, **kwargs):
    print("writing", flush=True)
    time.sleep(30)  # killed while the new checkpoint is being written
    return real_save(*args, **kwargs)
st.save_file = slow_save
remover.save_pretrained(sys.argv[1], overwrite=True)
"""


@pytest.mark.slow
def test_killed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    import timm

    torch.manual_seed(0)
    remover = FictitiousClassRemover(timm.create_model("test_resnet", num_classes=3))
    target = tmp_path / "model"
    remover.save_pretrained(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    proc = spawn(SLOW_SAVE, target)
    wait_for(proc, "writing")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = {p.name: p.read_bytes() for p in target.iterdir()}
    assert after == before  # the previous contents, byte for byte
    reloaded = FictitiousClassRemover.from_pretrained(str(target))
    assert all(
        torch.equal(a, b) for a, b in zip(reloaded.model.state_dict().values(), remover.model.state_dict().values())
    )


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


RESAVE = """
import sys, torch, timm
from hf_fcr import FictitiousClassRemover
removers = []
for seed in (0, 1):  # two different models, saved alternately over one folder
    torch.manual_seed(seed)
    removers.append(FictitiousClassRemover(timm.create_model("test_resnet", num_classes=3)))
print("saving", flush=True)
for i in range(int(sys.argv[2])):
    removers[i % 2].save_pretrained(sys.argv[1], overwrite=True)
"""


@pytest.mark.slow
def test_a_reader_never_sees_a_half_replaced_folder(tmp_path):
    """While another process re-saves two different models over one folder with overwrite=True, every load returns
    one of them, complete, or a clear error (the folder is missing for an instant, or the weights are not those
    the record was saved with); never the weights of one with the record of the other."""
    import timm

    from hf_fcr.config import EditRecordError
    from hf_fcr.head_edit import weights_digest

    expected, models = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(timm.create_model("test_resnet", num_classes=3))
        expected.append(weights_digest(models[-1]))
    target = tmp_path / "model"
    FictitiousClassRemover(models[1]).save_pretrained(target)
    proc = spawn(RESAVE, target, 60)
    wait_for(proc, "saving")
    outcomes = {"model 0": 0, "model 1": 0, "error": 0}
    while proc.poll() is None:
        try:
            loaded = FictitiousClassRemover.from_pretrained(str(target), backend="timm")
        except (OSError, EditRecordError):
            outcomes["error"] += 1
            continue
        outcomes[f"model {expected.index(weights_digest(loaded.model))}"] += 1  # ValueError: a third model
    assert proc.returncode == 0
    assert outcomes["model 0"] + outcomes["model 1"] > 0, outcomes
