"""A user's script as the README shows it, run by tests/test_distributed.py under `torchrun` and `accelerate launch`
with 2 processes: build a remover, `collect(...)`, save the statistics on the main process, `save_pretrained` the
model from every process (hf-fcr writes it once, on the main process) and once more from the main process alone (it
must not wait for the others), end. The process must exit 0.

`python dist_collect.py OUT_DIR [MODE]`, MODE one of
- `library` (default): hf_fcr creates the process group (through Accelerate) and the script does no teardown;
- `user`: the script creates the group itself before hf_fcr's first call, and destroys it at the end (the one line
  the README asks of users who own their group);
- `user_destroys`: hf_fcr creates the group and the script destroys it anyway before the end.
Each rank writes `exit{rank}.json` from an atexit handler registered first (so it runs last, after hf_fcr's):
whether hf_fcr owned the group after `collect`, the files of the saved folder as this process saw them when
`save_pretrained` returned, and whether a group was still alive at that point of the exit.
"""

import atexit
import json
import os
import sys

import torch

from hf_fcr import FictitiousClassRemover
from hf_fcr.data import digits_dataset
from hf_fcr.demo.erm import digits_cnn
from hf_fcr.utils.distributed import is_main_process, owns_process_group


def collect(out_dir: str | None = None) -> tuple[FictitiousClassRemover, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    remover = FictitiousClassRemover(digits_cnn().eval())
    data = digits_dataset(seed=0)["test"].select(range(101))
    tensors = remover.collect(data, rows=[2, 5], batch_size=16).tensors()
    if out_dir is not None and is_main_process():
        torch.save(tensors, os.path.join(out_dir, "stats.pt"))
    return remover, tensors


def main(out_dir: str, mode: str = "library") -> None:
    report = {"mode": mode}
    rank = os.environ["RANK"]

    def write_report() -> None:
        report["alive_at_exit"] = torch.distributed.is_initialized()
        with open(os.path.join(out_dir, f"exit{rank}.json"), "w") as f:
            json.dump(report, f)

    atexit.register(write_report)
    if mode == "user":
        torch.distributed.init_process_group("gloo")
    remover, _ = collect(out_dir)
    report["owned"] = owns_process_group()
    saved = remover.save_pretrained(os.path.join(out_dir, "model"))
    report["saved"] = sorted(os.listdir(saved))
    if is_main_process():  # the other pattern users write: saving on the main process alone must not block
        remover.save_pretrained(os.path.join(out_dir, "model-rank0"))
    if mode in ("user", "user_destroys"):
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
