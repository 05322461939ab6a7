"""Checkpointed passes: a resumed run never mixes data from another run or source, and a killed extraction or
collect resumes to exactly the uninterrupted result (real kills of real processes)."""

import signal
import time

import pytest
import torch
from utils import spawn, wait_for

from hf_fcr import FictitiousClassRemover


def _loader(offset=0.0, n=64):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + offset
    return torch.utils.data.DataLoader([{"image": x[i], "label": i % 10} for i in range(n)], batch_size=8)


def test_resuming_on_other_data_from_a_dataloader_or_stream_is_refused(tmp_path, digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    remover.extract_features(_loader(), checkpoint_dir=tmp_path / "dl", checkpoint_every=2, device=None)
    with pytest.raises(ValueError, match="belongs to another"):
        remover.extract_features(_loader(offset=1.0), resume_from=tmp_path / "dl", checkpoint_every=2, device=None)
    stream = digits["test"].to_iterable_dataset()
    remover.collect(stream, checkpoint_dir=tmp_path / "st", checkpoint_every=2, device=None)
    other = digits["train"].to_iterable_dataset()
    with pytest.raises(ValueError, match="belongs to another"):
        remover.collect(other, resume_from=tmp_path / "st", checkpoint_every=2, device=None)


def test_parts_of_an_older_run_are_never_read(tmp_path, digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    folder = tmp_path / "parts"
    remover.extract_features(digits["train"], batch_size=16, checkpoint_dir=folder, checkpoint_every=1, device=None)
    small = digits["test"].select(range(200))
    whole = remover.extract_features(small, batch_size=16, checkpoint_dir=folder, checkpoint_every=1, device=None)
    resumed = remover.extract_features(small, batch_size=16, resume_from=folder, checkpoint_every=1, device=None)
    assert len(resumed) == 200
    assert torch.equal(resumed.features, whole.features)


def test_a_checkpoint_of_two_processes_is_refused_by_one(tmp_path, digits_model, digits, monkeypatch):
    """Each process keeps its own share of the rows: one process resuming from the files of two would read rank 0's
    share alone (47 of 48 rows were dropped). The number of processes is part of the run's identity."""
    import hf_fcr.utils.distributed as distributed

    remover = FictitiousClassRemover(digits_model)
    data = digits["test"].select(range(96))
    with monkeypatch.context() as patch:  # rank 0 of two: its half of the rows, its files
        patch.setattr(distributed, "process_info", lambda: (0, 2))
        remover.extract_features(data, batch_size=16, checkpoint_dir=tmp_path, checkpoint_every=1, gather=False,
                                 device=None)  # fmt: skip
    with pytest.raises(ValueError, match="number of processes"):
        remover.extract_features(data, batch_size=16, resume_from=tmp_path, checkpoint_every=1, device=None)


def test_resume_from_a_missing_folder_is_an_error(tmp_path, digits_model, digits):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FictitiousClassRemover(digits_model).collect(digits["test"], resume_from=tmp_path / "nope", device=None)


def test_checkpoint_every_zero_is_refused(digits_model, digits):
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        FictitiousClassRemover(digits_model).extract_features(digits["test"], checkpoint_every=0)


SLOW_COLLECT = """
import sys, time, torch
from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.demo.erm import digits_cnn
torch.manual_seed(0)
model = digits_cnn().eval()
slow = lambda *a: time.sleep(0.2)  # a long run: 0.2 s per batch
model[0].register_forward_hook(slow)
remover = FictitiousClassRemover(model)
data = digits_dataset(seed=0)["train"]
print("started", flush=True)
remover.collect(data, batch_size=32, rows=[1, 4], checkpoint_dir=sys.argv[1], checkpoint_every=5, device=None)
"""


SLOW_EXTRACT = """
import sys, time, torch
from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.demo.erm import digits_cnn
torch.manual_seed(0)
model = digits_cnn().eval()
model[0].register_forward_hook(lambda *a: time.sleep(0.2))
remover = FictitiousClassRemover(model)
print("started", flush=True)
remover.extract_features(digits_dataset(seed=0)["train"], batch_size=32, checkpoint_dir=sys.argv[1],
                         checkpoint_every=4, device=None)
"""


def _counting_remover():
    """The killed processes' model and data again, with a list that counts the batches the backbone runs."""
    from hf_fcr.data import digits_dataset
    from hf_fcr.demo.erm import digits_cnn

    torch.manual_seed(0)
    remover = FictitiousClassRemover(digits_cnn().eval())
    calls = []
    remover.model[0].register_forward_hook(lambda *a: calls.append(1))
    return remover, digits_dataset(seed=0)["train"], calls


@pytest.mark.slow
def test_killed_collect_resumes_to_the_uninterrupted_result(tmp_path):
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

    remover, data, calls = _counting_remover()
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


@pytest.mark.slow
def test_killed_extraction_resumes_to_the_uninterrupted_result(tmp_path):
    proc = spawn(SLOW_EXTRACT, tmp_path / "parts")
    wait_for(proc, "started")
    deadline = time.time() + 120
    while len(list((tmp_path / "parts").glob("*.safetensors"))) < 2 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    remover, data, calls = _counting_remover()
    resumed = remover.extract_features(data, batch_size=32, resume_from=tmp_path / "parts", checkpoint_every=4)
    assert 0 < len(calls) < (len(data) + 31) // 32  # only the batches after the last saved part ran
    whole = remover.extract_features(data, batch_size=32)
    assert torch.equal(resumed.features, whole.features)
    assert torch.equal(resumed["label"], whole["label"])
    with pytest.raises(ValueError, match="another model, dataset"):
        remover.extract_features(data, batch_size=16, resume_from=tmp_path / "parts")
