"""What the spurious-correlation recipes in ``recipes/`` share: the usual flags, loading a Hub checkpoint and a
Hub (or local) dataset, or, without ``--model_name_or_path``, the offline SpuriousDigits stand-in."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from ..data import load_data

__all__ = ["experiment_parser", "load_experiment", "spurious_parser", "spurious_recipe"]


def spurious_parser(
    description: str, dataset_name: str, label_column: str, attribute_column: str
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument(
        "--model_name_or_path",
        default=None,
        help="an ERM checkpoint for this dataset (timm or transformers, Hub id or folder); without it the "
        "recipe runs offline on the SpuriousDigits stand-in",
    )
    p.add_argument("--dataset_name", default=dataset_name, help="Hub dataset id, or a folder from save_to_disk")
    p.add_argument("--dataset_config_name", default=None)
    p.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    p.add_argument("--image_column", default="image")
    p.add_argument("--label_column", default=label_column)
    p.add_argument("--attribute_column", default=attribute_column, help="the spurious attribute (fictitious classes)")
    p.add_argument("--train_split", default="train")
    p.add_argument("--validation_split", default="validation")
    p.add_argument("--test_split", default="test")
    p.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--cache_dir", default=None, help="feature cache: a second run skips the backbone")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--push_to_hub", action="store_true")
    p.add_argument("--hub_model_id", default=None)
    p.add_argument("--correlation", type=float, default=0.95, help="stand-in only: label/background agreement")
    p.add_argument("--epochs", type=int, default=30, help="stand-in only: ERM epochs")
    return p


def spurious_recipe(
    name: str, paper: dict[str, Any], parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> dict[str, Any]:
    """Run ERM / FCR / DFR / controls for one benchmark and print them next to the paper's numbers (Table 1)."""
    import sys

    args = parser.parse_args(argv)
    if args.model_name_or_path is None:  # the stand-in never touches the network
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from ..metrics import format_table
    from ..remover import FictitiousClassRemover
    from .compare import run_spurious
    from .demo import check_output_dir
    from .erm import spurious_digits_erm

    out = check_output_dir(args.output_dir, ("results.json", "fcr-model"), args.overwrite)
    command = "python " + " ".join([f"recipes/{name}.py", *(argv if argv is not None else sys.argv[1:])])
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
        data,
        benchmark=benchmark,
        splits=splits,
        seed=args.seed,
        rule=args.rule,
        command=command,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        extra={"timings": timings, "paper": paper},
        progress=True,
        **columns,
    )
    print(format_table(results["methods"]))
    print(f"paper (Table 1, FCR on {name}): " + json.dumps(paper))
    if args.push_to_hub:
        if not args.hub_model_id:
            raise SystemExit("--push_to_hub needs --hub_model_id")
        remover.push_to_hub(args.hub_model_id, command=command)
    return results


def experiment_parser(description: str, dataset_name: str | None, image_column: str) -> argparse.ArgumentParser:
    """The flags the class-removal experiments share (the recipe adds its own)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model_name_or_path", default=None, help="without it: the offline stand-in on sklearn digits")
    p.add_argument("--dataset_name", default=dataset_name)
    p.add_argument("--streaming", action="store_true")
    p.add_argument("--image_column", default=image_column)
    p.add_argument("--label_column", default="label")
    p.add_argument("--train_split", default="train")
    p.add_argument("--test_split", default="test")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    return p


def load_experiment(args: argparse.Namespace, stand_in: Any, columns: Sequence[str]) -> tuple[Any, Any, Any, Any]:
    """``(remover, train features, test features, output folder)``: the checkpoint and dataset named by ``args``,
    or, without ``--model_name_or_path``, ``stand_in(seed) -> (model, DatasetDict)`` offline."""
    from ..remover import FictitiousClassRemover
    from .demo import check_output_dir

    out = check_output_dir(args.output_dir, ("results.json",), args.overwrite)
    if args.model_name_or_path is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model, data = stand_in(args.seed)
        remover, image_column = FictitiousClassRemover(model), "image"
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
