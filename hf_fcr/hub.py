"""I/O at the edge: load timm / transformers checkpoints, save edited checkpoints (or the edits alone) with their
``fcr_config.json`` and model card, and push them to the Hub.

Saving is atomic: files are written to a temporary folder beside the target, which is then renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import __version__
from .edit import WeightEdit

if TYPE_CHECKING:
    from .remover import FictitiousClassRemover

__all__ = ["CONFIG_NAME", "FCRConfig", "load_pretrained", "push_to_hub", "save_pretrained"]

CONFIG_NAME = "fcr_config.json"
CARD_NAME = "README.md"
SAFE_WEIGHTS_NAME = "model.safetensors"
TAGS = ["hf-fcr", "model-editing"]
_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "model.safetensors.index.json",
)
_EDIT_KEYS = {
    "param": str,
    "row": int,
    "col": int,
    "old_value": float,
    "new_value": float,
    "r": float,
}


class EditRecordError(ValueError):
    """An ``fcr_config.json`` (or an edit in it) is malformed or does not match the model."""


@dataclass
class FCRConfig:
    """The edit record saved as ``fcr_config.json`` (peft-style: names its base model, holds only what changed)."""

    base_model_name_or_path: str | None = None
    revision: str | None = None
    library_name: str = "pytorch"
    edits: list[WeightEdit] = field(default_factory=list)
    fcr_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "base_model_name_or_path": self.base_model_name_or_path,
            "revision": self.revision,
            "library_name": self.library_name,
            "fcr_version": self.fcr_version,
            "edits": [e.to_dict() for e in self.edits],
        }

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> FCRConfig:
        """Validate types, ranges and finiteness of every field before use (raises EditRecordError)."""
        if not isinstance(data, dict):
            raise EditRecordError(f"{CONFIG_NAME} must hold a JSON object, got {type(data).__name__}.")
        edits_raw = data.get("edits")
        if not isinstance(edits_raw, list):
            raise EditRecordError(f"{CONFIG_NAME} needs an 'edits' list.")
        for key in ("base_model_name_or_path", "revision"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise EditRecordError(f"{key!r} must be a string or null, got {data[key]!r}.")
        edits = [_parse_edit(i, e) for i, e in enumerate(edits_raw)]
        known = {"base_model_name_or_path", "revision", "library_name", "fcr_version", "edits"}
        return cls(
            base_model_name_or_path=data.get("base_model_name_or_path"),
            revision=data.get("revision"),
            library_name=str(data.get("library_name") or "pytorch"),
            edits=edits,
            fcr_version=str(data.get("fcr_version", "unknown")),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FCRConfig:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as err:
            raise EditRecordError(f"{path!s} is not valid JSON: {err}.") from None
        return cls.from_dict(data)


def _parse_edit(index: int, raw: Any) -> WeightEdit:
    if not isinstance(raw, dict):
        raise EditRecordError(f"edit {index} must be an object, got {type(raw).__name__}.")
    for key, kind in _EDIT_KEYS.items():
        value = raw.get(key)
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise EditRecordError(f"edit {index}: {key!r} must be a finite {kind.__name__}, got {value!r}.")
    if raw["row"] < 0 or raw["col"] < 0:
        raise EditRecordError(f"edit {index}: row and col must be non-negative, got [{raw['row']}, {raw['col']}].")
    if not 0.0 <= raw["r"] <= 1.0:
        raise EditRecordError(f"edit {index}: r must be in [0, 1], got {raw['r']}.")
    for key in ("score", "orthogonal_value"):
        value = raw.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        ):
            raise EditRecordError(f"edit {index}: {key!r} must be a finite number or null, got {value!r}.")
    if raw.get("class_index") is not None and (
        isinstance(raw["class_index"], bool) or not isinstance(raw["class_index"], int)
    ):
        raise EditRecordError(f"edit {index}: 'class_index' must be an integer or null.")
    for key in ("class_name", "fictitious"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise EditRecordError(f"edit {index}: {key!r} must be a string or null.")
    return WeightEdit.from_dict(raw)


def check_edits_match(model: nn.Module, edits: list[WeightEdit], expect: str) -> None:
    """Every edit's parameter exists with the right shape and holds ``old_value`` (``expect="old"``) or
    ``new_value`` (``"new"``); raises EditRecordError naming the first mismatch, before anything changes."""
    params = dict(model.named_parameters())
    pending: dict[tuple[str, int, int], float] = {}
    for i, e in enumerate(edits):
        param = params.get(e.param)
        if param is None:
            raise EditRecordError(
                f"edit {i}: the model has no parameter {e.param!r}: it is not the edited base model."
            )
        if param.ndim != 2 or e.row >= param.shape[0] or e.col >= param.shape[1]:
            raise EditRecordError(
                f"edit {i}: [{e.row}, {e.col}] is out of bounds for {e.param} of shape {tuple(param.shape)}."
            )
        key = (e.param, e.row, e.col)
        if expect == "old":
            current = pending.get(key, float(param.detach()[e.row, e.col]))
            wanted = e.old_value
            pending[key] = e.new_value
        else:
            current, wanted = float(param.detach()[e.row, e.col]), e.new_value
        rounded = float(torch.tensor(wanted, dtype=torch.float64).to(param.dtype))
        if current != rounded and not (expect == "new" and key in pending):
            raise EditRecordError(
                f"edit {i}: {e.param}[{e.row}, {e.col}] is {current!r} but the record expects {expect} value "
                f"{wanted!r}: the checkpoint is not the one these edits were made for (check the base model and "
                "revision)."
            )
        if expect == "new":
            pending[key] = wanted


# ----------------------------------------------------------------------------------------------------- loading


def _is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.") and isinstance(getattr(model, "pretrained_cfg", None), dict)


def _is_transformers(model: nn.Module) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


def library_of(model: nn.Module) -> str:
    return "timm" if _is_timm(model) else "transformers" if _is_transformers(model) else "pytorch"


def _read_config(name_or_path: str, filename: str, revision: str | None, token: Any) -> dict | None:
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
    if _read_config(name, "preprocessor_config.json", revision, token) is not None:
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


def load_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    backend: str = "auto",
    trust_remote_code: bool = False,
    token: Any = None,
    model: nn.Module | None = None,
    **kwargs: Any,
) -> FictitiousClassRemover:
    """``FictitiousClassRemover.from_pretrained``: see there."""
    from .remover import FictitiousClassRemover

    if backend not in ("auto", "timm", "transformers", "pytorch"):
        raise ValueError(f"backend must be 'auto', 'timm', 'transformers' or 'pytorch', got {backend!r}.")
    name = os.fspath(name_or_path)
    if not os.path.exists(name) and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise FileNotFoundError(f"no checkpoint folder at {name!r} (and it is not a Hub id: org/name).")
    if os.path.isfile(name):
        raise NotADirectoryError(f"{name!r} is a file; pass the checkpoint's folder or a Hub id.")
    record_data = None if name.startswith(("hf-hub:", "hf_hub:")) else _read_config(name, CONFIG_NAME, revision, token)
    record = FCRConfig.from_dict(record_data) if record_data is not None else None
    if record is None:
        edits_only = False
    elif os.path.isdir(name):
        edits_only = not any(os.path.isfile(os.path.join(name, f)) for f in _WEIGHT_FILES)
    else:
        edits_only = _read_config(name, "config.json", revision, token) is None
    if edits_only:
        # an edits-only artifact: load its base checkpoint, then re-apply the edits
        if not record.base_model_name_or_path:
            raise EditRecordError(f"{CONFIG_NAME} in {name} names no base_model_name_or_path to apply its edits to.")
        remover = load_pretrained(
            record.base_model_name_or_path,
            revision=record.revision,
            backend=backend if backend != "auto" or record.library_name == "pytorch" else record.library_name,
            trust_remote_code=trust_remote_code,
            token=token,
            model=model,
            **kwargs,
        )
        if remover.edits:
            raise EditRecordError("the base checkpoint of an edits-only artifact is itself edited; load it directly.")
        check_edits_match(remover.model, record.edits, "old")
        remover._apply(list(record.edits))
        remover.fcr_config_extra = dict(record.extra)
        return remover

    if backend == "auto":
        if model is not None:
            backend = "pytorch"
        elif name.startswith(("hf-hub:", "hf_hub:", "timm/")):
            backend = "timm"
        else:
            config = _read_config(name, "config.json", revision, token)
            if config is None:
                raise OSError(
                    f"{name} has no config.json: not a timm or transformers checkpoint (for a plain nn.Module, pass "
                    "model= with its architecture)."
                )
            backend = "timm" if "architecture" in config else "transformers" if "model_type" in config else None
            if backend is None:
                raise OSError(f"cannot tell the library of {name}'s config.json (no 'architecture' or 'model_type').")
    if backend == "timm":
        loaded, transform, names = _load_timm(name, revision)
    elif backend == "transformers":
        loaded, transform, names = _load_transformers(name, revision, trust_remote_code, token)
    else:
        if model is None:
            raise ValueError("backend='pytorch' needs model= (an instance of the architecture to load weights into).")
        loaded, transform, names = _load_pytorch(name, model), kwargs.pop("transform", None), None
    remover = FictitiousClassRemover(
        loaded, transform=transform, class_names=kwargs.pop("class_names", names), **kwargs
    )
    remover.base_model_name_or_path = name
    remover.revision = revision
    remover.transform_config = getattr(transform, "config", None)
    if record is not None:  # a full edited checkpoint: keep its record so revert() restores the base weights
        check_edits_match(remover.model, record.edits, "new")
        remover.edits = list(record.edits)
        remover.base_model_name_or_path = record.base_model_name_or_path
        remover.revision = record.revision
        remover.fcr_config_extra = dict(record.extra)
    return remover


# ----------------------------------------------------------------------------------------------------- saving


def _hub_id(name: str | None) -> str | None:
    """``name`` if it looks like a Hub repo id (``org/name``, not a local path), else None."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return None
    name = name.split(":", 1)[1] if name.startswith(("hf-hub:", "hf_hub:")) else name
    return name if name.count("/") == 1 else None


def _python_command(base: str | None, calls: list[dict[str, Any]]) -> str:
    """The Python that reproduces the recorded edit calls on the base checkpoint (data left to the reader)."""
    lines = [
        "# pip install hf-fcr",
        "python - <<'EOF'",
        "from hf_fcr import FictitiousClassRemover",
        f"remover = FictitiousClassRemover.from_pretrained({base or '<base checkpoint>'!r})",
        "train = remover.extract_features(train_dataset, columns=(...))  # your data, label (+ attribute) columns",
    ]
    for call in calls:
        args = {k: v for k, v in call.items() if k != "method" and v is not None}
        if call["method"] == "neutralize_spurious":
            args.pop("chosen", None)
            head = "train, val"
        elif call["method"] == "neutralize":
            column = args.pop("attribute_column", "attribute")
            lines.append(f"fictitious = remover.fit_fictitious(train, attribute_column={column!r})")
            head = "fictitious"
        else:
            head = f"{args.pop('cls')!r}, train"
        rest = ", ".join(f"{k}={v!r}" for k, v in args.items())
        lines.append(f"remover.{call['method']}({head}{', ' + rest if rest else ''})")
    lines += ["remover.save_pretrained('edited')", "EOF"]
    return "\n".join(lines)


def _card(remover: FictitiousClassRemover, config: FCRConfig, library: str, existing: Path | None, extra: dict) -> Any:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    metrics = extra.get("metrics") or []
    dataset = extra.get("dataset_name") or "validation"
    model_name = extra.get("model_name") or (config.base_model_name_or_path or "model").split("/")[-1] + "-fcr"
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=m.get("dataset", dataset),
            dataset_name=m.get("dataset", dataset),
            metric_type=m["name"],
            metric_value=float(m["value"]),
        )
        for m in metrics
    ] or None
    data = ModelCardData(
        library_name=library,
        base_model=_hub_id(config.base_model_name_or_path),
        tags=list(TAGS),
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
        pipeline_tag="image-classification",
    )
    base = config.base_model_name_or_path
    command = extra.get("command") or _python_command(base, config.extra.get("calls", []))
    template = resources.files("hf_fcr.model_cards").joinpath("fcr_model_card.md").read_text(encoding="utf-8")
    user_text = ""
    if existing is not None and existing.is_file():
        old = ModelCard.load(existing)
        text = old.text
        start, end = text.find("<!-- hf-fcr:start -->"), text.find("<!-- hf-fcr:end -->")
        if start != -1 and end != -1:
            text = text[:start] + text[end + len("<!-- hf-fcr:end -->") :]
        title = next((line for line in text.splitlines() if line.startswith("# ")), None)
        if title:
            model_name = title[2:].strip()
            text = text.replace(title, "", 1)
        user_text = text.strip()
        old_data = old.data.to_dict()
        for key, value in old_data.items():  # keep what the user wrote; add our tags where missing
            if key == "tags":
                data.tags = list(dict.fromkeys([*value, *TAGS]))
            elif getattr(data, key, None) in (None, [], "") or key not in data.to_dict():
                setattr(data, key, value)
    return ModelCard.from_template(
        data,
        template_str=template,
        model_name=model_name,
        user_text=user_text,
        base_description=f"`{base}`" if base else "a model",
        num_edits=len(config.edits),
        edits=config.edits,
        metrics=metrics,
        command=command,
    )


def save_pretrained(
    remover: FictitiousClassRemover,
    save_directory: str | os.PathLike,
    edits_only: bool = False,
    overwrite: bool = False,
    **card_info: Any,
) -> Path:
    """Write the edited checkpoint in its own library's format (timm ``save_for_hf`` / transformers
    ``save_pretrained`` / ``model.safetensors`` for a plain module), ``fcr_config.json`` and a ``README.md`` card;
    with ``edits_only=True`` only the last two. ``card_info`` may hold ``metrics`` (a list of
    ``{"name", "value", "dataset"}``), ``dataset_name``, ``model_name`` and ``command`` (how to reproduce the
    edit). Refuses to write onto a file, or onto a non-empty folder unless ``overwrite=True``."""
    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} is a file; pass a folder path to save into.")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} is not empty; pass overwrite=True to replace its contents.")
    library = library_of(remover.model)
    config = FCRConfig(
        base_model_name_or_path=remover.base_model_name_or_path,
        revision=remover.revision,
        library_name=library,
        edits=list(remover.edits),
        extra={**remover.fcr_config_extra, **{k: v for k, v in card_info.items() if k in ("metrics", "command")}},
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        if not edits_only:
            if library == "timm":
                import timm.models

                timm.models.save_for_hf(
                    remover.model,
                    str(tmp),
                    model_config={"label_names": remover.class_names},
                    safe_serialization=True,
                )
            elif library == "transformers":
                remover.model.save_pretrained(tmp)
            else:
                from safetensors.torch import save_file

                state = {k: v.detach().contiguous() for k, v in remover.model.state_dict().items()}
                save_file(state, tmp / SAFE_WEIGHTS_NAME)
        (tmp / CONFIG_NAME).write_text(config.to_json_string(), encoding="utf-8")
        card = _card(remover, config, "hf-fcr" if edits_only else library, target / CARD_NAME, card_info)
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


def push_to_hub(
    remover: FictitiousClassRemover,
    repo_id: str,
    private: bool = False,
    token: Any = None,
    commit_message: str = "Upload model edited with hf-fcr",
    create_pr: bool = False,
    edits_only: bool = False,
    **card_info: Any,
) -> Any:
    """Save (see ``save_pretrained``) to a temporary folder and upload it with ``huggingface_hub.HfApi``. Under
    several processes only the main process uploads. Returns the commit info (None on other processes)."""
    from huggingface_hub import HfApi

    if int(os.environ.get("RANK", "0")) != 0:
        return None
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "upload"
        save_pretrained(remover, folder, edits_only=edits_only, **card_info)
        return api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, create_pr=create_pr
        )
