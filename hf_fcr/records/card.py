"""The edited model's card (``README.md``): built from the edit record, never trusted from an uploader.

Created or updated idempotently, as peft does: an existing card keeps what its author wrote (title, text,
metadata); the hf-fcr section between its markers is regenerated from the record.
"""

from __future__ import annotations

import io
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.head_edit import FIT_KEYS
from ..utils.constants import TAGS
from .config import FCRConfig

# huggingface_hub's card classes are imported where a card is written.

__all__ = ["base_license", "figure_files", "hub_id", "model_card", "python_command"]

logger = logging.getLogger(__name__)

_START, _END = "<!-- hf-fcr:start -->", "<!-- hf-fcr:end -->"


def hub_id(name: str | None) -> str | None:
    """``name`` if it looks like a Hub repo id (``org/name``, not a local path), else None."""
    if not name or os.path.exists(name) or name.startswith((".", "/", "~")):
        return None
    name = name.split(":", 1)[1] if name.startswith(("hf-hub:", "hf_hub:")) else name
    return name if name.count("/") == 1 else None


def base_license(model: Any, base: str | None) -> str | None:
    """The base checkpoint's license, carried over to the card: timm's ``pretrained_cfg``, else the base's card."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("license"), str):
        return cfg["license"]
    card = os.path.join(base, "README.md") if base and os.path.isdir(base) else None
    if card and os.path.isfile(card):
        from huggingface_hub import ModelCard

        try:
            value = ModelCard.load(card).data.license
        except Exception:  # a broken card only loses the license
            return None
        return value if isinstance(value, str) else None
    return None


def figure_files(figures: dict[str, Any]) -> dict[str, bytes]:
    """Matplotlib figures as PNG bytes by file name, for the folder the card links them from.

    Raises:
        ValueError: a name that is not a plain ``.png`` file name.
    """

    files = {}
    for name, fig in figures.items():
        if os.path.basename(name) != name or not name.endswith(".png") or name.startswith("."):
            raise ValueError(f"figure name {name!r} must be a plain file name ending in .png.")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=120)
        files[name] = buffer.getvalue()
    return files


def python_command(base: str | None, calls: list[dict[str, Any]]) -> str:
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
            if "fix" in args:  # neutralize_spurious's ``method`` argument, recorded as "fix"
                args["method"] = args.pop("fix")
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


def _user_part(existing: Path) -> tuple[str | None, str, dict[str, Any]]:
    """``(title, text, metadata)`` that the author of an existing card wrote, without the hf-fcr section."""
    from huggingface_hub import ModelCard

    try:
        old = ModelCard.load(existing)
        text, metadata = old.text, old.data.to_dict()
    except Exception as err:  # broken YAML (or anything else) in someone's card must not block a save
        logger.warning(
            "the existing card %s cannot be parsed (%s): its metadata is replaced, its text kept.", existing, err
        )
        raw = existing.read_text(encoding="utf-8", errors="replace")
        parts = raw.split("---", 2) if raw.startswith("---") else None
        text, metadata = (parts[2] if parts and len(parts) == 3 else raw), {}
    start, end = text.find(_START), text.find(_END)
    if start != -1 and end != -1:
        text = text[:start] + text[end + len(_END) :]
    title = next((line for line in text.splitlines() if line.startswith("# ")), None)
    if title:
        text = text.replace(title, "", 1)
    return (title[2:].strip() if title else None), text.strip(), metadata


def model_card(config: FCRConfig, library: str, existing: Path | None = None, **card_info: Any) -> Any:
    """A ``huggingface_hub.ModelCard`` for the edits in ``config``.

    Args:
        config: the edit record the card describes (its edit table and reproduce command come from it).
        library: the card's ``library_name`` (the model's own for a full checkpoint, ``hf-fcr`` for edits only).
        existing: a card to update: what its author wrote is kept.
        card_info: ``metrics`` (a list of ``{"name", "value", "dataset"}``), ``dataset_name``, ``model_name``,
            ``diagnosis_figure`` (a file in the folder, linked under the record's diagnosis) and ``command`` (how to
            reproduce the edit; default: Python built from the recorded calls).

    Returns:
        The card (``.save(path)`` writes it).
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    metrics = card_info.get("metrics") or []
    dataset = card_info.get("dataset_name") or "validation"
    base = config.base_model_name_or_path
    model_name = card_info.get("model_name") or (base or "model").split("/")[-1] + "-fcr"
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=m.get("dataset", dataset),  # the Hub dataset id when there is one
            dataset_name=m.get("dataset", dataset),
            dataset_split=m.get("split"),
            metric_type=m["name"],
            metric_value=float(m["value"]),
        )
        for m in metrics
    ] or None
    hub_datasets = sorted({d for d in [dataset, *(m.get("dataset") for m in metrics)] if hub_id(d)})
    data = ModelCardData(
        library_name=library,
        base_model=hub_id(base),
        # the Hub's model tree: new weights of the base's architecture, or an artifact applied to the base
        base_model_relation=("adapter" if library == "hf-fcr" else "finetune") if hub_id(base) else None,
        datasets=hub_datasets or None,
        license=card_info.get("license"),
        tags=list(dict.fromkeys([*TAGS, *(card_info.get("tags") or [])])),
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
        pipeline_tag="image-classification",
    )
    user_text = ""
    if existing is not None and existing.is_file():
        title, user_text, old_data = _user_part(existing)
        model_name = title or model_name
        for key, value in old_data.items():  # keep what the user wrote; add our tags where missing
            if key == "tags":
                data.tags = list(dict.fromkeys([*value, *TAGS]))
            elif getattr(data, key, None) in (None, [], "") or key not in data.to_dict():
                setattr(data, key, value)
    weight_edits = [e for e in config.edits if e.kind == "weight"]
    removed = [c.get("cls") for c in config.extra.get("calls", []) if c.get("method") == "remove_class"]
    names = {e.class_index: e.class_name for e in weight_edits if e.class_name is not None}
    removed_classes = [f"class {names.get(c, c)!s}" for c in dict.fromkeys(removed)]
    diagnosis = config.extra.get("diagnosis")
    diagnosis = diagnosis if isinstance(diagnosis, dict) and isinstance(diagnosis.get("verdict"), str) else None
    template = resources.files("hf_fcr.model_cards").joinpath("fcr_model_card.md").read_text(encoding="utf-8")
    return ModelCard.from_template(
        data,
        template_str=template,
        model_name=model_name,
        user_text=user_text,
        base_description=f"`{base}`" if base else "a model",
        num_edits=len(weight_edits),
        edits=weight_edits,
        head_edits=[
            {
                "edit": e,
                **{k: e.hyperparameters.get(k) for k in FIT_KEYS},
                "other": {k: v for k, v in e.hyperparameters.items() if k not in FIT_KEYS},
            }
            for _, e in config.head_edits
        ],
        removed_classes=removed_classes,
        diagnosis=diagnosis,
        diagnosis_figure=card_info.get("diagnosis_figure"),
        metrics=metrics,
        command=card_info.get("command") or python_command(base, config.extra.get("calls", [])),
    )
