"""SpuriousDigits (offline): sklearn digits, small vs large, on grass or brick backgrounds.

Paper (Table 1, FCR with ResNet-50):
{"note": "no paper numbers: the offline stand-in; compare with Waterbirds"}.
Offline (no --model_name_or_path) it runs on the SpuriousDigits stand-in. With a checkpoint fine-tuned on the
real data (ERM), e.g.:

    accelerate launch recipes/spurious_digits.py --model_name_or_path <your ERM checkpoint> \\
        --dataset_name spurious_digits --output_dir outputs/spurious_digits \\
        --push_to_hub --hub_model_id <you>/spurious_digits-fcr
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import spurious_parser, spurious_recipe  # noqa: E402

PAPER = {"note": "no paper numbers: the offline stand-in; compare with Waterbirds"}

if __name__ == "__main__":
    parser = spurious_parser(
        __doc__.splitlines()[0], dataset_name="spurious_digits", label_column="label", attribute_column="place"
    )
    spurious_recipe("spurious_digits", PAPER, parser)
