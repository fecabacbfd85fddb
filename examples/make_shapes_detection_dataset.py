#!/usr/bin/env python
"""Generate a small object-detection dataset in the COCO format: circles, rectangles and triangles on noisy,
textured backgrounds (the drawing of `make_shapes_dataset.py`), a few per image, not overlapping, each with its
tight bounding box.

    OUTPUT_DIR/
      train/000000.jpg ...          train.json        (COCO: images, annotations with bbox [x, y, w, h], categories)
      validation/000000.jpg ...     validation.json

Categories: 1 = circle, 2 = rectangle, 3 = triangle (COCO ids start at 1). By default each class has its own hue
band (as in the segmentation set), so that a tiny model trained from scratch learns the task in minutes on a CPU;
`--no-hue_cue` draws random colours. Train on it with

    python examples/finetune_object_detection.py --train_annotations OUTPUT_DIR/train.json \\
        --train_images OUTPUT_DIR/train --validation_annotations OUTPUT_DIR/validation.json \\
        --validation_images OUTPUT_DIR/validation ...

Usage:
    python examples/make_shapes_detection_dataset.py OUTPUT_DIR [--num_train 400] [--num_val 100] [--min_size 96]
        [--max_size 160] [--min_shapes 1] [--max_shapes 4] [--seed 0] [--no-hue_cue]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_shapes_dataset import CLASSES, _background, _class_color, _random_color, _shape_polygon  # noqa: E402


def _overlaps(box, boxes, margin: float) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + margin and b[0] < x1 + margin and y0 < b[3] + margin and b[1] < y1 + margin for b in boxes)


def make_sample(
    rng: np.random.Generator, height: int, width: int, min_shapes: int = 1, max_shapes: int = 4, hue_cue: bool = True
):
    """One RGB uint8 image and its objects: a list of (class index, [x0, y0, x1, y1]) with tight pixel boxes."""
    image = Image.fromarray(_background(rng, height, width).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    background_mean = np.asarray(image, np.float32).reshape(-1, 3).mean(0)
    side = min(height, width)
    objects = []
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        class_index = int(rng.integers(0, len(CLASSES)))
        for _attempt in range(30):  # a place that does not touch the shapes drawn so far
            radius = rng.uniform(0.1, 0.25) * side
            cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
            polygon = _shape_polygon(rng, CLASSES[class_index], cx, cy, radius)
            points = (
                np.array(polygon)
                if polygon is not None
                else np.array([[cx - radius, cy - radius], [cx + radius, cy + radius]])
            )
            box = [
                max(0.0, points[:, 0].min()),
                max(0.0, points[:, 1].min()),
                min(float(width), points[:, 0].max()),
                min(float(height), points[:, 1].max()),
            ]
            if not _overlaps(box, [b for _, b in objects], margin=2.0):
                break
        else:
            continue
        color = _class_color(rng, class_index) if hue_cue else _random_color(rng, avoid=background_mean)
        if polygon is None:
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
        else:
            draw.polygon(polygon, fill=color)
        objects.append((class_index, [round(v, 2) for v in box]))
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))
    array = np.asarray(image, np.float32) + rng.normal(0, 4, size=(height, width, 3))
    return np.clip(array, 0, 255).astype(np.uint8), objects


def make_dataset(
    output_dir: str | Path,
    num_train: int = 400,
    num_val: int = 100,
    min_size: int = 96,
    max_size: int = 160,
    seed: int = 0,
    min_shapes: int = 1,
    max_shapes: int = 4,
    hue_cue: bool = True,
) -> Path:
    """Write the dataset under `output_dir` and return its path."""
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if not 1 <= min_shapes <= max_shapes:
        raise ValueError(f"need 1 <= min_shapes <= max_shapes, got {min_shapes}, {max_shapes}")
    root = Path(output_dir)
    rng = np.random.default_rng(seed)
    categories = [{"id": index + 1, "name": name, "supercategory": "shape"} for index, name in enumerate(CLASSES)]
    for split, count in (("train", num_train), ("validation", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            image, objects = make_sample(rng, height, width, min_shapes, max_shapes, hue_cue)
            name = f"{index:06d}.jpg"
            Image.fromarray(image).save(root / split / name, quality=95)
            images.append({"id": index, "file_name": name, "width": width, "height": height})
            for class_index, (x0, y0, x1, y1) in objects:
                w, h = round(x1 - x0, 2), round(y1 - y0, 2)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": index,
                        "category_id": class_index + 1,
                        "bbox": [x0, y0, w, h],
                        "area": round(w * h, 2),
                        "iscrowd": 0,
                    }
                )
        document = {
            "info": {"description": "PVT shapes detection"},
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (root / f"{split}.json").write_text(json.dumps(document))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--num_train", type=int, default=400)
    parser.add_argument("--num_val", type=int, default=100)
    parser.add_argument("--min_size", type=int, default=96, help="smallest image side (pixels)")
    parser.add_argument("--max_size", type=int, default=160, help="largest image side (pixels)")
    parser.add_argument("--min_shapes", type=int, default=1)
    parser.add_argument("--max_shapes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--hue_cue", action=argparse.BooleanOptionalAction, default=True, help="give each class its own hue band"
    )
    args = parser.parse_args(argv)
    root = make_dataset(
        args.output_dir,
        args.num_train,
        args.num_val,
        args.min_size,
        args.max_size,
        args.seed,
        args.min_shapes,
        args.max_shapes,
        args.hue_cue,
    )
    print(f"Wrote {args.num_train} training and {args.num_val} validation images (COCO format) to {root}")


if __name__ == "__main__":
    main()
