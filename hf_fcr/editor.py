"""``HeadEditor``: a model, its classifier head and the single-weight edits made to it.

It holds what an edit record needs (the base checkpoint, the edits, the calls that made them), checks records
before they touch a weight, applies and reverts edits bit for bit, and loads, saves and pushes through ``hub``.
``remover.FictitiousClassRemover`` builds on it with the method (Algorithms 1-2) that chooses the edits.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .core.edit import WeightEdit, row_edits
from .core.head_edit import backbone_digest, weights_digest
from .features.feature_set import FeatureSet, label_outside
from .features.heads import class_names_of, find_head
from .features.preprocess import resolve_transform
from .records.card import base_license, figure_files
from .records.config import Edit, EditRecordError, FCRConfig, check_edits_match
from .records.hub import HubOptions, check_artifact, library_of, load_checkpoint, save_checkpoint, upload_folder
from .utils.constants import CONFIG_NAME, HEAD_EDITS_NAME
from .utils.distributed import run_on_main
from .utils.rows import all_finite

try:
    from typing import Self
except ImportError:  # Python 3.10
    from typing_extensions import Self

__all__ = ["HeadEditor"]

logger = logging.getLogger(__name__)


class HeadEditor:
    """A classifier whose final ``nn.Linear`` receives single-weight edits: the edits made so far, their record
    (``fcr_config.json``), loading, saving and pushing. ``FictitiousClassRemover`` adds the method that chooses them.

    Args:
        model: any ``nn.Module`` whose logits come from a final ``nn.Linear``; edited in place.
        head_name: the head's module name, when discovery (see ``heads.find_head``) should not guess.
        class_names: a name per head output (default: the model's ``id2label`` / ``label_names``, else indices).
        transform: preprocessing that maps a list of PIL images to a ``[B, C, H, W]`` tensor (set by
            ``from_pretrained``); without it, image columns must already hold arrays or tensors.
        base_model_name_or_path, revision: the checkpoint the model was loaded from (named in edit records).
        transform_config: what ``transform`` does (part of the feature cache's key).
        record: the edit record of a saved checkpoint whose edits are already in ``model``'s weights: checked
            against them and kept, so that ``revert()`` restores the base.

    Raises:
        TypeError: the model has no usable linear head.
        ValueError: ``class_names`` does not match the head.
        EditRecordError: ``record`` does not match the weights.
    """

    def __init__(
        self,
        model: nn.Module,
        head_name: str | None = None,
        class_names: Sequence[str] | None = None,
        transform: Any = None,
        *,
        base_model_name_or_path: str | None = None,
        revision: str | None = None,
        transform_config: Any = None,
        record: FCRConfig | None = None,
    ) -> None:
        self.head_name, self.head = find_head(model, head_name)
        if self.head.weight.ndim != 2 or self.head.out_features < 2:
            raise TypeError(
                f"the head {self.head_name!r} has {self.head.out_features} output(s); FCR needs a classifier head "
                "with at least two classes."
            )
        self.model = model
        num_outputs = self.head.out_features
        if class_names is None:
            class_names = class_names_of(model, num_outputs) or [str(i) for i in range(num_outputs)]
        if len(class_names) != num_outputs:
            raise ValueError(f"got {len(class_names)} class names for a head with {num_outputs} outputs.")
        self.class_names = [str(n) for n in class_names]
        self.transform = resolve_transform(model, transform)
        self.transform_config = (
            transform_config if transform_config is not None else getattr(self.transform, "config", None)
        )
        self.base_model_name_or_path = base_model_name_or_path or (
            getattr(getattr(model, "config", None), "_name_or_path", None) or None
        )
        self.revision = revision
        self.edits: list[Edit] = []
        self.fcr_config_extra: dict[str, Any] = {}
        if record is not None:
            if record.weights_sha256 is not None and record.weights_sha256 != weights_digest(model):
                raise EditRecordError(
                    f"the weights are not the ones {CONFIG_NAME} was saved with (their checksum differs): the folder "
                    "changed while it was read (another process re-saved it) or was assembled from two saves. Load "
                    "it again, or save the model again."
                )
            self._check_record(record.edits, "new", saved=True)
            self.edits = list(record.edits)
            if record.edits:  # with no edits, the checkpoint itself is the base of any later edit
                self.base_model_name_or_path, self.revision = record.base_model_name_or_path, record.revision
            self.fcr_config_extra = dict(record.extra)

    @property
    def param_name(self) -> str:
        """Name of the edited parameter in ``model.state_dict()``, e.g. ``fc.weight``."""
        return f"{self.head_name}.weight" if self.head_name else "weight"

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def class_index(self, cls: int | str) -> int:
        """A class given by index or name, as an index (KeyError for an unknown name, ValueError out of range)."""
        if isinstance(cls, str):
            if cls in self.class_names:
                return self.class_names.index(cls)
            raise KeyError(f"unknown class name {cls!r}; the head's classes are {self.class_names}.")
        if torch.is_tensor(cls) and cls.numel() == 1 and not cls.dtype.is_floating_point and cls.dtype != torch.bool:
            cls = int(cls)
        if isinstance(cls, bool) or not isinstance(cls, numbers.Integral):
            raise TypeError(f"a class is an integer index (int, numpy or torch integer) or a str name, got {cls!r}.")
        cls = int(cls)
        if not 0 <= cls < self.num_classes:
            raise ValueError(f"class index {cls} is outside the head's classes [0, {self.num_classes}).")
        return cls

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head's logits for head inputs ``features`` (as the model computes them, with the current edits), float32
        on the device of ``features`` (computed where the head is)."""
        weight = self.head.weight.detach()
        bias = None if self.head.bias is None else self.head.bias.detach()
        logits = F.linear(features.to(device=weight.device, dtype=weight.dtype), weight, bias)
        return logits.to(device=features.device, dtype=torch.float32)

    def _labels(self, feats: FeatureSet, label_column: str) -> torch.Tensor:
        """The checked label column of ``feats``, after checking the features themselves (width, finiteness)."""
        labels = feats.labels(label_column)
        outside = (labels < 0) | (labels >= self.num_classes)
        if bool(outside.any()):
            row = int(outside.nonzero()[0, 0])
            raise label_outside(int(labels[row]), label_column, row, self.num_classes)
        if len(labels) == 0:
            raise ValueError("the data is empty: FCR needs samples of the classes it edits.")
        if feats.features.shape[1] != self.head.in_features:
            raise ValueError(
                f"the features have {feats.features.shape[1]} dimensions but the head takes {self.head.in_features}: "
                "they were extracted from another model."
            )
        if not all_finite(feats.features):
            raise ValueError("the features contain NaN or inf: re-extract them from finite inputs.")
        return labels

    @property
    def bias_name(self) -> str | None:
        """Name of the head's bias in ``model.state_dict()`` (None without a bias)."""
        return None if self.head.bias is None else f"{self.head_name}.bias" if self.head_name else "bias"

    def _check_record(self, edits: Sequence[Edit], expect: str, saved: bool = False) -> None:
        """An edit record may only touch this head (single weights of its weight, or the weight and bias of a
        head-level edit) with values or tensors finite in its dtype, made on this backbone where the edit says so;
        then its values must match the weights (``check_edits_match``). ``saved``: the edits come from a record
        on disk, where one without its backbone's checksum (an earlier hf-fcr's) is accepted with a warning."""
        backbone = None
        unidentified = [i for i, e in enumerate(edits) if e.backbone_sha256 is None]
        if saved and unidentified:
            logger.warning(
                "edits %s of this record do not name the backbone they were made on (saved by an earlier hf-fcr): "
                "they are checked by their old values only. Save the model again to record it.",
                unidentified,
            )
        for i, e in enumerate(edits):
            try:
                e.check_target(self.head.weight, self.head.bias, self.param_name, self.bias_name)
            except ValueError as err:
                where = f" ({HEAD_EDITS_NAME})" if e.needs_tensors else ""
                raise EditRecordError(f"edit {i}{where}: {err}") from None
            if e.backbone_sha256 is not None:
                backbone = backbone or backbone_digest(self.model, self.head)
                if e.backbone_sha256 != backbone:
                    what = f"{e.method} head was fitted on" if e.needs_tensors else "single-weight edit was made on"
                    raise EditRecordError(
                        f"edit {i}: the backbone (every weight below the head) is not the one this {what} (its "
                        "SHA-256 differs). An edit only fits the features of that backbone: load the base model the "
                        "record names, at its revision."
                    )
        check_edits_match(self.model, list(edits), expect)

    def _row_edits(self, cls: int, picks: list[tuple[int, float, str | None]], r: float) -> list[WeightEdit]:
        row = self.head.weight.detach()[cls].cpu()
        return row_edits(self.param_name, row, cls, picks, r, self.head.weight.dtype, self.class_names[cls])

    def commit_edits(self, edits: Sequence[Edit]) -> list[Edit]:
        """Apply edits computed for this head in this process (the methods' own, not a record's: ``apply_edits``
        checks those) and add them to ``edits``; nothing changes if one cannot be written.

        Raises:
            ValueError: an edit's value does not fit the head's dtype.
        """
        for e in edits:  # Eq. 7's value can exceed a half-precision head's range: refuse before anything changes
            e.check_target(self.head.weight, self.head.bias, self.param_name, self.bias_name)
        applied: list[WeightEdit] = []
        try:
            for edit in edits:
                edit.apply(self.model)
                applied.append(edit)
        except BaseException:
            for edit in reversed(applied):
                edit.revert(self.model)
            raise
        self.edits.extend(edits)
        return edits

    def record_call(self, method: str, **arguments: Any) -> None:
        """Remember a call that made edits: saved in fcr_config.json and shown in the card to reproduce them."""
        self.fcr_config_extra.setdefault("calls", []).append({"method": method, **arguments})

    # ----------------------------------------------------------------------------------------------- loading, saving

    @classmethod
    def from_pretrained(  # noqa: PLR0913 -- transformers' from_pretrained keyword arguments, and the model's own
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        backend: str = "auto",
        trust_remote_code: bool = False,
        token: Any = None,
        model: nn.Module | None = None,
        transform: Any = None,
        head_name: str | None = None,
        class_names: Sequence[str] | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
    ) -> Self:
        """Load a checkpoint and wrap it.

        Args:
            name_or_path: a timm checkpoint (``hf-hub:org/name``, ``timm/<name>``, a ``save_for_hf`` folder), a
                transformers image classifier (Hub id or folder, with its image processor), a plain module's folder
                holding ``model.safetensors`` (with ``model=``), or a folder / repo written by ``save_pretrained``.
            revision, token, cache_dir, local_files_only: for the Hub, as in ``huggingface_hub.hf_hub_download``
                (also for timm checkpoints, which are downloaded with them and loaded from the local snapshot).
            backend: ``"auto"`` (from ``config.json``), ``"timm"``, ``"transformers"`` or ``"pytorch"``.
            trust_remote_code: stays off unless you pass it.
            model: an instance of the architecture, for ``backend="pytorch"``.
            transform: preprocessing to use instead of the checkpoint's own (a callable, or a transformers image
                processor).
            head_name, class_names: as in the constructor.

        Returns:
            The remover. A checkpoint saved with its edits keeps its record (``revert()`` restores the base); an
            edits-only artifact loads its base, checks every old value and re-applies the edits.

        Raises:
            OSError: a missing, corrupt or unrecognised checkpoint.
            EditRecordError: a malformed record, or one that does not match the base weights.
        """

        hub = HubOptions(revision, token, cache_dir, local_files_only)
        ckpt = load_checkpoint(name_or_path, hub, backend, trust_remote_code, model, transform)
        remover = cls(
            ckpt.model,
            head_name=head_name,
            class_names=class_names if class_names is not None else ckpt.class_names,
            transform=ckpt.transform,
            base_model_name_or_path=ckpt.name_or_path,
            revision=ckpt.revision,
            record=None if ckpt.edits_only else ckpt.record,
        )
        if ckpt.edits_only:
            remover.apply_edits(ckpt.record)
        return remover

    def apply_edits(self, edits: FCRConfig | Sequence[Edit]) -> list[Edit]:
        """Apply recorded edits (an ``FCRConfig``, or a list of ``WeightEdit`` / ``HeadEdit``), after checking that
        each targets this head, finds its old value (the base head's checksum for a ``HeadEdit``) and writes a finite
        value; nothing changes if one does not.

        Returns:
            The edits applied.

        Raises:
            EditRecordError: an edit does not match the model.
        """
        record = edits if isinstance(edits, FCRConfig) else None
        edits = list(record.edits if record is not None else edits)
        self._check_record(edits, "old", saved=record is not None)
        applied = self.commit_edits(edits)
        if record is not None:
            for key, value in record.extra.items():
                if key == "calls":
                    self.fcr_config_extra.setdefault("calls", []).extend(value)
                else:
                    self.fcr_config_extra.setdefault(key, value)
        return applied

    def edit_record(self, **extra: Any) -> FCRConfig:
        """The current edits as an ``FCRConfig`` (``fcr_config.json``), with ``extra`` keys added."""

        edits, backbone = [], None
        for e in self.edits:  # single-weight edits name the backbone they fit, as head-level edits do
            if isinstance(e, WeightEdit) and e.backbone_sha256 is None:
                backbone = backbone or backbone_digest(self.model, self.head)
                e = dataclasses.replace(e, backbone_sha256=backbone)
            edits.append(e)
        return FCRConfig(
            base_model_name_or_path=self.base_model_name_or_path,
            revision=self.revision,
            library_name=library_of(self.model),
            edits=edits,
            extra={**self.fcr_config_extra, **extra},
        )

    def save_pretrained(
        self, save_directory: str | os.PathLike, edits_only: bool = False, overwrite: bool = False, **card_info: Any
    ) -> Path:
        """Write the edited checkpoint in its library's format plus ``fcr_config.json`` and a ``README.md`` card.

        Args:
            save_directory: the folder to write (atomically: a temporary folder renamed into place).
            edits_only: write only the record and the card (the base is named in the record).
            overwrite: replace a non-empty folder.
            card_info: for the card: ``metrics`` (``[{"name", "value", "dataset", "split"}]``, also kept in the
                record), ``dataset_name`` (a Hub dataset id is listed in the card's ``datasets``), ``model_name``,
                ``tags``, ``license`` (default: the base's), ``command`` (how to reproduce; kept in the record) and
                ``figures`` (``{"diagnosis.png": matplotlib figure}``: saved in the folder; ``diagnosis.png`` is linked
                from the card's diagnosis).

        Under ``torchrun`` / ``accelerate launch`` only the main process writes, and every process returns once
        the folder is complete (the others raise if the main process failed).

        Returns:
            The folder written.

        Raises:
            FileExistsError: the target is a file, or a non-empty folder without ``overwrite=True``.
            ValueError: a figure name that is not a plain ``.png`` file name; a metric the record cannot hold
                (NaN, inf, not a number): nothing is written.
        """

        label = f"save:{os.path.abspath(save_directory)}"
        run_on_main(lambda: self._save(save_directory, edits_only, overwrite, card_info), label)
        return Path(save_directory)

    def _save(self, save_directory: str | os.PathLike, edits_only: bool, overwrite: bool, card_info: dict) -> Path:
        """``save_pretrained`` on this process alone."""

        card_info = dict(card_info)
        files = figure_files(card_info.pop("figures", None) or {})
        if "diagnosis.png" in files:
            card_info.setdefault("diagnosis_figure", "diagnosis.png")
        record = self.edit_record(**{k: v for k, v in card_info.items() if k in ("metrics", "command")})
        if not edits_only:  # what the record describes, so that a reader refuses weights of another save
            record.weights_sha256 = weights_digest(self.model)
        card_info.setdefault("license", base_license(self.model, self.base_model_name_or_path))
        processor = getattr(self.transform, "processor", None)
        return save_checkpoint(
            self.model, save_directory, record, self.class_names, edits_only, overwrite, processor, files, **card_info
        )

    def push_to_hub(  # noqa: PLR0913 -- huggingface_hub's upload keyword arguments (PushToHubMixin's names)
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        revision: str | None = None,
        commit_message: str = "Upload model edited with hf-fcr",
        commit_description: str | None = None,
        create_pr: bool = False,
        token: Any = None,
        tags: Sequence[str] | None = None,
        edits_only: bool = False,
        **card_info: Any,
    ) -> Any:
        """Save (see ``save_pretrained``) to a temporary folder and upload it with ``huggingface_hub.HfApi``.

        Args:
            repo_id, private, revision, commit_message, commit_description, create_pr, token: as in
                ``huggingface_hub.HfApi.upload_folder`` (``revision``: a branch, created if needed).
            tags: added to the card's tags (beside ``hf-fcr`` and ``model-editing``).
            edits_only, card_info: as in ``save_pretrained``.

        Returns:
            The commit info on the main process; None on the others (only the main process uploads).
        """

        upload_args = {
            "private": private,
            "revision": revision,
            "commit_message": commit_message,
            "commit_description": commit_description,
            "create_pr": create_pr,
            "token": token,
        }
        return run_on_main(
            lambda: self._push(repo_id, edits_only, {**card_info, "tags": tags}, upload_args), f"push:{repo_id}"
        )

    def _push(self, repo_id: str, edits_only: bool, card_info: dict, upload_args: dict) -> Any:
        """``push_to_hub`` on this process alone: save to a temporary folder, read it back (what the Hub would serve
        must load, with every file it needs), then upload."""

        with tempfile.TemporaryDirectory() as tmp:
            folder = self._save(Path(tmp) / "upload", edits_only, False, card_info)
            check_artifact(folder, self.edit_record())
            return upload_folder(folder, repo_id, **upload_args)

    def base_head(self, edits: Sequence[Edit] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's ``(weight, bias)`` with ``edits`` (default: every recorded edit) undone, newest first (copies;
        the model is not changed)."""
        copies = {self.param_name: self.head.weight.detach().clone()}
        if self.bias_name is not None:
            copies[self.bias_name] = self.head.bias.detach().clone()
        for edit in reversed(self.edits if edits is None else edits):
            edit.revert_to(copies)
        return copies[self.param_name], copies.get(self.bias_name) if self.bias_name else None

    def logits_without(self, features: torch.Tensor, edits: Sequence[Edit] | None = None) -> torch.Tensor:
        """Logits of the model with ``edits`` undone (default: all of them, the base model's logits)."""
        weight, bias = self.base_head(edits)
        return F.linear(features.to(device=weight.device, dtype=weight.dtype), weight, bias).float().cpu()

    def revert(self, keep: int = 0) -> None:
        """Undo the edits, newest first, restoring each weight bit for bit. ``keep``: leave the first ``keep`` edits
        in place (e.g. those a loaded checkpoint came with); with ``keep=0`` the record's calls and diagnosis go too.

        Raises:
            ValueError: ``keep`` is not an integer in ``[0, len(edits)]``.
        """
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= len(self.edits):
            raise ValueError(f"keep must be an integer in [0, {len(self.edits)}] (the edits made), got {keep!r}.")
        for edit in reversed(self.edits[keep:]):
            edit.revert(self.model)
        del self.edits[keep:]
        if keep == 0:
            self.fcr_config_extra.pop("calls", None)
            self.fcr_config_extra.pop("diagnosis", None)  # it concerned the edits just undone
