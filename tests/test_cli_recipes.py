"""The main job, the CLI and the recipes' offline paths, run as a user would (console script and scripts)."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_fcr.demo.compare import METHOD_ORDER

from hub_server import HubServer

pytestmark = pytest.mark.slow  # trains ERM models and runs the CLI in subprocesses


ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "hf_fcr.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    _cli("demo", "--output-dir", str(out), "--json")
    return out


def test_demo_writes_results_plots_and_edited_model(demo):
    import timm

    results = json.loads((demo / "results.json").read_text())
    assert list(results["methods"]) == sorted(METHOD_ORDER)  # json sorts the keys
    for m in results["methods"].values():
        assert 0 <= m["worst_group"] <= m["average"] <= 1
        assert m["gap"] == pytest.approx(m["average"] - m["worst_group"])
    draws = results["methods"]["fcr_random_attribute"]["draws"]
    assert len(draws) == 3 and results["methods"]["fcr_random_attribute"]["worst_group"] == pytest.approx(
        sum(d["worst_group"] for d in draws) / 3
    )
    assert results["methods"]["dfr_class_balanced"]["choice"]["method"] == "class_balanced"
    assert set(results["methods"]["auto"]["candidates"]) == {"none", "fcr", "dfr", "class_balanced"}
    assert set(results["fcr_choice"]) == {"method", "policy", "num_weights", "r", "rule"}
    diagnosis = results["diagnosis"]
    assert isinstance(diagnosis["verdict"], str) and isinstance(diagnosis["one_weight"], bool)
    assert diagnosis["verdict"].startswith("A one-weight edit removes this cue") is diagnosis["one_weight"]
    assert (demo / "diagnosis.png").stat().st_size > 0 and (demo / "fcr-model" / "diagnosis.png").is_file()
    assert diagnosis["verdict"] in (demo / "fcr-model" / "README.md").read_text()
    assert (demo / "sweep_validation.png").stat().st_size > 0
    assert (demo / "sweep_test.png").stat().st_size > 0
    edited = timm.create_model("local-dir:" + str(demo / "fcr-model"), pretrained=True)
    base = timm.create_model("local-dir:" + str(demo / "erm-model"), pretrained=True)
    record = json.loads((demo / "fcr-model" / "fcr_config.json").read_text())
    differ = sum(int((edited.state_dict()[k] != v).sum()) for k, v in base.state_dict().items())
    assert differ == len(record["edits"]) == len(results["methods"]["fcr"]["edits"]) >= 1
    # the record and the card name the classes and the fictitious classes by their ClassLabel names
    assert {e["class_name"] for e in record["edits"]} <= {"small", "large"}
    assert {e["fictitious"] for e in record["edits"]} <= {"grass", "brick"}
    card = (demo / "fcr-model" / "README.md").read_text()
    assert all(
        f"| {e['param']} | {e['row']} | {e['col']} | {e['class_name']} | {e['fictitious']} |" in card
        for e in record["edits"]
    )
    # refuses to clobber an earlier run
    proc = _cli("demo", "--output_dir", str(demo), check=False)
    assert proc.returncode == 2
    assert "--overwrite" in proc.stderr


def test_cli_inspect_neutralize_sweep_remove(demo, tmp_path):
    erm = str(demo / "erm-model")
    common = ["--dataset_name", "spurious_digits", "--json"]
    top = json.loads(_cli("inspect", "--model_name_or_path", erm, *common, "--top", "2").stdout)
    assert set(top) == {"small", "large"}
    assert all(len(v) == 2 for v in top.values())
    out = tmp_path / "neutralized"
    choice = json.loads(
        _cli(
            "neutralize", "--model_name_or_path", erm, *common, "--attribute_column", "place", "--output_dir", str(out)
        ).stdout
    )["choice"]
    assert (out / "fcr_config.json").is_file()
    assert choice["rule"] == "min_gap"
    assert json.loads((out / "fcr_config.json").read_text())["diagnosis"]["verdict"] in (out / "README.md").read_text()
    head_dir = tmp_path / "class_balanced"
    head = json.loads(
        _cli(
            "neutralize", "--model_name_or_path", erm, *common, "--attribute_column", "place", "--method",
            "class_balanced", "--no_diagnosis", "--edits_only", "--output_dir", str(head_dir),
        ).stdout
    )  # fmt: skip
    assert head["choice"]["method"] == "class_balanced" and "diagnosis" not in head
    assert sorted(p.name for p in head_dir.iterdir()) == ["README.md", "fcr_config.json", "fcr_head.safetensors"]
    from hf_fcr import FictitiousClassRemover

    applied = FictitiousClassRemover.from_pretrained(str(head_dir))
    assert applied.edits[0].method == "class_balanced"
    base = FictitiousClassRemover.from_pretrained(erm)
    assert not torch.equal(applied.head.weight, base.head.weight)
    applied.revert()
    assert torch.equal(applied.head.weight, base.head.weight) and torch.equal(applied.head.bias, base.head.bias)
    sweep = json.loads(_cli("sweep", "--model_name_or_path", str(out), *common, "--group_columns", "place").stdout)
    assert len(sweep["table"]) > 200
    assert sweep["table"][0]["r"] == 0.0
    removed = json.loads(
        _cli(
            "remove-class",
            "--model_name_or_path",
            erm,
            *common,
            "--class",
            "large",
            "--output_dir",
            str(tmp_path / "removed"),
            "--edits_only",
        ).stdout
    )
    assert removed["edits"][0]["class_name"] == "large"
    assert sorted(p.name for p in (tmp_path / "removed").iterdir()) == ["README.md", "fcr_config.json"]
    bad = _cli(
        "remove-class",
        "--model_name_or_path",
        erm,
        *common,
        "--class",
        "huge",
        "--output_dir",
        str(tmp_path / "bad"),
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown class name 'huge'" in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_cli_push_to_a_local_hub(demo, tmp_path):
    """`hf-fcr push` against the Hub-protocol server on 127.0.0.1 (tests/hub_server.py), standing in for the Hub."""
    with HubServer() as hub:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_x")
        _cli("push", "--model_name_or_path", str(demo / "fcr-model"), "--hub_model_id", "tester/demo-fcr", env=env)
        assert {"fcr_config.json", "README.md", "model.safetensors", "config.json"} <= set(
            hub.state.repos["tester/demo-fcr"]
        )


def _run_script(name, *args):
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        return runpy.run_path(str(ROOT / "recipes" / name), run_name="__main__")
    finally:
        sys.argv = argv


def test_recipe_offline_stand_in(tmp_path, capsys):
    _run_script(
        "run.py", str(ROOT / "recipes" / "waterbirds.yaml"), "--output_dir", str(tmp_path / "wb"), "--epochs", "10"
    )
    text = capsys.readouterr().out
    assert "stand-in" in text
    assert "93.2" in text  # the paper's number is printed for comparison
    results = json.loads((tmp_path / "wb" / "results.json").read_text())
    assert results["paper"]["worst_group"] == 93.2
    assert "fcr" in results["methods"]


def test_recipe_with_a_checkpoint_and_a_local_dataset_streamed(demo, tmp_path):
    """The real-data path: a saved checkpoint and a dataset folder (as a Hub dataset would be), streamed."""
    from hf_fcr.data.spurious import spurious_digits

    spurious_digits(seed=0).save_to_disk(str(tmp_path / "data"))
    _run_script(
        "run.py",
        str(ROOT / "recipes" / "spurious_digits.yaml"),
        "--model_name_or_path",
        str(demo / "erm-model"),
        "--dataset_name",
        str(tmp_path / "data"),
        "--streaming",
        "--output_dir",
        str(tmp_path / "out"),
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    demo_results = json.loads((demo / "results.json").read_text())
    for method in ("erm", "fcr", "dfr"):  # the same model and data through the streaming path: the same numbers
        assert results["methods"][method]["worst_group"] == pytest.approx(
            demo_results["methods"][method]["worst_group"]
        )


def test_class_removal_and_parity_recipes(tmp_path):
    mod = runpy.run_path(str(ROOT / "recipes" / "class_removal.py"))
    config = tmp_path / "class_removal.json"  # HfArgumentParser: a JSON config file as the single argument
    config.write_text(
        json.dumps({"output_dir": str(tmp_path / "cr"), "max_weights": 1, "max_removed": 3, "stand_in": "digits"})
    )
    res = mod["main"]([str(config)])
    assert max(r["forget"] for r in res["single"]["supporting"]) <= 0.05
    assert all(row["removed_accuracy"] <= 0.05 for row in res["multi"])
    mod = runpy.run_path(str(ROOT / "recipes" / "parity_mnist.py"))
    config = tmp_path / "parity.yaml"  # or YAML
    config.write_text(f"output_dir: {tmp_path / 'pm'}\nr_values: [0, 1]\nstand_in: digits\n")
    res = mod["main"]([str(config)])
    with pytest.raises(ValueError, match="not used"):  # a key that is no flag is an error, not ignored
        config.write_text(f"output_dir: {tmp_path / 'pm2'}\nr_value: [0, 1]\n")
        mod["main"]([str(config)])
    assert set(res["curves"]) == {"sca", "grad_x_act", "sca_supporting", "grad_x_act_supporting"}
    assert 0.5 < res["model_test_accuracy"] <= 1.0
    base = res["curves"]["sca"][0]
    assert base["forget"] == pytest.approx(base["retain"], abs=0.05)  # r = 0 changes nothing
