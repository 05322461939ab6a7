"""Reproduce the README's tables (the paper's Figures 6-9 and Table 1 analogues) on the offline data, over seeds.

    python benchmarks/reproduce.py --output_dir outputs/reproduce --seeds 0 1 2 3 4 [--real_mnist]

The 8x8 tables use sklearn's digits (--stand_in digits); --real_mnist adds benchmarks/real_mnist.py's tables.
Prints markdown tables (mean +- std over seeds) and writes them with the raw results to --output_dir.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # research/, outside the wheel
from research.tables import figure6_table, figure8_table, mean_std, method_table, removal_controls_table  # noqa: E402


def spurious(out: Path, seeds: list[int], correlation: float, arch: str = "test_resnet") -> str:
    from hf_fcr.demo.main import run_demo

    runs = [
        run_demo(
            out / f"spurious_{arch}_{correlation}_seed{s}",
            seed=s,
            correlation=correlation,
            arch=arch,
            overwrite=True,
            progress=False,
        )
        for s in seeds
    ]
    return method_table(runs, f"SpuriousDigits, {arch}, correlation {correlation}")


def class_removal(out: Path, seeds: list[int]) -> str:
    main = runpy.run_path(str(ROOT / "recipes" / "class_removal.py"))["main"]
    runs = [
        main(
            [
                "--output_dir",
                str(out / f"class_removal_seed{s}"),
                "--seed",
                str(s),
                "--overwrite",
                "--stand_in",
                "digits",
            ]
        )
        for s in seeds
    ]
    return figure6_table(runs, "digits CNN", (1, 2, 4, 8)) + "\n" + removal_controls_table(runs)


def parity(out: Path, seeds: list[int]) -> str:
    main = runpy.run_path(str(ROOT / "recipes" / "parity_mnist.py"))["main"]
    r_values = [0.0, 0.03, 0.1, 0.2, 0.5, 1.0]
    runs = [
        main(
            [
                "--output_dir",
                str(out / f"parity_seed{s}"),
                "--seed",
                str(s),
                "--overwrite",
                "--stand_in",
                "digits",
                "--r_values",
                *map(str, r_values),
            ]
        )
        for s in seeds
    ]
    text = figure8_table(runs, r_values, f"ParityDigits, {len(seeds)} seeds; forget / retain in %:")
    acc = mean_std([x["fictitious_head_accuracy"] for x in runs])
    return text + f"\nM' (digit head on the parity model's features) train accuracy: {acc} %.\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="outputs/reproduce")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--correlations", type=float, nargs="+", default=[0.95])
    p.add_argument(
        "--pretrained_seeds",
        type=int,
        nargs="*",
        default=[0, 1, 2, 3, 4],
        help="seeds for the frozen ImageNet EfficientNet-Lite0 variant (about 1 min each)",
    )
    p.add_argument(
        "--finetuned_seeds",
        type=int,
        nargs="*",
        default=[],
        help="seeds for the fine-tuned ImageNet EfficientNet-Lite0 variant (about 3 min each; none by default)",
    )
    p.add_argument(
        "--real_mnist", action="store_true", help="also run benchmarks/real_mnist.py (Figures 6-8, SpuCo-style)"
    )
    args = p.parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = {"class_removal": class_removal(out, args.seeds), "parity": parity(out, args.seeds)}
    if args.real_mnist:
        real = runpy.run_path(str(ROOT / "benchmarks" / "real_mnist.py"))["main"]
        real(["--output_dir", str(out / "real_mnist"), "--seeds", *map(str, args.seeds)])
        sections["real_mnist"] = (out / "real_mnist" / "tables.md").read_text()
    for c in args.correlations:
        sections[f"spurious_{c}"] = spurious(out, args.seeds, c)
    if args.pretrained_seeds:
        sections["spurious_pretrained"] = spurious(out, args.pretrained_seeds, 0.95, "efficientnet_lite0_pretrained")
    if args.finetuned_seeds:
        sections["spurious_finetuned"] = spurious(out, args.finetuned_seeds, 0.95, "efficientnet_lite0_finetuned")
    text = "\n".join(f"### {name}\n\n{table}" for name, table in sections.items())
    print(text)
    (out / "tables.md").write_text(text)
    (out / "tables.json").write_text(json.dumps(sections, indent=2))


if __name__ == "__main__":
    main()
