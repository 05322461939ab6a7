"""Waterbirds (Sagawa et al.): landbird vs waterbird, background (land / water) spurious.

Paper (Table 1, FCR with ResNet-50):
{"worst_group": 93.2, "gap": 1.9, "erm_worst_group": 75.3, "dfr_worst_group": 92.9}.
Offline (no --model_name_or_path) it runs on the SpuriousDigits stand-in. With a checkpoint fine-tuned on the
real data (ERM), e.g.:

    accelerate launch recipes/waterbirds.py --model_name_or_path <your ERM checkpoint> \\
        --dataset_name grodino/waterbirds --output_dir outputs/waterbirds \\
        --push_to_hub --hub_model_id <you>/waterbirds-fcr
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import spurious_parser, spurious_recipe  # noqa: E402

PAPER = {"worst_group": 93.2, "gap": 1.9, "erm_worst_group": 75.3, "dfr_worst_group": 92.9}

if __name__ == "__main__":
    parser = spurious_parser(
        __doc__.splitlines()[0], dataset_name="grodino/waterbirds", label_column="label", attribute_column="place"
    )
    spurious_recipe("waterbirds", PAPER, parser)
