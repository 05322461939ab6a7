"""Sub-class removal on ParityMNIST (paper Sec. 5.2, Figure 8): even/odd superclasses, digits as fictitious
sub-classes; each digit is removed from its superclass with one weight chosen by SCA or by grad x act.

Paper: with SCA almost every sub-class is removed as r grows with little damage to the other sub-classes, and SCA
removes more and retains slightly more than grad x act (Figure 8, right vs left).
Offline (no --model_name_or_path) it uses ParityDigits (sklearn's real digits). With an MNIST parity checkpoint:

    python recipes/parity_mnist.py --model_name_or_path <parity checkpoint> --dataset_name <MNIST with a parity
        `label` and a `digit` column> --output_dir outputs/parity
"""

import argparse
import json
import os

from hf_fcr.demo import check_output_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--dataset_name", default=None)
    p.add_argument("--streaming", action="store_true")
    p.add_argument("--image_column", default="image")
    p.add_argument("--label_column", default="label")
    p.add_argument("--subclass_column", default="digit")
    p.add_argument("--train_split", default="train")
    p.add_argument("--test_split", default="test")
    p.add_argument("--r_values", type=float, nargs="+", default=[0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 1.0])
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = check_output_dir(args.output_dir, ("results.json",), args.overwrite)

    from hf_fcr import FictitiousClassRemover
    from hf_fcr.experiments import subclass_removal

    if args.model_name_or_path is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        from hf_fcr.data import digits_cnn, train_classifier
        from hf_fcr.data.spurious import parity_digits

        data = parity_digits(seed=args.seed)
        torch.manual_seed(args.seed)
        remover = FictitiousClassRemover(train_classifier(digits_cnn(2), data["train"], seed=args.seed))
        image_column = "image"
    else:
        from hf_fcr.recipe import load_data

        remover = FictitiousClassRemover.from_pretrained(args.model_name_or_path)
        data = load_data(args.dataset_name, streaming=args.streaming)
        image_column = args.image_column
    columns = (args.label_column, args.subclass_column)
    train, test = (
        remover.extract_features(data[s], image_column=image_column, columns=columns, batch_size=args.batch_size)
        for s in (args.train_split, args.test_split)
    )
    results = subclass_removal(remover, train, test, args.label_column, args.subclass_column, r_values=args.r_values)
    print(f"M' (sub-class head) accuracy on train: {100 * results['fictitious_head_accuracy']:.1f}%")
    print(f"{'r':>6} " + " ".join(f"{s + ' forget':>18}{s + ' retain':>18}" for s in results["curves"]))
    for i, r in enumerate(args.r_values):
        cells = " ".join(
            f"{100 * c[i]['forget']:>17.1f}%{100 * c[i]['retain']:>17.1f}%" for c in results["curves"].values()
        )
        print(f"{r:>6} {cells}")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
