"""Fixing a spurious cue, as plain functions of a ``FictitiousClassRemover`` (whose ``neutralize_spurious`` and
``diagnose`` call them and document them): FCR's search (Algorithm 2 with automatic choices), the registered
head-level fixes (DFR, class-balanced retraining, yours), ``method="auto"`` between them, and ``diagnose``: whether one
weight carries the cue, against a random-attribute control. They use the remover's features, M', edits and record.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..core.edit import check_rate
from ..core.head_edit import HeadEdit, backbone_digest
from ..core.metrics import group_metrics
from ..core.scores import score_names
from ..core.sweep import NeutralizationSearch, check_rule, default_r_grid, edited_logits, search_edits
from ..features.feature_set import FeatureSet
from ..fitting.methods import AUTO, NONE, FittedHead, fit_head, get_method, is_builtin, method_names
from ..fitting.probe import POLICIES, EdgeRule, FictitiousHead, encode_values, fit_linear_probe
from ..utils.checks import check_choice, check_num_weights, check_seed
from ..utils.progress import over
from .diagnosis import (
    RANDOM_ATTRIBUTE_DRAWS,
    RANDOM_COLUMN,
    Diagnosis,
    disagreement,
    logit_share,
    random_attribute_draws,
    verdict,
)

__all__ = [
    "AUTO_MARGIN",
    "AUTO_MIN_GROUP",
    "SAME_COLUMN",
    "Remover",
    "SearchSettings",
    "diagnose_cue",
    "neutralize_spurious",
]

logger = logging.getLogger(__name__)

AUTO_MARGIN = 0.01  # "auto" keeps the single-weight edit when it is within a point of the best candidate
AUTO_MIN_GROUP = 4  # rows of a group "auto" needs to hold half of it out (each half of it must hold two)
SAME_COLUMN = "same"  # val_attribute_column's default: the attribute column itself


class Remover(Protocol):
    """What the search and the diagnosis use of a ``FictitiousClassRemover`` (the layer above this one): its model
    and head, its passes, M', FCR's planned edits, and the record its edits go to."""

    model: torch.nn.Module
    head: torch.nn.Linear
    param_name: str
    bias_name: str | None
    class_names: list[str]
    num_classes: int
    fcr_config_extra: dict[str, Any]

    def features_of(self, data: Any, columns: Sequence[str]) -> FeatureSet: ...
    def group_labels(self, feats: FeatureSet, label_column: str, group_columns: Sequence[str]) -> tuple: ...
    def logits(self, features: torch.Tensor) -> torch.Tensor: ...
    def fit_fictitious(self, data: Any, attribute_column: str, label_column: str, **kwargs: Any) -> FictitiousHead: ...
    def fit_fictitious_heads(
        self, data: Any, attribute_columns: Sequence[str], label_column: str, **kwargs: Any
    ) -> list[FictitiousHead]: ...
    def planned_edits(self, fictitious: FictitiousHead, *args: Any) -> list[Any]: ...
    def commit_edits(self, edits: Sequence[Any]) -> list[Any]: ...
    def record_call(self, method: str, **arguments: Any) -> None: ...


@dataclass(frozen=True)
class SearchSettings:
    """What FCR's search and the head-level fits are told (``neutralize_spurious``'s arguments, checked):
    the columns (``group_column``: the validation groups, None without group labels), FCR's grid (``policies``,
    ``num_weights``, ``r_values``) and ``rule``, M''s ``probe``, the edge ``selection`` and the ``seed``."""

    label_column: str = "label"
    attribute_column: str | None = "place"
    group_column: str | None = "place"
    rule: str = "min_gap"
    policies: tuple[str, ...] = POLICIES
    num_weights: tuple[int, ...] = (1, 2, 3)
    r_values: tuple[float, ...] = ()
    probe: Any = None
    selection: str = "sca"
    seed: int = 0


def _split_by_group(
    val: FeatureSet, ids: torch.Tensor, names: Sequence[str], seed: int
) -> tuple[FeatureSet, FeatureSet]:
    """``(fit, held)``: each group's rows shuffled and cut in half; both ``val`` itself (with a warning naming the
    group) when a group has fewer than ``AUTO_MIN_GROUP`` rows."""
    counts = torch.bincount(ids, minlength=len(names))
    small = [(names[g], int(n)) for g, n in enumerate(counts.tolist()) if 0 < n < AUTO_MIN_GROUP]
    if small:
        logger.warning(
            "auto: validation group %s has %d row(s); holding half of a group out needs %d. Choosing on all of the "
            "validation split instead (fit and scored on the same rows: optimistic). Use a larger validation split.",
            *small[0],
            AUTO_MIN_GROUP,
        )
        return val, val
    g = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for group in range(len(names)):
        rows = torch.nonzero(ids == group).flatten()
        rows = rows[torch.randperm(len(rows), generator=g)]
        fit.append(rows[: len(rows) // 2])
        held.append(rows[len(rows) // 2 :])
    return val.select(torch.sort(torch.cat(fit)).values), val.select(torch.sort(torch.cat(held)).values)


def _selection_groups(remover: Remover, feats: FeatureSet, settings: SearchSettings) -> tuple:
    """``(labels, group ids, group names)``: (label, attribute) groups, or the classes alone without groups."""
    group = settings.group_column
    return remover.group_labels(feats, settings.label_column, [group] if group else [])


def _metrics_now(remover: Remover, feats: FeatureSet, settings: SearchSettings) -> dict[str, Any]:
    """The model's group metrics on ``feats`` with the head it has now."""
    labels, ids, names = _selection_groups(remover, feats, settings)
    return group_metrics(remover.logits(feats.features).argmax(1), labels, ids, names)


def _fcr_search(
    remover: Remover,
    train: FeatureSet,
    val: FeatureSet,
    settings: SearchSettings,
    shared: Callable[[], FictitiousHead] | None = None,
) -> tuple[Any, dict[str, Any], list, list[dict[str, Any]]]:
    """M' on ``train`` (``shared()`` when given: the same fit, made once per call) and the grid search on ``val``,
    nothing applied: ``(M', choice, plan, tried)``."""
    labels, ids, names = _selection_groups(remover, val, settings)
    rule = EdgeRule(selection=settings.selection, seed=settings.seed)
    if shared is not None:
        fict = shared()
    else:
        fict = remover.fit_fictitious(train, settings.attribute_column, settings.label_column, probe=settings.probe)
    choice, plan, tried = search_edits(
        lambda policy, n: remover.planned_edits(fict, None, 1.0, n, policy, None, rule),
        settings.policies,
        settings.num_weights,
        remover.logits(val.features),
        val.features,
        settings.r_values,
        (labels, ids, names),
        settings.rule,
    )
    return fict, choice, plan, tried


def _retrained(
    remover: Remover,
    val: FeatureSet,
    settings: SearchSettings,
    method: str,
    tuned: dict[str, Any] | None = None,
) -> FittedHead:
    """The registered head-level ``method`` fit on ``val`` (groups: label x the group column, when there is one);
    ``tuned``: the params of its fit validated by ``auto``."""
    labels, ids, _ = _selection_groups(remover, val, settings)
    return fit_head(
        method,
        val.features,
        labels,
        ids if settings.group_column else None,
        num_classes=remover.num_classes,
        seed=settings.seed,
        bias=remover.head.bias is not None,
        class_names=remover.class_names,
        tuned=tuned,
    )


def _head_edit(remover: Remover, head: FittedHead) -> HeadEdit:
    return HeadEdit.from_heads(
        remover.param_name,
        remover.bias_name,
        (remover.head.weight, remover.head.bias),
        (head.weight, head.bias),
        head.method,
        backbone_sha256=backbone_digest(remover.model, remover.head),
        hyperparameters=dict(head.params),
    )


def neutralize_spurious(  # noqa: PLR0913 -- the keyword options of Remover.neutralize_spurious
    remover: Remover,
    train: Any,
    val: Any,
    *,
    label_column: str,
    attribute_column: str | None,
    rule: str,
    policies: Sequence[str],
    num_weights: Sequence[int],
    r_values: Sequence[float] | None,
    probe: Any,
    selection: str,
    seed: int,
    method: str,
    val_attribute_column: str | None,
    diagnose: bool,
) -> NeutralizationSearch:
    """``Remover.neutralize_spurious`` (documented there, with the defaults), on ``remover``: the
    arguments are checked into one ``SearchSettings``, then ``run_neutralization`` does the work."""
    check_rule(rule)
    seed = check_seed(seed)
    fix = None if method == AUTO else get_method(method)  # ValueError listing the registered methods
    check_choice("selection", selection, score_names())
    for p in policies:
        check_choice("policies", p, POLICIES)
    counts = tuple(check_num_weights(n) for n in num_weights)
    if not policies or not counts:
        raise ValueError("need at least one policy and one num_weights to try.")
    if fix is not None and fix.needs_attribute and not attribute_column:
        raise ValueError(
            f"method={method!r} fits M' on an attribute: pass attribute_column (or use 'class_balanced')."
        )
    settings = SearchSettings(
        label_column=label_column,
        attribute_column=attribute_column,
        group_column=attribute_column if val_attribute_column == SAME_COLUMN else val_attribute_column,
        rule=rule,
        policies=tuple(policies),
        num_weights=counts,
        r_values=tuple(default_r_grid() if r_values is None else sorted({check_rate(r) for r in r_values})),
        probe=probe,
        selection=selection,
        seed=seed,
    )
    call = {"val_attribute_column": val_attribute_column} if val_attribute_column != SAME_COLUMN else {}
    return run_neutralization(remover, train, val, settings, method=method, diagnose=diagnose, call=call)


def run_neutralization(
    remover: Remover,
    train: Any,
    val: Any,
    settings: SearchSettings,
    *,
    method: str,
    diagnose: bool,
    call: dict[str, Any],
) -> NeutralizationSearch:
    """``neutralize_spurious`` on checked ``settings``: fit ``method`` (``"auto"``: choose one first), apply it,
    record it with ``call`` (extra record fields) and return what was chosen and tried."""
    s = settings
    uses_attribute = s.attribute_column and (method == AUTO or get_method(method).needs_attribute or diagnose)
    train_feats = remover.features_of(train, [s.label_column, *([s.attribute_column] if uses_attribute else [])])
    val_feats = remover.features_of(val, [s.label_column, *([s.group_column] if s.group_column else [])])
    candidates: dict[str, dict[str, Any]] = {}
    tuned: dict[str, dict[str, Any]] = {}  # auto: each head-level candidate's params, validated on half of val
    # M' on the training split, fit on first use: auto's FCR candidate, the diagnosis (which fits it with the default
    # probe) and the final search share one fit where each made its own
    shared = functools.cache(
        lambda: remover.fit_fictitious(train_feats, s.attribute_column, s.label_column, probe=s.probe)
    )
    if method == AUTO:
        method, candidates, tuned = _auto(remover, train_feats, val_feats, s, shared)
    diagnosis = None
    if diagnose and uses_attribute and s.group_column:
        diagnosis = diagnose_cue(
            remover,
            train_feats,
            val_feats,
            label_column=s.label_column,
            attribute_column=s.attribute_column,
            val_attribute_column=s.group_column,
            rule=s.rule,
            num_draws=RANDOM_ATTRIBUTE_DRAWS,
            seed=s.seed,
            r_values=s.r_values,
            shared=shared if s.probe is None else None,
        )
    call = {
        "label_column": s.label_column,
        "attribute_column": s.attribute_column,
        "rule": s.rule,
        "policies": list(s.policies),
        "num_weights": list(s.num_weights),
        "selection": s.selection,
        "seed": s.seed,
        "fix": AUTO if candidates else method,  # the ``method`` argument ("method" names the call itself)
        **call,
    }
    kept_weights = bool(candidates) and method != NONE and get_method(method).kind == "weights"
    note = disagreement(kept_weights, diagnosis)
    found = {"rule": s.rule, "candidates": candidates, "diagnosis": diagnosis, "note": note}
    if method == NONE:  # auto: no fix beat the model as it is on held-out validation data
        logger.warning("auto: no method beats the unchanged model on held-out validation data; nothing changed.")
        validation = _metrics_now(remover, val_feats, s)
        return NeutralizationSearch(
            edits=[],
            fictitious=None,
            policy=None,
            num_weights=0,
            r=None,
            validation=validation,
            method=NONE,
            **found,
        )
    if get_method(method).kind == "head":
        head = _retrained(remover, val_feats, s, method, tuned.get(method))
        applied = remover.commit_edits([_head_edit(remover, head)])
        chosen = {"method": method, **({"C": head.params["C"]} if "C" in head.params else {})}
        remover.record_call("neutralize_spurious", **call, chosen=chosen)
        _keep(remover, diagnosis, note)
        validation = _metrics_now(remover, val_feats, s)
        return NeutralizationSearch(
            edits=applied,
            fictitious=None,
            policy=None,
            num_weights=0,
            r=None,
            validation=validation,
            method=method,
            head=head,
            **found,
        )
    fict, choice, plan, tried = _fcr_search(remover, train_feats, val_feats, s, shared)
    r = choice["r"]
    applied = remover.commit_edits([edit.with_rate(r, remover.head.weight.dtype) for edit in plan])
    chosen = {"method": method, "policy": choice["policy"], "num_weights": choice["num_weights"], "r": r}
    remover.record_call("neutralize_spurious", **call, chosen=chosen)
    _keep(remover, diagnosis, note)
    return NeutralizationSearch(
        edits=applied,
        fictitious=fict,
        policy=choice["policy"],
        num_weights=choice["num_weights"],
        r=r,
        validation=choice,
        tried=tried,
        **found,
    )


def _keep(remover: Remover, diagnosis: Diagnosis | None, note: str | None) -> None:
    """The diagnosis goes into the record (and the card), once the edit it concerns is applied, with ``note`` (auto's
    disagreement with it) when there is one."""
    if diagnosis is not None:
        remover.fcr_config_extra["diagnosis"] = {**diagnosis.to_dict(), **({"note": note} if note else {})}


def _auto(
    remover: Remover,
    train: FeatureSet,
    val: FeatureSet,
    settings: SearchSettings,
    shared: Callable[[], FictitiousHead] | None = None,
) -> tuple[str, dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Fit each available method on half of ``val`` (split within each group) and score it on the other half by
    worst-group (or worst-class) accuracy, beside ``"none"`` (the model unchanged); returns the chosen method,
    every candidate's held-out metrics (and ``score``) and each head-level candidate's ``params`` (what the refit
    on all of ``val`` reuses: the built-ins' ``C``, so it is not tuned a second time). A group with fewer than
    ``AUTO_MIN_GROUP`` rows cannot be split (the head fits need two rows of it): the choice is then made on all of
    ``val``, with a warning naming the group."""
    _, ids, names = _selection_groups(remover, val, settings)
    fit, held = _split_by_group(val, ids, names, settings.seed)
    labels, ids, names = _selection_groups(remover, held, settings)
    base = remover.logits(held.features)

    def metrics(logits: torch.Tensor) -> dict[str, Any]:
        return group_metrics(logits.argmax(1), labels, ids, names)

    candidates: dict[str, dict[str, Any]] = {NONE: metrics(base)}
    tuned: dict[str, dict[str, Any]] = {}
    available = [  # each registered method whose needs (an attribute, group labels) are met
        name
        for name in method_names()
        if (settings.attribute_column or not get_method(name).needs_attribute)
        and (settings.group_column or not get_method(name).needs_groups)
    ]
    for name in over(available, "auto: candidates"):
        method = get_method(name)
        if method.kind == "weights":
            _, choice, plan, _ = _fcr_search(remover, train, fit, settings, shared)
            candidates[name] = metrics(edited_logits(base, held.features, plan, choice["r"]))
            continue
        try:
            head = _retrained(remover, fit, settings, name)
        except Exception as err:  # a plugin that fails is one candidate fewer, not the end of auto
            if is_builtin(name):
                raise
            logger.warning("auto: the head-level method %r failed and is left out of the candidates: %s", name, err)
            continue
        candidates[name] = metrics(head.logits(held.features))
        tuned[name] = head.params
    for row in candidates.values():  # across methods, the worst group decides (see neutralize_spurious)
        row["score"] = row["worst_group"]
    fixes = [m for m in candidates if m != NONE]
    best = max(fixes, key=lambda m: candidates[m]["score"]) if fixes else NONE
    # a single-weight edit is kept when it is within AUTO_MARGIN of the best: it changes fewer weights
    light = [m for m in fixes if get_method(m).kind == "weights"]
    lightest = max(light, key=lambda m: candidates[m]["score"]) if light else None
    if candidates[best]["score"] <= candidates[NONE]["score"]:
        chosen = NONE  # no fix beats the model as it is on held-out data: change nothing
    elif lightest is not None and candidates[lightest]["score"] >= candidates[best]["score"] - AUTO_MARGIN:
        chosen = lightest
    else:
        chosen = best
    logger.info("auto: %s (held-out: %s)", chosen, {m: round(c["score"], 4) for m, c in candidates.items()})
    return chosen, candidates, tuned


def _m_prime_evidence(
    fict: FictitiousHead,
    train: FeatureSet,
    val: FeatureSet,
    attribute: torch.Tensor,
    group_column: str,
    attribute_column: str,
) -> tuple[float, float, torch.Tensor, dict[str, float]]:
    """The diagnosis' evidence on M' itself: ``(validation attribute accuracy, the majority value's rate, the
    cumulative share of M''s logit over its ranked features, the accuracy of M' refit on its top 1 / 10 features)``.
    ``attribute``: the training attribute in M''s value indices."""
    try:  # the validation attribute in M''s value indices
        raw = val[group_column]
        targets = torch.tensor([fict.value_index(v) for v in (raw.tolist() if torch.is_tensor(raw) else raw)])
    except KeyError:
        raise ValueError(
            f"validation column {group_column!r} holds values that {attribute_column!r} does not: the diagnosis "
            "measures M' on the attribute it was fit on."
        ) from None
    val_acc = float((fict.logits(val.features).argmax(1) == targets).double().mean())
    majority = float(torch.bincount(targets).max() / len(targets))
    share = logit_share(fict.weight, train.features, attribute)
    ranked = torch.argsort(share, descending=True, stable=True)
    top_accuracy = {}
    for k in (1, 10):
        cols = ranked[: min(k, len(ranked))]
        w, b = fit_linear_probe(train.features[:, cols], attribute, fict.num_values)
        pred = (val.features[:, cols].double() @ w.T + b).argmax(1)
        top_accuracy[f"top{k}"] = float((pred == targets).double().mean())
    return val_acc, majority, torch.cumsum(share[ranked], 0), top_accuracy


def diagnose_cue(  # noqa: PLR0913 -- the keyword options of Remover.diagnose
    remover: Remover,
    train: Any,
    val: Any,
    *,
    label_column: str,
    attribute_column: str,
    val_attribute_column: str | None,
    rule: str,
    num_draws: int,
    seed: int,
    r_values: Sequence[float] | None,
    shared: Callable[[], FictitiousHead] | None = None,
) -> Diagnosis:
    """``Remover.diagnose`` (documented there, with the defaults), on ``remover``: changes nothing.
    ``shared``: M' on ``train``'s attribute with the default probe, when the caller has it (``run_neutralization``)."""
    check_rule(rule)
    seed = check_seed(seed)
    if isinstance(num_draws, bool) or not isinstance(num_draws, numbers.Integral) or num_draws < 1:
        raise ValueError(
            f"num_draws must be an integer >= 1, got {num_draws!r}: the verdict compares FCR with "
            "random-attribute draws, and claims no control that was not run."
        )
    group_column = val_attribute_column or attribute_column
    train = remover.features_of(train, [label_column])
    if attribute_column not in train.columns:
        raise KeyError(
            f"the diagnosis fits M' on the training split's attribute, and train has no column "
            f"{attribute_column!r}. With group labels on validation only, FCR cannot be diagnosed: use "
            "method='dfr' (or 'auto') with diagnose=False."
        )
    val = remover.features_of(val, [label_column, group_column])
    for split, feats, column in (("train", train, attribute_column), ("validation", val, group_column)):
        raw = feats[column]
        distinct = set(raw.tolist() if torch.is_tensor(raw) else raw)
        if len(distinct) < 2:
            raise ValueError(
                f"the {split} column {column!r} has a single value {sorted(distinct, key=str)}: the diagnosis "
                "compares worst-group accuracy across the attribute's values and needs rows of at least two."
            )
    settings = SearchSettings(
        label_column=label_column,
        attribute_column=attribute_column,
        group_column=group_column,
        rule=rule,
        r_values=tuple(default_r_grid() if r_values is None else r_values),
        seed=seed,
    )  # FCR's default grid, SCA, the default probe: the search the verdict is about
    attribute, _ = encode_values(train[attribute_column])
    shuffled = random_attribute_draws(train, label_column, attribute, seed, num_draws)
    # M' on the random draws in one batched fit (fitting.logistic: every step reads the training features once for
    # all of them); M' on the attribute alone, the head neutralize_spurious's search and auto use (a batched fit
    # agrees with it to the solver's rounding, not bit for bit)
    draws = {f"{RANDOM_COLUMN}{d}": data[RANDOM_COLUMN] for d, data in enumerate(shuffled)}
    with_draws = dataclasses.replace(train, columns={**train.columns, **draws})
    heads = remover.fit_fictitious_heads(with_draws, list(draws), label_column)
    items = [(train, shared)] + [(data, lambda head=head: head) for data, head in zip(shuffled, heads)]
    searches = []
    for data, fit in over(items, "diagnosis: random draws"):
        found = _fcr_search(remover, data, val, settings, fit)
        evidence = None
        if data is train:
            evidence = _m_prime_evidence(found[0], train, val, attribute, group_column, attribute_column)
        searches.append((*found, evidence))
    fict, choice, _, tried, (val_acc, majority, cumulative, top_accuracy) = searches[0]
    base = tried[0]["sweep"].table[0]  # r = 0: the unedited model
    chosen = next(t for t in tried if (t["policy"], t["num_weights"]) == (choice["policy"], choice["num_weights"]))
    random_gains, random_sweeps = [], []
    for _, c, _, t, _ in searches[1:]:
        random_gains.append(c["worst_group"] - base["worst_group"])
        random_sweeps.append(
            next(x for x in t if (x["policy"], x["num_weights"]) == (c["policy"], c["num_weights"]))["sweep"]
        )
    gain = choice["worst_group"] - base["worst_group"]
    average_change = choice["average"] - base["average"]
    ok, text = verdict(gain, random_gains, average_change, top_accuracy.get("top1", float("nan")), majority, val_acc)
    return Diagnosis(
        attribute_column=attribute_column,
        fictitious_accuracy=val_acc,
        attribute_majority=majority,
        logit_share={f"top{k}": float(cumulative[min(k, len(cumulative)) - 1]) for k in (1, 10, 100)},
        top_accuracy=top_accuracy,
        base_worst_group=base["worst_group"],
        fcr_worst_group=choice["worst_group"],
        fcr_average_change=average_change,
        fcr_gain=gain,
        random_gains=random_gains,
        one_weight=ok,
        verdict=text,
        cumulative_share=cumulative.tolist(),
        fcr_sweep=chosen["sweep"],
        random_sweeps=random_sweeps,
    )
