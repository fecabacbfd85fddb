# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf demo` (also `python -m pvt_hf_cli demo`): the offline digits demo. Its options live here, where `--help` can
show them without importing the library."""

from __future__ import annotations

import argparse
import json
import sys


DESCRIPTION = (
    "Offline demo of the main path on the tiny PVT v2 shipped with pvt-hf (trained from scratch on scikit-learn's "
    "8x8 handwritten digits with examples/finetune_image_classification.py; not an official PVT checkpoint): write "
    "it as a Hub-ready folder, load it back with AutoModelForImageClassification and pipeline('image-classification'), "
    "classify the held-out digits, print the accuracy and images/s."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options."""
    parser.add_argument("--output-dir", help="keep the written folder here (default: a temporary folder, removed)")
    parser.add_argument("--force", action="store_true", help="replace --output-dir if it exists")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, ...")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print the results as JSON at the end")
    parser.add_argument(
        "--prepare-data", metavar="DIR", help="only write the digits train/test image folders (needs scikit-learn)"
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="offline demo on the shipped tiny digits model (trained from scratch; not an official checkpoint)",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pvt_hf.tools.demo import HELDOUT_FILE, prepare_data, run_demo

    if args.prepare_data:
        root = prepare_data(args.prepare_data)
        print(f"Wrote {root}/train and {root}/test (class-per-folder PNGs, 32x32) and {root / HELDOUT_FILE}")
        return 0
    # with --json, stdout carries the JSON document only: the narration goes to stderr
    results = run_demo(
        args.output_dir,
        device=args.device,
        batch_size=args.batch_size,
        force=args.force,
        stream=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(results, indent=1))
    return 0
