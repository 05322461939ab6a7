"""The pass on an accelerator: images/s of a plain bf16 inference pass against ``collect`` and ``extract_features``.

    python benchmarks/gpu.py --output gpu.json                      # a CUDA device (benchmarks/gpu.sh runs it)
    python benchmarks/gpu.py --device cpu --quick --output x.json   # the same code on tiny models (checks the script)

Two measurements, each a ratio of times measured in one run (target: at most 1.10 on an H200):

* batches already on the device: timm resnet50 (channels_last) and transformers ViT-B/16 (random weights), batch
  256, bf16 autocast; the plain pass is ``model(x)`` under autocast, then one synchronization. 16 batches, then 64:
  the difference is the cost of 48 batches alone, which tells a cost per batch from a pass's fixed cost;
* end to end from a ``datasets.Dataset`` of encoded JPEG images (256 px): a hand-written ``DataLoader`` (the same
  workers, pinned memory, timm's eval transform) + the bf16 forward, against the library reading the Dataset with
  the same workers and the same transform.

Prints one table and writes every figure to JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` timed runs after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _models(quick: bool) -> dict[str, Callable[[], tuple[torch.nn.Module, bool]]]:
    """name -> a builder of ``(model, channels_last)``: resnet50 and ViT-B/16 (tiny stand-ins with ``quick``)."""
    import timm
    from transformers import ViTConfig, ViTForImageClassification

    def vit() -> tuple[torch.nn.Module, bool]:
        config = (
            ViTConfig(num_labels=1000)
            if not quick
            else ViTConfig(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=1000
            )
        )
        return ViTForImageClassification(config), False

    return {
        "timm resnet18" if quick else "timm resnet50": lambda: (
            timm.create_model("resnet18" if quick else "resnet50", pretrained=False),
            True,
        ),
        "transformers tiny ViT" if quick else "transformers ViT-B/16": vit,
    }


def _passes(
    build: Callable[[], tuple[torch.nn.Module, bool]], device: torch.device, batch_size: int
) -> dict[str, Callable[[int], None]]:
    """The three passes over a given number of synthetic 224 px batches already on ``device``, each ending with one
    synchronization: ``plain`` (the model under one bf16 autocast region), ``collect`` and ``extract``."""
    from hf_fcr import FictitiousClassRemover

    model, channels_last = build()
    model = model.to(device).eval()
    x = torch.randn(batch_size, 3, 224, 224, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    batch = {"image": x, "label": torch.randint(0, 1000, (batch_size,))}
    remover = FictitiousClassRemover(model)
    options = dict(device=device, batch_size=batch_size, autocast_dtype=torch.bfloat16, channels_last=channels_last)

    def plain(num_batches: int) -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            for b in [batch] * num_batches:
                model(b["image"])
        _sync(device)

    def collect(num_batches: int) -> None:
        remover.collect([batch] * num_batches, rows=[0], **options)
        _sync(device)

    def extract(num_batches: int) -> None:
        remover.extract_features([batch] * num_batches, **options)
        _sync(device)

    return {"plain": plain, "collect": collect, "extract": extract}


PASSES = ("plain", "collect", "extract")


def on_device(
    device: torch.device, num_batches: int, batch_size: int, quick: bool, repeats: int, longer: int = 4
) -> list[dict[str, Any]]:
    """Plain pass, ``collect`` and ``extract_features`` on ``num_batches`` batches already on ``device``, then on
    ``longer`` times as many: the difference of the two times is the cost of the added batches alone, so the
    per-batch ratio and each pass's fixed cost (its start and end: statistics or features copied to the host)
    are told apart."""
    out = []
    for name, build in _models(quick).items():
        passes = _passes(build, device, batch_size)
        short = {k: _best_of(lambda f=passes[k]: f(num_batches), repeats) for k in PASSES}
        long = {k: _best_of(lambda f=passes[k]: f(longer * num_batches), repeats) for k in PASSES}
        images = num_batches * batch_size
        per_batch = {k: (long[k] - short[k]) / ((longer - 1) * num_batches) for k in PASSES}
        result = {
            "model": name,
            "images": images,
            **{f"{k}_images_per_s": images / short[k] for k in PASSES},
            "collect_over_pass": short["collect"] / short["plain"],
            "extract_over_pass": short["extract"] / short["plain"],
            "longer_images": longer * images,
            "longer_collect_over_pass": long["collect"] / long["plain"],
            "longer_extract_over_pass": long["extract"] / long["plain"],
            **{f"{k}_batch_ms": 1e3 * per_batch[k] for k in PASSES},
            "collect_per_batch_over_pass": per_batch["collect"] / per_batch["plain"],
            "extract_per_batch_over_pass": per_batch["extract"] / per_batch["plain"],
            # what a pass costs beyond its batches: t(n) - n * (time of one batch)
            **{f"{k}_fixed_ms": 1e3 * (short[k] - num_batches * per_batch[k]) for k in PASSES},
        }
        out.append(result)
        print(result, flush=True)
        del passes
    return out


def profile(device: torch.device, batch_size: int, quick: bool, path: str) -> dict[str, Any]:
    """torch.profiler over 4 batches of the plain pass, ``collect`` and ``extract_features`` for the first model:
    the host-device synchronizations and copies each makes, host and device time, and the costliest host ops (to
    ``path``)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    name, build = next(iter(_models(quick).items()))
    passes = _passes(build, device, batch_size)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out: dict[str, Any] = {"model": name}
    with open(path, "w") as report:
        for what in PASSES:
            passes[what](4)  # warm-up
            with torch_profile(activities=activities) as prof:
                passes[what](4)
            events = prof.key_averages()
            counts = {e.key: e.count for e in events}
            out[what] = {
                "synchronizations": sum(n for k, n in counts.items() if "Synchronize" in k),
                "copies": sum(n for k, n in counts.items() if "Memcpy" in k or k == "aten::copy_"),
                "host_ms": sum(e.self_cpu_time_total for e in events) / 1e3,
                "device_ms": sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e3,
            }
            report.write(f"== {name}: {what}, 4 batches of {batch_size}\n")
            report.write(events.table(sort_by="self_cpu_time_total", row_limit=25) + "\n")
    print(out, flush=True)
    return out


def _jpeg(seed: int, size: int) -> bytes:
    """One encoded JPEG of ``size`` px: a smooth colour field with some noise, as photos compress."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def jpeg_dataset(n: int, size: int = 256, seed: int = 0) -> Any:
    """``n`` encoded JPEG images of ``size`` px and labels, as a ``datasets.Dataset`` with an ``Image`` feature
    (encoded on every core)."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    import datasets

    with ProcessPoolExecutor() as pool:
        blobs = list(pool.map(partial(_jpeg, size=size), range(seed * n, seed * n + n), chunksize=64))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)})
    labels = np.random.default_rng(seed).integers(0, 1000, n).tolist()
    return datasets.Dataset.from_dict(
        {"image": [{"bytes": b, "path": None} for b in blobs], "label": labels}, features=features
    )


def end_to_end(
    device: torch.device, n: int, batch_size: int, workers: int, quick: bool, repeats: int
) -> dict[str, Any]:
    """A hand-written DataLoader + timm transform + bf16 forward against the library reading the same Dataset."""
    from hf_fcr import FictitiousClassRemover
    from hf_fcr.features.preprocess import timm_transform

    t0 = time.perf_counter()
    data = jpeg_dataset(n)
    build_s = time.perf_counter() - t0
    name, build = next(iter(_models(quick).items()))
    model, _ = build()
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    transform = timm_transform(model)

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {"image": transform([r["image"] for r in rows]), "label": torch.tensor([r["label"] for r in rows])}

    def plain() -> None:
        loader = torch.utils.data.DataLoader(
            data, batch_size=batch_size, num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda"
        )
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            for batch in loader:
                x = batch["image"].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                model(x)
        _sync(device)

    remover = FictitiousClassRemover(model, transform=transform)
    options = dict(
        device=device, batch_size=batch_size, autocast_dtype=torch.bfloat16, channels_last=True, num_workers=workers
    )

    def extract() -> None:
        remover.extract_features(data, **options)
        _sync(device)

    def collect() -> None:
        remover.collect(data, rows=[0], **options)
        _sync(device)

    t_plain, t_extract, t_collect = (_best_of(f, repeats) for f in (plain, extract, collect))
    out = {
        "model": name,
        "images": n,
        "workers": workers,
        "dataset_build_s": build_s,
        "plain_images_per_s": n / t_plain,
        "collect_images_per_s": n / t_collect,
        "extract_images_per_s": n / t_extract,
        "collect_over_pass": t_collect / t_plain,
        "extract_over_pass": t_extract / t_plain,
    }
    print(out, flush=True)
    return out


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"{results['device']}, torch {results['torch']}, batch {results['batch_size']}, bf16 autocast",
        f"{'measure':<58}{'plain img/s':>12}{'collect':>10}{'ratio':>8}{'extract':>10}{'ratio':>8}",
    ]
    rows = [(f"{r['model']}, batches on the device", r) for r in results["on_device"]]
    if "end_to_end" in results:
        e = results["end_to_end"]
        rows.append((f"{e['model']}, Dataset of {e['images']} JPEGs, {e['workers']} workers", e))
    for what, r in rows:
        lines.append(
            f"{what:<58}{r['plain_images_per_s']:>12.0f}{r['collect_images_per_s']:>10.0f}"
            f"{r['collect_over_pass']:>8.3f}{r['extract_images_per_s']:>10.0f}{r['extract_over_pass']:>8.3f}"
        )
    lines.append("target: every ratio at most 1.10 on an H200")
    for r in results["on_device"]:
        if "longer_images" not in r:  # a run of an earlier release
            continue
        lines.append(
            f"{r['model']}: {r['longer_images']} images collect {r['longer_collect_over_pass']:.3f}, extract "
            f"{r['longer_extract_over_pass']:.3f}; per added batch collect {r['collect_per_batch_over_pass']:.3f}, "
            f"extract {r['extract_per_batch_over_pass']:.3f} (plain {r['plain_batch_ms']:.1f} ms); fixed ms plain "
            f"{r['plain_fixed_ms']:.1f}, collect {r['collect_fixed_ms']:.1f}, extract {r['extract_fixed_ms']:.1f}"
        )
    if "profile" in results:
        p = results["profile"]
        for what in [k for k in PASSES if k in p]:
            lines.append(
                f"profile, {p['model']} {what} (4 batches): {p[what]['synchronizations']} synchronizations, "
                f"{p[what]['copies']} copies, host {p[what]['host_ms']:.1f} ms, device {p[what]['device_ms']:.1f} ms"
            )
    return "\n".join(lines)


def test_results(junit_xml: str) -> dict[str, Any]:
    """Counts and failed test ids from pytest's ``--junitxml`` file."""
    import xml.etree.ElementTree as ET

    cases = ET.parse(junit_xml).getroot().iter("testcase")
    out: dict[str, Any] = {"passed": 0, "failed": [], "skipped": 0}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out["failed"].append(name)
        elif case.find("skipped") is not None:
            out["skipped"] += 1
        else:
            out["passed"] += 1
    return out


def versions() -> dict[str, str]:
    import datasets
    import timm
    import transformers

    return {m.__name__: m.__version__ for m in (torch, timm, transformers, datasets)}


def report(bench_json: str, junit_xml: str | None, output: str) -> dict[str, Any]:
    """The benchmark's figures with the fast suite's results (``gpu.sh``'s last step): one table, one JSON."""
    with open(bench_json) as f:
        results = json.load(f)
    results["versions"] = versions()
    if junit_xml is not None and os.path.isfile(junit_xml):
        results["tests"] = test_results(junit_xml)
    with open(output, "w") as f:
        json.dump(results, f, indent=2)
    table = format_table(results)
    versions_line = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    print(f"{table}\n{versions_line}")
    if "tests" in results:
        t = results["tests"]
        print(f"fast tests with CUDA visible: {t['passed']} passed, {len(t['failed'])} failed, {t['skipped']} skipped")
        for name in t["failed"]:
            print(f"  FAILED {name}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="gpu.json")
    p.add_argument("--report", metavar="BENCH_JSON", help="print the table of a finished run (with --junit) and exit")
    p.add_argument("--junit", help="with --report: pytest's --junitxml file of the fast suite")
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny models and few images (checks the script anywhere)")
    p.add_argument("--workers", type=int, default=12, help="DataLoader workers of the end-to-end measurement")
    p.add_argument("--no_end_to_end", action="store_true")
    p.add_argument("--profile", metavar="TXT", help="also profile 4 batches of each pass into TXT")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; set for its run only
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.report:
        return report(args.report, args.junit, args.output)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: pass --device cpu (with --quick) to check the script on a CPU.")
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    batch_size = 16 if args.quick else 256
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "batch_size": batch_size,
        "date": time.strftime("%Y-%m-%d"),
    }
    repeats = 1 if args.quick else 3
    results["on_device"] = on_device(device, 4 if args.quick else 16, batch_size, args.quick, repeats)
    if not args.no_end_to_end:
        n = 4 * batch_size if args.quick else 8192
        results["end_to_end"] = end_to_end(device, n, batch_size, args.workers, args.quick, 1 if args.quick else 2)
    if args.profile:
        results["profile"] = profile(device, batch_size, args.quick, args.profile)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    print(format_table(results))
    return results


if __name__ == "__main__":
    main()
