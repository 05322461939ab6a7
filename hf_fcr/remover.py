"""``FictitiousClassRemover``: the orchestrating class over the pure math (stats, scores, edit) and the feature
pass."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .edit import WeightEdit, check_rate, orthogonal_weight
from .features import FeatureSet, data_fingerprint, extract_features, model_fingerprint
from .heads import find_head
from .metrics import group_ids, group_metrics
from .probe import POLICIES, FictitiousHead, fit_fictitious_head
from .scores import CANDIDATES, top_edges
from .stats import EdgeStatistics, edge_statistics
from .sweep import SweepResult, check_rule, default_r_grid, rule_score, sweep_edits

__all__ = ["FictitiousClassRemover", "NeutralizationSearch"]

logger = logging.getLogger(__name__)


def _class_names_of(model: nn.Module, num_outputs: int) -> list[str] | None:
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if isinstance(id2label, dict) and len(id2label) == num_outputs:
        return [str(id2label[i]) for i in range(num_outputs)]
    cfg = getattr(model, "pretrained_cfg", None)
    names = cfg.get("label_names") if isinstance(cfg, dict) else None
    if names is not None and len(names) == num_outputs:
        return [str(n) for n in names]
    return None


def _check_num_weights(num_weights: int) -> int:
    if isinstance(num_weights, bool) or not isinstance(num_weights, int) or num_weights < 1:
        raise ValueError(f"num_weights must be a positive integer, got {num_weights!r}.")
    return num_weights


@dataclass
class NeutralizationSearch:
    """What ``neutralize_spurious`` chose and tried: the applied ``edits``, the chosen ``policy``,
    ``num_weights`` and ``r`` under ``rule``, M' (``fictitious``), the chosen candidate's ``validation`` metrics, and
    one entry per (policy, num_weights) in ``tried``, each with its ``sweep`` over r."""

    edits: list[WeightEdit]
    fictitious: FictitiousHead
    policy: str
    num_weights: int
    r: float
    rule: str
    validation: dict[str, Any]
    tried: list[dict[str, Any]] = field(default_factory=list)

    @property
    def choice(self) -> dict[str, Any]:
        return {"policy": self.policy, "num_weights": self.num_weights, "r": self.r, "rule": self.rule}


class FictitiousClassRemover:
    """Edit single weights of a classifier's final ``nn.Linear`` to remove a class (Algorithm 1) or neutralize a
    fictitious class such as a spurious attribute (Algorithm 2).

    Args:
        model: any ``nn.Module`` whose logits come from a final ``nn.Linear``; edited in place.
        head_name: the head's module name, when discovery (see ``heads.find_head``) should not guess.
        class_names: a name per head output (default: the model's ``id2label`` / ``label_names``, else indices).
        transform: preprocessing that maps a list of PIL images to a ``[B, C, H, W]`` tensor (set by
            ``from_pretrained``); without it, image columns must already hold arrays or tensors.
    """

    def __init__(
        self,
        model: nn.Module,
        head_name: str | None = None,
        class_names: Sequence[str] | None = None,
        transform: Callable[[list[Any]], torch.Tensor] | None = None,
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
            class_names = _class_names_of(model, num_outputs) or [str(i) for i in range(num_outputs)]
        if len(class_names) != num_outputs:
            raise ValueError(f"got {len(class_names)} class names for a head with {num_outputs} outputs.")
        self.class_names = [str(n) for n in class_names]
        self.transform = transform
        self.edits: list[WeightEdit] = []
        self.base_model_name_or_path: str | None = (
            getattr(getattr(model, "config", None), "_name_or_path", None) or None
        )
        self.revision: str | None = None
        self.fcr_config_extra: dict[str, Any] = {}
        self.transform_config: Any = None  # what `transform` does, for the feature cache's key (set on loading)

    # ----------------------------------------------------------------------------------------------- helpers

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
        if isinstance(cls, bool) or not isinstance(cls, int):
            if torch.is_tensor(cls) and cls.numel() == 1 and not cls.dtype.is_floating_point:
                cls = int(cls)
            else:
                raise TypeError(f"a class is an int index or a str name, got {cls!r}.")
        if not 0 <= cls < self.num_classes:
            raise ValueError(f"class index {cls} is outside the head's classes [0, {self.num_classes}).")
        return cls

    @torch.no_grad()
    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The head's logits for head inputs ``features`` (as the model computes them, with the current edits)."""
        weight = self.head.weight.detach()
        bias = None if self.head.bias is None else self.head.bias.detach()
        return F.linear(features.to(device=weight.device, dtype=weight.dtype), weight, bias).float().cpu()

    def _resolve_device(self, device: Any) -> Any:
        """``"auto"``: move the model to the GPU when there is one (it stays there) and use it; else as given."""
        if device != "auto":
            return device
        if not torch.cuda.is_available():
            return None
        self.model.to("cuda")
        return "cuda"

    def _features(self, data: Any, columns: Sequence[str], **kwargs: Any) -> FeatureSet:
        if isinstance(data, FeatureSet):
            for c in columns:
                data[c]  # KeyError naming the missing column
            return data
        return self.extract_features(data, columns=tuple(columns), **kwargs)

    def _check_labels(self, labels: torch.Tensor, label_column: str) -> torch.Tensor:
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = int(labels[(labels < 0) | (labels >= self.num_classes)][0])
            raise ValueError(
                f"label {bad} in column {label_column!r} is outside the head's classes [0, {self.num_classes}): "
                "map the labels to the model's class indices."
            )
        return labels

    def _labels(self, feats: FeatureSet, label_column: str) -> torch.Tensor:
        labels = self._check_labels(feats.labels(label_column), label_column)
        if len(labels) == 0:
            raise ValueError("the data is empty: FCR needs samples of the classes it edits.")
        if feats.features.shape[1] != self.head.in_features:
            raise ValueError(
                f"the features have {feats.features.shape[1]} dimensions but the head takes {self.head.in_features}: "
                "they were extracted from another model."
            )
        if not torch.isfinite(feats.features).all():
            raise ValueError("the features contain NaN or inf: re-extract them from finite inputs.")
        return labels

    def _apply(self, edits: list[WeightEdit]) -> list[WeightEdit]:
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

    def _make_edits(self, cls: int, cols: list[tuple[int, float, str | None]], r: float) -> list[WeightEdit]:
        """Eq. 8 on the ORIGINAL row ``cls`` for each ``(col, score, fictitious)``: independent of edit order."""
        row = self.head.weight.detach()[cls].cpu()
        dtype = self.head.weight.dtype
        edits = []
        for col, score, fictitious in cols:
            old = float(row[col])
            at_zero = WeightEdit(
                param=self.param_name,
                row=cls,
                col=col,
                old_value=old,
                new_value=old,
                r=0.0,
                score=score,
                class_index=cls,
                class_name=self.class_names[cls],
                fictitious=fictitious,
                orthogonal_value=orthogonal_weight(row, col),
            )
            edits.append(at_zero.with_rate(r, dtype))
        return edits

    # ----------------------------------------------------------------------------------------------- public API

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        revision: str | None = None,
        backend: str = "auto",
        trust_remote_code: bool = False,
        token: Any = None,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> FictitiousClassRemover:
        """Load a timm checkpoint (``hf-hub:org/name``, ``timm/<name>``, a ``save_for_hf`` folder), a transformers
        image classifier (Hub id or folder, with its image processor), or a plain module's ``model.safetensors`` into
        ``model``. A folder or repo written by ``save_pretrained`` keeps its edit record (so ``revert()`` restores
        the base); an edits-only artifact loads its base checkpoint, checks every old value and re-applies the
        edits. ``trust_remote_code`` stays off unless you pass it."""
        from .hub import load_pretrained

        return load_pretrained(
            name_or_path,
            revision=revision,
            backend=backend,
            trust_remote_code=trust_remote_code,
            token=token,
            model=model,
            **kwargs,
        )

    def save_pretrained(
        self, save_directory: str, edits_only: bool = False, overwrite: bool = False, **card_info: Any
    ) -> Any:
        """Write the edited checkpoint in its library's format plus ``fcr_config.json`` and a ``README.md`` card
        (``edits_only=True``: only those two). See ``hf_fcr.hub.save_pretrained``."""
        from .hub import save_pretrained

        return save_pretrained(self, save_directory, edits_only=edits_only, overwrite=overwrite, **card_info)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: Any = None,
        commit_message: str = "Upload model edited with hf-fcr",
        create_pr: bool = False,
        edits_only: bool = False,
        **card_info: Any,
    ) -> Any:
        """Save and upload to the Hub with ``huggingface_hub.HfApi`` (main process only)."""
        from .hub import push_to_hub

        return push_to_hub(
            self,
            repo_id,
            private=private,
            token=token,
            commit_message=commit_message,
            create_pr=create_pr,
            edits_only=edits_only,
            **card_info,
        )

    def extract_features(
        self,
        dataset: Any,
        image_column: str = "image",
        columns: Sequence[str] = ("label",),
        batch_size: int = 64,
        device: torch.device | str | None = "auto",
        progress: bool = False,
        gather: bool = True,
        cache_dir: str | os.PathLike | None = None,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        resume_from: str | os.PathLike | None = None,
        num_workers: int = 0,
    ) -> FeatureSet:
        """One pass of the model over ``dataset``: the head's inputs ``[N, D]`` plus the requested ``columns``.

        ``dataset`` is a ``datasets.Dataset``, a streaming ``datasets.IterableDataset`` or a torch ``DataLoader``
        of dicts. PIL images go through ``transform``; arrays and tensors are fed to the model as they are.

        Args:
            device: ``"auto"`` moves the model to the GPU when there is one (it stays there); None keeps it where
                it is; or a device.
            progress: show a tqdm progress bar.
            gather: under ``accelerate launch`` / ``torchrun`` the data is sharded across the processes; with
                ``gather=True`` every process gets all rows in the order one process would produce.
            cache_dir: keep the features on disk under a key made of the model's fingerprint (all weights but the
                head's, so edits keep the cache valid), the dataset's fingerprint and the columns: a second run
                skips the backbone. Sources without a fingerprint (streams, DataLoaders) are not cached.
            autocast_dtype: e.g. ``torch.bfloat16`` to run the pass under ``torch.autocast``.
            channels_last: feed image batches in channels-last memory format.
            checkpoint_dir, checkpoint_every, resume_from: save the rows every ``checkpoint_every`` batches and
                resume an interrupted run from that folder (see ``features.extract_features``).
            num_workers: DataLoader workers that read and preprocess the next batches of a ``datasets.Dataset``
                while the model runs (pinned memory on GPU).
        """
        device = self._resolve_device(device)
        path = self._cache_path(cache_dir, dataset, image_column, columns)
        if path is not None and os.path.isdir(path):
            logger.info("features from the cache %s", path)
            return FeatureSet.load(path)
        feats = extract_features(
            self.model,
            self.head,
            dataset,
            image_column=image_column,
            columns=columns,
            batch_size=batch_size,
            transform=self.transform,
            head_name=self.head_name,
            device=device,
            progress=progress,
            gather=gather,
            autocast_dtype=autocast_dtype,
            channels_last=channels_last,
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=checkpoint_every,
            resume_from=resume_from,
            num_workers=num_workers,
        )
        if path is not None and gather and int(os.environ.get("RANK", "0")) == 0:
            tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(path))
            feats.save(tmp)
            try:
                os.replace(tmp, path)
            except OSError:  # another process wrote the same entry meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
        return feats

    def _cache_path(self, cache_dir: Any, dataset: Any, image_column: str, columns: Sequence[str]) -> str | None:
        if cache_dir is None:
            return None
        data_key = data_fingerprint(dataset)
        if data_key is None:
            logger.info("%s has no fingerprint: its features are not cached.", type(dataset).__name__)
            return None
        spec = {
            "model": model_fingerprint(self.model, self.head),
            "head": self.head_name,
            "data": data_key,
            "image_column": image_column,
            "columns": list(columns),
            "transform": repr(getattr(self, "transform_config", None)),
            "dtype": str(next(self.model.parameters()).dtype),
        }
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
        os.makedirs(cache_dir, exist_ok=True)
        return os.path.join(os.fspath(cache_dir), f"features-{key}")

    def collect(
        self,
        data: Any,
        label_column: str = "label",
        rows: Sequence[int] | None = None,
        image_column: str = "image",
        batch_size: int = 64,
        device: torch.device | str | None = "auto",
        progress: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 100,
        resume_from: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> EdgeStatistics:
        """Eq. 3-4 of the model on ``data``: a FeatureSet, or a dataset that is streamed through the model batch by
        batch (no feature matrix is kept, so memory does not grow with the dataset).

        ``rows`` keeps the gradients of those head outputs only (all of them by default, refused when they would
        exceed 1 GiB: a 1000-class head needs ``rows=``). Under ``accelerate launch`` / ``torchrun`` a dataset is
        sharded: each process sums its own samples and the sums are added across processes, so every process
        returns what one process would.

        A long run over a dataset can save its sums to ``checkpoint_dir`` every ``checkpoint_every`` batches
        (atomically, one file per process) and continue with ``resume_from=checkpoint_dir`` after an interruption:
        the result is exactly what an uninterrupted run gives. The checkpoint records the model, data, batch size and
        rows it belongs to and is refused for any other.
        """
        from .checkpoint import load_collect_state, save_collect_state
        from .distributed import all_gather_object, process_info, reduce_sum
        from .features import iter_features

        if isinstance(data, FeatureSet):
            labels = self._labels(data, label_column)
            return edge_statistics(data.features, self.logits(data.features), labels, self.num_classes, rows=rows)
        stats = EdgeStatistics.empty(self.num_classes, self.head.in_features, self.num_classes, rows=rows)
        rank = process_info()[0]
        identity = {
            # the sums depend on the head too (through the logits): its exact bytes are part of the key
            "model": model_fingerprint(self.model, self.head),
            "head": hashlib.sha256(
                b"".join(
                    p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() for p in self.head.parameters()
                )
            ).hexdigest(),
            "data": data_fingerprint(data),
            "batch_size": batch_size,
            "rows": None if rows is None else list(rows),
            "label_column": label_column,
        }
        done = 0
        if resume_from is not None:
            done = load_collect_state(resume_from, rank, stats, identity)
        device = self._resolve_device(device)
        problem: Exception | None = None
        try:
            batches = iter_features(
                self.model,
                self.head,
                data,
                image_column,
                [label_column],
                batch_size,
                transform=self.transform,
                head_name=self.head_name,
                device=device,
                progress=progress,
                skip_batches=done,
                **kwargs,
            )
            for _, features, columns in batches:
                labels = self._check_labels(FeatureSet(features, columns).labels(label_column), label_column)
                stats.update(features, self.logits(features), labels)
                done += 1
                if checkpoint_dir is not None and done % checkpoint_every == 0:
                    save_collect_state(checkpoint_dir, rank, stats, identity, done)
        except (ValueError, KeyError) as err:
            problem = err
        problems = [p for p in all_gather_object(problem) if p is not None]
        if problems:  # under several processes every one raises, instead of waiting forever for the failed one
            raise problems[0]
        reduce_sum(stats.tensors())
        if int(stats.count.sum()) == 0:
            raise ValueError("the data is empty: FCR needs samples of the classes it edits.")
        return stats

    def remove_class(
        self,
        cls: int | str,
        data: Any,
        label_column: str = "label",
        r: float = 1.0,
        num_weights: int = 1,
        candidates: str = "supporting",
    ) -> list[WeightEdit]:
        """Algorithm 1: remove class ``cls`` by editing its ``num_weights`` best edges in row ``cls`` (Eq. 6 ranks
        them; Eq. 8 with rate ``r`` edits them; ``r=1`` is Eq. 7).

        ``candidates="supporting"`` (default) ranks only edges that support the class (``W[c, k]`` and the class's
        mean ``a_k`` of the same sign); ``"all"`` is the paper's literal argmax, which can pick an edge that Eq. 7
        turns into one that amplifies the class. Edges with a zero weight are skipped (Eq. 7 is undefined there).
        """
        r = check_rate(r)
        num_weights = _check_num_weights(num_weights)
        if candidates not in CANDIDATES:
            raise ValueError(f"candidates must be one of {CANDIDATES}, got {candidates!r}.")
        c = self.class_index(cls)
        feats = self._features(data, [label_column])
        labels = self._labels(feats, label_column)
        stats = edge_statistics(feats.features, self.logits(feats.features), labels, self.num_classes, rows=[c])
        if stats.count[c] == 0:
            raise ValueError(
                f"class {c} ({self.class_names[c]!r}) has no samples in the data: its edges cannot be scored."
            )
        weight_row = self.head.weight.detach()[c].cpu()
        zeros = int((weight_row == 0).sum())
        if zeros:
            logger.info("row %d has %d zero weight(s): Eq. 7 is undefined there, they are skipped.", c, zeros)
        edges = top_edges(stats, c, k=num_weights, weight_row=weight_row, candidates=candidates)
        if not edges:
            raise ValueError(f"class {c} has no {candidates} edge with a non-zero weight to edit.")
        applied = self._apply(self._make_edits(c, [(col, score, None) for _, col, score in edges], r))
        self._record(
            "remove_class", cls=c, label_column=label_column, r=r, num_weights=num_weights, candidates=candidates
        )
        return applied

    def fit_fictitious(
        self,
        data: Any,
        attribute_column: str,
        label_column: str | None = "label",
        probe: Any = None,
        **extract_kwargs: Any,
    ) -> FictitiousHead:
        """Algorithm 2, steps 1-5: M' = the frozen features with a new head fit on ``attribute_column``'s values.

        ``probe`` defaults to ``LogisticRegression(C=1.0)``; any scikit-learn style estimator or a callable
        ``(features, targets) -> (weight, bias)`` works. The result holds M''s accuracy (``.accuracy``) and, with a
        ``label_column``, how often each attribute value occurs in each real class (for the pairing policies).
        """
        columns = [attribute_column] + ([label_column] if label_column else [])
        feats = self._features(data, columns, **extract_kwargs)
        labels = self._labels(feats, label_column) if label_column else None
        if len(feats) == 0:
            raise ValueError("the data is empty: M' needs samples to fit on.")
        if not torch.isfinite(feats.features).all():
            raise ValueError("the features contain NaN or inf: re-extract them from finite inputs.")
        fict = fit_fictitious_head(
            feats.features,
            feats[attribute_column],
            attribute_column,
            labels,
            self.num_classes,
            probe,
            names=feats.label_names.get(attribute_column),
        )
        logger.info("M' (%s) accuracy on its training features: %.4f", attribute_column, fict.accuracy)
        return fict

    def _plan_neutralize(
        self,
        fictitious: FictitiousHead,
        classes: Sequence[int | str] | None,
        r: float,
        num_weights: int,
        policy: str,
        values: Sequence[Any] | None,
        selection: str,
        seed: int,
    ) -> list[WeightEdit]:
        """Validate everything and compute Algorithm 2's edits (not applied)."""
        r = check_rate(r)
        num_weights = _check_num_weights(num_weights)
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}.")
        if not isinstance(fictitious, FictitiousHead):
            raise TypeError(
                f"expected the FictitiousHead returned by fit_fictitious, got {type(fictitious).__name__}."
            )
        if fictitious.weight.shape[1] != self.head.in_features:
            raise ValueError(
                f"the fictitious head takes {fictitious.weight.shape[1]} features but this model's head takes "
                f"{self.head.in_features}: it was fit on another model's features."
            )
        if classes is not None:
            targets = [self.class_index(c) for c in classes]
        elif fictitious.crosstab is not None:  # every class that has samples in the data M' was fit on
            targets = [
                c for c in range(self.num_classes) if c < len(fictitious.crosstab) and fictitious.crosstab[c].sum()
            ]
        else:
            targets = list(range(self.num_classes))
        fixed = None if values is None else [fictitious.value_index(v) for v in values]
        generator = torch.Generator().manual_seed(seed)
        weight = self.head.weight.detach().cpu()
        plan: list[WeightEdit] = []
        for c in dict.fromkeys(targets):
            chosen: dict[int, tuple[int, float, str | None]] = {}
            for v in fictitious.values_for(c, policy) if fixed is None else fixed:
                picked = 0
                for col, score in fictitious.ranked_features(v, selection, generator):
                    if picked == num_weights:
                        break
                    if weight[c, col] == 0:
                        logger.warning("W[%d, %d] is 0 (Eq. 7 is undefined there): using the next best edge.", c, col)
                        continue
                    if col in chosen:  # another value of this class took it: each value gets its own weights
                        continue
                    chosen[col] = (col, score, fictitious.value_name(v))
                    picked += 1
            plan.extend(self._make_edits(c, list(chosen.values()), r))
        return plan

    def neutralize(
        self,
        fictitious: FictitiousHead,
        classes: Sequence[int | str] | None = None,
        r: float = 1.0,
        num_weights: int = 1,
        policy: str = "dominant",
        values: Sequence[Any] | None = None,
        selection: str = "sca",
        seed: int = 0,
    ) -> list[WeightEdit]:
        """Algorithm 2, step 6: for each real class ``c`` edit ``W[c, k*]`` with Eq. 8 at rate ``r``, where ``k*``
        is M''s plain SCA argmax (Eq. 6) for the fictitious class chosen by ``policy``:
        ``"dominant"``, the attribute value most frequent in class ``c``; ``"other"``, every other value. ``values``
        names the attribute values to neutralize instead (the same in every class, e.g. one digit of a parity
        class). Up to ``num_weights`` weights per value; zero weights are skipped for the next best. ``classes``
        defaults to every class with samples in the data M' was fit on.

        ``selection`` ranks M''s edges: ``"sca"`` (Eq. 6, the method), ``"grad_x_act"`` (``G * A`` without the CA
        entropy ratio, the paper's Figure 8 left) or ``"random"`` (a control, seeded by ``seed``).
        """
        plan = self._plan_neutralize(fictitious, classes, r, num_weights, policy, values, selection, seed)
        applied = self._apply(plan)
        self._record(
            "neutralize",
            attribute_column=fictitious.attribute_column,
            classes=None if classes is None else [self.class_index(c) for c in classes],
            r=r,
            num_weights=num_weights,
            policy=policy,
            values=None if values is None else [str(v) for v in values],
            selection=selection,
            seed=seed,
        )
        return applied

    def base_weight(self) -> torch.Tensor:
        """The head's weight with every recorded edit undone (a copy; the model is not changed)."""
        weight = self.head.weight.detach().clone()
        for edit in reversed(self.edits):
            weight[edit.row, edit.col] = edit.old_value
        return weight

    def base_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the model without any of the recorded edits."""
        weight = self.base_weight()
        bias = None if self.head.bias is None else self.head.bias.detach()
        return F.linear(features.to(device=weight.device, dtype=weight.dtype), weight, bias).float().cpu()

    def _groups(self, feats: FeatureSet, label_column: str, group_columns: Sequence[str]) -> tuple:
        labels = self._labels(feats, label_column)
        ids, names = group_ids(
            {c: feats.labels(c) for c in (label_column, *group_columns)}, [label_column, *group_columns]
        )
        return labels, ids, names

    def sweep(
        self,
        data: Any,
        r_values: Sequence[float] | None = None,
        label_column: str = "label",
        group_columns: Sequence[str] = (),
        edits: Sequence[WeightEdit] | None = None,
    ) -> SweepResult:
        """Evaluate the current edits (or ``edits``) re-applied from the base weights at every rate in ``r_values``
        (default ``default_r_grid()``), in closed form on cached features. Groups are ``(label, *group_columns)``."""
        feats = self._features(data, [label_column, *group_columns])
        edits = list(self.edits if edits is None else edits)
        if not edits:
            raise ValueError("there are no edits to sweep: call remove_class / neutralize first, or pass edits=.")
        labels, ids, names = self._groups(feats, label_column, group_columns)
        r_values = default_r_grid() if r_values is None else r_values
        return sweep_edits(self.base_logits(feats.features), feats.features, edits, r_values, labels, ids, names)

    def neutralize_spurious(
        self,
        train: Any,
        val: Any,
        label_column: str = "label",
        attribute_column: str = "place",
        rule: str = "min_gap",
        policies: Sequence[str] = POLICIES,
        num_weights: Sequence[int] = (1, 2, 3),
        r_values: Sequence[float] | None = None,
        probe: Any = None,
        selection: str = "sca",
        seed: int = 0,
    ) -> NeutralizationSearch:
        """Algorithm 2 with automatic choices: fit M' on ``train``, then pick the pairing policy, the number of
        weights per class and ``r`` on ``val`` by ``rule`` (``"min_gap"``: smallest gap between average and
        worst-group accuracy, the paper's; ``"max_worst"``: best worst-group accuracy), apply the chosen edits, and
        return what was tried. Groups are ``(label, attribute)``. Ties go to the first candidate in the order
        (policy, weights, smallest r). ``min_gap`` only considers points whose validation worst-group accuracy is
        at least the current model's (see ``SweepResult.best``). The model keeps any earlier edits; the new ones are
        added on top."""
        check_rule(rule)
        for p in policies:
            if p not in POLICIES:
                raise ValueError(f"policies must be among {POLICIES}, got {p!r}.")
        counts = [_check_num_weights(n) for n in num_weights]
        if not policies or not counts:
            raise ValueError("need at least one policy and one num_weights to try.")
        r_values = default_r_grid() if r_values is None else sorted({check_rate(r) for r in r_values})
        train_feats = self._features(train, [label_column, attribute_column])
        val_feats = self._features(val, [label_column, attribute_column])
        labels, ids, names = self._groups(val_feats, label_column, [attribute_column])
        fict = self.fit_fictitious(train_feats, attribute_column, label_column, probe=probe)
        current = self.logits(val_feats.features)
        floor = group_metrics(current.argmax(1), labels, ids, names)["worst_group"]
        tried: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any], list[WeightEdit]] | None = None
        for policy in policies:
            for n in counts:
                plan = self._plan_neutralize(fict, None, 1.0, n, policy, None, selection, seed)
                result = sweep_edits(current, val_feats.features, plan, r_values, labels, ids, names)
                row = result.best(rule, floor=floor)
                tried.append({"policy": policy, "num_weights": n, "sweep": result, **row})
                score = rule_score(row, rule)
                if best is None or score > best[0]:
                    best = (score, tried[-1], plan)
        assert best is not None
        _, choice, plan = best
        r = choice["r"]
        plan = [edit.with_rate(r, self.head.weight.dtype) for edit in plan]
        applied = self._apply(plan)
        self._record(
            "neutralize_spurious",
            label_column=label_column,
            attribute_column=attribute_column,
            rule=rule,
            policies=list(policies),
            num_weights=counts,
            selection=selection,
            seed=seed,
            chosen={"policy": choice["policy"], "num_weights": choice["num_weights"], "r": r},
        )
        return NeutralizationSearch(
            edits=applied,
            fictitious=fict,
            policy=choice["policy"],
            num_weights=choice["num_weights"],
            r=r,
            rule=rule,
            validation=choice,
            tried=tried,
        )

    def _record(self, method: str, **arguments: Any) -> None:
        """Remember a call that made edits: saved in fcr_config.json and shown in the card to reproduce them."""
        self.fcr_config_extra.setdefault("calls", []).append({"method": method, **arguments})

    def revert(self) -> None:
        """Undo every edit, newest first, restoring each weight bit for bit."""
        for edit in reversed(self.edits):
            edit.revert(self.model)
        self.edits.clear()
        self.fcr_config_extra.pop("calls", None)
