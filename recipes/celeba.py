"""CelebA: blond vs not blond hair, gender (Male) spurious; minority group: blond men.

Paper (Table 1, FCR with ResNet-50):
{"worst_group": 84.9, "gap": 5.4, "erm_worst_group": 48.8, "dfr_worst_group": 88.3}.
Offline (no --model_name_or_path) it runs on the SpuriousDigits stand-in. With a checkpoint fine-tuned on the
real data (ERM), e.g.:

    accelerate launch recipes/celeba.py --model_name_or_path <your ERM checkpoint> \\
        --dataset_name flwrlabs/celeba --output_dir outputs/celeba \\
        --push_to_hub --hub_model_id <you>/celeba-fcr
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import spurious_parser, spurious_recipe  # noqa: E402

PAPER = {"worst_group": 84.9, "gap": 5.4, "erm_worst_group": 48.8, "dfr_worst_group": 88.3}

if __name__ == "__main__":
    parser = spurious_parser(
        __doc__.splitlines()[0], dataset_name="flwrlabs/celeba", label_column="Blond_Hair", attribute_column="Male"
    )
    spurious_recipe("celeba", PAPER, parser)
