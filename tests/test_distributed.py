"""One process against two: extract_features and collect under `torchrun --nproc_per_node 2` on the CPU (gloo,
process group created by Accelerate's PartialState) return on every process exactly what one process returns,
including an odd number of samples."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_worker import run

pytestmark = pytest.mark.slow  # launches processes with torchrun


def test_two_processes_equal_one(tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    run(str(single))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(Path(__file__).parent / "dist_worker.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(single / "rank0.pkl", "rb") as f:
        one = pickle.load(f)
    assert one["world_size"] == 1
    assert one["local"] == 101
    shares = []
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            two = pickle.load(f)
        assert two["world_size"] == 2
        shares.append(two["local"])
        for source in ("dataset", "stream", "loader"):
            assert len(two[source]) == 101
            torch.testing.assert_close(two[source].features, one[source].features)
            assert two[source]["label"].tolist() == one[source]["label"].tolist()
        for name, tensor in one["stats"].items():
            torch.testing.assert_close(two["stats"][name], tensor)
        assert int(two["stats"]["count"].sum()) == 101  # every sample counted exactly once
    assert shares == [50, 51]  # each process ran only its own shard through the backbone
