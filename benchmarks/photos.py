"""Class removal on an ImageNet model (paper Sec. 5.1 at ImageNet's scale, on what can be reached offline):
torchvision's MobileNetV2 with its own ImageNet checkpoint, on random crops of scikit-image's photos, beside its
controls.

Each photo is one class: the class MobileNetV2 predicts for the whole photo (a cat photo is "Egyptian cat"). Each seed
draws 24 random crops per photo (scale 0.35-1, random flips): 16 give the statistics (and the probe's training rows),
8 the test. Each class is removed alone with 1-3 weights (Figure 6), then 2..n-1 at once (Figure 7); beside it the
output mask, one random supporting weight of the row, and a linear probe on the head's input.

    python benchmarks/photos.py --output_dir outputs/photos --seeds 0 1 2

It writes results.json and tables.md, and prints the tables. The labels are the model's own, so the base accuracy is
the crops' agreement with the whole photo's prediction, not ImageNet accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # research/, outside the wheel
from research.tables import figure6_table, removal_controls_table  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle", "camera", "clock", "coins", "hubble_deep_field")
CROPS, STATS = 24, 16


def crops_of(photo, seed: int, count: int) -> list:
    """``count`` random resized crops (224 px, 35-100% of the area) of a PIL photo, half of them flipped."""
    from torchvision.transforms import v2

    torch.manual_seed(seed)
    augment = v2.Compose([v2.RandomResizedCrop(224, scale=(0.35, 1.0)), v2.RandomHorizontalFlip()])
    return [augment(photo) for _ in range(count)]


def photo_split(remover, photos: dict, classes: list[int], seed: int):
    """The statistics and test feature sets: ``STATS`` and ``CROPS - STATS`` crops of each photo, labelled with the
    photo's class."""
    train, test = [], []
    for i, (photo, cls) in enumerate(zip(photos.values(), classes)):
        crops = crops_of(photo, seed * 1000 + i, CROPS)
        train += [(c, cls) for c in crops[:STATS]]
        test += [(c, cls) for c in crops[STATS:]]

    def features(rows):
        batches = [
            {"image": [c for c, _ in rows[i : i + 32]], "label": torch.tensor([y for _, y in rows[i : i + 32]])}
            for i in range(0, len(rows), 32)
        ]
        return remover.extract_features(batches, device=None)

    return features(train), features(test)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", required=True, help="folder for results.json and tables.md")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the crops and random weights")
    args = p.parse_args(argv)
    from torchvision.models import MobileNet_V2_Weights

    from hf_fcr import FictitiousClassRemover
    from hf_fcr.data.pretrained import mobilenet_v2_imagenet, skimage_photos
    from research.removal import class_removal

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    transform, names = weights.transforms(), weights.meta["categories"]
    model = mobilenet_v2_imagenet()
    remover = FictitiousClassRemover(
        model, class_names=names, transform=lambda images: torch.stack([transform(img) for img in images])
    )
    photos = skimage_photos(PHOTOS)
    with torch.no_grad():
        classes = model(remover.transform(list(photos.values()))).argmax(1).tolist()
    if len(set(classes)) != len(classes):
        raise SystemExit(f"two photos share a class: {[names[c] for c in classes]}")
    print("classes: " + ", ".join(f"{p} -> {names[c]}" for p, c in zip(photos, classes)))
    runs = []
    for seed in args.seeds:
        train, test = photo_split(remover, photos, classes, seed)
        result = class_removal(remover, train, test, max_weights=3, max_removed=len(classes) - 1, seed=seed)
        runs.append({**result, "seed": seed})
        agree = 100 * sum(result["base_per_class"]) / len(classes)
        print(f"seed {seed}: the crops agree with their photo's class on {agree:.1f}%")
    results = {
        "photos": dict(zip(PHOTOS, (names[c] for c in classes))),
        "runs": runs,
        "wall_s": time.perf_counter() - t0,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = (
        f"MobileNetV2 (torchvision, ImageNet) on {len(classes)} scikit-image photos, {CROPS - STATS} test crops each "
        f"({results['wall_s']:.0f} s)\n\n"
        + figure6_table(runs, "MobileNetV2, photos", (2, 4, len(classes) - 1))
        + "\n"
        + removal_controls_table(runs)
    )
    (out / "tables.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
