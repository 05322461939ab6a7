"""Group robustness: accuracy overall, of the worst group, per group, the gap between them, and the accuracy weighted
by the training group frequencies (the average DFR and group DRO report for Waterbirds).

Load it offline by path: ``evaluate.load("metrics/group_robustness")``.
"""

import numbers

import datasets
import evaluate
import torch

from hf_fcr.core.metrics import group_metrics

_DESCRIPTION = __doc__

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class per sample.
    references (list of int): true class per sample.
    groups (list of str, or list of int): the group of each sample (e.g. "label=1,place=0", or a 0/1 attribute).
    train_group_frequencies (dict of group to float, optional): each group's share of the training data, for exactly
        the groups in `groups` (integer groups may be keyed by int or by their string); with it the result has
        `weighted_accuracy`. A missing or unknown group, a NaN, inf or negative frequency is a ValueError.
Returns:
    accuracy, worst_group_accuracy, gap (accuracy - worst group), per_group_accuracy (dict), worst_group (its name),
    and weighted_accuracy when train_group_frequencies is given.
Examples:
    >>> metric = evaluate.load("metrics/group_robustness")
    >>> metric.compute(predictions=[0, 1, 1], references=[0, 1, 0], groups=["a", "a", "b"])["worst_group_accuracy"]
    0.0
"""

_CITATION = """
@inproceedings{sagawa2020distributionally,
  title={Distributionally Robust Neural Networks for Group Shifts},
  author={Sagawa, Shiori and Koh, Pang Wei and Hashimoto, Tatsunori B. and Liang, Percy},
  booktitle={ICLR}, year={2020}
}
"""


def _check_groups(groups):
    """Numeric group ids must be whole numbers: the integer feature would truncate 0.2 and 0.7 to one group 0."""
    for g in groups if groups is not None else ():
        if isinstance(g, numbers.Real) and not isinstance(g, numbers.Integral) and not float(g).is_integer():
            raise ValueError(
                f"group id {float(g)} is not a whole number: groups are strings or integer ids (a float id would be "
                "truncated into another group). Map them to integers or strings first."
            )


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GroupRobustness(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[  # string group names, or integer group ids (a 0/1 attribute column)
                datasets.Features(
                    {
                        "predictions": datasets.Value("int64"),
                        "references": datasets.Value("int64"),
                        "groups": datasets.Value(kind),
                    }
                )
                for kind in ("string", "int64")
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions, references and groups (fractional numeric group ids are refused)."""
        _check_groups(kwargs.get("groups"))
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction, reference and group (a fractional numeric group id is refused)."""
        _check_groups([kwargs["groups"]] if "groups" in kwargs else None)  # one example: one group
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, groups, train_group_frequencies=None):
        values = sorted(set(groups))
        index = {g: i for i, g in enumerate(values)}
        ids = torch.tensor([index[g] for g in groups])
        names = [str(g) for g in values]
        out = group_metrics(torch.tensor(predictions), torch.tensor(references), ids, names, train_group_frequencies)
        result = {
            "accuracy": out["average"],
            "worst_group_accuracy": out["worst_group"],
            "gap": out["gap"],
            "per_group_accuracy": out["per_group"],
            "worst_group": min(out["per_group"], key=out["per_group"].get),
        }
        if "weighted_average" in out:
            result["weighted_accuracy"] = out["weighted_average"]
        return result
