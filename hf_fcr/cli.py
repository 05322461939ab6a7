"""``hf-fcr``: the command line. ``hf-fcr demo`` is the main job (fully offline)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .data import BUILTIN_DATASETS

DESCRIPTION = """\
Post-hoc debiasing of image classifiers by Fictitious Class Removal (FCR): find the last-layer weight that carries
a class or a spurious cue and edit it by a closed formula (one weight per class, controllable rate r).

Start with `hf-fcr demo --output-dir outputs/demo`: it builds the offline SpuriousDigits benchmark, trains an
ERM model, runs FCR, DFR and controls on the same features, prints a table and writes results, plots and the
edited model (with its fcr_config.json and model card).
"""


def _demo(args: argparse.Namespace) -> int:
    from .experiments.demo import run_demo
    from .metrics import format_table

    results = run_demo(
        args.output_dir,
        seed=args.seed,
        correlation=args.correlation,
        epochs=args.epochs,
        arch=args.arch,
        rule=args.rule,
        overwrite=args.overwrite,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        print()
        print(format_table(results["methods"]))
        print(f"\nwrote {os.path.join(args.output_dir, 'results.json')}, sweep plots and the edited model folder")
    return 0


def _dataset(args: argparse.Namespace) -> Any:
    from .data import load_data

    return load_data(args.dataset_name, streaming=args.streaming, seed=args.dataset_seed)


def _remover(args: argparse.Namespace) -> Any:
    from .remover import FictitiousClassRemover

    return FictitiousClassRemover.from_pretrained(args.model_name_or_path, revision=args.revision)


def _features(remover: Any, data: Any, split: str, args: argparse.Namespace, columns: Sequence[str]) -> Any:
    if split not in data:
        raise KeyError(f"the dataset has no split {split!r} (splits: {list(data)}).")
    return remover.extract_features(
        data[split],
        image_column=args.image_column,
        columns=tuple(columns),
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        progress=not args.json,
    )


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True) if args.json else text)


def _inspect(args: argparse.Namespace) -> int:
    from .scores import top_edges

    remover = _remover(args)
    feats = _features(remover, _dataset(args), args.split, args, [args.label_column])
    out, lines = {}, [f"{'class':<24}{'rank':>5}{'column':>8}{'weight':>12}{'SCA score':>14}"]
    weight = remover.head.weight.detach().cpu()
    for c in range(remover.num_classes):
        stats = remover.collect(feats, label_column=args.label_column, rows=[c])
        if int(stats.count[c]) == 0:
            continue
        edges = top_edges(stats, c, k=args.top, weight_row=weight[c], candidates=args.candidates)
        name = remover.class_names[c]
        out[name] = [{"row": c, "col": col, "weight": float(weight[c, col]), "score": s} for _, col, s in edges]
        for i, (_, col, score) in enumerate(edges):
            lines.append(f"{name[:23]:<24}{i + 1:>5}{col:>8}{float(weight[c, col]):>12.5g}{score:>14.5g}")
    _emit(args, out, "\n".join(lines))
    return 0


def _save(remover: Any, args: argparse.Namespace, command: str) -> None:
    remover.save_pretrained(args.output_dir, edits_only=args.edits_only, overwrite=args.overwrite, command=command)


def _remove_class(args: argparse.Namespace) -> int:
    remover = _remover(args)
    cls = remover.class_index(int(args.class_) if args.class_.lstrip("-").isdigit() else args.class_)
    feats = _features(remover, _dataset(args), args.split, args, [args.label_column])
    edits = remover.remove_class(
        cls, feats, label_column=args.label_column, r=args.r, num_weights=args.num_weights, candidates=args.candidates
    )
    _save(remover, args, "hf-fcr " + " ".join(sys.argv[1:]))
    rows = [e.to_dict() for e in edits]
    text = "\n".join(f"{e.param}[{e.row}, {e.col}]: {e.old_value:.6g} -> {e.new_value:.6g} (r={e.r:g})" for e in edits)
    _emit(args, {"edits": rows, "output_dir": args.output_dir}, text + f"\nsaved to {args.output_dir}")
    return 0


def _neutralize(args: argparse.Namespace) -> int:
    from .metrics import format_table

    remover = _remover(args)
    data = _dataset(args)
    columns = [args.label_column, args.attribute_column]
    train = _features(remover, data, args.train_split, args, columns)
    val = _features(remover, data, args.validation_split, args, columns)
    search = remover.neutralize_spurious(
        train,
        val,
        label_column=args.label_column,
        attribute_column=args.attribute_column,
        rule=args.rule,
        seed=args.seed,
    )
    _save(remover, args, "hf-fcr " + " ".join(sys.argv[1:]))
    payload = {"choice": search.choice, "validation": {k: v for k, v in search.validation.items() if k != "sweep"}}
    text = format_table({"fcr (validation)": {**search.validation, "choice": search.choice}})
    _emit(args, payload, text + f"\nsaved to {args.output_dir}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    remover = _remover(args)
    if not remover.edits:
        raise ValueError(f"{args.model_name_or_path} holds no hf-fcr edits to sweep: pass a folder saved by hf-fcr.")
    feats = _features(remover, _dataset(args), args.split, args, [args.label_column, *args.group_columns])
    result = remover.sweep(feats, label_column=args.label_column, group_columns=args.group_columns)
    best = result.best(args.rule)
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        result.plot(os.path.join(args.output_dir, "sweep.png"), rule=args.rule)
        with open(os.path.join(args.output_dir, "sweep.json"), "w") as f:
            json.dump(result.table, f, indent=2)
    text = "\n".join(
        f"r={row['r']:<10.4g} average {100 * row['average']:5.1f}  worst {100 * row['worst_group']:5.1f}"
        for row in result.table[:: max(1, len(result.table) // 20)]
    )
    _emit(args, {"best": best, "table": result.table}, text + f"\nbest ({args.rule}): r={best['r']:.4g}")
    return 0


def _push(args: argparse.Namespace) -> int:
    remover = _remover(args)
    info = remover.push_to_hub(
        args.hub_model_id, private=args.private, edits_only=args.edits_only, create_pr=args.create_pr
    )
    _emit(args, {"commit_url": str(getattr(info, "commit_url", info))}, f"pushed: {getattr(info, 'commit_url', info)}")
    return 0


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--model_name_or_path", required=True, help="timm / transformers checkpoint: Hub id or folder")
    p.add_argument("--revision", default=None)
    if data:
        p.add_argument(
            "--dataset_name",
            required=True,
            help=f"Hub dataset id, a save_to_disk folder, or a built-in: {', '.join(BUILTIN_DATASETS)}",
        )
        p.add_argument("--dataset_seed", type=int, default=0, help="seed of a built-in dataset")
        p.add_argument("--streaming", action="store_true")
        p.add_argument("--image_column", default="image")
        p.add_argument("--label_column", default="label")
        p.add_argument("--batch_size", type=int, default=64)
        p.add_argument("--cache_dir", default=None, help="feature cache: a second run skips the backbone")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output_dir", "--output-dir", required=True, help="folder for the edited model")
    p.add_argument("--edits_only", action="store_true", help="save only fcr_config.json and the card")
    p.add_argument("--overwrite", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-fcr", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hf-fcr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="offline benchmark: ERM vs FCR vs DFR on SpuriousDigits (the main job)",
        description="Build SpuriousDigits (real sklearn digits on real skimage textures; the background colour "
        "agrees with the label in --correlation of the training set), train ERM, then compare FCR (policy, "
        "weights per class and r chosen on validation), DFR and two FCR controls on the balanced test split.",
    )
    demo.add_argument("--output-dir", "--output_dir", required=True, help="folder for results.json, plots, models")
    demo.add_argument("--seed", type=int, default=0, help="seed for the data split, training and DFR (default 0)")
    demo.add_argument("--correlation", type=float, default=0.95, help="label/background agreement in train")
    demo.add_argument("--epochs", type=int, default=30, help="ERM training epochs (default 30)")
    demo.add_argument(
        "--arch",
        default="test_resnet",
        help="timm architecture trained from scratch, or efficientnet_lite0_pretrained: the packaged ImageNet "
        "EfficientNet-Lite0 frozen, with an ERM-trained head",
    )
    demo.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap", help="how r is chosen")
    demo.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    demo.add_argument("--json", action="store_true", help="print the results as JSON only")
    demo.set_defaults(func=_demo)

    p = sub.add_parser("inspect", help="top edges per class with their SCA scores (Eq. 6)")
    _common(p)
    p.add_argument("--split", default="train")
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--candidates", choices=("supporting", "all"), default="supporting")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("remove-class", help="Algorithm 1: remove a class by editing its best weight(s)")
    _common(p)
    _output(p)
    p.add_argument("--class", dest="class_", required=True, help="class index or name")
    p.add_argument("--split", default="train")
    p.add_argument("--r", type=float, default=1.0, help="neutralization rate in [0, 1] (Eq. 8)")
    p.add_argument("--num_weights", type=int, default=1)
    p.add_argument("--candidates", choices=("supporting", "all"), default="supporting")
    p.set_defaults(func=_remove_class)

    p = sub.add_parser("neutralize", help="Algorithm 2: neutralize a spurious attribute, r chosen on validation")
    _common(p)
    _output(p)
    p.add_argument("--attribute_column", required=True, help="the spurious attribute (fictitious classes)")
    p.add_argument("--train_split", default="train")
    p.add_argument("--validation_split", default="validation")
    p.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_neutralize)

    p = sub.add_parser("sweep", help="accuracy of a saved edit at every r, in closed form (Figure 9)")
    _common(p)
    p.add_argument("--split", default="test")
    p.add_argument("--group_columns", nargs="*", default=[], help="groups are (label, *group_columns)")
    p.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap")
    p.add_argument("--output_dir", "--output-dir", default=None, help="write sweep.png and sweep.json here")
    p.set_defaults(func=_sweep)

    p = sub.add_parser("push", help="upload an edited folder (or its edits only) to the Hub")
    _common(p, data=False)
    p.add_argument("--hub_model_id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--edits_only", action="store_true")
    p.add_argument("--create_pr", action="store_true")
    p.set_defaults(func=_push)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    wants_json = "--json" in (sys.argv[1:] if argv is None else list(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        if wants_json and exit_.code not in (0, None):  # a usage error: scripts reading stdout still get JSON
            print(json.dumps({"error": {"type": "UsageError", "message": "invalid arguments (see stderr)"}}))
        raise
    if args.command == "demo" or getattr(args, "dataset_name", None) in BUILTIN_DATASETS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline jobs never try the network
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        return args.func(args)
    except Exception as err:  # every failure: a message on stderr, and with --json a JSON error on stdout
        message = str(err.args[0] if isinstance(err, KeyError) and err.args else err)
        print(f"hf-fcr {args.command}: error: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print(json.dumps({"error": {"type": type(err).__name__, "message": message}}))
        return 2 if isinstance(err, (ValueError, KeyError, TypeError, OSError)) else 1


if __name__ == "__main__":
    sys.exit(main())
