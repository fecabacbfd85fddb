# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf evaluate MODEL DATA`: top-1 / top-5 accuracy of a classifier, or mIoU of a segmentation model."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from ._common import DTYPE_CHOICES, _local_path, check_model_argument


DESCRIPTION = (
    "Evaluate a PVT model (or any transformers image classifier / semantic segmentation model; a folder or Hub id) "
    "on a dataset, with the model's own image processor. The model decides the task. Classifiers: DATA is an "
    "ImageNet-style folder DATA/<class name>/<images> (classes named after the model's labels map to them by name, "
    "else the sorted folder index is the label id, as torchvision's ImageFolder) or a datasets folder (save_to_disk; "
    "columns image/img and label/labels); top-1 and top-5 accuracy. Segmentation models: DATA is an ADE20K "
    "folder (images/SPLIT/*.jpg, annotations/SPLIT/*.png, reduce_zero_label); mIoU, mAcc, aAcc and per-class IoU "
    "with mmseg's test procedure. Accuracies and IoUs are fractions in [0, 1]. The result is printed as JSON (with "
    "the split read). Several processes: accelerate launch -m "
    "pvt_hf_cli evaluate ..., or on CPUs ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N -m pvt_hf_cli "
    "evaluate ...; the result equals the single-process one."
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="accuracy or mIoU of a model on a dataset", description=DESCRIPTION
    )
    parser.add_argument("model", metavar="MODEL", help="model folder or Hub id")
    parser.add_argument("data", metavar="DATA", help="image folder, datasets folder (save_to_disk) or ADE20K folder")
    parser.add_argument(
        "--split",
        help="ADE20K: images/SPLIT (default validation); datasets: the split (default "
        "validation, else test, else the only one); image folder: DATA/SPLIT",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="classification batch per process (default 32); segmentation takes one whole image at a time, as mmseg",
    )
    parser.add_argument(
        "--num-workers", type=int, help="DataLoader workers per process (default: up to 4, from the cores)"
    )
    parser.add_argument("--max-samples", type=int, metavar="N", help="only the first N samples (sorted file order)")
    parser.add_argument(
        "--device", help="cpu, cuda, cuda:1, mps ... (default: accelerate's choice, a GPU if there is one)"
    )
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, help="dtype of the weights (default: as saved)")
    segmentation = parser.add_argument_group("semantic segmentation (mmseg's test modes)")
    segmentation.add_argument(
        "--sliding-window",
        nargs=2,
        type=int,
        metavar=("CROP", "STRIDE"),
        help="mmseg's slide mode: CROP x CROP windows every STRIDE pixels, overlapping logits "
        "averaged (default: whole-image inference)",
    )
    segmentation.add_argument(
        "--multi-scale-flip",
        action="store_true",
        help="mmseg's aug test: scales 0.5 0.75 1.0 1.25 1.5 1.75 of the processor's size, each "
        "also flipped horizontally, softmax scores averaged",
    )
    segmentation.add_argument(
        "--scales",
        nargs="+",
        type=float,
        metavar="RATIO",
        help="the scales (ratios of the image processor's size; default 1.0, or those of --multi-scale-flip)",
    )
    segmentation.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add horizontally flipped copies (default: with --multi-scale-flip)",
    )
    segmentation.add_argument(
        "--reduce-labels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ADE20K's reduce_zero_label: annotation 0 ignored, k becomes k - 1 (default: on)",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        type=_output_argument,
        help="also write the JSON result to FILE (atomically; the location is checked before evaluating)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --output file")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code")
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    parser.set_defaults(handler=run)


def _output_argument(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("expected the path of the JSON file to write, got an empty string")
    return value


def run(args: argparse.Namespace) -> int:
    for option, value, least in (
        ("--max-samples", args.max_samples, 1),
        ("--batch-size", args.batch_size, 1),
        ("--num-workers", args.num_workers, 0),
    ):
        if value is not None and value < least:
            raise ValueError(f"{option} must be at least {least}, got {value}")
    from pvt_hf.tools.evaluation import check_data_folder, evaluate

    check_data_folder(_local_path(args.data))
    check_model_argument(args.model, "MODEL")
    inputs = [_local_path(args.data)] + ([_local_path(args.model)] if _local_path(args.model).exists() else [])
    output = _checked_output(args.output, args.force, inputs) if args.output is not None else None

    results = evaluate(
        args.model,
        _local_path(args.data),
        split=args.split,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_samples=args.max_samples,
        device=args.device,
        dtype=args.dtype,
        sliding_window=args.sliding_window,
        scales=args.scales,
        flip=args.flip,
        multi_scale_flip=args.multi_scale_flip,
        reduce_labels=args.reduce_labels,
        trust_remote_code=args.trust_remote_code,
    )
    # evaluate() needs accelerate, and said so if it is missing
    from accelerate import PartialState

    if not PartialState().is_main_process:  # every process has the result; one reports it
        return 0
    text = json.dumps(results, indent=1)
    print(text, flush=True)  # first: a failing write must not lose the result
    if output is not None:
        _write_atomically(output, text + "\n", args.force, args.output)
    return 0


def _checked_output(value: str, force: bool, inputs: list[Path]) -> Path:
    """--output, refused before any work if it exists (without --force), is a folder, or is (inside) an input."""
    from pvt_hf.tools.io_utils import OutputExistsError, check_output_location, refuse_overwriting_input

    output = _local_path(value)
    refuse_overwriting_input(output, inputs, "--output")
    if output.is_dir():
        raise IsADirectoryError(f"--output {value} is a folder; give the path of the JSON file to write")
    if output.exists() and not force:
        raise OutputExistsError(f"--output {value} already exists; pass --force to replace it")
    check_output_location(output, f"--output {value}")  # a writable folder, not a dangling link: before evaluating
    return output


def _write_atomically(path: Path, text: str, force: bool, value: str) -> None:
    """Write `text` to a temporary file beside `path`, then move it into place: readers see the old file or the
    complete new one. Without `force` a file that appeared meanwhile is kept (hard link: fails if `path` exists).
    Errors name --output as the user gave it (`value`), never the staging file."""
    from pvt_hf.tools.io_utils import OutputExistsError

    try:
        _write_staged(path, text, force, value)
    except OSError as error:
        if isinstance(error, OutputExistsError):
            raise
        raise OSError(
            f"--output {value}: cannot write the result ({error.strerror or error}); it was printed above"
        ) from error


def _write_staged(path: Path, text: str, force: bool, value: str) -> None:
    from pvt_hf.tools.io_utils import OutputExistsError, apply_umask

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.incomplete-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        apply_umask(Path(staging))
        if force:
            os.replace(staging, path)
        else:
            try:
                os.link(staging, path)
            except FileExistsError:
                raise OutputExistsError(
                    f"--output {value} appeared while this run was evaluating (another process?); it was left as it "
                    "is, and the result was printed above. Pass --force to replace it."
                ) from None
            except OSError:  # a file system without hard links: the check and the move are then two steps
                if path.exists() or path.is_symlink():
                    raise OutputExistsError(
                        f"--output {value} appeared while this run was evaluating; the result was printed above; pass --force"
                    ) from None
                os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
