"""The head-level fits and M' at CelebA's scale, as a ResNet-50 sees it: synthetic features with CelebA's split and
group sizes, and an ERM head that leans on the cue. Prints each method's seconds and test worst-group / average
accuracy, and the peak resident memory each method adds above the data the script holds (the three splits' float32
features: 1.6 GiB).

    python benchmarks/celeba_scale.py --seeds 0 [--methods dfr class_balanced fcr auto diagnose] [--reference]
        [--device cuda] [--output bench.json]

``--reference`` runs each method a second time, in the same process on the same features, with scikit-learn's fits
as they were before the batched solver (``speed.scikit_learn``: DFR's and class-balanced retraining's 41 fits one at
a time; M' by ``LogisticRegression(C=1.0)`` on a float64 copy, one BLAS thread): the rows ``method (scikit-learn)``.

Groups are (Blond_Hair, Male), the sizes of CelebA's official split (train 162,770 rows, validation 19,867, test
19,962; the minority, blond men: 1,387 / 182 / 180). Each row has 2,048 features: unit Gaussian noise, plus the
class along 32 of them and the attribute along 32 others (stronger than the class, so that the ERM head, a logistic
regression fit on the training split, leans on it where the two disagree). FCR's M' is fit on all training rows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import time
from typing import Any

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# (Blond_Hair, Male) -> rows, per split: CelebA's official split
SIZES = {
    "train": {(0, 0): 71629, (0, 1): 66874, (1, 0): 22880, (1, 1): 1387},
    "validation": {(0, 0): 8535, (0, 1): 8276, (1, 0): 2874, (1, 1): 182},
    "test": {(0, 0): 9767, (0, 1): 7535, (1, 0): 2480, (1, 1): 180},
}
DIM, SIGNAL = 2048, 32


def split(rows: dict[tuple[int, int], int], generator: torch.Generator) -> Any:
    """One split's FeatureSet: features, ``label`` (blond) and ``place`` (male), in a shuffled order."""
    from hf_fcr import FeatureSet

    labels = torch.cat([torch.full((n,), y) for (y, _), n in rows.items()])
    attribute = torch.cat([torch.full((n,), a) for (_, a), n in rows.items()])
    order = torch.randperm(len(labels), generator=generator)
    labels, attribute = labels[order], attribute[order]
    x = torch.randn(len(labels), DIM, generator=generator)
    x[:, :SIGNAL] += 0.35 * (2 * labels[:, None] - 1)
    x[:, SIGNAL : 2 * SIGNAL] += 0.5 * (2 * attribute[:, None] - 1)
    return FeatureSet(x, {"label": labels, "place": attribute})


def erm_head(train: Any, steps: int = 100) -> nn.Linear:
    """A logistic-regression head fit on the training split by L-BFGS (cross-entropy, a little weight decay)."""
    head = nn.Linear(DIM, 2)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=steps, history_size=20, line_search_fn="strong_wolfe")
    x, y = train.features, train["label"]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 1e-4 * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.requires_grad_(False)


def test_metrics(remover: Any, test: Any) -> dict[str, float]:
    from hf_fcr.core.metrics import group_ids, group_metrics

    labels = test["label"]
    ids, names = group_ids({"label": labels, "place": test["place"]}, ["label", "place"])
    m = group_metrics(remover.logits(test.features).argmax(1), labels, ids, names)
    return {"worst_group": m["worst_group"], "average": m["average"]}


def _memory_gib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak since the last ``_reset_peak``) of this process, in GiB."""
    with open("/proc/self/status", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    return kib / 2**20


def _reset_peak() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to the resident size). Where that is not
    allowed (some containers), the peak counts from the start of the process, and says more than the method added."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def _sklearn_probe(features: torch.Tensor, targets: torch.Tensor, num_values: int, **_: Any) -> Any:
    """M' as scikit-learn fit it before the torch probe: ``LogisticRegression(C=1.0)`` on a float64 copy."""
    from hf_fcr.fitting.probe import default_probe, fit_linear_probe

    return fit_linear_probe(features, targets, num_values, probe=default_probe())


def _sklearn_probes(features: torch.Tensor, targets: torch.Tensor, num_values: int, **_: Any) -> Any:
    """``_sklearn_probe`` for each column of ``targets [N, P]``, one fit after another."""
    return [_sklearn_probe(features, column, num_values) for column in targets.T]


def scikit_learn_fits() -> Any:
    """Every head-level fit and M' by scikit-learn (the module docstring's ``--reference``)."""
    import contextlib
    from unittest import mock

    from speed import scikit_learn

    stack = contextlib.ExitStack()
    stack.enter_context(scikit_learn())
    stack.enter_context(mock.patch("hf_fcr.fitting.probe.fit_logistic_probe", _sklearn_probe))
    stack.enter_context(mock.patch("hf_fcr.fitting.probe.fit_logistic_probes", _sklearn_probes))
    return stack


def run(seed: int, methods: list[str], reference: bool = False, device: str = "cpu") -> dict[str, Any]:
    from hf_fcr import FictitiousClassRemover

    generator = torch.Generator().manual_seed(seed)
    train, val, test = (split(SIZES[s], generator) for s in ("train", "validation", "test"))
    if device != "cpu":  # the features where a GPU user's are (the fits run on the features' device)
        train, val, test = (dataclasses.replace(s, features=s.features.to(device)) for s in (train, val, test))
    t0 = time.perf_counter()
    remover = FictitiousClassRemover(nn.Sequential(nn.Identity(), erm_head(train)).to(device))
    rows: dict[str, Any] = {"erm": {**test_metrics(remover, test), "seconds": time.perf_counter() - t0}}
    variants = [(m, None) for m in methods] + ([(m, "scikit-learn") for m in methods] if reference else [])
    for method, variant in variants:
        key = method if variant is None else f"{method} ({variant})"
        with scikit_learn_fits() if variant else contextlib.nullcontext():
            _reset_peak()
            before = _memory_gib("VmRSS")
            if device != "cpu":
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            if method == "diagnose":
                diagnosis = remover.diagnose(train, val, label_column="label", attribute_column="place", seed=seed)
                rows[key] = {"seconds": time.perf_counter() - t0, "verdict": diagnosis.verdict}
                rows[key]["added_peak_gib"] = _memory_gib("VmHWM") - before
            else:
                search = remover.neutralize_spurious(train, val, method=method, diagnose=False, seed=seed)
                rows[key] = {
                    **test_metrics(remover, test),
                    "seconds": time.perf_counter() - t0,
                    "chose": search.method,
                    "added_peak_gib": _memory_gib("VmHWM") - before,  # above the data the script holds
                }
                remover.revert()
        if device != "cpu":  # what the accelerator held at most (the features included)
            rows[key]["device_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"seed {seed} {key}: {json.dumps(rows[key])}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=["dfr", "class_balanced", "fcr", "auto", "diagnose"])
    p.add_argument("--reference", action="store_true", help="each method also with scikit-learn's fits")
    p.add_argument("--device", default="cpu", help="where the features and the model are (cuda on a GPU machine)")
    p.add_argument("--output", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    runs = {seed: run(seed, args.methods, args.reference, args.device) for seed in args.seeds}
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cores = torch.get_num_threads()
    print(f"\n| method | seconds | test worst group | test average | peak GiB above the data | (cores: {cores}) |")
    print("|---|---|---|---|---|---|")
    for method in runs[args.seeds[0]]:
        rows = [runs[s][method] for s in args.seeds]
        secs = sum(r["seconds"] for r in rows) / len(rows)
        if "worst_group" in rows[0]:
            worst = sum(r["worst_group"] for r in rows) / len(rows)
            average = sum(r["average"] for r in rows) / len(rows)
            added = max(r.get("added_peak_gib", 0.0) for r in rows)
            print(f"| {method} | {secs:.1f} | {worst:.3f} | {average:.3f} | {added:.2f} | |")
        else:
            added = max(r["added_peak_gib"] for r in rows)
            print(f"| {method} | {secs:.1f} | - | - | {added:.2f} | {rows[0]['verdict'][:80]}... |")
    print(f"\npeak resident memory: {peak_gib:.2f} GiB")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"runs": runs, "peak_gib": peak_gib}, f, indent=2)


if __name__ == "__main__":
    main()
