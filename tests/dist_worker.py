"""Run by tests/test_distributed.py under `torchrun --standalone --nproc_per_node 2` (and in-process for one)."""

import os
import pickle
import sys

import torch

from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.experiments.erm import digits_cnn
from hf_fcr.features import iter_features


def run(out_dir: str) -> None:
    torch.manual_seed(0)
    remover = FictitiousClassRemover(digits_cnn().eval())
    data = digits_dataset(seed=0)["test"].select(range(101))  # odd on purpose: shards of 50 and 51
    rank = int(os.environ.get("RANK", "0"))
    results = {
        "dataset": remover.extract_features(data, batch_size=16),
        "stream": remover.extract_features(data.to_iterable_dataset(num_shards=3), batch_size=8),
        "loader": remover.extract_features(torch.utils.data.DataLoader(data.with_format("torch"), batch_size=7)),
        "stats": remover.collect(data, rows=[2, 5], batch_size=16).tensors(),
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        # how many samples this process ran through the backbone itself (its shard)
        "local": sum(len(f) for _, f, _ in iter_features(remover.model, remover.head, data, columns=["label"])),
    }
    with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(results, f)


if __name__ == "__main__":
    run(sys.argv[1])
