"""``benchmarks/gpu.py``, what a lent GPU machine runs in its one call (through ``benchmarks/gpu.sh``), run here on
the CPU with tiny models: it runs to its end and reports every figure the docs' table needs, so that no scarce
device time is lost on a broken script."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_one" time="0.1"/>
<testcase classname="tests.test_a" name="test_two" time="0.1"><failure message="boom">boom</failure></testcase>
<testcase classname="tests.test_a" name="test_three" time="0.0"><skipped message="no"/></testcase>
</testsuite></testsuites>"""


@pytest.mark.slow
def test_the_gpu_benchmark_runs_to_its_end_on_the_cpu(tmp_path):
    """The quick run (4 then 16 batches of 16 per model, the profile of each pass), then ``--report`` with a
    pytest junit file: the JSON holds each model's ratios, which agree with its images/s, and the per-batch /
    fixed split, which adds up to the short pass's time; the table names the failed test."""
    bench, profile, junit, report = (tmp_path / n for n in ("bench.json", "profile.txt", "tests.xml", "gpu.json"))
    args = ["--device", "cpu", "--quick", "--no_end_to_end", "--profile", str(profile), "--output", str(bench)]
    subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True)
    junit.write_text(JUNIT)
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(bench), "--junit", str(junit), "--output", str(report)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    results = json.loads(report.read_text())
    assert [r["model"] for r in results["on_device"]] == ["timm resnet18", "transformers tiny ViT"]
    for r in results["on_device"]:
        for what in ("collect", "extract"):
            ratio = r[f"{what}_over_pass"]
            assert math.isfinite(ratio) and ratio > 0
            assert ratio == pytest.approx(r["plain_images_per_s"] / r[f"{what}_images_per_s"], rel=1e-9)
        for what in ("plain", "collect", "extract"):  # t(4 batches) = fixed + 4 x (one batch's time)
            seconds = r["images"] / r[f"{what}_images_per_s"]
            assert 1e3 * seconds == pytest.approx(r[f"{what}_fixed_ms"] + 4 * r[f"{what}_batch_ms"], rel=1e-9)
        assert r["longer_images"] == 4 * r["images"]
    assert set(results["profile"]) == {"model", "plain", "collect", "extract"}
    assert "== timm resnet18: extract, 4 batches of 16" in profile.read_text()
    assert results["tests"] == {"passed": 1, "failed": ["tests.test_a::test_two"], "skipped": 1}
    assert set(results["versions"]) == {"torch", "timm", "transformers", "datasets"}
    assert "fast tests with CUDA visible: 1 passed, 1 failed, 1 skipped" in out
    assert "FAILED tests.test_a::test_two" in out and "per added batch collect" in out
