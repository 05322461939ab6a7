"""MetaShift Cat vs Dog: dogs trained on bench/bike, cats on sofa/bed, tested on shelf backgrounds.

Paper (Table 1, FCR with ResNet-50):
{"worst_group": 78.3, "gap": 0.1, "erm_worst_group": 62.1, "dfr_worst_group": 72.8}.
MetaShift has no canonical Hub copy: pass --dataset_name (a Hub id or a save_to_disk folder) with a `label` and a
`context` column. Offline (no --model_name_or_path) it runs on the SpuriousDigits stand-in. With a checkpoint
fine-tuned on the real data (ERM), e.g.:

    accelerate launch recipes/metashift.py --model_name_or_path <your ERM checkpoint> \\
        --dataset_name metashift --output_dir outputs/metashift \\
        --push_to_hub --hub_model_id <you>/metashift-fcr
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import spurious_parser, spurious_recipe  # noqa: E402

PAPER = {"worst_group": 78.3, "gap": 0.1, "erm_worst_group": 62.1, "dfr_worst_group": 72.8}

if __name__ == "__main__":
    parser = spurious_parser(
        __doc__.splitlines()[0], dataset_name="metashift", label_column="label", attribute_column="context"
    )
    spurious_recipe("metashift", PAPER, parser)
