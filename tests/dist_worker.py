"""Run by tests/test_distributed.py under `torchrun` and `accelerate launch` with 2 processes (and in-process for one).
It writes what this process got, plus what Accelerate's PartialState says about the processes."""

import os
import pickle
import sys

import torch

from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.demo.erm import digits_cnn


def run(out_dir: str) -> None:
    from hf_fcr.fitting.probe import fit_logistic_probe
    from hf_fcr.utils.distributed import process_info

    torch.manual_seed(0)
    remover = FictitiousClassRemover(digits_cnn().eval())
    data = digits_dataset(seed=0)["test"].select(range(101))  # odd on purpose: shards of 50 and 51
    rank, world_size = process_info()
    feats = remover.extract_features(data, batch_size=16)
    # the probe on this process' shard only, gradients summed across processes
    lo, hi = rank * len(feats) // world_size, (rank + 1) * len(feats) // world_size
    shard = feats.select(range(lo, hi))
    results = {
        "dataset": feats,
        "stream": remover.extract_features(data.to_iterable_dataset(num_shards=3), batch_size=8),
        "loader": remover.extract_features(torch.utils.data.DataLoader(data.with_format("torch"), batch_size=7)),
        "stats": remover.collect(data, rows=[2, 5], batch_size=16).tensors(),
        "probe": fit_logistic_probe(shard.features, shard.labels("label") % 2, 2, sharded=True),
        # every row on every process (the gathered features): a fit of its own, nothing summed
        "probe_whole": fit_logistic_probe(feats.features, feats.labels("label") % 2, 2),
        "world_size": world_size,
        "distributed_type": str(_state_type()),
        # how many samples this process ran through the backbone itself (its shard)
        "local": sum(len(f) for _, f, _ in remover.feature_pass(device=None).features(data)),
    }
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


def _state_type():
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return "NO"
    from hf_fcr.utils.distributed import state

    return state().distributed_type.value


if __name__ == "__main__":
    run(sys.argv[1])
