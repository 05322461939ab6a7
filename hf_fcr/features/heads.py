"""Find the final ``nn.Linear`` that produces a classifier's logits, and capture its input with a forward pre-hook."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["HeadCapture", "class_names_of", "find_head", "logits_of", "not_logits"]


def _fail(model: nn.Module, why: str) -> TypeError:
    return TypeError(
        f"{type(model).__name__} has no usable linear head: {why}. FCR edits the final nn.Linear that produces the "
        "logits; pass head_name= to name it if discovery picked the wrong module."
    )


def _last_linear(module: nn.Module) -> tuple[str, nn.Linear] | None:
    found = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            found = (name, sub)
    return found


def find_head(model: nn.Module, head_name: str | None = None) -> tuple[str, nn.Linear]:
    """Return ``(module_name, linear)`` of the classifier head.

    In order: ``head_name`` when given; timm's ``pretrained_cfg["classifier"]``; transformers' ``classifier`` (its last
    Linear when it is a Sequential, as in ResNet); else the last ``nn.Linear`` registered in the model. Models with two
    heads (timm's distilled ``("head", "head_dist")``) and heads that are not a Linear raise TypeError.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}.")
    if head_name is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        classifier = cfg.get("classifier") if isinstance(cfg, dict) else None
        if isinstance(classifier, (tuple, list)):
            if len(classifier) != 1:
                raise _fail(model, f"it has {len(classifier)} heads {tuple(classifier)} (a distilled model)")
            classifier = classifier[0]
        if classifier:
            head_name = classifier
        elif isinstance(getattr(model, "classifier", None), nn.Module):
            head_name = "classifier"
    if head_name is not None:
        try:
            head = model.get_submodule(head_name)
        except AttributeError:
            raise _fail(model, f"it has no submodule {head_name!r}") from None
        if isinstance(head, nn.Linear):
            return head_name, head
        inner = _last_linear(head)
        if inner is None:
            raise _fail(model, f"{head_name!r} is a {type(head).__name__}, not an nn.Linear")
        return f"{head_name}.{inner[0]}" if inner[0] else head_name, inner[1]
    found = _last_linear(model)
    if found is None:
        raise _fail(model, "it contains no nn.Linear")
    return found


def class_names_of(model: nn.Module, num_outputs: int) -> list[str] | None:
    """The class names a checkpoint carries: transformers' ``config.id2label`` or timm's ``label_names``."""
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if isinstance(id2label, dict) and len(id2label) == num_outputs:
        return [str(id2label[i]) for i in range(num_outputs)]
    cfg = getattr(model, "pretrained_cfg", None)
    names = cfg.get("label_names") if isinstance(cfg, dict) else None
    if names is not None and len(names) == num_outputs:
        return [str(n) for n in names]
    return None


def logits_of(output: Any) -> torch.Tensor:
    """The logits in a model's output: a tensor, an object with ``.logits`` (transformers), or a tuple's first item."""
    if torch.is_tensor(output):
        return output
    logits = getattr(output, "logits", None)
    if torch.is_tensor(logits):
        return logits
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    if isinstance(output, dict) and torch.is_tensor(output.get("logits")):
        return output["logits"]
    raise TypeError(f"cannot find logits in the model's output of type {type(output).__name__}.")


def not_logits(head_name: str, detail: str) -> TypeError:
    """The error for a head whose output is not the model's logits (``detail`` says where they differ)."""
    return TypeError(
        f"the output of {head_name!r} is not the model's logits ({detail}): something transforms it afterwards (e.g. "
        "a second, distilled head). FCR needs the final nn.Linear to produce the logits; pass head_name= to choose "
        "another module."
    )


class HeadCapture:
    """Records the head's input and output during one forward pass (the pass compares the output with the logits:
    ``features.BatchChecks``)."""

    def __init__(self, head: nn.Linear, head_name: str = "head") -> None:
        self.head, self.head_name = head, head_name
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    @contextmanager
    def hooked(self) -> Iterator[HeadCapture]:
        def pre_hook(module: nn.Module, args: tuple) -> None:
            self.inputs.append(args[0].detach())

        def post_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self.outputs.append(output.detach())

        handles = [self.head.register_forward_pre_hook(pre_hook), self.head.register_forward_hook(post_hook)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def split(self, model_output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(head_input [B, D], head_output, logits [B, K])`` of the last forward pass, then clear the
        buffers. Checks the structure (one head call, shapes), not the values: nothing here waits for the device."""
        inputs, outputs = self.inputs, self.outputs
        self.inputs, self.outputs = [], []
        logits = logits_of(model_output)
        if len(inputs) != 1:
            raise TypeError(
                f"the head {self.head_name!r} ran {len(inputs)} times in one forward pass; FCR needs a head that "
                "produces the logits once (pass head_name= to choose another module)."
            )
        feats, out = inputs[0], outputs[0]
        if out.shape != logits.shape:
            raise not_logits(self.head_name, f"shape {tuple(out.shape)}, the logits' {tuple(logits.shape)}")
        if feats.ndim != 2:
            raise TypeError(
                f"the head {self.head_name!r} receives inputs of shape {tuple(feats.shape)}; "
                "FCR needs [batch, features]."
            )
        return feats, out, logits
