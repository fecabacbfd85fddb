# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf predict`: classify image files with a PVT model."""

from __future__ import annotations

import argparse
import json
import sys

from ._common import check_model_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a PVT model",
        description="Classify images with a converted PVT model (local folder or Hub id). Unreadable images are "
        "reported and skipped; the others still get their answer (exit code 1 if any image failed).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    check_model_argument(args.model, "--model")
    from PIL import Image
    from transformers import pipeline

    classifier = pipeline(
        "image-classification", model=args.model, device=args.device, trust_remote_code=args.trust_remote_code
    )
    results, images, names = [], [], []
    for path in args.images:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
            names.append(path)
        except Exception as error:  # unreadable file: report it, answer the others
            results.append({"image": path, "error": f"cannot read image: {' '.join(str(error).split())}"})
    top_k = min(args.top_k, classifier.model.config.num_labels)
    predictions = classifier(images, top_k=top_k, batch_size=args.batch_size) if images else []
    results += [{"image": name, "predictions": prediction} for name, prediction in zip(names, predictions)]
    results.sort(key=lambda result: args.images.index(result["image"]))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['image']}: error: {result['error']}", file=sys.stderr)
                continue
            print(result["image"])
            for prediction in result["predictions"]:
                print(f"  {prediction['score']:.4f}  {prediction['label']}")
    return 1 if any("error" in result for result in results) else 0
