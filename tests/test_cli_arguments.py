"""Command-line and recipe-config arguments checked before any computation, as a careless user would pass them:
output folders that would be overwritten, methods without the column they need, relative base paths, and config
files whose booleans are strings, a dry run that writes nothing, and `--help` without torch. Run in process
(`hf_fcr.cli.main`), on a tiny timm model and the built-in data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from utils import snapshot, state_equal

from hf_fcr import FictitiousClassRemover
from hf_fcr.cli import main
from hf_fcr.utils.constants import CONFIG_NAME


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "model"
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=2), str(folder), safe_serialization=True)
    return folder


def _usage_error(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", ["remove-class", "neutralize"])
def test_a_non_empty_output_dir_is_refused_before_anything_is_computed(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")  # an earlier run's
    extra = ["--class", "1"] if command == "remove-class" else ["--attribute_column", "place"]
    # the model does not even exist: the folder is checked first
    err = _usage_error(
        capsys, command, "--model_name_or_path", str(tmp_path / "nowhere"), "--dataset_name", "spurious_digits",
        *extra, "--output_dir", str(out),
    )  # fmt: skip
    assert f"--output_dir {out} is not empty: pass --overwrite" in err
    assert (out / "results.json").read_text() == "{}"


def test_overwrite_of_a_folder_hf_fcr_did_not_save_is_refused_before_anything_is_computed(tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "train.py").write_text("print('mine')")
    err = _usage_error(
        capsys, "neutralize", "--model_name_or_path", str(tmp_path / "nowhere"), "--dataset_name", "spurious_digits",
        "--attribute_column", "place", "--output_dir", str(out), "--overwrite",
    )  # fmt: skip
    assert "not an hf-fcr checkpoint (train.py; no fcr_config.json): --overwrite replaces only" in err
    assert (out / "train.py").read_text() == "print('mine')"


def test_sweep_never_overwrites_its_files_silently(tmp_path, capsys):
    out = tmp_path / "plots"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # other files may sit beside the sweep's
    (out / "sweep.json").write_text("[]")
    err = _usage_error(
        capsys, "sweep", "--model_name_or_path", str(tmp_path / "nowhere"), "--dataset_name", "spurious_digits",
        "--output_dir", str(out),
    )  # fmt: skip
    assert "already holds sweep.json: pass --overwrite" in err
    assert (out / "sweep.json").read_text() == "[]"


def test_fcr_and_dfr_need_an_attribute_and_class_balanced_does_not(model_dir, tmp_path, capsys):
    common = ["--model_name_or_path", str(model_dir), "--dataset_name", "spurious_digits"]
    for method in ("fcr", "dfr"):
        err = _usage_error(capsys, "neutralize", *common, "--method", method, "--output_dir", str(tmp_path / method))
        assert f"--method {method} needs --attribute_column" in err
    out = tmp_path / "balanced"
    assert main(["neutralize", *common, "--method", "class_balanced", "--output_dir", str(out), "--json"]) == 0
    record = json.loads((out / CONFIG_NAME).read_text())
    assert [e["method"] for e in record["edits"]] == ["class_balanced"] and "diagnosis" not in record


def test_a_relative_base_path_resolves_from_any_working_directory(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["remove-class", "--model_name_or_path", "model", "--dataset_name", "spurious_digits", "--class", "1"]
    assert main([*argv, "--output_dir", "edits", "--edits_only"]) == 0
    expected = snapshot(FictitiousClassRemover.from_pretrained("edits").model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    record = json.loads((tmp_path / "edits" / CONFIG_NAME).read_text())
    assert os.path.isabs(record["base_model_name_or_path"])
    assert state_equal(snapshot(FictitiousClassRemover.from_pretrained(str(tmp_path / "edits")).model), expected)


def test_a_record_whose_base_is_relative_to_the_artifact_loads_from_anywhere(model_dir, tmp_path, monkeypatch):
    remover = FictitiousClassRemover.from_pretrained(str(model_dir))
    feats = remover.extract_features([{"image": torch.rand(20, 3, 32, 32), "label": torch.arange(20) % 2}])
    remover.remove_class(1, feats)
    edited = snapshot(remover.model)
    folder = remover.save_pretrained(tmp_path / "edits", edits_only=True)
    record = json.loads((folder / CONFIG_NAME).read_text())
    record["base_model_name_or_path"] = os.path.join("..", "model")  # as a user moving both folders would write it
    (folder / CONFIG_NAME).write_text(json.dumps(record))
    away = tmp_path / "a" / "b"
    away.mkdir(parents=True)
    monkeypatch.chdir(away)  # "../model" from here is not the base
    assert state_equal(snapshot(FictitiousClassRemover.from_pretrained(str(folder)).model), edited)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"overwrite": "false"}, r"'overwrite' must be true or false \(a boolean\), got 'false' \(str\)"),
        ({"push_to_hub": "no"}, "'push_to_hub' must be true or false"),
        ({"epochs": "3"}, "'epochs' must be of type int"),
        ({"rule": "smallest"}, r"'rule' must be one of \['min_gap', 'max_worst'\]"),
    ],
)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_recipe_config_values_have_their_flags_types(tmp_path, config, message, suffix):
    import yaml

    from research.recipe import parse_recipe, spurious_parser

    path = tmp_path / f"config{suffix}"
    full = {"output_dir": str(tmp_path / "out"), **config}
    path.write_text(json.dumps(full) if suffix == ".json" else yaml.safe_dump(full))
    parser = spurious_parser("test", dataset_name="spurious_digits", label_column="label", attribute_column="place")
    with pytest.raises(ValueError, match=message):
        parse_recipe(parser, [str(path)])
    path.write_text(json.dumps({"output_dir": "o", "overwrite": False}) if suffix == ".json" else "output_dir: o\n"
                    "overwrite: false\n")  # fmt: skip
    (args,) = parse_recipe(parser, [str(path)])
    assert args.overwrite is False


def test_json_errors_reach_stdout(tmp_path, capsys):
    from hf_fcr.cli import main

    code = main(["inspect", "--model_name_or_path", str(tmp_path / "missing"), "--dataset_name", "digits", "--json"])
    assert code == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["type"] == "FileNotFoundError"
    assert "missing" in error["message"]


def test_every_recipe_file_loads_and_a_bad_one_is_named(tmp_path):
    """The recipes in recipes/ are configs of one runner: each names itself, its paper numbers and flags' defaults
    of the right types; a missing key or a key that is no flag is an error naming it."""
    from research.recipe import load_recipe

    root = Path(__file__).resolve().parents[1] / "recipes"
    names = {load_recipe(str(p))[0]: load_recipe(str(p)) for p in sorted(root.glob("*.yaml"))}
    assert set(names) == {"waterbirds", "celeba", "metashift", "spurious_digits"}
    assert names["celeba"][3] == {
        "dataset_name": "flwrlabs/celeba",
        "label_column": "Blond_Hair",
        "attribute_column": "Male",
    }
    assert names["waterbirds"][2]["worst_group"] == 93.2
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: x\ntitle: x\npaper: {}\ndataset: waterbirds\n")
    with pytest.raises(ValueError, match="'dataset' are not flags"):
        load_recipe(str(bad))
    bad.write_text("recipe: x\ndataset_name: waterbirds\n")
    with pytest.raises(ValueError, match="names its title, paper"):
        load_recipe(str(bad))
    bad.write_text("recipe: x\ntitle: x\npaper: {}\nepochs: three\n")
    with pytest.raises(ValueError, match="'epochs' must be of type int"):
        load_recipe(str(bad))


def test_hf_fcr_help_is_fast_and_imports_no_torch():
    code = "import sys; from hf_fcr.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_dry_run_writes_nothing(tmp_path, capsys):
    import timm  # the CLI loads timm / transformers folders

    from hf_fcr.cli import main

    timm.models.save_for_hf(
        timm.create_model("test_resnet", num_classes=2), str(tmp_path / "t"), safe_serialization=True
    )
    before = snapshot(FictitiousClassRemover.from_pretrained(str(tmp_path / "t")).model)
    code = main(
        [
            "remove-class",
            "--model_name_or_path",
            str(tmp_path / "t"),
            "--dataset_name",
            "spurious_digits",
            "--class",
            "1",
            "--output_dir",
            str(tmp_path / "out"),
            "--dry_run",
        ]
    )
    assert code == 0
    assert not (tmp_path / "out").exists()
    assert "dry run" in capsys.readouterr().out
    assert state_equal(snapshot(FictitiousClassRemover.from_pretrained(str(tmp_path / "t")).model), before)
