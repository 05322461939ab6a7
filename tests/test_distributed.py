"""One process against two: extract_features, collect and the sharded M' probe under `torchrun` and under
`accelerate launch` with 2 processes on the CPU (gloo, process group created by Accelerate's PartialState(cpu=True))
return on every process exactly what one process returns, including an odd number of samples. And every such run
exits 0: the process group hf_fcr created is destroyed before interpreter shutdown (one run in a few aborted with
SIGABRT before)."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dist_worker import run

pytestmark = pytest.mark.slow  # launches processes with torchrun and accelerate launch


LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
    ],
}


def _launch(launcher: str, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    cmd = [*LAUNCHERS[launcher], str(Path(__file__).parent / script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    single = tmp_path_factory.mktemp("single")
    run(str(single))
    with open(single / "rank0.pkl", "rb") as f:
        return pickle.load(f)


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_equal_one(tmp_path, one, launcher):
    proc = _launch(launcher, "dist_worker.py", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert one["world_size"] == 1
    assert one["local"] == 101
    shares, probes = [], []
    for rank in (0, 1):
        with open(tmp_path / f"rank{rank}.pkl", "rb") as f:
            two = pickle.load(f)
        assert two["world_size"] == 2
        assert two["distributed_type"] == "MULTI_CPU"  # Accelerate's PartialState(cpu=True) saw both processes
        shares.append(two["local"])
        probes.append(two["probe"])
        # a probe on rows every process holds sums nothing: the one-process fit (summed, C would count twice)
        for got, expected in zip(two["probe_whole"], one["probe"]):
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)
        for source in ("dataset", "stream", "loader"):
            assert len(two[source]) == 101
            torch.testing.assert_close(two[source].features, one[source].features)
            assert two[source]["label"].tolist() == one[source]["label"].tolist()
        for name, tensor in one["stats"].items():
            torch.testing.assert_close(two["stats"][name], tensor)
        assert int(two["stats"]["count"].sum()) == 101  # every sample counted exactly once
    assert shares == [50, 51]  # each process ran only its own shard through the backbone
    # the sharded probe: the same head on both processes, and the one-process fit on all rows
    torch.testing.assert_close(probes[0][0], probes[1][0], rtol=0, atol=0)
    torch.testing.assert_close(probes[0][0], one["probe"][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(probes[0][1], one["probe"][1], rtol=1e-4, atol=1e-4)


RUNS = 10
SAVED = ["README.md", "fcr_config.json", "model.safetensors"]


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_a_users_script_exits_cleanly_every_time(tmp_path, launcher):
    """The README's script (collect under a launcher, save on rank 0, no teardown) run RUNS times in a row: every run
    exits 0 with the one-process statistics, `save_pretrained` called on every process wrote the folder once and
    returned on each when it was complete, and hf_fcr's group is gone before the last atexit handler runs."""
    from dist_collect import collect

    _, expected = collect()
    for run_index in range(RUNS):
        out = tmp_path / str(run_index)
        out.mkdir()
        proc = _launch(launcher, "dist_collect.py", str(out))
        assert proc.returncode == 0, f"run {run_index} of {RUNS}: {proc.stderr[-3000:]}"
        got = torch.load(out / "stats.pt", weights_only=True)
        for name, tensor in expected.items():
            torch.testing.assert_close(got[name], tensor)
        for rank in (0, 1):
            report = json.loads((out / f"exit{rank}.json").read_text())
            assert report == {"mode": "library", "owned": True, "saved": SAVED, "alive_at_exit": False}
        assert sorted(p.name for p in (out / "model-rank0").iterdir()) == SAVED  # saved by the main process alone


@pytest.mark.parametrize("mode", ["user", "user_destroys"])
def test_a_group_the_user_owns_or_destroys_is_left_to_the_user(tmp_path, mode):
    """A group created by the user before hf_fcr's first call is not hf_fcr's (not destroyed by it, the user's own
    destroy_process_group() ends it); a group hf_fcr created but the user destroyed makes the exit handler a no-op."""
    proc = _launch("torchrun", "dist_collect.py", str(tmp_path), mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"exit{rank}.json").read_text())
        assert report == {"mode": mode, "owned": mode == "user_destroys", "saved": SAVED, "alive_at_exit": False}


def _objective(features, targets, weight, bias):
    """scikit-learn's C=1 objective, in the softmax-equivalent form the probes return (rows -w/2, +w/2 for two)."""
    z = features.double() @ weight.T + bias
    if weight.shape[0] == 2:
        w = weight[1] - weight[0]
        return float(torch.nn.functional.softplus(-(2.0 * targets - 1) * (z[:, 1] - z[:, 0])).sum() + 0.5 * w @ w)
    return float(torch.nn.functional.cross_entropy(z, targets, reduction="sum") + 0.5 * weight.square().sum())


def test_the_torch_probe_matches_scikit_learn(one):
    """The same C=1 objective as LogisticRegression: at a tight tolerance (float64 features) the torch fit reaches
    it at least as well and its coefficients are close to scikit-learn's; at the default tolerance (scikit-learn's
    stopping rule) M' picks the same k* (top SCA feature) as with scikit-learn's estimator."""
    from sklearn.linear_model import LogisticRegression

    from hf_fcr.fitting.logistic import fit_logistic_probe
    from hf_fcr.fitting.probe import default_probe, fit_fictitious_head, fit_linear_probe

    feats = one["dataset"]
    for values in (2, 4):
        targets = feats.labels("label") % values
        w_torch, b_torch = fit_logistic_probe(feats.features.double(), targets, values, tol=1e-10, max_iter=5000)
        tight = LogisticRegression(C=1.0, tol=1e-10, max_iter=20000)  # the default stops at tol=1e-4
        w_sk, b_sk = fit_linear_probe(feats.features, targets, values, probe=tight)
        ours, theirs = (
            _objective(feats.features, targets, w_torch, b_torch),
            _objective(feats.features, targets, w_sk, b_sk),
        )
        assert ours <= theirs + 1e-6 * abs(theirs)
        scale = float(w_sk.abs().max())
        torch.testing.assert_close(w_torch, w_sk, rtol=0, atol=1e-3 * scale)
        sk_probe = fit_fictitious_head(feats.features, targets, "a", probe=default_probe())
        torch_probe = fit_fictitious_head(feats.features, targets, "a")
        for v in range(values):
            assert sk_probe.ranked_features(v)[0][0] == torch_probe.ranked_features(v)[0][0]
