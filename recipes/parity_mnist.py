"""Sub-class removal on ParityMNIST (paper Sec. 5.2, Figure 8): even/odd superclasses, digits as fictitious
sub-classes; each digit is removed from its superclass with one weight chosen by SCA or by grad x act.

Paper: with SCA almost every sub-class is removed as r grows with little damage to the other sub-classes, and SCA
removes more and retains slightly more than grad x act (Figure 8, right vs left).
Offline (no --model_name_or_path) it trains a LeNet-like CNN on ParityMNIST built from real MNIST (two epochs,
~99% parity test accuracy; ``research.mnist.train_parity_cnn``), or with
--stand_in digits on ParityDigits (sklearn's 8x8 digits). With an MNIST parity checkpoint:

    python recipes/parity_mnist.py --model_name_or_path <parity checkpoint> --dataset_name <MNIST with a parity
        `label` and a `digit` column> --output_dir outputs/parity
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/: the harness, outside the wheel
from research.recipe import experiment_parser, load_experiment, parse_recipe  # noqa: E402


@dataclass
class SubclassArguments:
    subclass_column: str = field(default="digit", metadata={"help": "The sub-class (fictitious class) column."})
    r_values: list[float] = field(
        default_factory=lambda: [0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0],
        metadata={"help": "Neutralization rates to evaluate (Fig. 8)."},
    )


def stand_in(seed, real_mnist):
    import torch

    from hf_fcr.demo.erm import digits_cnn, train_classifier

    torch.manual_seed(seed)
    if real_mnist:
        from hf_fcr.data.mnist import load_mnist
        from research.mnist import parity_mnist_arrays, train_parity_cnn

        data = parity_mnist_arrays(load_mnist())
        model, training_s = train_parity_cnn(data, seed)
        print(f"ParityMNIST: trained a LeNet-like CNN in {training_s:.0f}s")
        return model, data, None
    from hf_fcr.data.spurious import parity_digits

    data = parity_digits(seed=seed)
    return train_classifier(digits_cnn(2), data["train"], seed=seed), data, None


def main(argv=None):
    p = experiment_parser(__doc__.splitlines()[0], dataset_name=None, image_column="image", extra=SubclassArguments)
    args, extra = parse_recipe(p, argv)
    from research.removal import subclass_removal

    remover, train, test, out = load_experiment(args, stand_in, [args.label_column, extra.subclass_column])
    results = subclass_removal(remover, train, test, args.label_column, extra.subclass_column, r_values=extra.r_values)
    labels = test.labels(args.label_column)
    results["model_test_accuracy"] = float((remover.logits(test.features).argmax(1) == labels).double().mean())
    print(f"model test accuracy: {100 * results['model_test_accuracy']:.1f}%")
    print(f"M' (sub-class head) accuracy on train: {100 * results['fictitious_head_accuracy']:.1f}%")
    print(f"{'r':>29} " + " ".join(f"{r:>7}" for r in extra.r_values) + "  (forget / retain, %)")
    for name, curve in results["curves"].items():
        print(f"{name:>22} forget " + " ".join(f"{100 * c['forget']:>7.1f}" for c in curve))
        print(f"{'':>22} retain " + " ".join(f"{100 * c['retain']:>7.1f}" for c in curve))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
