"""What the studio shows, computed through the library's public API alone (no second implementation of any method):
one feature pass per split, FCR's search with its diagnosis, the head-level fixes beside it, and every r re-evaluated
in closed form (``FictitiousClassRemover.sweep``) without running the model again. The model stays unedited between
calls; ``save`` and ``push`` apply the chosen edit at the chosen r, write, and revert.

A page runs its events at the same time (a slider moved during a save): every method that reads or edits the model
takes the session's lock, so none sees another's edit half done, and metrics are always those of the unedited model
with the edit applied once.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import statistics
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from PIL import Image

from ..core.metrics import group_metrics
from ..core.sweep import edited_logits
from ..data import load_data
from ..debias.diagnosis import RANDOM_COLUMN, disagreement, random_attribute_draws
from ..demo.erm import spurious_digits_erm
from ..fitting.methods import get_method, head_method_names
from ..fitting.probe import encode_values
from ..records.card import model_card
from ..records.hub import library_of
from ..remover import FictitiousClassRemover

__all__ = ["DEMO", "StudioSession", "StudioSource"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run ``method`` holding the session's lock (re-entrant: a locked method may call another)."""

    @functools.wraps(method)
    def run(self: StudioSession, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


DEMO = "the built-in demo (SpuriousDigits, timm test_resnet trained here)"


@dataclass(frozen=True)
class StudioSource:
    """Where the studio's model and data come from: ``model_name_or_path`` None is the built-in demo (its data too);
    ``dataset_name``: a built-in name, a ``save_to_disk`` folder or a Hub id."""

    model_name_or_path: str | None = None
    dataset_name: str | None = None
    label_column: str = "label"
    attribute_column: str = "place"
    image_column: str = "image"
    splits: tuple[str, str, str] = ("train", "validation", "test")
    cache_dir: str | None = None
    seed: int = 0


@dataclass
class StudioSession:
    """A loaded model with its features, FCR's chosen edit and the fixes to compare it with."""

    remover: Any
    source: StudioSource
    data: dict[str, Any]
    features: dict[str, Any]
    search: Any
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    auto_method: str | None = None  # what auto chose among the methods compared
    _curves: dict[str, Any] = field(default_factory=dict, repr=False)
    _image_dir: str | None = field(default=None, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    loaded: tuple[int, dict[str, Any]] = field(default=(0, {}), repr=False)  # the checkpoint's edits and extras

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, source: StudioSource, progress: Callable[[float, str], None] | None = None) -> StudioSession:
        """Load the model and data, run the pass once per split (the feature cache used when ``cache_dir`` is set),
        FCR's search with its diagnosis, and the other methods.

        Raises:
            ValueError: a dataset without the validation split, a missing column, bad data (the message names it).
            OSError: a model that cannot be loaded.
        """
        progress = progress or (lambda fraction, text: None)
        progress(0.0, "loading the model and data")
        remover, data = _load(source)
        loaded = (len(remover.edits), copy.deepcopy(remover.fcr_config_extra))  # a checkpoint's own edits stay
        train_split, val_split, test_split = source.splits
        for split in (train_split, val_split):
            if split not in data:
                raise ValueError(
                    f"the dataset has no {split!r} split (its splits: {sorted(data)}): the studio fits M' on the "
                    "training split and chooses r on the validation split. Pass the split names (--train_split, "
                    "--validation_split) or a dataset that has both."
                )
        columns = (source.label_column, source.attribute_column)
        features = {}
        present = [s for s in source.splits if s in data]
        for i, split in enumerate(present):
            progress(0.1 + 0.4 * i / len(present), f"features of {split}")
            features[split] = remover.extract_features(
                data[split], image_column=source.image_column, columns=columns, cache_dir=source.cache_dir
            )
        progress(0.5, "FCR's search and its diagnosis")
        search = remover.neutralize_spurious(
            features[train_split],
            features[val_split],
            label_column=source.label_column,
            attribute_column=source.attribute_column,
            seed=source.seed,
        )
        session = cls(remover, source, {s: data[s] for s in present}, features, search, loaded=loaded)
        session._restore()  # the model stays as loaded; save / push apply the edit at the chosen r
        progress(0.7, "the other methods")
        session.methods = session._compare()
        progress(1.0, "ready")
        return session

    # ------------------------------------------------------------------------------------------------ the method

    @property
    def splits(self) -> list[str]:
        """The validation split and, when the data has one, the test split."""
        return [s for s in self.source.splits[1:] if s in self.features]

    @property
    def verdict(self) -> str:
        """The diagnosis' verdict, and the sentence that says so when auto kept the single-weight edit the verdict
        says does not remove the cue."""
        d = self.search.diagnosis
        if d is None:
            return "(no diagnosis)"
        kept = self.auto_method is not None and get_method(self.auto_method).kind == "weights"
        note = disagreement(kept, d)
        return d.verdict if note is None else f"{d.verdict}\n\n{note}"

    @property
    def chosen_r(self) -> float:
        return float(self.search.r)

    @_locked
    def at_rate(self, r: float) -> dict[str, dict[str, Any]]:
        """``{split: metrics}`` of FCR's chosen edit re-applied at rate ``r`` (``remover.sweep``, closed form):
        ``worst_group``, ``average``, ``gap`` and ``per_group``."""
        return {
            split: self.remover.sweep(
                self.features[split],
                r_values=[float(r)],
                label_column=self.source.label_column,
                group_columns=(self.source.attribute_column,),
                edits=self.search.edits,
            ).table[0]
            for split in self.splits
        }

    @_locked
    def curve(self, split: str | None = None) -> Any:
        """The sweep of the chosen edit over the default r grid on ``split`` (validation by default; a
        ``SweepResult``, computed once)."""
        split = split or self.splits[0]
        if split not in self._curves:
            self._curves[split] = self.remover.sweep(
                self.features[split],
                label_column=self.source.label_column,
                group_columns=(self.source.attribute_column,),
                edits=self.search.edits,
            )
        return self._curves[split]

    @_locked
    def flips(self, r: float, split: str | None = None, limit: int = 12) -> list[dict[str, Any]]:
        """The rows of ``split`` (validation by default) whose prediction changes at rate ``r``, the most confident
        (edited softmax probability of the new class) first: ``index``, ``before``, ``after``, ``group``,
        ``confidence``."""
        split = split or self.splits[0]
        feats = self.features[split]
        before = self.remover.logits(feats.features)
        after = edited_logits(before, feats.features, self.search.edits, float(r))
        changed = torch.nonzero(before.argmax(1) != after.argmax(1)).flatten()
        confidence = after.softmax(1).max(1).values
        order = changed[torch.argsort(confidence[changed], descending=True, stable=True)][:limit]
        names = self.remover.class_names
        attribute = feats[self.source.attribute_column]
        return [
            {
                "index": int(i),
                "before": names[int(before[i].argmax())],
                "after": names[int(after[i].argmax())],
                "group": f"{names[int(feats.labels(self.source.label_column)[i])]}, "
                f"{self.source.attribute_column}={_value(attribute, int(i))}",
                "confidence": float(confidence[i]),
            }
            for i in order
        ]

    def image_file(self, index: int, split: str | None = None) -> str:
        """Row ``index``'s image of ``split`` as a PNG file, written once (loaded on demand, then reused)."""

        split = split or self.splits[0]
        if self._image_dir is None:
            self._image_dir = tempfile.mkdtemp(prefix="hf-fcr-studio-images-")
        path = os.path.join(self._image_dir, f"{split}-{int(index)}.png")
        if not os.path.exists(path):
            self.image(index, split).save(path)
        return path

    def image(self, index: int, split: str | None = None) -> Any:
        """Row ``index``'s image of ``split`` as a PIL image (loaded on demand)."""

        value = self.data[split or self.splits[0]][int(index)][self.source.image_column]
        if isinstance(value, Image.Image):
            return value
        array = torch.as_tensor(value).float()
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.permute(1, 2, 0)
        array = (array - array.min()) / max(float(array.max() - array.min()), 1e-12)
        pixels = (array.squeeze(-1) * 255).round().to(torch.uint8).numpy()
        return Image.fromarray(pixels).resize((96, 96), Image.NEAREST)

    @_locked
    def table(self, r: float, fcr: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """One row per method: worst group, average and gap on validation and test; FCR's row at rate ``r``
        (``fcr``: ``at_rate(r)`` when already computed)."""
        rows = []
        fcr = self.at_rate(r) if fcr is None else fcr
        for name, metrics in {"fcr": fcr, **self.methods}.items():
            row = {"method": f"fcr (r={r:.3f})" if name == "fcr" else name}
            if "error" in metrics:
                row["failed"] = metrics["error"]
                rows.append(row)
                continue
            for split, m in metrics.items():
                for key in ("worst_group", "average", "gap"):
                    row[f"{split} {key}"] = round(float(m[key]), 4)
            rows.append(row)
        order = ["erm", "fcr", "fcr_random_attribute", "dfr", "class_balanced", "auto"]
        return sorted(rows, key=lambda row: _rank(row["method"], order))

    @_locked
    def remove_class(self, cls: int | str, num_weights: int, r: float) -> dict[str, Any]:
        """Algorithm 1 on the validation features: forget (the class's accuracy) and retain (the others') per
        class before and after, and the edited weights; the model is reverted afterwards."""
        feats = self.features[self.splits[0]]
        labels = feats.labels(self.source.label_column)
        before = self.remover.logits(feats.features).argmax(1)
        edits = self.remover.remove_class(
            cls, data=feats, label_column=self.source.label_column, r=float(r), num_weights=int(num_weights)
        )
        try:
            after = self.remover.logits(feats.features).argmax(1)
        finally:
            self._restore()
        names = self.remover.class_names
        per_class = [
            {
                "class": names[c],
                "before": float((before[labels == c] == c).double().mean()),
                "after": float((after[labels == c] == c).double().mean()),
            }
            for c in range(self.remover.num_classes)
            if bool((labels == c).any())
        ]
        return {"per_class": per_class, "edits": [e.to_dict() for e in edits]}

    # ------------------------------------------------------------------------------------------------ writing

    @_locked
    def card(self, r: float, repo_id: str | None = None) -> str:
        """The model card ``save`` (or ``push`` to ``repo_id``) would write for the edit at rate ``r``."""

        info = self._card_info(r, repo_id)  # measured on the unedited model, the edit at r applied once
        self._apply(r)
        try:
            return str(model_card(self.remover.edit_record(), library_of(self.remover.model), **info))
        finally:
            self._restore()

    @_locked
    def save(self, folder: str | os.PathLike, r: float, overwrite: bool = False) -> str:
        """``save_pretrained`` of the edit at rate ``r`` (the same files), then the model is reverted."""
        info = self._card_info(r)  # before the edit: at_rate applies it to the unedited model
        self._apply(r)
        try:
            return str(self.remover.save_pretrained(folder, overwrite=overwrite, **info))
        finally:
            self._restore()

    @_locked
    def push(self, repo_id: str, r: float, token: str | None, private: bool = True) -> Any:
        """``push_to_hub`` of the edit at rate ``r`` (``private`` by default); the token is passed on, never kept."""
        info = self._card_info(r, repo_id)  # before the edit: at_rate applies it to the unedited model
        self._apply(r)
        try:
            return self.remover.push_to_hub(repo_id, private=private, token=token or None, **info)
        finally:
            self._restore()

    # ------------------------------------------------------------------------------------------------ helpers

    def _restore(self) -> None:
        """Back to the model as loaded: the edits made since are undone; a checkpoint's own edits (a model saved
        by the studio, reopened) stay, with its record's extras."""
        keep, extra = self.loaded
        self.remover.revert(keep=keep)
        self.remover.fcr_config_extra = copy.deepcopy(extra)

    def _apply(self, r: float) -> None:
        dtype = self.remover.head.weight.dtype
        self.remover.apply_edits([edit.with_rate(float(r), dtype) for edit in self.search.edits])
        if self.search.diagnosis is not None:
            self.remover.fcr_config_extra["diagnosis"] = self.search.diagnosis.to_dict()

    def _card_info(self, r: float, repo_id: str | None = None) -> dict[str, Any]:
        """The card's metrics (validation, at ``r``) and its command: how to open the model in the studio (the
        pushed repo's, when ``repo_id`` is given)."""
        val = self.at_rate(r)[self.splits[0]]
        dataset = self.source.dataset_name or "spurious_digits"
        metrics = [
            {"name": name, "value": float(val[key]), "dataset": dataset, "split": self.splits[0]}
            for name, key in (("worst_group_accuracy", "worst_group"), ("accuracy", "average"))
        ]
        model = repo_id or self.source.model_name_or_path
        command = "pip install 'hf-fcr[studio]' && hf-fcr studio" + (f" --model_name_or_path {model}" if model else "")
        if model:  # a model needs its data; the demo's is the built-in SpuriousDigits
            command += f" --dataset_name {dataset}"
        return {"metrics": metrics, "command": f"{command}  # r = {float(r):.4f}"}

    def _compare(self) -> dict[str, dict[str, Any]]:
        """ERM, FCR's random-attribute control (mean over draws) and every registered head-level method plus
        ``auto``, each through ``neutralize_spurious`` on the same features, measured, then reverted."""

        s = self.source
        train, val = self.features[s.splits[0]], self.features[s.splits[1]]
        common = {"label_column": s.label_column, "attribute_column": s.attribute_column, "seed": s.seed}
        methods = {"erm": self._metrics()}
        attribute, _ = encode_values(train[s.attribute_column])  # integer ids or strings ("water", "land")
        draws = []
        for data in random_attribute_draws(train, s.label_column, attribute, s.seed):
            self.remover.neutralize_spurious(
                data,
                val,
                **{**common, "attribute_column": RANDOM_COLUMN},
                val_attribute_column=s.attribute_column,
                diagnose=False,
            )
            draws.append(self._metrics())
            self._restore()
        methods["fcr_random_attribute"] = {
            split: {k: statistics.mean(d[split][k] for d in draws) for k in ("worst_group", "average", "gap")}
            for split in self.splits
        }
        for method in (*head_method_names(), "auto"):
            try:
                search = self.remover.neutralize_spurious(train, val, **common, method=method, diagnose=False)
                methods[method] = self._metrics()
                if method == "auto":
                    self.auto_method = search.method
            except Exception as err:  # a failing (registered) method is shown as failed; the page works on
                logger.warning("the head-level method %r failed in the studio: %s", method, err)
                methods[method] = {"error": f"{type(err).__name__}: {err}"[:300]}
            finally:
                self._restore()
        return methods

    def _metrics(self) -> dict[str, dict[str, Any]]:
        """The model's group metrics now, per split shown (groups: label x attribute, as the search's)."""

        s, out = self.source, {}
        for split in self.splits:
            feats = self.features[split]
            labels, ids, names = self.remover.group_labels(feats, s.label_column, [s.attribute_column])
            out[split] = group_metrics(self.remover.logits(feats.features).argmax(1), labels, ids, names)
        return out


def _load(source: StudioSource) -> tuple[Any, Any]:
    if source.model_name_or_path is None:
        remover, data, _ = spurious_digits_erm(tempfile.mkdtemp(prefix="hf-fcr-studio-"), seed=source.seed, log=_quiet)
        return remover, data

    if not source.dataset_name:
        raise ValueError("a model needs data: pass --dataset_name (a built-in name, a save_to_disk folder, a Hub id).")
    remover = FictitiousClassRemover.from_pretrained(source.model_name_or_path)
    return remover, load_data(source.dataset_name)


def _quiet(*args: Any) -> None:
    return None


def _value(column: Any, i: int) -> Any:
    value = column[i]
    return int(value) if torch.is_tensor(value) else value


def _rank(method: str, order: Sequence[str]) -> tuple[int, str]:
    base = method.split(" ")[0]
    return (order.index(base) if base in order else len(order), method)
