"""Class removal with one weight (paper Sec. 5.1, Figures 6-7): each class alone with 1-3 weights, then up to 8
classes at once.

Paper: on CIFAR-10 every removed class drops to almost zero accuracy with one weight while the other classes keep
(or slightly gain) theirs; removing up to 8 (CIFAR-10) or 98 (CIFAR-100) classes leaves the others undamaged.
Offline (no --model_name_or_path) it trains a small CNN on sklearn's real digits. With a CIFAR checkpoint:

    accelerate launch recipes/class_removal.py --model_name_or_path <CIFAR-10 checkpoint> --dataset_name cifar10 \\
        --image_column img --output_dir outputs/class_removal
"""

import argparse
import json
import os

from hf_fcr.demo import check_output_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_name_or_path", default=None)
    p.add_argument("--dataset_name", default="cifar10")
    p.add_argument("--streaming", action="store_true")
    p.add_argument("--image_column", default="img")
    p.add_argument("--label_column", default="label")
    p.add_argument("--train_split", default="train")
    p.add_argument("--test_split", default="test")
    p.add_argument("--max_weights", type=int, default=3)
    p.add_argument("--max_removed", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    out = check_output_dir(args.output_dir, ("results.json",), args.overwrite)

    from hf_fcr import FictitiousClassRemover
    from hf_fcr.experiments import class_removal

    if args.model_name_or_path is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        from hf_fcr.data import digits_cnn, digits_dataset, train_classifier

        data = digits_dataset(seed=args.seed)
        torch.manual_seed(args.seed)
        remover = FictitiousClassRemover(train_classifier(digits_cnn(), data["train"], seed=args.seed))
        image_column, label_column = "image", "label"
    else:
        from hf_fcr.recipe import load_data

        remover = FictitiousClassRemover.from_pretrained(args.model_name_or_path)
        data = load_data(args.dataset_name, streaming=args.streaming)
        image_column, label_column = args.image_column, args.label_column
    train, test = (
        remover.extract_features(
            data[s], image_column=image_column, columns=(label_column,), batch_size=args.batch_size
        )
        for s in (args.train_split, args.test_split)
    )
    results = class_removal(remover, train, test, label_column, args.max_weights, args.max_removed, seed=args.seed)
    for mode, rows in results["single"].items():
        print(f"\nremove one class ({mode} candidates): mean over classes")
        for n in range(1, args.max_weights + 1):
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
