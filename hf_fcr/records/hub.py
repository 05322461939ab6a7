"""I/O at the edge: load timm / transformers / plain-module checkpoints, save them (or the edit record alone) with
their ``fcr_config.json`` and card, and upload a folder to the Hub.

Nothing here knows the remover: loading returns a ``Checkpoint`` (the model, its preprocessing and its record), and
``FictitiousClassRemover.from_pretrained`` builds the remover from it. Saving is atomic: files are written to a
temporary folder beside the target, which is then renamed into place.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from ..features.preprocess import processor_transform, timm_transform
from ..utils.constants import CARD_NAME, CONFIG_NAME, HEAD_EDITS_NAME, SAFE_WEIGHTS_NAME, WEIGHT_FILES
from ..utils.files import CorruptFileError, open_safetensors, read_json
from .card import model_card
from .config import EditRecordError, FCRConfig

# timm, transformers and huggingface_hub are imported where used: a timm user does not import transformers, nor a
# transformers user timm.

__all__ = [
    "Checkpoint",
    "check_replaceable",
    "library_of",
    "load_checkpoint",
    "read_record",
    "save_checkpoint",
    "upload_folder",
]

BACKENDS = ("auto", "timm", "transformers", "pytorch")


@dataclass
class Checkpoint:
    """A loaded model with what the remover needs to know about it.

    Attributes:
        model: the model, in eval mode.
        transform: its preprocessing (list of PIL images -> ``[B, C, H, W]``), or None.
        class_names: a name per head output, when the checkpoint has them.
        name_or_path, revision: where it was loaded from.
        record: its ``fcr_config.json``, when it has one.
        edits_only: True when ``record``'s edits are NOT in ``model`` yet (an edits-only artifact: ``model`` is its
            base checkpoint); False when they are (a full edited checkpoint).
    """

    model: nn.Module
    transform: Callable[[list[Any]], torch.Tensor] | None
    class_names: list[str] | None
    name_or_path: str
    revision: str | None
    record: FCRConfig | None = None
    edits_only: bool = False


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and isinstance(getattr(model, "pretrained_cfg", None), dict)


def _is_transformers(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


def library_of(model: nn.Module) -> str:
    """``"timm"``, ``"transformers"`` or ``"pytorch"`` (any other module)."""
    return "timm" if _is_timm(model) else "transformers" if _is_transformers(model) else "pytorch"


@dataclass(frozen=True)
class HubOptions:
    """Where Hub files come from: ``revision``, ``token``, ``cache_dir`` and ``local_files_only`` as in
    ``huggingface_hub.hf_hub_download`` (and every library's ``from_pretrained``)."""

    revision: str | None = None
    token: Any = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False


def _check_exists(name: str) -> None:
    """FileNotFoundError for a ``name`` that is a path (``.``, ``/``, ``~`` first, or more than one ``/``) with
    nothing there: it cannot be a Hub id either."""
    if not os.path.exists(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"no checkpoint folder at {name!r} (and it is not a Hub id: org/name).")


def _resolve(name_or_path: str, filename: str, hub: HubOptions) -> str | None:
    """The local path of ``filename`` in a folder or a Hub repo (downloaded), or None if it is not there. A path
    with no folder there (one removed since it was checked, too) is a FileNotFoundError, not a Hub lookup."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    _check_exists(name_or_path)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(
            name_or_path,
            filename,
            revision=hub.revision,
            token=hub.token,
            cache_dir=hub.cache_dir,
            local_files_only=hub.local_files_only,
        )
    except EntryNotFoundError:
        return None


def _read_json(name_or_path: str, filename: str, hub: HubOptions) -> Any:
    """A JSON object from a folder or a Hub repo, or None if the file is not there (CorruptFileError if broken)."""
    path = _resolve(name_or_path, filename, hub)
    fix = f"the checkpoint {name_or_path} is damaged: download or save it again."
    return None if path is None else read_json(path, filename, fix)


def read_record(name_or_path: str, hub: HubOptions = HubOptions()) -> FCRConfig | None:
    """The validated ``fcr_config.json`` of a folder or Hub repo, or None when it has none."""
    path = _resolve(name_or_path, CONFIG_NAME, hub)
    if path is None:
        return None
    record = FCRConfig.from_file(path)
    if record.head_edits:  # the head-level edits' tensors, checked against the record's checksums
        record.attach_tensors(_resolve(name_or_path, HEAD_EDITS_NAME, hub))
    return record


def check_artifact(folder: str | os.PathLike, expected: FCRConfig | None = None) -> FCRConfig:
    """Read a folder about to be uploaded as a loader would: its record (validated), the head-level edits' tensors
    (present and matching their checksums) and, given ``expected``, the same edits as those.

    Raises:
        FileNotFoundError: the folder has no ``fcr_config.json``.
        EditRecordError: a malformed record, missing or tampered tensors, or edits other than ``expected``'s.
    """
    record = read_record(os.fspath(folder))
    if record is None:
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: push folders saved by hf-fcr.")
    if expected is not None and [e.to_dict() for e in record.edits] != [e.to_dict() for e in expected.edits]:
        raise EditRecordError(f"the {CONFIG_NAME} about to be uploaded does not hold the edits of the model.")
    return record


def _load_timm(name: str, hub: HubOptions) -> tuple[nn.Module, Any, list[str] | None]:
    import timm

    if not os.path.isdir(name):  # download with the Hub options (timm's own download takes no token), then load
        repo = name.split(":", 1)[1] if name.startswith(("hf-hub:", "hf_hub:")) else name
        if "@" in repo:
            repo, revision = repo.split("@", 1)
            hub = HubOptions(revision, hub.token, hub.cache_dir, hub.local_files_only)
        config_path = _resolve(repo, "config.json", hub)
        if config_path is None:
            raise FileNotFoundError(f"the Hub repo {repo!r} has no config.json: not a timm checkpoint.")
        if not any(_resolve(repo, f, hub) for f in ("model.safetensors", "pytorch_model.bin")):
            raise FileNotFoundError(f"the Hub repo {repo!r} has no model.safetensors or pytorch_model.bin.")
        name = os.path.dirname(config_path)
    try:
        model = timm.create_model("local-dir:" + name, pretrained=True)
    except (RuntimeError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise CorruptFileError(
            f"could not load the timm checkpoint {name!r} ({type(err).__name__}: {err}): download or save it again."
        ) from err
    names = model.pretrained_cfg.get("label_names")
    return model.eval(), timm_transform(model), list(names) if names else None


def _load_transformers(name: str, trust_remote_code: bool, hub: HubOptions) -> tuple[nn.Module, Any, list[str] | None]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    kwargs = {
        "revision": hub.revision,
        "token": hub.token,
        "cache_dir": hub.cache_dir,
        "local_files_only": hub.local_files_only,
        "trust_remote_code": trust_remote_code,
    }
    try:
        model = AutoModelForImageClassification.from_pretrained(name, **kwargs)
    except (ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as err:
        raise CorruptFileError(
            f"could not load the transformers checkpoint {name!r} ({type(err).__name__}: {err}): download or save "
            "it again."
        ) from err
    transform = None
    if _read_json(name, "preprocessor_config.json", hub) is not None:
        transform = processor_transform(AutoImageProcessor.from_pretrained(name, **kwargs))
    return model.eval(), transform, None


def _load_pytorch(name: str, model: nn.Module) -> nn.Module:
    path = os.path.join(name, SAFE_WEIGHTS_NAME)
    with open_safetensors(path, "the weights", f"save the model to {name} again.") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CorruptFileError(f"{path} does not fit the model= architecture: {err}") from None
    return model.eval()


def _has_weights(name: str, hub: HubOptions) -> bool:
    if os.path.isdir(name):
        return any(os.path.isfile(os.path.join(name, f)) for f in WEIGHT_FILES)
    return _read_json(name, "config.json", hub) is not None


def _backend_of(name: str, hub: HubOptions) -> str:
    if name.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return "timm"
    config = _read_json(name, "config.json", hub)
    if config is None:
        raise OSError(
            f"{name} has no config.json: not a timm or transformers checkpoint (for a plain nn.Module, pass "
            "model= with its architecture)."
        )
    is_str = lambda key: isinstance(config.get(key), str)  # noqa: E731
    backend = "timm" if is_str("architecture") else "transformers" if is_str("model_type") else None
    if backend is None:
        raise OSError(f"cannot tell the library of {name}'s config.json (no 'architecture' or 'model_type').")
    return backend


def _same_place(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _base_name(name: str, base_name: str | None, seen: tuple[str, ...]) -> str:
    """The base an edits-only artifact at ``name`` names: a relative path is looked for beside the artifact first; a
    base that leads back to the artifact (or to one already ``seen`` on the way) is refused."""
    if not base_name:
        raise EditRecordError(f"{CONFIG_NAME} in {name} names no base_model_name_or_path to apply its edits to.")
    beside = os.path.join(name, base_name)
    if os.path.isdir(name) and not os.path.isabs(base_name) and os.path.isdir(beside):
        base_name = os.path.normpath(beside)  # a relative base path is relative to the artifact first
    if base_name in (name, *seen) or any(_same_place(base_name, n) for n in (name, *seen)):
        raise EditRecordError(
            f"{CONFIG_NAME} in {name} names {base_name!r} as its base, which leads back to itself: an edits-only "
            "artifact needs a base checkpoint that holds weights."
        )
    return base_name


def _load_model(
    name: str, hub: HubOptions, backend: str, trust_remote_code: bool, model: nn.Module | None
) -> tuple[nn.Module, Any, list[str] | None]:
    """``(model, its preprocessing or None, its class names or None)`` through ``backend`` (``"auto"``: the one
    ``config.json`` names; ``"pytorch"`` with ``model``)."""
    if backend == "auto":
        backend = "pytorch" if model is not None else _backend_of(name, hub)
    if backend == "timm":
        return _load_timm(name, hub)
    if backend == "transformers":
        return _load_transformers(name, trust_remote_code, hub)
    if model is None:
        raise ValueError("backend='pytorch' needs model= (an instance of the architecture to load weights into).")
    return _load_pytorch(name, model), None, None


def load_checkpoint(
    name_or_path: str | os.PathLike,
    hub: HubOptions = HubOptions(),
    backend: str = "auto",
    trust_remote_code: bool = False,
    model: nn.Module | None = None,
    transform: Callable[[list[Any]], torch.Tensor] | None = None,
    _seen: tuple[str, ...] = (),
) -> Checkpoint:
    """Load a checkpoint and its edit record (see ``FictitiousClassRemover.from_pretrained``).

    An edits-only artifact (a record without weights) loads its base checkpoint instead, with ``edits_only=True``:
    the caller checks and applies the record's edits.

    Raises:
        ValueError: an unknown ``backend``, or ``backend="pytorch"`` without ``model``.
        OSError: a missing, corrupt or unrecognised checkpoint (FileNotFoundError, NotADirectoryError included).
        EditRecordError: a malformed record, or an edits-only artifact that names no base.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    name = os.fspath(name_or_path)
    _check_exists(name)
    if os.path.isfile(name):
        raise NotADirectoryError(f"{name!r} is a file; pass the checkpoint's folder or a Hub id.")
    record = None if name.startswith(("hf-hub:", "hf_hub:")) else read_record(name, hub)
    if record is not None and not _has_weights(name, hub):
        base_name = _base_name(name, record.base_model_name_or_path, _seen)
        base_hub = HubOptions(record.revision, hub.token, hub.cache_dir, hub.local_files_only)
        base = load_checkpoint(base_name, base_hub, backend, trust_remote_code, model, transform, (name, *_seen))
        if base.edits_only or (base.record is not None and base.record.edits):
            raise EditRecordError("the base checkpoint of an edits-only artifact is itself edited; load it directly.")
        found = library_of(base.model)
        if found != record.library_name:
            raise EditRecordError(
                f"{CONFIG_NAME} in {name} was made for a {record.library_name} model, but its base {base_name!r} is a "
                f"{found} model: the record does not belong to this base."
            )
        base.record, base.edits_only = record, True
        return base
    loaded, default_transform, names = _load_model(name, hub, backend, trust_remote_code, model)
    transform = transform if transform is not None else default_transform
    # a local folder is recorded by its absolute path: records name a base that resolves from any working directory
    where = os.path.abspath(name) if os.path.isdir(name) else name
    return Checkpoint(loaded, transform, names, where, hub.revision, record)


def save_checkpoint(
    model: nn.Module,
    save_directory: str | os.PathLike,
    config: FCRConfig,
    class_names: Sequence[str],
    edits_only: bool = False,
    overwrite: bool = False,
    processor: Any = None,
    files: dict[str, bytes] | None = None,
    **card_info: Any,
) -> Path:
    """Write ``model`` in its own library's format (timm ``save_for_hf`` / transformers ``save_pretrained`` /
    ``model.safetensors`` for a plain module; a transformers ``processor`` beside it), ``fcr_config.json`` and a
    ``README.md`` card; with ``edits_only=True`` only the last two (and the new heads of head-level edits).
    ``files`` (name -> bytes, e.g. figures the card links) are written beside them; ``card_info`` goes to
    ``card.model_card``.

    Returns:
        The folder written.

    Raises:
        FileExistsError: ``save_directory`` is a file, or a non-empty folder without ``overwrite=True``.
    """
    config.to_json_string()  # a record its own reader would refuse (a NaN metric...) is refused before any write
    if edits_only and not config.base_model_name_or_path:
        raise ValueError(
            "an edits-only artifact names the base model its edits apply to, and this model names none (a plain "
            "module): pass base_model_name_or_path= when wrapping it, or save the full checkpoint."
        )
    # through a symbolic link: the folder it points to is replaced (the link stays, and still resolves)
    target = Path(os.path.realpath(save_directory)) if os.path.islink(save_directory) else Path(save_directory)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; pass a folder path to save into.")
    base = config.base_model_name_or_path
    if edits_only and base and target.exists() and os.path.exists(base):
        if os.path.samefile(base, target) or Path(os.path.realpath(base)).is_relative_to(os.path.realpath(target)):
            raise ValueError(
                f"{target} holds the base checkpoint these edits apply to: saving the edits alone there would delete "
                "the weights they depend on. Save them to another folder."
            )
    check_replaceable(target, overwrite)
    library = config.library_name
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))
    try:
        if not edits_only:
            if library == "timm":
                import timm.models

                model_config = {"label_names": list(class_names)}
                timm.models.save_for_hf(model, str(tmp), model_config=model_config, safe_serialization=True)
            elif library == "transformers":
                model.save_pretrained(tmp)
                if processor is not None:  # pipeline("image-classification", model=<folder>) needs it
                    processor.save_pretrained(tmp)
            else:
                state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
                save_file(state, tmp / SAFE_WEIGHTS_NAME)
        for name, data in (files or {}).items():
            (tmp / name).write_bytes(data)
        config.save_pretrained(tmp, include_base=not edits_only)
        card = model_card(config, "hf-fcr" if edits_only else library, target / CARD_NAME, **card_info)
        card.save(tmp / CARD_NAME)
        _apply_umask(tmp)
        _replace_dir(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def check_replaceable(target: str | os.PathLike, overwrite: bool, option: str = "overwrite=True") -> None:
    """Refuse to write into ``target`` when it holds anything that a save would replace without ``overwrite``, and,
    with it, anything but an hf-fcr checkpoint (a folder with ``fcr_config.json``): a save never deletes a folder
    that hf-fcr did not write. ``option``: how the caller spells overwriting (the CLI's ``--overwrite``).

    Raises:
        FileExistsError: naming what is there and the fix.
    """
    target = Path(target)
    if not target.is_dir():
        return
    names = sorted(p.name for p in target.iterdir())
    if not names:
        return
    if not overwrite:
        raise FileExistsError(f"{target} is not empty; pass {option} to replace its contents.")
    if not (target / CONFIG_NAME).is_file():
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise FileExistsError(
            f"{target} holds files that are not an hf-fcr checkpoint ({shown}; no {CONFIG_NAME}): {option} "
            "replaces only a folder that hf-fcr saved. Choose another folder, or empty this one yourself."
        )


def _apply_umask(folder: Path) -> None:
    """Give the folder and its files the permissions the user's umask gives new files (mkdtemp makes them 0700)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _, files in os.walk(folder):
        os.chmod(root, 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~umask)


def _replace_dir(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished folder ``tmp`` to ``target``. Without ``overwrite`` the rename is the only step, and it
    fails if another writer created a non-empty ``target`` meanwhile (exclusive creation); with it, the previous
    contents stay intact until the last rename."""
    if not overwrite or not target.exists():
        try:
            os.rename(tmp, target)  # onto a missing or empty folder only
        except OSError as err:
            raise FileExistsError(
                f"{target} was written by someone else meanwhile; pass overwrite=True to replace it ({err})."
            ) from None
        return
    if _exchange(tmp, target):  # one atomic step: the old folder now sits at tmp's hidden name
        shutil.rmtree(tmp, ignore_errors=True)
        return
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")  # where exchanging is not supported
    os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where it is not supported."""

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no glibc 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: a filesystem or kernel without it
        return False
    raise OSError(errno, os.strerror(errno), str(b))


def _remove_leftovers(target: Path) -> None:
    """Remove the hidden folders that killed saves to ``target`` left beside it (``.name.tmp-PID-*``,
    ``.name.old-PID``), when their process is gone; a save in progress in a live process keeps its own."""
    if not target.parent.is_dir():
        return
    for path in target.parent.glob(f".{glob_escape(target.name)}.*"):
        rest = path.name[len(target.name) + 2 :]
        kind, _, tail = rest.partition("-")
        pid = tail.split("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and path.is_dir() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload model edited with hf-fcr",
    commit_description: str | None = None,
    create_pr: bool = False,
    token: Any = None,
) -> Any:
    """Create ``repo_id`` if needed (and the ``revision`` branch) and upload ``folder`` as it is with
    ``huggingface_hub.HfApi``; returns the commit info.

    Raises:
        ValueError: ``private=True`` and ``repo_id`` exists as a public repository (nothing is uploaded).
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if private and not api.model_info(repo_id).private:  # create_repo leaves an existing repo as it is
        raise ValueError(
            f"{repo_id} already exists and is public: pushing with private=True would publish the files anyway. "
            "Make the repository private on the Hub first, push with private=False, or choose another repo_id."
        )
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        revision=revision,
        commit_message=commit_message,
        commit_description=commit_description,
        create_pr=create_pr,
    )
