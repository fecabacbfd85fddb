#!/usr/bin/env python
"""Make the README's pictures (docs/images/) with pvt_hf.tools.visualization.

- `attention-digits.png`: the shipped digits model (`pvt_hf/data/digits-demo`, trained from scratch on scikit-learn's
  8x8 digits; not an official checkpoint) on a held-out digit it never saw in training, upscaled to 224 px: the
  attention of one query (on the stroke) in stage 1 (56x56 tokens reading 7x7 keys, sr 8) and stage 4 (7x7 tokens,
  sr 1), and the Grad-CAM of the predicted class.
- `segmentation-shapes.png`: a Semantic FPN PVT v2 model trained from scratch on the generated shapes of
  `examples/make_shapes_dataset.py` (not an official checkpoint), on a held-out image: the predicted mask with its
  legend, and the attention of one query in stage 1.

    python examples/space/make_readme_images.py --segmentation-model SHAPES_MODEL --shapes-image IMAGE \
        [--output-dir docs/images] [--force]

The commands that made the shapes model and image are in docs/visualization.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import pvt_hf  # noqa: F401 - registers PVT with transformers' Auto classes
from pvt_hf.tools.demo import DEMO_DIR, digit_image, load_heldout
from pvt_hf.tools.evaluation import load_model, read_image
from pvt_hf.tools.io_utils import atomic_output_file
from pvt_hf.tools.visualization import attention_picture, cam_picture, segmentation_picture


DIGIT_INDEX = 7  # a held-out digit
DISPLAY_SIZE = 224


def captioned_row(pictures: list[tuple[Image.Image, str]], caption_height: int = 22) -> Image.Image:
    """Pictures side by side (top-aligned, 8 px apart), each with its caption underneath."""
    width = sum(picture.width for picture, _ in pictures) + 8 * (len(pictures) - 1)
    height = max(picture.height for picture, _ in pictures) + caption_height
    row = Image.new("RGB", (width, height), "white")
    draw, left = ImageDraw.Draw(row), 0
    for picture, caption in pictures:
        row.paste(picture, (left, 0))
        draw.text((left + 2, picture.height + 4), caption, fill="black")
        left += picture.width + 8
    return row


def save(picture: Image.Image, path: Path, force: bool) -> None:
    with atomic_output_file(path, force=force) as staging:
        picture.save(staging, format="PNG", optimize=True)
    print(f"wrote {path} ({picture.width}x{picture.height})")


def digits_picture() -> Image.Image:
    model, processor, _ = load_model(str(DEMO_DIR))
    images, labels = load_heldout()
    digit = images[DIGIT_INDEX]
    image = digit_image(digit).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.BICUBIC)
    # the query: the brightest pixel of the 8x8 digit (on its stroke), at its centre in the upscaled image
    row, column = np.unravel_index(int(np.argmax(digit)), digit.shape)
    query = (int((row + 0.5) * DISPLAY_SIZE / 8), int((column + 0.5) * DISPLAY_SIZE / 8))
    predicted = model.config.id2label[int(cam_target(model, processor, image))]
    return captioned_row(
        [
            (image, f"held-out digit (label {int(labels[DIGIT_INDEX])})"),
            (attention_picture(model, processor, image, stage=1, layer=-1, query=query), "stage 1: 7x7 keys (sr 8)"),
            (attention_picture(model, processor, image, stage=4, layer=-1, query=query), "stage 4: 7x7 keys (sr 1)"),
            (cam_picture(model, processor, image), f"Grad-CAM of '{predicted}'"),
        ]
    )


def cam_target(model, processor, image):
    import torch

    with torch.no_grad():
        return model(**processor(image, return_tensors="pt")).logits.argmax(-1)[0]


def shapes_picture(model_path: str, image_path: str) -> Image.Image:
    model, processor, _ = load_model(model_path)
    image = read_image(image_path)
    scale = DISPLAY_SIZE / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    mask_picture, _ = segmentation_picture(model, processor, image)
    query = (image.height // 2, image.width // 2)
    attention = attention_picture(model, processor, image, stage=1, layer=-1, query=query)
    return captioned_row([(mask_picture, "predicted classes"), (attention, "stage 1 attention, query at the centre")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segmentation-model", required=True, help="the shapes Semantic FPN model folder")
    parser.add_argument("--shapes-image", required=True, help="a held-out image of the shapes dataset")
    parser.add_argument("--output-dir", default="docs/images")
    parser.add_argument("--force", action="store_true", help="replace existing pictures")
    args = parser.parse_args()
    output = Path(args.output_dir)
    save(digits_picture(), output / "attention-digits.png", args.force)
    save(shapes_picture(args.segmentation_model, args.shapes_image), output / "segmentation-shapes.png", args.force)


if __name__ == "__main__":
    main()
