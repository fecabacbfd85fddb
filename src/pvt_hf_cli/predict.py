# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf predict`: classify or segment image files with a PVT model; the model decides which."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import check_model_argument
from ._pictures import add_picture_arguments, check_picture_task, picture_targets, save_pictures


PIPELINE_TASKS = {"image-classification": "image-classification", "semantic-segmentation": "image-segmentation"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify or segment images with a PVT model",
        description="Run a converted PVT model (local folder or Hub id) on image files; the model decides the task. "
        "Image classifiers print their top labels with their probabilities; semantic segmentation models print the "
        "classes present in each image with the fraction of its pixels they cover. Other models (a bare PvtModel, a "
        "PvtBackbone) are refused. Unreadable images are reported and skipped; the others still get their answer "
        "(exit code 1 if any image failed).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", required=True, help="model folder or Hub id (a classifier or a segmentation model)")
    parser.add_argument("--top-k", type=int, default=5, help="classifiers: labels per image (default 5)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8, help="classifiers: images per forward pass (default 8)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    add_picture_arguments(parser)
    parser.set_defaults(handler=run_predict)


def load_predictor(args: argparse.Namespace):
    """`(task, pipeline)` for --model: the task its config's architectures name (as `pvt-hf evaluate` decides it),
    loaded with its own weights only (a checkpoint lacking a head's weights is refused, never given a random one)."""
    from transformers import pipeline

    from pvt_hf.tools.evaluation import load_model

    model, processor, task = load_model(
        args.model, trust_remote_code=args.trust_remote_code, argument="--model", command="pvt-hf predict"
    )
    return task, pipeline(PIPELINE_TASKS[task], model=model, image_processor=processor, device=args.device)


def read_images(paths: list[str]) -> tuple[list, list[str], list[dict]]:
    """The readable images (8-bit RGB, 16-bit files at full range: the evaluation's reader), their paths, and an
    error result for each unreadable one."""
    from pvt_hf.tools.evaluation import read_image

    images, names, failures = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            names.append(path)
        except OSError as error:  # unreadable file: report it, answer the others
            failures.append({"image": path, "error": " ".join(str(error).split())})
    return images, names, failures


def classify(classifier, images: list, names: list[str], args: argparse.Namespace) -> list[dict]:
    top_k = min(args.top_k, classifier.model.config.num_labels)
    predictions = classifier(images, top_k=top_k, batch_size=args.batch_size) if images else []
    return [{"image": name, "predictions": prediction} for name, prediction in zip(names, predictions)]


def segment(segmenter, images: list, names: list[str], args: argparse.Namespace) -> list[dict]:
    """Per image, the classes present and the fraction of the image's pixels each covers, largest first."""
    import numpy as np

    results = []
    for image, name in zip(images, names):  # one at a time: the processor keeps each image's aspect ratio
        masks = segmenter(image, subtask="semantic")
        segments = [
            {
                "label": mask["label"],
                "area": float(np.count_nonzero(np.asarray(mask["mask"])) / (image.width * image.height)),
            }
            for mask in masks
        ]
        results.append({"image": name, "segments": sorted(segments, key=lambda segment: -segment["area"])})
    return results


def answer_each_usable_image(predictor, task: str, images: list, names: list[str], args) -> list[dict]:
    """The pipeline's answers; where the model's image processor refuses an image (one too elongated to resize, say),
    an error result naming that file, and the others' answers. (The pipeline copies its images and so loses their
    file names: the refused ones are found by processing each alone, only when the batch fails.)"""
    run = classify if task == "image-classification" else segment
    try:
        return run(predictor, images, names, args)
    except ValueError:
        usable, refused = [], []
        for image, name in zip(images, names):
            try:
                predictor.image_processor(image)
                usable.append((image, name))
            except ValueError as error:
                refused.append({"image": name, "error": " ".join(str(error).split())})
        if not refused:
            raise
        return refused + run(predictor, [image for image, _ in usable], [name for _, name in usable], args)


def run_predict(args: argparse.Namespace) -> int:
    for option, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    check_model_argument(args.model, "--model")
    targets = picture_targets(args)  # before any work: existing files, inputs, colliding names
    task, predictor = load_predictor(args)
    check_picture_task(args, task, predictor.model)
    images, names, results = read_images(args.images)
    results += answer_each_usable_image(predictor, task, images, names, args)
    if targets:
        save_pictures(args, targets, predictor.model, predictor.image_processor, images, names, results)
    results.sort(key=lambda result: args.images.index(result["image"]))
    if args.json:
        print(json.dumps([{**result, "task": task} for result in results], indent=1))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['image']}: error: {result['error']}", file=sys.stderr)
            elif "predictions" in result:
                print(result["image"])
                for prediction in result["predictions"]:
                    print(f"  {prediction['score']:.4f}  {prediction['label']}")
            else:
                print(f"{result['image']} (classes present, fraction of the pixels)")
                for entry in result["segments"]:
                    print(f"  {entry['area']:.4f}  {entry['label']}")
    return 1 if any("error" in result for result in results) else 0
