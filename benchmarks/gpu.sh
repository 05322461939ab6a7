#!/usr/bin/env bash
# One call on a lent GPU machine, which reaches no package index. Here, first (once per checkout):
#     bash benchmarks/gpu_wheels.sh          # the wheels that machine lacks, into the git-ignored .whl/
# then, through the `device` tool: run(command="bash benchmarks/gpu.sh", carry=[".whl"]).
# It installs those wheels and hf-fcr without an index, then runs, in this order: the pass benchmark
# (benchmarks/gpu.py: plain bf16 inference vs collect / extract_features, on-device batches and end to end from a
# Dataset of JPEGs; then a profile of 4 batches of each, into profile.txt), the whole fast test suite with CUDA
# visible, and the head-level fits at CelebA's scale (benchmarks/celeba_scale.py --device cuda --reference). It
# prints the tables and writes ${OUT:-outputs/gpu}/gpu.json (with the versions and the failed tests) and celeba.json
# beside the logs. About 7.5 minutes on an H200 (run 3 took 6.5, without the 64-batch passes), plus the machine's
# start.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "installing .whl/ failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || { echo "installing hf-fcr failed" >&2; exit 1; }
python3 -c "import hf_fcr, datasets, evaluate, timm, transformers" || { echo "run benchmarks/gpu_wheels.sh here first" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/nvidia-smi.txt"
python3 benchmarks/gpu.py --output "$out/bench.json" --profile "$out/profile.txt" 2>&1 | tee "$out/bench.log"
python3 -m pytest -q -m "not slow" -p no:cacheprovider --junitxml="$out/tests.xml" 2>&1 | tee "$out/tests.log" | tail -n 40
python3 benchmarks/gpu.py --report "$out/bench.json" --junit "$out/tests.xml" --output "$out/gpu.json"
# the head-level fits and M' at CelebA's scale, features on the GPU, beside scikit-learn's fits (about 3 minutes)
python3 benchmarks/celeba_scale.py --seeds 0 --reference --device cuda --output "$out/celeba.json" 2>/dev/null \
    | tee "$out/celeba.log" | tail -n 14
