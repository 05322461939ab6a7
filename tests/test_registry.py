"""Head-level methods are a registry users extend: a ridge-regression head registered from outside the package
(tests/plugin_ridge.py) works everywhere DFR does: neutralize_spurious, auto, the record and the card, save and a
reload in a process that never registered it, edits only, revert(), and the CLI through HF_FCR_PLUGINS."""

import json
import subprocess
import sys

import pytest
import torch
from utils import TESTS, cue_data, erm_remover, snapshot, state_equal

import hf_fcr
from hf_fcr.fitting.methods import get_head_method
from hf_fcr.utils.constants import CONFIG_NAME


@pytest.fixture(autouse=True)
def registry():
    """Each test sees the built-ins plus the plugin's ridge, and leaves the registry as it found it (other test
    files' ``auto`` must not meet these methods)."""
    import plugin_ridge  # registers ridge when first imported (not at collection: other files' auto runs first)

    from hf_fcr.fitting import methods as head_methods

    before = {k: v for k, v in head_methods._REGISTRY.items() if k != "ridge"}
    hf_fcr.register_head_method("ridge", plugin_ridge.ridge, needs_groups=False)
    yield plugin_ridge
    head_methods._REGISTRY.clear()
    head_methods._REGISTRY.update(before)


def test_a_registered_method_is_applied_recorded_and_reverted(registry):
    train, val = cue_data(600, 0.95, 0, True), cue_data(300, 0.5, 1, True)
    remover = erm_remover(train)
    base = snapshot(remover.model)
    search = remover.neutralize_spurious(train, val, method="ridge", diagnose=False)
    # independently: the plugin's own function on the same rows and (label, place) groups gives the head it has now
    groups = val.labels("label") * 2 + val.labels("place")
    weight, bias, _ = registry.ridge(val.features, val.labels("label"), groups, num_classes=2, seed=0)
    torch.testing.assert_close(remover.head.weight.detach(), weight.float(), rtol=0, atol=0)
    torch.testing.assert_close(remover.head.bias.detach(), bias.float(), rtol=0, atol=0)
    (edit,) = search.edits
    record = remover.edit_record().to_dict()["edits"][0]
    assert record["method"] == "ridge" and record["hyperparameters"] == {
        "alpha": 1.0,
        "rows": edit.hyperparameters["rows"],
    }
    assert "C" not in record and search.choice["method"] == "ridge"  # a method's settings: its hyperparameters only
    remover.revert()
    assert state_equal(snapshot(remover.model), base)


def test_auto_considers_registered_methods_whose_group_needs_are_met():
    train, val = cue_data(600, 0.95, 0, True), cue_data(300, 0.5, 1, True)
    remover = erm_remover(train)
    search = remover.neutralize_spurious(train, val, method="auto", diagnose=False)
    assert {"ridge", "dfr", "class_balanced", "fcr", "none"} <= set(search.candidates)
    remover.revert()
    search = remover.neutralize_spurious(train, val, method="auto", val_attribute_column=None, diagnose=False)
    assert "ridge" in search.candidates and "dfr" not in search.candidates  # dfr needs groups


RELOAD = """
import sys, torch, hf_fcr
assert "ridge" not in hf_fcr.head_method_names()  # this process never registered it
remover = hf_fcr.FictitiousClassRemover.from_pretrained(sys.argv[1], model=torch.nn.Sequential(torch.nn.Linear(40, 2)))
torch.save({"edited": remover.model.state_dict(), "method": remover.edits[0].method}, sys.argv[2])
remover.revert()
torch.save(remover.model.state_dict(), sys.argv[3])
"""


@pytest.mark.slow  # a fresh process per case
@pytest.mark.parametrize("edits_only", [False, True])
def test_a_folder_edited_by_a_user_method_reloads_where_it_was_never_registered(tmp_path, edits_only):
    train, val = cue_data(600, 0.95, 0, True), cue_data(300, 0.5, 1, True)
    remover = erm_remover(train)
    base = snapshot(remover.model)
    base_dir = tmp_path / "base"
    remover.save_pretrained(base_dir)  # a plain module's folder: the base of the edits-only artifact
    remover = hf_fcr.FictitiousClassRemover.from_pretrained(str(base_dir), model=type(remover.model)(*remover.model))
    remover.neutralize_spurious(train, val, method="ridge", diagnose=False)
    edited = snapshot(remover.model)
    folder = remover.save_pretrained(tmp_path / "edited", edits_only=edits_only)
    assert "| ridge | - |" in (folder / "README.md").read_text()  # the card's head-level table
    assert json.loads((folder / CONFIG_NAME).read_text())["edits"][0]["method"] == "ridge"
    out = [tmp_path / "edited.pt", tmp_path / "reverted.pt"]
    subprocess.run([sys.executable, "-c", RELOAD, str(folder), *map(str, out)], check=True, cwd=TESTS.parent)
    loaded = torch.load(out[0], weights_only=True)
    assert loaded["method"] == "ridge" and state_equal(loaded["edited"], edited)
    assert state_equal(torch.load(out[1], weights_only=True), base)


@pytest.mark.slow  # a backbone pass over the built-in dataset
def test_the_cli_takes_a_method_from_a_plugin_module(tmp_path, monkeypatch, capsys):
    import timm

    from hf_fcr.cli import main

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=2), str(model_dir), safe_serialization=True)
    common = ["neutralize", "--model_name_or_path", str(model_dir), "--dataset_name", "spurious_digits"]
    monkeypatch.setenv("HF_FCR_PLUGINS", "plugin_ridge")
    out = tmp_path / "out"
    assert main([*common, "--method", "ridge", "--output_dir", str(out), "--json"]) == 0
    assert json.loads((out / CONFIG_NAME).read_text())["edits"][0]["method"] == "ridge"
    with pytest.raises(SystemExit):
        main([*common, "--method", "lasso", "--output_dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert "unknown method 'lasso'" in err and "dfr, class_balanced, ridge" in err
    monkeypatch.setenv("HF_FCR_PLUGINS", "no_such_plugin")
    with pytest.raises(SystemExit):
        main([*common, "--method", "ridge", "--output_dir", str(tmp_path / "y")])
    assert "HF_FCR_PLUGINS names 'no_such_plugin'" in capsys.readouterr().err


def test_registering_checks_names_and_what_a_method_returns(registry):
    with pytest.raises(ValueError, match="reserved"):
        hf_fcr.register_head_method("auto", registry.ridge, needs_groups=False)
    with pytest.raises(ValueError, match="a letter"):
        hf_fcr.register_head_method("my method", registry.ridge, needs_groups=False)
    with pytest.raises(ValueError, match="already registered"):
        hf_fcr.register_head_method("ridge", lambda *a, **k: None, needs_groups=False)
    with pytest.raises(TypeError, match="needs_groups"):
        hf_fcr.register_head_method("ridge2", registry.ridge, needs_groups="no")
    assert get_head_method("ridge").fit is registry.ridge  # re-registering the same function is fine

    def wrong(features, labels, groups, *, num_classes, seed):
        return torch.zeros(num_classes + 1, features.shape[1]), None, {}

    hf_fcr.register_head_method("wrong_shape", wrong, needs_groups=False)
    train, val = cue_data(200, 0.95, 0, True), cue_data(100, 0.5, 1, True)
    remover = erm_remover(train)
    before = snapshot(remover.model)
    with pytest.raises(ValueError, match=r"method 'wrong_shape' returned a weight of shape \(3, 40\)"):
        remover.neutralize_spurious(train, val, method="wrong_shape", diagnose=False)
    with pytest.raises(ValueError, match="unknown method 'lasso'.*dfr, class_balanced"):
        remover.neutralize_spurious(train, val, method="lasso", diagnose=False)
    assert state_equal(snapshot(remover.model), before)


def test_auto_refits_a_method_that_takes_tuned_with_what_its_candidate_returned(registry):
    """A method whose signature names ``tuned`` gets, when auto refits it on all of validation, the params its fit
    on auto's half returned; ridge (no ``tuned``) is refit from scratch, and fit_head passes nothing to it."""
    from hf_fcr.fitting.methods import fit_head

    seen = []

    def ridge_tuned(features, labels, groups, *, num_classes, seed, tuned=None):
        seen.append((len(features), tuned))
        weight, bias, params = registry.ridge(features, labels, groups, num_classes=num_classes, seed=seed)
        return weight * 10, bias * 10, {**params, "round": len(seen)}  # scaled: a margin auto will prefer

    from hf_fcr.fitting import methods as head_methods

    head_methods._REGISTRY.clear()  # (the fixture restores it) auto's only head-level candidate; no FCR either
    hf_fcr.register_head_method("ridge_tuned", ridge_tuned, needs_groups=False)
    train, val = cue_data(600, 0.95, 0, True), cue_data(300, 0.5, 1, True)
    remover = erm_remover(train)
    search = remover.neutralize_spurious(
        train, val, method="auto", attribute_column=None, val_attribute_column=None, diagnose=False
    )
    assert search.method == "ridge_tuned"  # it beats the unchanged model on the held-out half
    (half, refit) = seen
    assert half[1] is None and half[0] < len(val)
    assert refit == (len(val), {"alpha": 1.0, "rows": refit[1]["rows"], "round": 1})  # what the half's fit returned
    hf_fcr.register_head_method("ridge", registry.ridge, needs_groups=False)
    labels = val.labels("label")
    fit_head("ridge_tuned", val.features, labels, None, num_classes=2, seed=0, tuned={"alpha": 2.0})
    assert seen[-1] == (len(val), {"alpha": 2.0})
    fitted = fit_head("ridge", val.features, labels, None, num_classes=2, seed=0, tuned={"alpha": 2.0})
    assert fitted.params["alpha"] == 1.0  # ridge does not take tuned: ignored


def test_a_plugin_is_checked_where_it_returns_gets_copies_and_cannot_stop_auto(registry, caplog):
    """What a plugin returns is checked at fit time as the record's reader would check it (a negative C, 70 KB of
    params: refused before the head changes, not at save time); it gets copies of the features and labels (changing
    them does not change what the caller measures); and in auto, a plugin that raises or returns NaN is left out of
    the candidates with a warning naming it, while the built-ins still compete."""
    train, val = cue_data(200, 0.95, 0, True), cue_data(100, 0.5, 1, True)
    remover = erm_remover(train)
    before = snapshot(remover.model)

    def negative_c(features, labels, groups, *, num_classes, seed):
        return registry.ridge(features, labels, groups, num_classes=num_classes, seed=seed)[:2] + ({"C": -1.0},)

    def huge(features, labels, groups, *, num_classes, seed):
        return registry.ridge(features, labels, groups, num_classes=num_classes, seed=seed)[:2] + (
            {"trace": [0.5] * 20_000},
        )

    for name, fit, message in (("negative_c", negative_c, "'C' must be a positive"), ("huge", huge, "bytes as JSON")):
        hf_fcr.register_head_method(name, fit, needs_groups=False)
        with pytest.raises(ValueError, match=message):
            remover.neutralize_spurious(train, val, method=name, diagnose=False)
        assert state_equal(snapshot(remover.model), before)

    def vandal(features, labels, groups, *, num_classes, seed):
        features.zero_()
        labels.fill_(0)
        return registry.ridge(features, labels, groups, num_classes=num_classes, seed=seed)

    features, labels = val.features.clone(), val["label"].clone()
    hf_fcr.register_head_method("vandal", vandal, needs_groups=False)
    remover.neutralize_spurious(train, val, method="vandal", diagnose=False)
    assert torch.equal(val.features, features) and torch.equal(val["label"], labels)
    remover.revert()

    def broken(features, labels, groups, *, num_classes, seed):
        raise RuntimeError("plugin bug")

    def nan(features, labels, groups, *, num_classes, seed):
        return torch.full((num_classes, features.shape[1]), float("nan")), None, {}

    for name in ("negative_c", "huge", "vandal"):
        head_methods_registry().pop(name)
    hf_fcr.register_head_method("broken", broken, needs_groups=False)
    hf_fcr.register_head_method("nan", nan, needs_groups=False)
    search = remover.neutralize_spurious(train, val, attribute_column="place", method="auto", diagnose=False)
    assert "left out" in caplog.text and "'broken'" in caplog.text and "'nan'" in caplog.text
    assert search.choice["method"] in ("fcr", "dfr", "class_balanced", "ridge", "none")


def head_methods_registry():
    from hf_fcr.fitting import methods as head_methods

    return head_methods._REGISTRY


@pytest.mark.parametrize("source, what", [("def broken(:\n", "SyntaxError"), ("raise SystemExit(0)\n", "SystemExit")])
def test_a_plugin_that_fails_on_import_is_a_clear_cli_error(tmp_path, monkeypatch, capsys, source, what):
    """A plugin module with a syntax error escaped --json as a raw traceback, and one that calls SystemExit(0)
    reported success; both are a usage error naming the module (a JSON one with --json). Plugin modules resolve
    from the working folder, as the README's HF_FCR_PLUGINS=my_methods example runs."""
    from hf_fcr.cli import main

    (tmp_path / "my_methods.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.setenv("HF_FCR_PLUGINS", "my_methods")
    with pytest.raises(SystemExit) as exit_:
        main(["neutralize", "--model_name_or_path", "nowhere", "--dataset_name", "spurious_digits", "--json",
              "--output_dir", str(tmp_path / "out")])  # fmt: skip
    assert exit_.value.code == 2
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["error"]["type"] == "UsageError"
    assert f"HF_FCR_PLUGINS names 'my_methods', which cannot be imported: {what}" in printed["error"]["message"]
    sys.modules.pop("my_methods", None)


def test_fcr_is_a_registered_method_and_auto_none_are_the_searchs_choices(registry):
    from hf_fcr.fitting.methods import RESERVED_CHOICES, get_method, method_names

    assert method_names()[:3] == ("fcr", "dfr", "class_balanced") and "ridge" in method_names()
    fcr = get_method("fcr")
    assert (fcr.kind, fcr.needs_attribute, fcr.fit) == ("weights", True, None)
    assert {get_method(n).kind for n in hf_fcr.head_method_names()} == {"head"}
    assert "fcr" not in hf_fcr.head_method_names() and RESERVED_CHOICES == ("auto", "none")
    for name in ("fcr", "auto", "none"):  # a head-level method cannot take FCR's name or a choice's
        with pytest.raises(ValueError, match="reserved"):
            hf_fcr.register_head_method(name, registry.ridge, needs_groups=False, overwrite=True)
    with pytest.raises(ValueError, match="not a head-level method"):
        get_head_method("fcr")
    with pytest.raises(ValueError, match="unknown method 'none'.*fcr, dfr, class_balanced"):
        get_method("none")


def test_both_edits_implement_the_edit_protocol():
    """Every member of the Edit protocol exists on WeightEdit and HeadEdit, with the protocol's signature."""
    import inspect

    from hf_fcr.core.edit import Edit, WeightEdit
    from hf_fcr.core.head_edit import HeadEdit

    members = {n for n in vars(Edit) if not n.startswith("_")} | set(Edit.__annotations__)
    assert {"kind", "param_names", "check_target", "apply", "revert", "tensors", "attach", "to_dict"} <= members
    for cls in (WeightEdit, HeadEdit):
        for name in members:
            assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
            expected = getattr(Edit, name, None)
            if inspect.isfunction(expected):
                got = inspect.signature(getattr(cls, name)).parameters
                assert list(got) == list(inspect.signature(expected).parameters), (cls.__name__, name)
    assert (WeightEdit.kind, HeadEdit.kind) == ("weight", "head")
