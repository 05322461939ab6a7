#!/usr/bin/env bash
# One command for a lent GPU machine (the `device` tool): installs hf-fcr, then measures images/s of plain
# inference and of collect() for timm resnet50 at 224 px (bf16 autocast, channels_last, batch 256) on synthetic
# images, and writes the JSON to ${OUT:-.}/gpu.json. Meant to finish in well under 5 minutes on an H200.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e . 2>&1 | grep -v WARNING || true
PYTHONUNBUFFERED=1 python3 benchmarks/speed.py --gpu --output "${OUT:-.}/gpu.json"
