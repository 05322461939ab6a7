"""``FictitiousClassRemover``: the orchestrating class. Each public method validates its arguments once, calls the
pure functions (stats, scores, edit, probe, sweep) or the I/O at the edges (features, hub), and records what it
changed."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .core.edit import WeightEdit, check_rate
from .core.metrics import group_ids
from .core.scores import CANDIDATES, score_names, top_edges
from .core.stats import EdgeStatistics, edge_statistics
from .core.sweep import NeutralizationSearch, SweepResult, default_r_grid, sweep_edits
from .debias import search as debias
from .debias.diagnosis import RANDOM_ATTRIBUTE_DRAWS, Diagnosis
from .editor import HeadEditor
from .features.feature_pass import FeaturePass, PassOptions
from .features.feature_set import FeatureSet
from .fitting.probe import (
    POLICIES,
    EdgeRule,
    FictitiousHead,
    check_fictitious,
    encode_values,
    fit_fictitious_heads,
    plan_neutralization,
)
from .utils import distributed
from .utils.checks import check_choice, check_num_weights, check_seed
from .utils.rows import all_finite

__all__ = ["FictitiousClassRemover", "NeutralizationSearch"]

logger = logging.getLogger(__name__)


class FictitiousClassRemover(HeadEditor):
    """Edit single weights of a classifier's final ``nn.Linear`` to remove a class (Algorithm 1) or neutralize a
    fictitious class such as a spurious attribute (Algorithm 2), or replace the head by a registered head-level fix.
    The model is edited in place; see ``HeadEditor`` for the constructor's arguments, the edit record, loading and
    saving. ``neutralize_spurious`` and ``diagnose`` run the plain functions of ``debias.search``.
    """

    def features_of(self, data: Any, columns: Sequence[str]) -> FeatureSet:
        """``data``'s features with ``columns``: a ``FeatureSet`` as it is (KeyError naming a missing column), any
        other data through ``extract_features``."""
        if isinstance(data, FeatureSet):
            for c in columns:
                data[c]  # KeyError naming the missing column
            return data
        return self.extract_features(data, columns=tuple(columns))

    def group_labels(self, feats: FeatureSet, label_column: str, group_columns: Sequence[str]) -> tuple:
        """``(labels, group ids, group names)``; group columns may hold integers or strings (``"place=water"``)."""
        labels = self._labels(feats, label_column)
        columns, values = {label_column: labels}, {}
        for c in group_columns:
            raw = feats[c]
            if torch.is_tensor(raw) or np.asarray(raw).dtype.kind in "biuf":
                columns[c] = feats.labels(c)
            else:
                columns[c], values[c] = encode_values(raw)
        return (labels, *group_ids(columns, [label_column, *group_columns], values))

    # ----------------------------------------------------------------------------------------------- the passes

    def extract_features(
        self,
        dataset: Any,
        image_column: str = "image",
        columns: Sequence[str] = ("label",),
        device: torch.device | str | None = "auto",
        gather: bool = True,
        cache_dir: str | os.PathLike | None = None,
        **options: Any,
    ) -> FeatureSet:
        """One pass of the model over ``dataset``: the head's inputs ``[N, D]`` plus the requested ``columns``.

        Args:
            dataset: a ``datasets.Dataset``, a streaming ``datasets.IterableDataset`` or a torch ``DataLoader`` of
                dicts. PIL images go through ``transform``; arrays and tensors are fed to the model as they are.
            device: where the pass runs: ``"auto"`` is this process' GPU when there is one (its own under a
                launcher), else where the model is; None is where the model is; or a device. The model is back on
                the device it was on when the call returns (also when it fails).
            gather: under ``accelerate launch`` / ``torchrun`` the data is sharded across the processes; with
                ``gather=True`` every process gets all rows in the order one process would produce.
            cache_dir: keep the features on disk, keyed by the pass's identity (the weights but the head's, the
                dataset's fingerprint, dtype, autocast, layout, preprocessing, columns); streams and DataLoaders
                have no fingerprint and are not cached, nor is the output of a ``transform`` callable without a
                ``config`` attribute describing it (a warning says so).
            options: how the pass runs, the fields of ``features.PassOptions``: ``batch_size`` (64), ``progress``,
                ``autocast_dtype``, ``channels_last``, ``num_workers``, and ``checkpoint_dir`` /
                ``checkpoint_every`` / ``resume_from`` to save the rows every N batches and resume from them.

        Returns:
            A ``FeatureSet``.

        Raises:
            ValueError: empty data, non-finite features, bad options, or a checkpoint of another run.
            KeyError: a requested column is missing.
        """
        return self.feature_pass(image_column, device, **options).extract(
            dataset, columns, gather=gather, cache_dir=cache_dir
        )

    def collect(
        self,
        data: Any,
        label_column: str = "label",
        rows: Sequence[int] | None = None,
        image_column: str = "image",
        device: torch.device | str | None = "auto",
        **options: Any,
    ) -> EdgeStatistics:
        """Eq. 3-4 of the model on ``data``: a ``FeatureSet``, or a dataset streamed through the model batch by batch
        (no feature matrix is kept, so memory does not grow with the dataset).

        Args:
            rows: keep the gradients of those head outputs only (all by default, refused when they would exceed
                1 GiB: a 1000-class head needs ``rows=``).
            device, options: as in ``extract_features``; a checkpointed run resumed gives the uninterrupted result.

        Returns:
            The statistics; under several processes, every process returns what one process would.

        Raises:
            ValueError: empty data, labels beyond the head, non-finite features, or a checkpoint of another run.
            KeyError: the label column is missing.
        """
        if isinstance(data, FeatureSet):
            labels = self._labels(data, label_column)
            return edge_statistics(data.features, self.logits(data.features), labels, self.num_classes, rows=rows)
        return self.feature_pass(image_column, device, **options).collect(
            data, self.logits, label_column=label_column, rows=rows
        )

    def feature_pass(
        self, image_column: str = "image", device: torch.device | str | None = "auto", **options: Any
    ) -> FeaturePass:
        """The model's pass over data (``features.FeaturePass``): its head, preprocessing and ``options`` (the fields
        of ``PassOptions``; ``device`` as in ``extract_features``)."""
        return FeaturePass(
            self.model,
            self.head,
            transform=self.transform,
            transform_config=self.transform_config,
            head_name=self.head_name,
            image_column=image_column,
            options=PassOptions.for_device(device, **options),
        )

    # ----------------------------------------------------------------------------------------------- the method

    def remove_class(
        self,
        cls: int | str,
        data: Any,
        label_column: str = "label",
        r: float = 1.0,
        num_weights: int = 1,
        candidates: str = "supporting",
        score: str = "sca",
        seed: int = 0,
    ) -> list[WeightEdit]:
        """Algorithm 1: remove class ``cls`` by editing its ``num_weights`` best edges in row ``cls`` (Eq. 6 ranks
        them, or another registered ``score``; Eq. 8 with rate ``r`` edits them; ``r=1`` is Eq. 7).

        Args:
            cls: the class, by index or name.
            data: a ``FeatureSet`` or a dataset (extracted first) with ``label_column``.
            candidates: ``"supporting"`` (default) ranks only edges that support the class (``W[c, k]`` and the
                class's mean ``a_k`` of the same sign); ``"all"`` is the paper's literal argmax, which can pick an
                edge that Eq. 7 turns into one that amplifies the class. Zero weights are skipped.
            score: how edges are ranked: ``"sca"`` (Eq. 6, the method), ``"ca"``, ``"grad_x_act"``, ``"random"`` (a
                control, drawn with ``seed``) or one registered with ``hf_fcr.register_score``.

        Returns:
            The edits applied.

        Raises:
            ValueError: bad ``r`` / ``num_weights`` / ``candidates`` / ``score``, a class without samples or edges,
                bad data.
            KeyError: an unknown class name or column.
        """
        r = check_rate(r)
        num_weights = check_num_weights(num_weights)
        check_choice("candidates", candidates, CANDIDATES)
        check_choice("score", score, score_names())
        seed = check_seed(seed)
        c = self.class_index(cls)
        feats = self.features_of(data, [label_column])
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
        generator = torch.Generator().manual_seed(seed)
        edges = top_edges(
            stats, c, k=num_weights, weight_row=weight_row, candidates=candidates, score=score, generator=generator
        )
        if not edges:
            raise ValueError(f"class {c} has no {candidates} edge with a non-zero weight to edit.")
        applied = self.commit_edits(self._row_edits(c, [(col, value, None) for _, col, value in edges], r))
        ranking = {} if score == "sca" else {"score": score, "seed": seed}  # records of the default stay as they were
        self.record_call(
            "remove_class",
            cls=c,
            label_column=label_column,
            r=r,
            num_weights=num_weights,
            candidates=candidates,
            **ranking,
        )
        return applied

    def fit_fictitious(
        self, data: Any, attribute_column: str, label_column: str | None = "label", probe: Any = None
    ) -> FictitiousHead:
        """Algorithm 2, steps 1-5: M' = the frozen features with a new head fit on ``attribute_column``'s values.

        Args:
            data: a ``FeatureSet`` or a dataset (extracted first).
            label_column: with it, M' also records how often each attribute value occurs in each real class (for
                the pairing policies of ``neutralize``).
            probe: defaults to ``LogisticRegression(C=1.0)``'s objective fit by hf-fcr's batched L-BFGS in torch on
                the features' device (``fitting.logistic``); any scikit-learn style estimator or a callable
                ``(features, targets) -> (weight, bias)`` works.

        Returns:
            M' (``FictitiousHead``), with its accuracy on ``data`` as ``.accuracy``.

        Raises:
            ValueError: empty data, non-finite features, an attribute with a single value.
            KeyError: a missing column.
        """
        return self.fit_fictitious_heads(data, [attribute_column], label_column, probe)[0]

    def fit_fictitious_heads(
        self, data: Any, attribute_columns: Sequence[str], label_column: str | None = "label", probe: Any = None
    ) -> list[FictitiousHead]:
        """``fit_fictitious`` for several attribute columns of the same data, one M' per column: with the default
        probe, the columns with the same number of values are fit together (each step reads the features once for
        all of them), each to the head it would get alone, to the solver's tolerance."""
        columns = list(attribute_columns) + ([label_column] if label_column else [])
        # under several processes a dataset stays sharded: M' is fit with gradients summed across processes
        sharded = not isinstance(data, FeatureSet) and distributed.process_info()[1] > 1 and probe is None
        feats = (
            self.extract_features(data, columns=columns, gather=False) if sharded else self.features_of(data, columns)
        )
        labels = self._labels(feats, label_column) if label_column else None
        if len(feats) == 0:
            raise ValueError("the data is empty: M' needs samples to fit on.")
        if not all_finite(feats.features):
            raise ValueError("the features contain NaN or inf: re-extract them from finite inputs.")
        heads = fit_fictitious_heads(
            feats.features,
            [feats[column] for column in attribute_columns],
            list(attribute_columns),
            labels,
            self.num_classes,
            probe,
            names=[feats.label_names.get(column) for column in attribute_columns],
            sharded=sharded,
        )
        for fict in heads:
            logger.info("M' (%s) accuracy on its training features: %.4f", fict.attribute_column, fict.accuracy)
        return heads

    def planned_edits(
        self,
        fictitious: FictitiousHead,
        classes: list[int] | None,
        r: float,
        num_weights: int,
        policy: str,
        values: list[int] | None,
        rule: EdgeRule,
    ) -> list[WeightEdit]:
        """Algorithm 2's edits of ``classes`` (None: every class) at rate ``r``: ``num_weights`` weights per class
        chosen by ``policy`` (``values``: M''s rows to use, None for all) and ``rule``; nothing is applied."""
        weight = self.head.weight.detach().cpu()
        picks = plan_neutralization(weight, fictitious, classes, num_weights, policy, values, rule)
        return [edit for c, cols in picks.items() for edit in self._row_edits(c, cols, r)]

    def neutralize(  # noqa: PLR0913 -- the public API (docs/design.md): keyword options with defaults
        self,
        fictitious: FictitiousHead,
        classes: Sequence[int | str] | None = None,
        r: float = 1.0,
        num_weights: int = 1,
        policy: str = "dominant",
        values: Sequence[Any] | None = None,
        selection: str = "sca",
        seed: int = 0,
        candidates: str = "all",
    ) -> list[WeightEdit]:
        """Algorithm 2, step 6: for each real class ``c`` edit ``W[c, k*]`` with Eq. 8 at rate ``r``, where ``k*``
        is M''s plain SCA argmax (Eq. 6) for the fictitious class chosen by ``policy``.

        Args:
            fictitious: M', from ``fit_fictitious``.
            classes: the real classes to edit (default: every class with samples in the data M' was fit on).
            policy: ``"dominant"``, the attribute value most frequent in class ``c``; ``"other"``, every other value.
            values: the attribute values to neutralize instead of ``policy`` (the same in every class, e.g. one
                digit of a parity class).
            num_weights: weights per value (zero weights are skipped for the next best).
            selection: ``"sca"`` (Eq. 6, the method), ``"grad_x_act"`` (``G * A`` without the CA entropy ratio,
                the paper's Figure 8 left) or ``"random"`` (a control, seeded by ``seed``).
            candidates: ``"all"`` (default), Algorithm 2's plain argmax; ``"supporting"``, only inputs whose weight
                supports ``c`` on the value's samples (``W[c, k] * mean_v a_k > 0``): Eq. 7 on an input of the
                other sign raises the class for that value instead of lowering it (sub-class removal, Figure 8).

        Returns:
            The edits applied.

        Raises:
            ValueError: bad ``r`` / ``num_weights`` / ``policy`` / ``selection``, or M' fit on other features.
            KeyError: an unknown class name or attribute value.
            TypeError: ``fictitious`` is not a ``FictitiousHead``.
        """
        r = check_rate(r)
        num_weights = check_num_weights(num_weights)
        seed = check_seed(seed)
        check_choice("policy", policy, POLICIES)
        check_fictitious(fictitious, self.head.in_features)
        check_choice("selection", selection, score_names())
        check_choice("candidates", candidates, CANDIDATES)
        targets = None if classes is None else [self.class_index(c) for c in classes]
        fixed = None if values is None else [fictitious.value_index(v) for v in values]
        rule = EdgeRule(selection=selection, candidates=candidates, seed=seed)
        plan = self.planned_edits(fictitious, targets, r, num_weights, policy, fixed, rule)
        applied = self.commit_edits(plan)
        self.record_call(
            "neutralize",
            attribute_column=fictitious.attribute_column,
            classes=targets,
            r=r,
            num_weights=num_weights,
            policy=policy,
            values=None if values is None else [str(v) for v in values],
            selection=selection,
            seed=seed,
            candidates=candidates,
        )
        return applied

    def sweep(
        self,
        data: Any,
        r_values: Sequence[float] | None = None,
        label_column: str = "label",
        group_columns: Sequence[str] = (),
        edits: Sequence[WeightEdit] | None = None,
    ) -> SweepResult:
        """Evaluate the current edits (or ``edits``) re-applied at every rate in ``r_values`` (default
        ``default_r_grid()``), in closed form on cached features. Groups are ``(label, *group_columns)``.

        The rates are applied to the head the model has now with the swept edits undone (those of them it holds),
        so any other edit stays in place: after a head-level fix, ``edits=`` made on the retrained head sweep from
        the retrained head, not from the original one.

        Raises:
            ValueError: no edits, bad rates or data.
            KeyError: a missing column.
        """
        feats = self.features_of(data, [label_column, *group_columns])
        edits = list(self.edits if edits is None else edits)
        if any(not e.has_rate for e in edits):
            raise ValueError("head-level edits have no rate to sweep: sweep single-weight edits (pass edits=).")
        if not edits:
            raise ValueError("there are no edits to sweep: call remove_class / neutralize first, or pass edits=.")
        labels, ids, names = self.group_labels(feats, label_column, group_columns)
        r_values = default_r_grid() if r_values is None else r_values
        base = self.logits_without(feats.features, [h for h in self.edits if any(h is e for e in edits)])
        return sweep_edits(base, feats.features, edits, r_values, labels, ids, names)

    # ------------------------------------------------------------------------------------------ spurious cues

    def neutralize_spurious(  # noqa: PLR0913 -- the public API (docs/design.md): keyword options with defaults
        self,
        train: Any,
        val: Any,
        label_column: str = "label",
        attribute_column: str | None = "place",
        rule: str = "min_gap",
        policies: Sequence[str] = POLICIES,
        num_weights: Sequence[int] = (1, 2, 3),
        r_values: Sequence[float] | None = None,
        probe: Any = None,
        selection: str = "sca",
        seed: int = 0,
        method: str = "fcr",
        val_attribute_column: str | None = debias.SAME_COLUMN,
        diagnose: bool = True,
    ) -> NeutralizationSearch:
        """Remove a spurious cue, choosing on ``val``, and apply the chosen edit.

        Args:
            train, val: ``FeatureSet``s or datasets with ``label_column`` and the attribute columns.
            attribute_column: the attribute M' is fit on (``train``), for FCR.
            rule: ``"min_gap"``, the smallest gap between average and worst-group accuracy (the paper's), among
                points whose validation worst group is above the current model's; or ``"max_worst"``, the best
                worst-group accuracy. Ties go to the first candidate in the order (policy, weights, smallest r).
            policies, num_weights, r_values: FCR's grid (``r_values`` default: ``default_r_grid()``).
            probe, selection, seed: as in ``fit_fictitious`` and ``neutralize``; ``seed`` also seeds the head fits.
            method: ``"fcr"`` (Algorithm 2: one weight per class and fictitious class, Eq. 8), a registered
                head-level method (``head_methods``: ``"dfr"`` retrains the head on group-balanced validation data,
                ``"class_balanced"`` on class-balanced validation data, with no group labels needed; yours through
                ``hf_fcr.register_head_method``) or ``"auto"``: every available method is fit
                on one half of ``val`` (FCR's own choices by ``rule``) and scored on the other half by worst-group
                accuracy (worst-class without group labels), beside the model unchanged (``"none"``); FCR is kept
                when it is within ``AUTO_MARGIN`` of the best (fewer weights changed), the choice is refit on all of
                ``val`` (a head-level choice with the configuration its half validated: the built-ins' ``C``), and
                when no method beats the unchanged model nothing is changed (``method="none"``, no edits, a
                warning). Each group is split in half; a group of fewer than ``AUTO_MIN_GROUP`` rows makes
                the choice on all of ``val`` instead, with a warning naming it. Across methods the score is
                the worst group, not ``rule``: ``min_gap`` rewards an edit that drags every group down to the same
                accuracy (measured: on the fine-tuned EfficientNet-Lite0 it preferred FCR at 51% worst-group over
                DFR at 91%).
            val_attribute_column: the group column on ``val`` (default: ``attribute_column``). None: validation
                has no group labels; choices use worst-CLASS accuracy and methods that need groups (``dfr``) are
                unavailable.
            diagnose: also run ``diagnose`` (FCR against the random-attribute control; needs the attribute on
                both splits) and keep it in the result (``diagnosis``), the record and the card.

        Returns:
            A ``NeutralizationSearch``: ``method`` applied, its ``edits`` (a ``HeadEdit`` for head-level methods),
            FCR's choices, and with ``"auto"`` every candidate's held-out metrics (``candidates``). The model keeps
            any earlier edits; the new ones are added on top.

        Raises:
            ValueError: an unknown rule, method, policy or selection, an empty grid, bad data.
            KeyError: a missing column.
        """
        return debias.neutralize_spurious(
            self,
            train,
            val,
            label_column=label_column,
            attribute_column=attribute_column,
            rule=rule,
            policies=policies,
            num_weights=num_weights,
            r_values=r_values,
            probe=probe,
            selection=selection,
            seed=seed,
            method=method,
            val_attribute_column=val_attribute_column,
            diagnose=diagnose,
        )

    def diagnose(  # noqa: PLR0913 -- the public API (docs/design.md): keyword options with defaults
        self,
        train: Any,
        val: Any,
        label_column: str = "label",
        attribute_column: str = "place",
        val_attribute_column: str | None = None,
        rule: str = "min_gap",
        num_draws: int = RANDOM_ATTRIBUTE_DRAWS,
        seed: int = 0,
        r_values: Sequence[float] | None = None,
    ) -> Diagnosis:
        """Whether a one-weight edit removes the cue of ``attribute_column`` here, with the evidence (nothing is
        changed): M''s validation accuracy, the share of its logit in its top 1 / 10 / 100 features, its accuracy
        from its top 1 / 10 features alone, and the validation worst-group gain of FCR's search (the default grid)
        against the same search with M' fit on ``num_draws`` random attributes (the true attribute shuffled within
        each class). ``verdict`` says it in words and names the fix to use.

        Raises:
            ValueError: bad data, an attribute with one value on either split, ``num_draws < 1``.
            KeyError: a missing column (the attribute on train included).
        """
        return debias.diagnose_cue(
            self,
            train,
            val,
            label_column=label_column,
            attribute_column=attribute_column,
            val_attribute_column=val_attribute_column,
            rule=rule,
            num_draws=num_draws,
            seed=seed,
            r_values=r_values,
        )
