"""The registry of ``neutralize_spurious``'s methods. FCR is registered here as the one method of kind
``"weights"`` (single-weight edits chosen from M', fit on the training split's attribute; its search is in
``debias.search``); DFR, class-balanced retraining and users' methods are of kind ``"head"``: they retrain the
classifier head on cached validation features. ``"auto"`` and ``"none"`` are not methods but the search's choices
(``RESERVED_CHOICES``): auto picks a registered method, none is the model unchanged.

A head-level method is one function, registered by name (as peft's ``register_peft_method`` and timm's
``@register_model``)::

    fit(features, labels, groups, *, num_classes, seed) -> (weight, bias, params)

``features`` float ``[N, D]``, ``labels`` int64 ``[N]``, ``groups`` int64 ``[N]`` (label x attribute group ids; None
when the method does not need groups and no attribute was given); it returns the new head's ``weight
[num_classes, D]``, its ``bias [num_classes]`` (or None) and a JSON-able dict of what to record (hyper-parameters,
data sizes). A function whose signature also names ``intercept`` is told whether the head has a bias (built-ins use
it to fit without an intercept). One whose signature names ``tuned`` can refit a configuration already validated:
``method="auto"`` fits every candidate on half of validation, scores it on the other half, and refits the chosen
one on all of validation passing ``tuned=`` the ``params`` that candidate's fit returned (the built-ins then reuse
its ``C`` instead of tuning again; a method without ``tuned`` is refit from scratch). DFR and class-balanced
retraining are registered here like any user method;
``neutralize_spurious(method=name)``, ``method="auto"`` (when the method's group needs are met), the record, the
card and ``hf-fcr neutralize --method name`` (with the module in ``HF_FCR_PLUGINS``) all go through this registry.
An edited artifact holds the new head's tensors, so it reloads where the method was never registered.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.head_edit import FIT_KEYS
from ..records.config import NAME_PATTERN, EditRecordError, check_fit_fields, is_plain
from ..utils.rows import float64_logits
from .retrain import check_every_class, retrain_head

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO",
    "NONE",
    "RESERVED_CHOICES",
    "FittedHead",
    "Method",
    "fit_head",
    "get_head_method",
    "get_method",
    "head_method_names",
    "is_builtin",
    "method_names",
    "register_head_method",
]

AUTO, NONE = "auto", "none"
RESERVED_CHOICES = (AUTO, NONE)  # the search's choices: auto picks a registered method, none changes nothing
MAX_PARAMS_BYTES = 64 * 2**10  # what one method may record (the whole record is read up to 16 MiB)


@dataclass(frozen=True)
class Method:
    """A registered method: its ``name`` and ``kind`` (``"weights"``: FCR's single-weight edits; ``"head"``: the
    head retrained by ``fit``), whether it needs group labels on validation (``needs_groups``) or the training
    split's attribute (``needs_attribute``: M'), and which optional arguments its ``fit`` takes."""

    name: str
    kind: str
    fit: Callable[..., tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]] | None
    needs_groups: bool
    needs_attribute: bool = False
    takes_intercept: bool = False
    takes_tuned: bool = False


@dataclass
class FittedHead:
    """A new head ``weight [K, D]``, ``bias [K]`` or None, fit by ``method``, with what it records (``params``)."""

    method: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    params: dict[str, Any] = field(default_factory=dict)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        bias = torch.zeros(len(self.weight)) if self.bias is None else self.bias
        return float64_logits(features, self.weight, bias)


_REGISTRY: dict[str, Method] = {}


def _register(method: Method, overwrite: bool = False) -> Method:
    """Add ``method`` to the registry (its name checked; an existing method of another kind is never replaced)."""
    name = method.name
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"a head-level method's name is a letter then letters, digits, '_', '.' or '-', got {name!r}."
        )
    if name in RESERVED_CHOICES or (name in _REGISTRY and _REGISTRY[name].kind != method.kind):
        raise ValueError(
            f"{name!r} is reserved: {RESERVED_CHOICES} are the search's choices, and "
            f"{', '.join(n for n, m in _REGISTRY.items() if m.kind != method.kind)} are methods of another kind."
        )
    if name in _REGISTRY and _REGISTRY[name].fit is not method.fit and not overwrite:
        raise ValueError(f"a head-level method {name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[name] = method
    return method


def register_head_method(name: str, fit: Callable[..., Any], *, needs_groups: bool, overwrite: bool = False) -> Method:
    """Register ``fit`` as the head-level method ``name`` (see the module docstring for its signature).

    Raises:
        ValueError: a name that is reserved, not a plain name, or already registered (without ``overwrite=True``).
        TypeError: ``fit`` is not callable, or ``needs_groups`` not a bool.
    """
    if not callable(fit):
        raise TypeError(f"fit must be a function, got {type(fit).__name__}.")
    if not isinstance(needs_groups, bool):
        raise TypeError(f"needs_groups must be True or False, got {needs_groups!r}.")
    parameters = inspect.signature(fit).parameters
    method = Method(name, "head", fit, needs_groups, False, "intercept" in parameters, "tuned" in parameters)
    return _register(method, overwrite)


def method_names() -> tuple[str, ...]:
    """Every registered method, in registration order: FCR, the built-in head-level methods, then users'."""
    return tuple(_REGISTRY)


def head_method_names() -> tuple[str, ...]:
    """The registered head-level methods, in registration order (the built-ins first)."""
    return tuple(name for name, method in _REGISTRY.items() if method.kind == "head")


def get_method(name: str) -> Method:
    """The registered method ``name`` (ValueError listing the registered ones otherwise)."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown method {name!r}: use {AUTO!r} or a registered method ({', '.join(_REGISTRY)}); register "
            "your own with hf_fcr.register_head_method (for the CLI: its module in HF_FCR_PLUGINS)."
        )
    return _REGISTRY[name]


def get_head_method(name: str) -> Method:
    """The registered head-level method ``name`` (ValueError for an unknown name or another kind of method)."""
    method = get_method(name)
    if method.kind != "head":
        raise ValueError(f"{name!r} is not a head-level method (its kind is {method.kind!r}).")
    return method


def fit_head(  # noqa: PLR0913 -- the registry's call: keyword options with defaults
    name: str,
    features: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor | None,
    *,
    num_classes: int,
    seed: int,
    bias: bool = True,
    class_names: Sequence[str] | None = None,
    tuned: dict[str, Any] | None = None,
) -> FittedHead:
    """Fit the registered method ``name`` and check what it returns: ``weight [num_classes, D]``, ``bias
    [num_classes]`` (None for a head without a bias), finite, and JSON-able ``params``. ``tuned``: the ``params`` of
    a validated fit of the same method, passed on to a method that takes it (ignored by one that does not).

    Raises:
        ValueError: a method that needs groups given none, a class without rows (named with ``class_names``: a
            head retrained without it would never predict it), or a fit that returns the wrong shapes or values.
    """
    method = get_head_method(name)
    if method.needs_groups and groups is None:
        raise ValueError(
            f"method={name!r} balances groups: it needs group labels on validation (val_attribute_column)."
        )
    check_every_class(labels, num_classes, class_names)
    extra = {"intercept": bias} if method.takes_intercept else {}
    if method.takes_tuned and tuned is not None:
        extra["tuned"] = tuned
    if not is_builtin(name):  # a plugin gets copies: changing them must not change what the caller measures
        features, labels = features.clone(), labels.clone()
        groups = None if groups is None else groups.clone()
    weight, new_bias, params = method.fit(features, labels, groups, num_classes=num_classes, seed=seed, **extra)
    return FittedHead(name, *_checked(name, weight, new_bias, params, num_classes, features.shape[1], bias))


def _checked(
    name: str, weight: Any, bias: Any, params: Any, num_classes: int, dim: int, has_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    weight = torch.as_tensor(weight)
    if tuple(weight.shape) != (num_classes, dim) or not weight.is_floating_point() or not weight.isfinite().all():
        raise ValueError(
            f"method {name!r} returned a weight of shape {tuple(weight.shape)} ({weight.dtype}); the head needs "
            f"finite floats of shape ({num_classes}, {dim})."
        )
    if bias is not None:
        bias = torch.as_tensor(bias)
        if not has_bias:
            raise ValueError(f"method {name!r} returned a bias, but the head has none (fit without an intercept).")
        if tuple(bias.shape) != (num_classes,) or not bias.is_floating_point() or not bias.isfinite().all():
            raise ValueError(
                f"method {name!r} returned a bias of shape {tuple(bias.shape)}; the head needs finite floats of shape "
                f"({num_classes},)."
            )
    elif has_bias:
        bias = torch.zeros(num_classes, dtype=weight.dtype)  # no intercept fit: the head's bias becomes zero
    if not isinstance(params, dict) or not is_plain(params, 2):  # what the record's "hyperparameters" may hold
        raise ValueError(f"method {name!r} must return a dict of JSON values (numbers, strings, lists) to record.")
    size = len(json.dumps(params))
    if size > MAX_PARAMS_BYTES:
        raise ValueError(
            f"method {name!r} returned params of {size:,} bytes as JSON; a record keeps at most {MAX_PARAMS_BYTES:,} "
            "per edit: record what was chosen (numbers, short lists), not data."
        )
    try:  # checked now as the record's reader will check them, not when the record is saved
        check_fit_fields(params)
    except EditRecordError as err:
        raise ValueError(f"method {name!r} returned params that a record refuses: {err}") from None
    return weight, bias, dict(params)


# ------------------------------------------------------------------------------------------- the built-in methods


def _retrained(  # noqa: PLR0913 -- retrain_head's options, keyword-only
    features: torch.Tensor,
    labels: torch.Tensor,
    balance_by: torch.Tensor,
    num_classes: int,
    seed: int,
    *,
    intercept: bool,
    selection: str,
    name: str,
    tuned: dict[str, Any] | None,
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """``retrain_head`` balanced by ``balance_by``, as a registered method returns it (its ``FIT_KEYS`` recorded);
    a warning names the method, C and iterations of every fit that stopped at its iteration cap. With ``tuned`` (a
    validated fit's params) its ``C`` is reused, and ``selection`` says where it was chosen."""
    C = None if tuned is None else tuned.get("C")
    shown = {"dfr": "DFR", "class_balanced": "class-balanced"}.get(name, name)
    head = retrain_head(features, labels, balance_by, num_classes, seed=seed, intercept=intercept, C=C, name=shown)
    if C is not None:
        selection = f"{selection}, validated by auto on half of validation"
    if head.unconverged:
        logger.warning(
            "%s: %d of its logistic fits stopped at the iteration cap without converging (C, iterations: %s); the "
            "head averages them as they are. Features with very different scales or classes separable by a few "
            "features do this: check the features, or compare with another method (method='auto').",
            name,
            len(head.unconverged),
            sorted(set(head.unconverged)),
        )
    params = dict(zip(FIT_KEYS, (head.C, head.num_samples, head.samples_per_fit, head.num_fits, selection)))
    return head.weight, head.bias if intercept else None, params


def dfr(features, labels, groups, *, num_classes, seed, intercept=True, tuned=None):
    """DFR (``retrain.retrain_head``): the head retrained on group-balanced validation data, C chosen by held-out
    worst-group accuracy (or ``tuned["C"]``, validated by ``auto``)."""
    return _retrained(
        features,
        labels,
        groups,
        num_classes,
        seed,
        intercept=intercept,
        selection="worst_group",
        name="dfr",
        tuned=tuned,
    )


def class_balanced(features, labels, groups, *, num_classes, seed, intercept=True, tuned=None):
    """Class-balanced last-layer retraining: DFR's recipe balanced by class (no group labels needed)."""
    return _retrained(
        features,
        labels,
        labels,
        num_classes,
        seed,
        intercept=intercept,
        selection="worst_class",
        name="class_balanced",
        tuned=tuned,
    )


_register(Method("fcr", "weights", None, needs_groups=False, needs_attribute=True))  # the search: debias.search
register_head_method("dfr", dfr, needs_groups=True)
register_head_method("class_balanced", class_balanced, needs_groups=False)
_BUILTIN_FITS = (dfr, class_balanced)


def is_builtin(name: str) -> bool:
    """True for a method whose fit is one of hf-fcr's own (DFR, class-balanced retraining), not a plugin's."""
    return get_head_method(name).fit in _BUILTIN_FITS
