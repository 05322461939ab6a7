"""hf_fcr: post-hoc debiasing of image classifiers by Fictitious Class Removal (single-weight edits)."""

__version__ = "0.1.0"

from .edit import WeightEdit, ZeroWeightError, neutralized_weight, orthogonal_weight
from .features import FeatureSet
from .probe import FictitiousHead
from .remover import FictitiousClassRemover
from .scores import ca_score, sca_score, top_edges
from .stats import EdgeStatistics, edge_statistics

__all__ = [
    "EdgeStatistics",
    "FeatureSet",
    "FictitiousClassRemover",
    "FictitiousHead",
    "WeightEdit",
    "ZeroWeightError",
    "__version__",
    "ca_score",
    "edge_statistics",
    "neutralized_weight",
    "orthogonal_weight",
    "sca_score",
    "top_edges",
]
