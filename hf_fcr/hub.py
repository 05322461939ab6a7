"""I/O at the edge: load timm / transformers / plain-module checkpoints, save them (or the edit record alone) with
their ``fcr_config.json`` and card, and upload a folder to the Hub.

Nothing here knows the remover: loading returns a ``Checkpoint`` (the model, its preprocessing and its record), and
``FictitiousClassRemover.from_pretrained`` builds the remover from it. Saving is atomic: files are written to a
temporary folder beside the target, which is then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .card import model_card
from .config import EditRecordError, FCRConfig
from .constants import CARD_NAME, CONFIG_NAME, SAFE_WEIGHTS_NAME, WEIGHT_FILES

__all__ = ["Checkpoint", "library_of", "load_checkpoint", "read_record", "save_checkpoint", "upload_folder"]

BACKENDS = ("auto", "timm", "transformers", "pytorch")


@dataclass
class Checkpoint:
    """A loaded model with what the remover needs to know about it.

    Attributes:
        model: the model, in eval mode.
        transform: its preprocessing (list of PIL images -> ``[B, C, H, W]``), or None.
        transform_config: what ``transform`` does (part of the feature cache's key).
        class_names: a name per head output, when the checkpoint has them.
        name_or_path, revision: where it was loaded from.
        record: its ``fcr_config.json``, when it has one.
        edits_only: True when ``record``'s edits are NOT in ``model`` yet (an edits-only artifact: ``model`` is its
            base checkpoint); False when they are (a full edited checkpoint).
    """

    model: nn.Module
    transform: Callable[[list[Any]], torch.Tensor] | None
    transform_config: Any
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


def _read_json(name_or_path: str, filename: str, revision: str | None, token: Any) -> Any:
    """A JSON file from a local folder or a Hub repo, or None if it is not there."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        if not os.path.isfile(path):
            return None
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hf_hub_download(name_or_path, filename, revision=revision, token=token)
        except EntryNotFoundError:
            return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OSError(f"{filename} in {name_or_path} is corrupt: {err}.") from None


def read_record(name_or_path: str, revision: str | None = None, token: Any = None) -> FCRConfig | None:
    """The validated ``fcr_config.json`` of a folder or Hub repo, or None when it has none."""
    data = _read_json(name_or_path, CONFIG_NAME, revision, token)
    return None if data is None else FCRConfig.from_dict(data)


def _timm_transform(model: nn.Module) -> Any:
    import timm.data

    config = timm.data.resolve_data_config(model=model)
    transform = timm.data.create_transform(**config)

    def apply(images: list[Any]) -> torch.Tensor:
        return torch.stack([transform(img.convert("RGB")) for img in images])

    apply.config = config
    return apply


def _load_timm(name: str, revision: str | None) -> tuple[nn.Module, Any, list[str] | None]:
    import timm

    if os.path.isdir(name):
        source = "local-dir:" + name
    elif name.startswith(("hf-hub:", "hf_hub:")):
        source = name if revision is None else f"{name}@{revision}"
    else:
        source = "hf-hub:" + name + (f"@{revision}" if revision else "")
    try:
        model = timm.create_model(source, pretrained=True)
    except (RuntimeError, ValueError, KeyError) as err:
        raise OSError(f"could not load the timm checkpoint {name!r}: {err}") from err
    names = model.pretrained_cfg.get("label_names")
    return model.eval(), _timm_transform(model), list(names) if names else None


def _load_transformers(
    name: str, revision: str | None, trust_remote_code: bool, token: Any
) -> tuple[nn.Module, Any, list[str] | None]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, "token": token}
    try:
        model = AutoModelForImageClassification.from_pretrained(name, **kwargs)
    except (ValueError, KeyError, RuntimeError) as err:
        raise OSError(f"could not load the transformers checkpoint {name!r}: {err}") from err
    transform = None
    if _read_json(name, "preprocessor_config.json", revision, token) is not None:
        processor = AutoImageProcessor.from_pretrained(name, **kwargs)

        def transform(images: list[Any]) -> torch.Tensor:
            return processor([img.convert("RGB") for img in images], return_tensors="pt")["pixel_values"]

        transform.config = processor.to_dict()

    return model.eval(), transform, None


def _load_pytorch(name: str, model: nn.Module) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.path.join(name, SAFE_WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {SAFE_WEIGHTS_NAME} in {name}.")
    try:
        state = load_file(path)
    except SafetensorError as err:
        raise OSError(f"{path} is corrupt: {err}") from None
    model.load_state_dict(state)
    return model.eval()


def _has_weights(name: str, revision: str | None, token: Any) -> bool:
    if os.path.isdir(name):
        return any(os.path.isfile(os.path.join(name, f)) for f in WEIGHT_FILES)
    return _read_json(name, "config.json", revision, token) is not None


def _backend_of(name: str, revision: str | None, token: Any) -> str:
    if name.startswith(("hf-hub:", "hf_hub:", "timm/")):
        return "timm"
    config = _read_json(name, "config.json", revision, token)
    if config is None:
        raise OSError(
            f"{name} has no config.json: not a timm or transformers checkpoint (for a plain nn.Module, pass "
            "model= with its architecture)."
        )
    backend = "timm" if "architecture" in config else "transformers" if "model_type" in config else None
    if backend is None:
        raise OSError(f"cannot tell the library of {name}'s config.json (no 'architecture' or 'model_type').")
    return backend


def load_checkpoint(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    backend: str = "auto",
    trust_remote_code: bool = False,
    token: Any = None,
    model: nn.Module | None = None,
    transform: Callable[[list[Any]], torch.Tensor] | None = None,
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
    if not os.path.exists(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"no checkpoint folder at {name!r} (and it is not a Hub id: org/name).")
    if os.path.isfile(name):
        raise NotADirectoryError(f"{name!r} is a file; pass the checkpoint's folder or a Hub id.")
    record = None if name.startswith(("hf-hub:", "hf_hub:")) else read_record(name, revision, token)
    if record is not None and not _has_weights(name, revision, token):
        if not record.base_model_name_or_path:
            raise EditRecordError(f"{CONFIG_NAME} in {name} names no base_model_name_or_path to apply its edits to.")
        if backend == "auto" and record.library_name != "pytorch":
            backend = record.library_name
        base = load_checkpoint(
            record.base_model_name_or_path, record.revision, backend, trust_remote_code, token, model, transform
        )
        if base.record is not None and base.record.edits:
            raise EditRecordError("the base checkpoint of an edits-only artifact is itself edited; load it directly.")
        base.record, base.edits_only = record, True
        return base
    if backend == "auto":
        backend = "pytorch" if model is not None else _backend_of(name, revision, token)
    names = None
    if backend == "timm":
        loaded, default_transform, names = _load_timm(name, revision)
    elif backend == "transformers":
        loaded, default_transform, names = _load_transformers(name, revision, trust_remote_code, token)
    else:
        if model is None:
            raise ValueError("backend='pytorch' needs model= (an instance of the architecture to load weights into).")
        loaded, default_transform = _load_pytorch(name, model), None
    transform = transform if transform is not None else default_transform
    return Checkpoint(loaded, transform, getattr(transform, "config", None), names, name, revision, record)


def save_checkpoint(
    model: nn.Module,
    save_directory: str | os.PathLike,
    config: FCRConfig,
    class_names: Sequence[str],
    edits_only: bool = False,
    overwrite: bool = False,
    **card_info: Any,
) -> Path:
    """Write ``model`` in its own library's format (timm ``save_for_hf`` / transformers ``save_pretrained`` /
    ``model.safetensors`` for a plain module), ``fcr_config.json`` and a ``README.md`` card; with
    ``edits_only=True`` only the last two. ``card_info`` goes to ``card.model_card``.

    Returns:
        The folder written.

    Raises:
        FileExistsError: ``save_directory`` is a file, or a non-empty folder without ``overwrite=True``.
    """
    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; pass a folder path to save into.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} is not empty; pass overwrite=True to replace its contents.")
    library = config.library_name
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if not edits_only:
            if library == "timm":
                import timm.models

                model_config = {"label_names": list(class_names)}
                timm.models.save_for_hf(model, str(tmp), model_config=model_config, safe_serialization=True)
            elif library == "transformers":
                model.save_pretrained(tmp)
            else:
                from safetensors.torch import save_file

                state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
                save_file(state, tmp / SAFE_WEIGHTS_NAME)
        config.save_pretrained(tmp)
        card = model_card(config, "hf-fcr" if edits_only else library, target / CARD_NAME, **card_info)
        card.save(tmp / CARD_NAME)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished folder ``tmp`` to ``target``; the previous contents stay intact until the last rename."""
    if not target.exists():
        os.replace(tmp, target)
        return
    backup = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    token: Any = None,
    commit_message: str = "Upload model edited with hf-fcr",
    create_pr: bool = False,
) -> Any:
    """Create ``repo_id`` if needed and upload ``folder`` with ``huggingface_hub.HfApi``; returns the commit info."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, create_pr=create_pr)
