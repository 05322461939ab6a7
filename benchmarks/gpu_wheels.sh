#!/usr/bin/env bash
# The wheels that the lent GPU machine (Python 3.12, no package index) lacks, downloaded here into .whl/ for
# benchmarks/gpu.sh. Versions seen working there (ENVIRONMENT.md); its own pyarrow stays (a newer one breaks datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0 evaluate==0.4.6
ls .whl
