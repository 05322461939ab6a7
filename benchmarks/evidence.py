"""The evidence: FCR beside its controls and the head-level fixes, with the diagnosis, over seeds.

    python benchmarks/evidence.py --output_dir outputs/evidence --benchmarks digits frozen finetuned --seeds 0 1 2 3 4
    python benchmarks/evidence.py --output_dir outputs/evidence --benchmarks spuco --seeds 0 1 2 3 4
    python benchmarks/evidence.py --output_dir outputs/evidence --tables_only

Benchmarks: SpuriousDigits with timm test_resnet trained from scratch (``digits``, the demo), with the ImageNet
EfficientNet-Lite0 frozen (``frozen``) or fine-tuned (``finetuned``), and the real-MNIST SpuCo-style benchmark
(``spuco``: 95% correlation, a 14-pixel coloured square; ``spuco_patch``: a 4-pixel one). Every seed's
``results.json`` stays in its folder; the tables (mean +- std over the seeds found) are printed and written to
``tables.md``. The README's figures ran two of these commands side by side with ``OMP_NUM_THREADS=1`` (results depend
on the thread count through the order of float sums in ERM training).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/, outside the wheel
from research.tables import method_table  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

ARCHS = {
    "digits": "test_resnet",
    "frozen": "efficientnet_lite0_pretrained",
    "finetuned": "efficientnet_lite0_finetuned",
}
TITLES = {
    "digits": "SpuriousDigits, timm test_resnet trained from scratch (correlation 0.95)",
    "frozen": "SpuriousDigits, ImageNet EfficientNet-Lite0 frozen + ERM head",
    "finetuned": "SpuriousDigits, ImageNet EfficientNet-Lite0 fine-tuned (stem and first 3 stages frozen)",
    "spuco": "real-MNIST SpuCo-style (5 classes, 95% correlation, 14-pixel coloured square)",
    "spuco_patch": "real-MNIST SpuCo-style with a small cue (5 classes, 95% correlation, 4-pixel coloured square)",
}
SPUCO_MAGNITUDE = {"spuco": 14, "spuco_patch": 4}


def run(benchmark: str, seeds: list[int], out: Path) -> None:
    for seed in seeds:
        folder = out / benchmark / f"seed{seed}"
        if (folder / "results.json").is_file():
            continue
        if benchmark in SPUCO_MAGNITUDE:
            from real_mnist import spuco

            from hf_fcr.data.mnist import load_mnist

            spuco(load_mnist(), [seed], 1, 0.95, out / benchmark, print, magnitude=SPUCO_MAGNITUDE[benchmark])
            (out / benchmark / f"spuco_seed{seed}").rename(folder)
        else:
            from hf_fcr.demo.main import run_demo

            run_demo(folder, seed=seed, arch=ARCHS[benchmark], overwrite=True, progress=False)
        print(f"{benchmark} seed {seed} done", flush=True)


CONTROLS = {"cold_fits": 1e-4, "exact_fits": 1e-8}  # scikit-learn's tolerance: its default, and the exact optimum
# FCR with M' by scikit-learn's LogisticRegression(C=1.0): at its default tolerance, and at 1e-10 (the exact optimum)
PROBE_CONTROLS = {"default_probe": 1e-4, "exact_probe": 1e-10}


def compare_with_cold_fits(compare: Callable[..., Any]) -> Callable[..., Any]:
    """``compare_methods``, preceded on the same features by DFR, class-balanced retraining and auto with
    scikit-learn's fits one at a time (``speed.scikit_learn``: the fits before the batched solver), at its default
    tolerance (``methods["cold_fits"]``) and at 1e-8 (``methods["exact_fits"]``, the exact optimum), and by FCR with
    M' fit by scikit-learn at its default tolerance (``methods["default_probe"]``) and at 1e-10
    (``methods["exact_probe"]``): the paired controls of what the batched solver changes, in the same process."""
    from sklearn.linear_model import LogisticRegression
    from speed import scikit_learn

    from hf_fcr.core.metrics import group_ids, group_metrics

    def wrapped(remover: Any, splits: tuple, **kwargs: Any) -> tuple[dict, Any]:
        train, val, test = splits
        columns = {k: kwargs[k] for k in ("label_column", "attribute_column", "rule", "seed")}
        label, attribute = columns["label_column"], columns["attribute_column"]
        ids, names = group_ids({c: test.labels(c) for c in (label, attribute)}, [label, attribute])
        controls: dict[str, dict] = {}
        for control, tol in CONTROLS.items():
            rows = controls[control] = {}
            with scikit_learn(tol):
                for name, method in (("dfr", "dfr"), ("dfr_class_balanced", "class_balanced"), ("auto", "auto")):
                    balance = {"val_attribute_column": None} if method == "class_balanced" else {}
                    search = remover.neutralize_spurious(
                        train, val, **columns, method=method, diagnose=False, **balance
                    )
                    pred = remover.logits(test.features).argmax(1)
                    metrics = group_metrics(pred, test.labels(columns["label_column"]), ids, names)
                    rows[name] = {**metrics, "choice": search.choice}
                    remover.revert()
        for control, tol in PROBE_CONTROLS.items():
            probe = LogisticRegression(C=1.0, tol=tol, max_iter=100_000)
            search = remover.neutralize_spurious(train, val, **columns, method="fcr", diagnose=False, probe=probe)
            metrics = group_metrics(remover.logits(test.features).argmax(1), test.labels(label), ids, names)
            edits = [[e.row, e.col] for e in search.edits]
            controls[control] = {"fcr": {**metrics, "choice": search.choice, "edits": edits}}
            remover.revert()
        methods, search = compare(remover, splits, **kwargs)
        return {**methods, **controls}, search

    return wrapped


def table(benchmark: str, out: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted((out / benchmark).glob("seed*/results.json"))]
    return method_table(runs, TITLES[benchmark]) if runs else ""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", default="outputs/evidence")
    p.add_argument("--benchmarks", nargs="*", default=["digits", "frozen", "finetuned", "spuco"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--tables_only", action="store_true", help="only summarize the runs already in --output_dir")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    if not args.tables_only:
        from unittest import mock

        from hf_fcr.demo import compare

        with mock.patch.object(compare, "compare_methods", compare_with_cold_fits(compare.compare_methods)):
            for benchmark in args.benchmarks:
                run(benchmark, args.seeds, out)
    text = "\n".join(t for b in TITLES if (t := table(b, out)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
