"""Sweeps in closed form against re-editing the real model at each r; the r grid; the selection rules."""

import pytest
import torch

from hf_fcr import FictitiousClassRemover
from hf_fcr.core.metrics import group_ids, group_metrics
from hf_fcr.core.sweep import SweepResult, default_r_grid


def test_sweep_equals_editing_the_model_at_each_rate(digits, digits_model):
    remover = FictitiousClassRemover(digits_model)
    train = remover.extract_features(digits["train"])
    test = remover.extract_features(digits["test"])
    test.columns["odd"] = test["label"] % 2
    remover.remove_class(3, train, r=1.0, num_weights=2)
    remover.remove_class(7, train, r=0.5)
    rates = [0.0, 0.001, 0.05, 0.3, 1.0]
    result = remover.sweep(test, rates, label_column="label", group_columns=("odd",))
    edits = list(remover.edits)
    remover.revert()
    ids, names = group_ids({"label": test["label"], "odd": test["odd"]}, ["label", "odd"])
    for row, r in zip(result.table, rates):
        # brute force: re-run the edits on the real head at rate r, predict with the model's own head
        for e in edits:
            new = float(torch.tensor(e.value_at(r), dtype=torch.float64).to(torch.float32))
            remover.head.weight.data[e.row, e.col] = new
        expected = group_metrics(remover.logits(test.features).argmax(1), test["label"], ids, names)
        remover.head.weight.data[[e.row for e in edits], [e.col for e in edits]] = torch.tensor(
            [e.old_value for e in edits]
        )
        assert row["r"] == r
        assert row["average"] == pytest.approx(expected["average"], abs=1.5 / len(test))
        assert row["per_group"].keys() == expected["per_group"].keys()
        for name, acc in expected["per_group"].items():  # float32 logits vs float64: at most one flipped sample
            assert row["per_group"][name] == pytest.approx(acc, abs=1.5 / int((ids == names.index(name)).sum()))
        assert row["worst_group"] == pytest.approx(expected["worst_group"], abs=1.5 / int(torch.bincount(ids).min()))


def test_default_grid_and_rules():
    grid = default_r_grid()
    assert grid[0] == 0.0
    assert grid[-1] == 1.0
    assert grid == sorted(set(grid))
    assert sum(r < 0.02 for r in grid) > 50  # dense at small r, where useful values often are
    table = [
        {"r": 0.0, "average": 0.9, "worst_group": 0.6, "gap": 0.3},
        {"r": 0.1, "average": 0.85, "worst_group": 0.8, "gap": 0.05},
        {"r": 0.2, "average": 0.88, "worst_group": 0.83, "gap": 0.05},
        {"r": 0.9, "average": 0.05, "worst_group": 0.02, "gap": 0.03},  # a flipped classifier: small gap
        {"r": 0.95, "average": 0.61, "worst_group": 0.6, "gap": 0.01},  # only the average lost: small gap too
    ]
    result = SweepResult(table)
    assert result.best("min_gap")["r"] == 0.1  # ties go to the smaller r; the last two points are excluded
    assert SweepResult([table[0], table[4]]).best("min_gap")["r"] == 0.0  # no worst-group gain: no edit
    assert result.best("max_worst")["r"] == 0.2
    with pytest.raises(ValueError, match="rule"):
        result.best("best")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorized_sweep_equals_a_loop_over_rates(seed):
    """sweep_edits (only the samples whose prediction can move, only the edited rows, all rates at once) against
    argmax of the full edited logits at each rate: exact ties, several edits per row, samples that cross between
    the edited rows and the others, grids that do not start at 0."""
    from hf_fcr.core.edit import WeightEdit
    from hf_fcr.core.sweep import edited_logits, sweep_edits

    g = torch.Generator().manual_seed(seed)
    feats = torch.rand(300, 16, generator=g)
    weight = torch.randn(5, 16, generator=g)
    base = feats @ weight.T
    base[:10] = base[:10].round()  # exact ties between rows in some samples
    labels = torch.randint(0, 5, (300,), generator=g)
    groups = labels % 3
    scale = float(torch.rand(1, generator=g)) * 60
    edits = [
        WeightEdit("w", 1, 3, float(weight[1, 3]), 0.0, 1.0, orthogonal_value=-scale),
        WeightEdit("w", 1, 7, float(weight[1, 7]), 0.0, 1.0, orthogonal_value=25.0),
        WeightEdit("w", 4, 2, float(weight[4, 2]), 0.0, 1.0, orthogonal_value=-9.0),
        WeightEdit("w", 0, 5, float(weight[0, 5]), 0.0, 1.0, orthogonal_value=scale / 3),
    ][: 2 + seed]
    for rates in ([i / 50 for i in range(51)], [0.3, 0.31, 0.5, 0.7]):
        result = sweep_edits(base, feats, edits, rates, labels, groups, ["a", "b", "c"])
        assert [row["r"] for row in result.table] == rates
        moved = {int(edited_logits(base, feats, edits, r).argmax(1).ne(base.argmax(1)).sum()) for r in rates}
        assert max(moved) > 0  # the edits do change predictions
        for row, r in zip(result.table, rates):
            pred = edited_logits(base, feats, edits, r).argmax(1)
            expected = group_metrics(pred, labels, groups, ["a", "b", "c"])
            assert row["average"] == expected["average"]
            assert row["per_group"] == expected["per_group"]
            assert row["worst_group"] == expected["worst_group"]


def test_a_single_change_of_prediction_settles_in_two_more_evaluations(monkeypatch):
    """One edited row: each sample's prediction changes at most once over r (one line against a constant). The
    split next to the two lines' crossing settles it with two evaluations past the two ends (halving the 201-rate
    grid took about 8), and the counts stay those of a loop over the rates."""
    from hf_fcr.core import sweep
    from hf_fcr.core.edit import WeightEdit

    g = torch.Generator().manual_seed(0)
    feats, weight = torch.rand(400, 8, generator=g), torch.randn(3, 8, generator=g)
    base = feats @ weight.T
    labels = torch.randint(0, 3, (400,), generator=g)
    edits = [WeightEdit("w", 2, 4, float(weight[2, 4]), 0.0, 1.0, orthogonal_value=8.0)]
    rates = [i / 200 for i in range(201)]
    evaluated = []
    at = sweep._Lines.at
    monkeypatch.setattr(sweep._Lines, "at", lambda self, s, i: evaluated.append(len(s)) or at(self, s, i))
    result = sweep.sweep_edits(base, feats, edits, rates, labels, labels, ["a", "b", "c"])
    changed = int(sweep.edited_logits(base, feats, edits, 1.0).argmax(1).ne(base.argmax(1)).sum())
    assert changed > 40
    assert sum(evaluated) <= 2 * len(labels) + 2 * changed
    for row, r in zip(result.table, rates):
        expected = group_metrics(sweep.edited_logits(base, feats, edits, r).argmax(1), labels, labels, ["a", "b", "c"])
        assert row["per_group"] == expected["per_group"]


def test_sweep_plot_leaves_matplotlib_alone_and_marks_the_given_r(tmp_path):
    import matplotlib
    import matplotlib.pyplot as plt

    from hf_fcr.core.sweep import SweepResult

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    table = [{"r": r, "average": 0.9 - r / 10, "worst_group": 0.5 + r / 5, "gap": 0.4 - 0.3 * r} for r in (0, 0.1, 1)]
    fig = SweepResult(table).plot(tmp_path / "a.png", chosen_r=0.1)
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == figures  # nothing left open in pyplot
    assert (tmp_path / "a.png").stat().st_size > 0
    assert [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == ":"] == [0.1]
    own_fig, own_ax = plt.subplots()
    assert SweepResult(table).plot(ax=own_ax) is own_fig
    plt.close(own_fig)
