#!/usr/bin/env python
"""Generate a small semantic-segmentation dataset in the ADE20K (`ADEChallengeData2016`) layout.

Each image shows a few random circles, rectangles and triangles (random sizes, rotations, overlapping) on a
textured background (gradients, stripes, checkerboards, blobs, noise). By default each class also has its own hue
band (circles red-ish, rectangles green-ish, triangles blue-ish: hue +-30 degrees around 0/120/240, random
saturation and brightness), so that a tiny model trained from scratch learns the task in minutes on a CPU (the
recorded learning run of benchmarks/RESULTS.md); with `--no-hue_cue` the colours are random and only the shape tells
the classes apart, which a tiny from-scratch model did not learn within ~1000 steps in tries.

THE BACKGROUND IS A CLASS. The annotation PNGs follow ADE20K's convention that 0 means "unlabelled" (ignored by
`reduce_zero_label`) and the classes start at 1: 1 = background, 2 = circle, 3 = rectangle, 4 = triangle (no pixel
is 0). With `reduce_zero_label` (the default of `finetune_ade20k.py` and `pvt-hf evaluate`) the model's classes are
0 = background, 1 = circle, 2 = rectangle, 3 = triangle, so a trained model paints the background as background and
its mIoU counts it; train with the defaults (no `--no-reduce_labels`).

    ADEChallengeData2016/
      images/training/ADE_train_00000000.jpg ...      annotations/training/ADE_train_00000000.png ...
      images/validation/ADE_val_00000000.jpg ...      annotations/validation/ADE_val_00000000.png ...
      id2label.json                                   {"0": "background", "1": "circle", "2": "rectangle", "3": "triangle"}

A first run on the CPU (a tiny model from scratch, 128-pixel crops: about 2 minutes on 2 cores, loss logged from step 1):

    python examples/make_shapes_dataset.py shapes/ADEChallengeData2016
    python examples/finetune_ade20k.py --model_name_or_path pvt-v2-b0 \\
        --config_overrides '{"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 2, 1], "num_attention_heads": [1, 2, 4, 8], "neck_hidden_size": 64, "decoder_hidden_size": 64}' \\
        --data_dir shapes/ADEChallengeData2016 --output_dir shapes-fpn --crop_size 128 --resize_scale 512 128 \\
        --eval_short_side 128 --per_device_train_batch_size 8 --learning_rate 1e-3 --warmup_steps 50 --max_train_steps 1200

Usage:
    python examples/make_shapes_dataset.py OUTPUT_DIR [--num_train 400] [--num_val 100] [--min_size 96]
        [--max_size 160] [--min_shapes 1] [--max_shapes 4] [--seed 0] [--no-hue_cue]
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


CLASSES = ["circle", "rectangle", "triangle"]  # the shapes, drawn with annotation values 2, 3, 4
LABELS = ["background", *CLASSES]  # the model's classes after reduce_zero_label: annotation value - 1
BACKGROUND_VALUE = 1  # annotation 0 stays ADE20K's "unlabelled"


def _random_color(rng: np.random.Generator, avoid: np.ndarray | None = None, min_distance: float = 90.0) -> tuple:
    """A random RGB colour, at least `min_distance` (Euclidean, 0-255) away from `avoid` when possible."""
    for _ in range(50):
        color = rng.integers(0, 256, size=3)
        if avoid is None or np.linalg.norm(color - avoid) >= min_distance:
            break
    return tuple(int(c) for c in color)


def _class_color(rng: np.random.Generator, class_index: int) -> tuple:
    """A colour of the class's hue band: hue 120 * class_index +- 30 degrees, saturation and value 0.45-1."""
    hue = ((120.0 * class_index + rng.uniform(-30.0, 30.0)) % 360.0) / 360.0
    red, green, blue = colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0))
    return int(red * 255), int(green * 255), int(blue * 255)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background (float32 HxWx3 in 0-255)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = (rng.integers(0, 256, size=3).astype(np.float32) for _ in range(2))
    kind = rng.integers(0, 5)
    if kind == 0:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(angle) + yy * math.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    elif kind == 1:  # stripes
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 16)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    elif kind == 2:  # checkerboard
        cell = int(rng.integers(4, 14))
        t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    elif kind == 3:  # smooth blobs
        low = rng.random((max(2, height // 16), max(2, width // 16))).astype(np.float32)
        t = (
            np.asarray(
                Image.fromarray((low * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32
            )
            / 255
        )
    else:  # plain colour
        t = np.zeros((height, width), np.float32)
    image = a[None, None] * (1 - t[..., None]) + b[None, None] * t[..., None]
    image += rng.normal(0, rng.uniform(2, 12), size=image.shape).astype(np.float32)
    return np.clip(image, 0, 255)


def _shape_polygon(rng: np.random.Generator, kind: str, cx: float, cy: float, radius: float) -> list[tuple] | None:
    """Vertices of a rotated rectangle or triangle (None for a circle, drawn as an ellipse box)."""
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "rectangle":
        aspect = rng.uniform(0.5, 1.0)
        half_w, half_h = radius, radius * aspect
        corners = [(-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h)]
    elif kind == "triangle":
        # A roughly equilateral triangle with jittered vertex angles.
        corners = [
            (radius * math.cos(a), radius * math.sin(a))
            for a in (
                0.0 + rng.uniform(-0.25, 0.25),
                2.094 + rng.uniform(-0.25, 0.25),
                4.189 + rng.uniform(-0.25, 0.25),
            )
        ]
    else:
        return None
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]


def make_sample(
    rng: np.random.Generator, height: int, width: int, min_shapes: int = 1, max_shapes: int = 4, hue_cue: bool = True
):
    """One (RGB uint8 image, uint8 annotation) pair."""
    image = Image.fromarray(_background(rng, height, width).astype(np.uint8))
    label = Image.new("L", (width, height), BACKGROUND_VALUE)
    draw_image, draw_label = ImageDraw.Draw(image), ImageDraw.Draw(label)
    background_mean = np.asarray(image, np.float32).reshape(-1, 3).mean(0)
    side = min(height, width)
    for _ in range(int(rng.integers(min_shapes, max_shapes + 1))):
        class_index = int(rng.integers(0, len(CLASSES)))
        kind = CLASSES[class_index]
        radius = rng.uniform(0.12, 0.3) * side
        cx, cy = rng.uniform(radius * 0.6, width - radius * 0.6), rng.uniform(radius * 0.6, height - radius * 0.6)
        color = _class_color(rng, class_index) if hue_cue else _random_color(rng, avoid=background_mean)
        polygon = _shape_polygon(rng, kind, cx, cy, radius)
        if polygon is None:
            box = [cx - radius, cy - radius, cx + radius, cy + radius]
            draw_image.ellipse(box, fill=color)
            draw_label.ellipse(box, fill=BACKGROUND_VALUE + 1 + class_index)
        else:
            draw_image.polygon(polygon, fill=color)
            draw_label.polygon(polygon, fill=BACKGROUND_VALUE + 1 + class_index)
    # A little blur and noise so that edges and colours are not perfectly clean.
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))
    array = np.asarray(image, np.float32) + rng.normal(0, 4, size=(height, width, 3))
    return np.clip(array, 0, 255).astype(np.uint8), np.asarray(label, np.uint8)


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
    """Write the dataset under `output_dir` (the ADEChallengeData2016 folder) and return its path."""
    if not 16 <= min_size <= max_size:
        raise ValueError(f"need 16 <= min_size <= max_size, got {min_size}, {max_size}")
    root = Path(output_dir)
    rng = np.random.default_rng(seed)
    for split, prefix, count in (("training", "ADE_train", num_train), ("validation", "ADE_val", num_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
            image, label = make_sample(rng, height, width, min_shapes, max_shapes, hue_cue)
            name = f"{prefix}_{index:08d}"
            Image.fromarray(image).save(root / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    (root / "id2label.json").write_text(json.dumps({str(i): name for i, name in enumerate(LABELS)}, indent=1))
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="the ADEChallengeData2016 folder to write")
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
    print(f"Wrote {args.num_train} training and {args.num_val} validation images to {root}")


if __name__ == "__main__":
    main()
