"""The group-robustness metrics, in the library and as the `evaluate` module users load: integer group ids as well
as strings, and training frequencies that must describe exactly the evaluated groups (checked against hand counts)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def metric():
    import evaluate

    return evaluate.load(str(ROOT / "metrics" / "group_robustness"))


def test_integer_group_ids_work_like_their_strings(metric):
    args = {"predictions": [0, 1, 1, 0, 1], "references": [0, 1, 0, 0, 0]}
    by_int = metric.compute(**args, groups=[0, 0, 1, 1, 1], train_group_frequencies={0: 0.9, 1: 0.1})
    by_str = metric.compute(**args, groups=["0", "0", "1", "1", "1"], train_group_frequencies={"0": 0.9, "1": 0.1})
    assert by_int == by_str
    assert by_int["per_group_accuracy"] == {"0": 1.0, "1": pytest.approx(1 / 3)}  # hand counts
    assert by_int["weighted_accuracy"] == pytest.approx(0.9 * 1.0 + 0.1 / 3)


@pytest.mark.parametrize(
    "frequencies, message",
    [
        ({"a": 1.0}, r"missing \['b'\]"),  # the group at 0% would be weighted 0: a weighted accuracy of 1.0
        ({"a": 0.5, "b": 0.5, "label=1": 0.1}, r"unknown \['label=1'\]"),
        ({"a": 0.5, "b": float("nan")}, "group 'b' must be a finite number"),
        ({"a": 0.5, "b": -0.5}, "group 'b' must be a finite number"),
        ({"a": 0.0, "b": 0.0}, "all zero"),
    ],
)
def test_training_frequencies_that_do_not_describe_the_groups_are_refused(metric, frequencies, message):
    with pytest.raises(ValueError, match=message):
        metric.compute(
            predictions=[0, 1, 1, 1],
            references=[0, 1, 0, 0],
            groups=["a", "a", "b", "b"],
            train_group_frequencies=frequencies,
        )


def test_fractional_group_ids_are_refused_not_merged(metric):
    """The integer feature would truncate 0.2 and 0.7 into one group 0 (worst group 0.5 where it is 0.0)."""
    import numpy as np

    args = {"predictions": [1, 0], "references": [1, 1]}
    for groups in ([0.2, 0.7], np.array([0.2, 0.7])):
        with pytest.raises(ValueError, match="group id 0.2 is not a whole number"):
            metric.compute(**args, groups=groups)
    with pytest.raises(ValueError, match="not a whole number"):
        metric.add(prediction=1, reference=1, groups=0.5)
    assert metric.compute(**args, groups=[0.0, 1.0])["worst_group_accuracy"] == 0.0  # whole floats are ids


def test_group_robustness_is_an_evaluate_module():
    import evaluate

    metric = evaluate.load(str(ROOT / "metrics" / "group_robustness"))
    out = metric.compute(
        predictions=[0, 1, 1, 0, 1, 1],
        references=[0, 1, 0, 0, 1, 0],
        groups=["a", "a", "b", "b", "c", "c"],
        train_group_frequencies={"a": 0.5, "b": 0.25, "c": 0.25},
    )
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["worst_group_accuracy"] == pytest.approx(0.5)
    assert out["per_group_accuracy"] == {"a": 1.0, "b": 0.5, "c": 0.5}
    assert out["gap"] == pytest.approx(4 / 6 - 0.5)
    assert out["weighted_accuracy"] == pytest.approx(0.5 * 1.0 + 0.25 * 0.5 + 0.25 * 0.5)
