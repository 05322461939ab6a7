"""Run a spurious-correlation recipe: ERM, FCR with its controls, DFR, class-balanced retraining and auto on one
benchmark, printed beside the paper's numbers (Table 1).

    python recipes/run.py recipes/waterbirds.yaml --output_dir outputs/waterbirds [--flag value ...]
    accelerate launch recipes/run.py recipes/celeba.yaml --model_name_or_path <ERM checkpoint> --output_dir ...

A recipe file (YAML or JSON) holds its name (``recipe``), ``title`` and ``paper`` numbers, and the defaults of any
flag (the dataset and its columns); flags after it override them (``--help`` lists them). Without
``--model_name_or_path`` a recipe runs offline on the SpuriousDigits stand-in.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import run_recipe  # noqa: E402

if __name__ == "__main__":
    run_recipe(sys.argv[1:])
