# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf predict`'s pictures: --save-overlay, --save-attention, --save-cam (drawn by `pvt_hf.tools.visualization`).

With one IMAGE each option's PATH is the PNG file; with several it is a folder that receives IMAGE_STEM.png per
image. Every file is written to a staging file and moved into place when complete; an existing file is replaced only
with --force, and never an input image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


# option name -> (what it draws, the task it needs or None for any model)
PICTURES = {
    "save_overlay": ("overlay", "semantic-segmentation"),
    "save_attention": ("attention", None),
    "save_cam": ("cam", "image-classification"),
}
TASK_NAMES = {"semantic-segmentation": "a semantic-segmentation model", "image-classification": "an image classifier"}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_picture_arguments(parser: argparse.ArgumentParser) -> None:
    pictures = parser.add_argument_group(
        "pictures",
        "PNG pictures of what the model sees, of the image's size. With one IMAGE, PATH is the PNG file; with "
        "several, a folder that receives IMAGE_STEM.png per image. Existing files are kept unless --force.",
    )
    pictures.add_argument(
        "--save-overlay",
        metavar="PATH",
        help="segmentation models: the predicted classes over the image, with a legend of the classes present and "
        "their share of the pixels (ADE20K's colours for 150-class models)",
    )
    pictures.add_argument(
        "--save-attention",
        metavar="PATH",
        help="any model: where the queries of --stage / --layer look (attention on the reduced keys, mean over heads)",
    )
    pictures.add_argument("--stage", type=int, default=1, help="--save-attention: the stage, 1-4 (default 1)")
    pictures.add_argument(
        "--layer",
        type=int,
        default=-1,
        help="--save-attention: the layer in the stage, from 1; -1 (default) is the last",
    )
    pictures.add_argument(
        "--query",
        type=int,
        nargs=2,
        metavar=("Y", "X"),
        help="--save-attention: the query under pixel (Y, X) of the image (default: the mean over all queries)",
    )
    pictures.add_argument("--save-cam", metavar="PATH", help="classifiers: Grad-CAM of the top class over the image")
    pictures.add_argument(
        "--map-size",
        type=int,
        metavar="PIXELS",
        help="--save-attention / --save-cam: the short side the model sees the whole image at (default: the "
        "model's input size, at least 224)",
    )
    pictures.add_argument("--force", action="store_true", help="replace existing picture files")


def picture_targets(args: argparse.Namespace) -> dict[str, dict[str, Path]]:
    """For each picture asked for: image path -> output file. Checked before any work: existing files (without
    --force), inputs, several images whose stems collide, two options writing the same file."""
    from pvt_hf.tools.io_utils import OutputExistsError, refuse_overwriting_input

    if args.map_size is not None and args.map_size < 1:
        raise ValueError(f"--map-size must be at least 1, got {args.map_size}")
    if args.query is not None and min(args.query) < 0:
        raise ValueError(f"--query Y X must be a pixel of the image (0 or more), got {args.query}")
    targets, seen = {}, {}
    for dest, (kind, _) in PICTURES.items():
        value = getattr(args, dest)
        if value is None:
            continue
        path = Path(value).expanduser()
        if len(args.images) == 1:
            files = {args.images[0]: path}
        else:
            if path.exists() and not path.is_dir():
                raise ValueError(f"{_option(dest)} {value}: with several images this is a folder, and it is a file")
            files = {}
            for image in args.images:
                output = path / f"{Path(image).stem}.png"
                if output in files.values():
                    raise ValueError(
                        f"{_option(dest)}: several images are named {Path(image).stem}.*; their pictures would all "
                        f"be {output} (run them separately)"
                    )
                files[image] = output
        for output in files.values():
            if output.resolve() in seen:
                raise ValueError(f"{_option(dest)} and {seen[output.resolve()]} would both write {output}")
            seen[output.resolve()] = _option(dest)
            refuse_overwriting_input(output, args.images, what=_option(dest))
            if output.exists() and not args.force:
                raise OutputExistsError(f"{_option(dest)}: {output} already exists; pass --force to replace it.")
        targets[kind] = files
    return targets


def check_picture_task(args: argparse.Namespace, task: str, model) -> None:
    """The pictures the model can give: an overlay needs a segmentation model, Grad-CAM a classifier; --stage and
    --layer must exist in it."""
    from pvt_hf.tools.visualization import find_encoder

    for dest, (_, needed) in PICTURES.items():
        if getattr(args, dest) is not None and needed is not None and needed != task:
            raise ValueError(
                f"{_option(dest)} needs {TASK_NAMES[needed]}; --model {args.model} is {TASK_NAMES.get(task, task)}"
            )
    if args.save_attention is not None:
        stages = find_encoder(model).stages
        if not 1 <= args.stage <= len(stages):
            raise ValueError(f"--stage must be 1 to {len(stages)}, got {args.stage}")
        depth = len(stages[args.stage - 1].layers)
        if not (1 <= args.layer <= depth or -depth <= args.layer <= -1):
            raise ValueError(
                f"--layer: stage {args.stage} has {depth} layer(s); expected 1 to {depth} or -1, got {args.layer}"
            )


def save_pictures(
    args: argparse.Namespace,
    targets: dict,
    model,
    image_processor,
    images: list,
    names: list[str],
    results: list[dict],
) -> None:
    """Draw and write the pictures of each readable image; each result gets `pictures` (kind -> path), or an
    `error` when its --query lies outside it."""
    from tqdm.auto import tqdm

    from pvt_hf.tools import visualization
    from pvt_hf.tools.io_utils import atomic_output_file

    by_name = {result["image"]: result for result in results}
    for image, name in tqdm(
        list(zip(images, names)), desc="pictures", unit="image", disable=len(names) < 2, file=sys.stderr
    ):
        if args.query is not None and not (args.query[0] < image.height and args.query[1] < image.width):
            by_name[name]["error"] = (
                f"--query {args.query[0]} {args.query[1]} is outside the {image.height}x{image.width} image"
            )
            continue
        pictures = {}
        if "overlay" in targets:
            pictures["overlay"], _ = visualization.segmentation_picture(model, image_processor, image)
        if "attention" in targets:
            query = None if args.query is None else tuple(args.query)
            pictures["attention"] = visualization.attention_picture(
                model, image_processor, image, args.stage, args.layer, query=query, map_size=args.map_size
            )
        if "cam" in targets:
            pictures["cam"] = visualization.cam_picture(model, image_processor, image, map_size=args.map_size)
        for kind, picture in pictures.items():
            with atomic_output_file(targets[kind][name], force=args.force) as staging:
                picture.save(staging, format="PNG")
        by_name[name]["pictures"] = {kind: str(targets[kind][name]) for kind in pictures}
        for kind in pictures:  # on stderr: with --json, stdout carries the JSON document only
            tqdm.write(f"{name}: {kind} written to {targets[kind][name]}", file=sys.stderr)
