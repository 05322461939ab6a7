"""Saving and loading lose nothing: a save never replaces what another writer or a later artifact depends on, edits
reload and revert bit-exact, a killed save leaves the previous folder intact, and damaged files are named."""

import json
import os
import signal
import stat
import sys

import pytest
import timm
import torch
from utils import file_bytes, snapshot, spawn, state_equal, timm_base, wait_for

from hf_fcr import FeatureSet, FictitiousClassRemover, WeightEdit
from hf_fcr.records.config import EditRecordError
from hf_fcr.utils.constants import CONFIG_NAME
from hf_fcr.utils.files import CorruptFileError


def test_edits_only_save_onto_its_own_base_is_refused(tmp_path):
    base = timm_base(tmp_path)
    remover = FictitiousClassRemover.from_pretrained(str(base))
    feats = FeatureSet(torch.rand(30, remover.head.in_features), {"label": torch.arange(30) % 3})
    remover.remove_class(1, feats, r=0.5)
    before = file_bytes(base)
    with pytest.raises(ValueError, match="holds the base checkpoint"):
        remover.save_pretrained(base, edits_only=True, overwrite=True)
    assert file_bytes(base) == before


def test_overwrite_replaces_only_a_folder_hf_fcr_saved(tmp_path, digits_model):
    """overwrite=True never deletes a folder that hf-fcr did not write (a source tree, notes): it names what is
    there and leaves it, and still replaces an hf-fcr checkpoint."""
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    (notes / "train.py").write_text("print()")
    remover = FictitiousClassRemover(digits_model)
    with pytest.raises(FileExistsError, match=r"not an hf-fcr checkpoint \(todo.txt, train.py; no fcr_config.json\)"):
        remover.save_pretrained(notes, overwrite=True)
    assert file_bytes(notes) == {"todo.txt": b"mine", "train.py": b"print()"}
    ours = remover.save_pretrained(tmp_path / "ours")
    remover.save_pretrained(ours, overwrite=True)  # an hf-fcr checkpoint is replaced
    assert (ours / CONFIG_NAME).is_file()


def test_an_overwrite_stopped_at_any_point_leaves_a_checkpoint_and_its_leftovers_go_next_time(
    tmp_path, digits_model, monkeypatch
):
    """The folder is swapped in one step: a save stopped right after it (here: the removal of the old folder
    raises, as a kill would stop it) leaves the new checkpoint at the target, never no checkpoint; the hidden
    folders that killed saves leave (their process gone) are removed by the next save, and a live process' are
    kept."""
    import subprocess

    import hf_fcr.records.hub as hub

    remover = FictitiousClassRemover(digits_model)
    target = remover.save_pretrained(tmp_path / "model")
    feats = FeatureSet(torch.rand(20, remover.head.in_features), {"label": torch.arange(20) % 10})
    remover.remove_class(1, feats)

    def killed(path, ignore_errors=False):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(hub.shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            remover.save_pretrained(target, overwrite=True)
    saved = json.loads((target / CONFIG_NAME).read_text())["edits"]  # the new checkpoint, complete
    assert [e["col"] for e in saved] == [e.col for e in remover.edits] and (target / "model.safetensors").is_file()
    (leftover,) = [p for p in tmp_path.iterdir() if p.name.startswith(".model.tmp-")]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f".model.tmp-{int(dead.stdout)}-abc"
    leftover.rename(gone)
    live = tmp_path / f".model.old-{os.getpid()}"
    live.mkdir()
    remover.save_pretrained(target, overwrite=True)
    assert not gone.exists() and live.is_dir()


def test_a_competing_writer_is_never_replaced_without_overwrite(tmp_path):
    from hf_fcr.records.hub import _replace_dir

    target, tmp = tmp_path / "model", tmp_path / ".model.tmp"
    target.mkdir()
    (target / "theirs.txt").write_text("written first")
    tmp.mkdir()
    (tmp / "ours.txt").write_text("written second")
    with pytest.raises(FileExistsError, match="written by someone else"):
        _replace_dir(tmp, target, overwrite=False)
    assert file_bytes(target) == {"theirs.txt": b"written first"}


def test_saved_folders_follow_the_umask(tmp_path, digits_model):
    old = os.umask(0o022)
    try:
        FictitiousClassRemover(digits_model).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()} == {0o644}


def test_a_weight_edited_twice_reloads_and_reverts_bit_exact(tmp_path, digits_model):
    remover = FictitiousClassRemover(digits_model)
    base = snapshot(remover.model)
    w = float(remover.head.weight.detach()[2, 5])
    first = WeightEdit(remover.param_name, 2, 5, w, 0.25, 1.0)
    second = WeightEdit(remover.param_name, 2, 5, 0.25, -0.75, 1.0)
    remover.apply_edits([first, second])
    edited = snapshot(remover.model)
    remover.save_pretrained(tmp_path / "m")
    again = FictitiousClassRemover.from_pretrained(str(tmp_path / "m"), model=type(digits_model)(*digits_model))
    assert state_equal(snapshot(again.model), edited)
    again.revert()
    assert state_equal(snapshot(again.model), base)


def test_a_folder_saved_without_edits_is_the_base_of_later_edits(tmp_path):
    base = timm_base(tmp_path)
    FictitiousClassRemover.from_pretrained(str(base)).save_pretrained(tmp_path / "plain")
    remover = FictitiousClassRemover.from_pretrained(str(tmp_path / "plain"))
    feats = FeatureSet(torch.rand(30, remover.head.in_features), {"label": torch.arange(30) % 3})
    remover.remove_class(2, feats)
    remover.save_pretrained(tmp_path / "edits", edits_only=True)
    assert json.loads((tmp_path / "edits" / CONFIG_NAME).read_text())["base_model_name_or_path"] == str(
        tmp_path / "plain"
    )
    reloaded = FictitiousClassRemover.from_pretrained(str(tmp_path / "edits"))
    assert state_equal(snapshot(reloaded.model), snapshot(remover.model))


def test_truncated_or_garbage_files_are_named(tmp_path, digits_model, digits):
    remover = FictitiousClassRemover(digits_model)
    remover.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptFileError, match="model.safetensors"):
        FictitiousClassRemover.from_pretrained(str(tmp_path / "m"), model=type(digits_model)(*digits_model))
    remover.extract_features(digits["test"], checkpoint_dir=tmp_path / "p", checkpoint_every=2, device=None)
    part = next((tmp_path / "p").glob("features.rank0.part*.safetensors"))
    part.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match=part.name):
        remover.extract_features(digits["test"], resume_from=tmp_path / "p", checkpoint_every=2, device=None)


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
def test_killed_save_leaves_the_previous_checkpoint_intact(tmp_path):

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


@pytest.mark.slow
def test_a_reader_never_sees_a_half_replaced_folder(tmp_path):
    """While another process re-saves two different models over one folder with overwrite=True, every load returns
    one of them, complete, or a clear error (the folder is missing for an instant, or the weights are not those
    the record was saved with); never the weights of one with the record of the other."""

    from hf_fcr.core.head_edit import weights_digest

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
