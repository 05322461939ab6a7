"""``hf-fcr``: the command line. ``hf-fcr demo`` is the main job (fully offline)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import __version__

DESCRIPTION = """\
Post-hoc debiasing of image classifiers by Fictitious Class Removal (FCR): find the last-layer weight that carries
a class or a spurious cue and edit it by a closed formula (one weight per class, controllable rate r).

Start with `hf-fcr demo --output-dir outputs/demo`: it builds the offline SpuriousDigits benchmark, trains an
ERM model, runs FCR, DFR and controls on the same features, prints a table and writes results, plots and the
edited model (with its fcr_config.json and model card).
"""


def _demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

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
        print(format_table(results))
        print(f"\nwrote {os.path.join(args.output_dir, 'results.json')}, sweep plots and the edited model folder")
    return 0


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
    demo.add_argument("--arch", default="test_resnet", help="timm architecture trained from scratch")
    demo.add_argument("--rule", choices=("min_gap", "max_worst"), default="min_gap", help="how r is chosen")
    demo.add_argument("--overwrite", action="store_true", help="replace outputs of an earlier run")
    demo.add_argument("--json", action="store_true", help="print the results as JSON only")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, TypeError, OSError) as err:
        print(f"hf-fcr {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
