"""Class removal with one weight (paper Sec. 5.1, Figures 6-7): each class alone with 1-3 weights, then up to 8
classes at once.

Paper: on CIFAR-10 every removed class drops to almost zero accuracy with one weight while the other classes keep
(or slightly gain) theirs; removing up to 8 (CIFAR-10) or 98 (CIFAR-100) classes leaves the others undamaged.
Offline (no --model_name_or_path) it uses someone else's model on real data: the `ccexam` MNIST CNN on real MNIST
(statistics on 10,000 training images, results on the official 10,000 test images), or with --stand_in digits a
small CNN trained on sklearn's 8x8 digits. With a CIFAR checkpoint:

    accelerate launch recipes/class_removal.py --model_name_or_path <CIFAR-10 checkpoint> --dataset_name cifar10 \\
        --image_column img --output_dir outputs/class_removal
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import experiment_parser, load_experiment, parse_recipe  # noqa: E402


@dataclass
class ClassRemovalArguments:
    max_weights: int = field(default=3, metadata={"help": "Remove each class with 1..max_weights weights (Fig. 6)."})
    max_removed: int = field(default=8, metadata={"help": "Remove 1..max_removed classes at once (Fig. 7)."})


def stand_in(seed, real_mnist):
    import datasets
    import torch

    if real_mnist:
        from hf_fcr.data.mnist import load_mnist
        from hf_fcr.data.pretrained import ccexam_mnist_cnn, mnist_transform

        mnist = load_mnist()
        data = datasets.DatasetDict(
            {"train": mnist["train"].shuffle(seed=seed).select(range(10000)), "test": mnist["test"]}
        )
        return ccexam_mnist_cnn(), data, mnist_transform
    from hf_fcr.data import digits_dataset
    from hf_fcr.demo.erm import digits_cnn, train_classifier

    data = digits_dataset(seed=seed)
    torch.manual_seed(seed)
    return train_classifier(digits_cnn(), data["train"], seed=seed), data, None


def main(argv=None):
    p = experiment_parser(
        __doc__.splitlines()[0], dataset_name="cifar10", image_column="img", extra=ClassRemovalArguments
    )
    args, extra = parse_recipe(p, argv)
    from research.removal import class_removal

    remover, train, test, out = load_experiment(args, stand_in, [args.label_column])
    results = class_removal(
        remover, train, test, args.label_column, extra.max_weights, extra.max_removed, seed=args.seed
    )
    for mode, rows in results["single"].items():
        print(f"\nremove one class ({mode} candidates): mean over classes")
        for n in range(1, extra.max_weights + 1):
            sel = [r for r in rows if r["num_weights"] == n]
            forget = sum(r["forget"] for r in sel) / len(sel)
            retain = sum(r["retain_change"] for r in sel) / len(sel)
            worst = max(r["forget"] for r in sel)
            print(
                f"  {n} weight(s): forget {100 * forget:5.1f}% (worst class {100 * worst:5.1f}%), "
                f"others' change {100 * retain:+.2f} points"
            )
    print("\nremove several classes at once (one weight each)")
    for row in results["multi"]:
        print(
            f"  {row['num_removed']} removed: removed {100 * row['removed_accuracy']:5.1f}%, "
            f"retained {100 * row['retained_accuracy']:5.1f}% ({100 * row['retained_change']:+.2f} points)"
        )
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
