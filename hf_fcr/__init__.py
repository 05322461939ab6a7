"""hf_fcr: post-hoc debiasing of image classifiers by Fictitious Class Removal (single-weight edits).

The public names load lazily (as transformers does), so ``hf-fcr --help`` and ``import hf_fcr`` stay fast and import
no torch until a name is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

METRICS = ("group_robustness",)


def metric_path(name: str) -> str:
    """The folder of the ``evaluate`` module ``name`` shipped with hf-fcr (``group_robustness``: worst-group,
    average and per-group accuracy, integer or string group ids), for ``evaluate.load(hf_fcr.metric_path(name))``.
    It is inside the installed package (a wheel), or in the checkout's ``metrics/`` folder (an editable install).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """

    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}: hf-fcr ships {', '.join(METRICS)}.")
    here = Path(__file__).resolve().parent
    for folder in (here / "evaluate_modules" / name, here.parent / "metrics" / name):
        if (folder / f"{name}.py").is_file():
            return str(folder)
    raise FileNotFoundError(f"the {name} module is missing from this installation of hf-fcr ({here}): reinstall it.")


_NAMES = {
    "Diagnosis": "debias.diagnosis",
    "EdgeStatistics": "core.stats",
    "FeatureSet": "features.feature_set",
    "FictitiousClassRemover": "remover",
    "FictitiousHead": "fitting.probe",
    "HeadEdit": "core.head_edit",
    "HeadEditor": "editor",
    "WeightEdit": "core.edit",
    "ZeroWeightError": "core.edit",
    "ca_score": "core.scores",
    "edge_statistics": "core.stats",
    "head_method_names": "fitting.methods",
    "infer_attribute": "debias.infer",
    "neutralized_weight": "core.edit",
    "orthogonal_weight": "core.edit",
    "register_head_method": "fitting.methods",
    "register_score": "core.scores",
    "sca_score": "core.scores",
    "top_edges": "core.scores",
}

__all__ = [
    "Diagnosis",
    "EdgeStatistics",
    "FeatureSet",
    "FictitiousClassRemover",
    "FictitiousHead",
    "HeadEdit",
    "HeadEditor",
    "WeightEdit",
    "ZeroWeightError",
    "__version__",
    "metric_path",
    "ca_score",
    "edge_statistics",
    "head_method_names",
    "infer_attribute",
    "neutralized_weight",
    "orthogonal_weight",
    "register_head_method",
    "register_score",
    "sca_score",
    "top_edges",
]

if TYPE_CHECKING:
    from .core.edit import WeightEdit, ZeroWeightError, neutralized_weight, orthogonal_weight
    from .core.head_edit import HeadEdit
    from .core.scores import ca_score, register_score, sca_score, top_edges
    from .core.stats import EdgeStatistics, edge_statistics
    from .debias.diagnosis import Diagnosis
    from .debias.infer import infer_attribute
    from .editor import HeadEditor
    from .features.feature_set import FeatureSet
    from .fitting.methods import head_method_names, register_head_method
    from .fitting.probe import FictitiousHead
    from .remover import FictitiousClassRemover


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
