# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf convert`: official / timm / transformers checkpoints -> verified, Hub-ready pvt-hf folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    CHECKPOINT_SUFFIXES,
    DTYPE_CHOICES,
    TASK_CHOICES,
    _official_args,
    _repo_id,
    logger,
    repo_folder_name,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official PVT checkpoint into a verified, Hub-ready pvt-hf folder",
        usage="%(prog)s CHECKPOINT OUTPUT_DIR [options]\n       %(prog)s --all DIR OUTPUT_DIR [options]",
        description="Convert an official PVT checkpoint (whai362/PVT classifier or mmseg Semantic FPN; the backbone of "
        "an official mmdet detector, as a PvtBackbone, its neck and heads left out; also timm pvt_v2 state dicts and "
        "transformers pvt/pvt_v2 folders) into a folder that from_pretrained loads, also with "
        "trust_remote_code=True and without pvt-hf. The folder is written beside OUTPUT_DIR and "
        "moved into place when complete and verified; an existing OUTPUT_DIR is replaced only with --force, and "
        "never one that is or contains the input.",
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="CHECKPOINT OUTPUT_DIR",
        help="checkpoint file (or transformers folder) and output folder; with --all only OUTPUT_DIR",
    )
    parser.add_argument(
        "--all",
        metavar="DIR",
        help=f"convert every {'/'.join(CHECKPOINT_SUFFIXES)} file in DIR into OUTPUT_DIR/<file name>/ (e.g. pvt_v2_b2.pth -> pvt-v2-b2)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--variant",
        metavar="NAME",
        help="released architecture, e.g. pvt-v2-b2, pvt_small, fpn_pvt_v2_b2_ade20k (detected from the shapes when omitted)",
    )
    source.add_argument(
        "--official-args",
        metavar="JSON",
        type=_official_args,
        help="a JSON object (or the path of a JSON file) of the official constructor's keyword arguments: "
        "embed_dims, num_heads, mlp_ratios, depths, sr_ratios, linear, num_classes, patch_size, qkv_bias, img_size, "
        "and for segmentation neck_out_channels, head_channels",
    )
    parser.add_argument(
        "--task",
        choices=TASK_CHOICES,
        help="checked against the checkpoint (detected when omitted; backbone: the backbone of a detection checkpoint)",
    )
    parser.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="dtype of the saved weights")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT_DIR if it exists")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the folder in a clean process")
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        type=_repo_id,
        help="upload to this Hub repository (with --all: to NAMESPACE/<name>)",
    )
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    parser.add_argument("--revision", help="with --push-to-hub: branch to upload to")
    parser.add_argument("--commit-message", help="with --push-to-hub: commit message")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list the files, upload nothing")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_convert, usage_error=parser.error)  # usage_error: exit 2 with the usage


def convert_one(checkpoint: Path, output_dir: Path, args: argparse.Namespace, repo_id: str | None) -> dict:
    """Convert, check, write and optionally push one checkpoint; returns the row of the summary."""
    from pvt_hf.tools.conversion import convert_checkpoint, left_out_summary, load_checkpoint
    from pvt_hf.tools.hub import compare_with_timm, push_folder, write_repo_folder
    from pvt_hf.tools.io_utils import OutputExistsError, check_output_location, refuse_overwriting_input

    refuse_overwriting_input(output_dir, [checkpoint], "output folder")
    if output_dir.exists() and not args.force:
        raise OutputExistsError(f"{output_dir} already exists; pass --force to replace it.")
    check_output_location(output_dir, f"OUTPUT_DIR {output_dir}")  # before the work, not after it
    model, report = convert_checkpoint(
        checkpoint, variant=args.variant, official_args=args.official_args, task=args.task
    )
    if "detected_variant" in report:
        logger.info("%s: detected variant %s", checkpoint.name, report["detected_variant"])
    if "left_out" in report:
        logger.info(
            "%s: detection checkpoint, backbone converted; %s", checkpoint.name, left_out_summary(report["left_out"])
        )
    variant = None if report["architecture"].startswith("from ") else report["architecture"]
    checks = {}
    if args.dtype in ("float32", "fp32") and not args.no_verify:
        timm_error = compare_with_timm(load_checkpoint(checkpoint)[0], model, variant)
        if timm_error is not None:
            logger.info("timm's %s on the same weights: logits relative error %.1e", variant, timm_error)
            if timm_error > 1e-4:
                raise RuntimeError(f"Verification failed: timm's logits differ by {timm_error:.2e}.")
            checks["timm_relative_error"] = timm_error
    results = write_repo_folder(
        model,
        output_dir,
        variant=variant,
        source=checkpoint.name,
        repo_id=repo_id,
        dtype=args.dtype,
        force=args.force,
        verify=not args.no_verify,
        image_processor=default_image_processor(report["task"]),
        checks=checks,
    )
    row = {"checkpoint": checkpoint.name, "output": str(output_dir), **report, **checks, **results}
    if "reload_relative_error" in results:
        compared = "feature maps" if report["task"] == "backbone" else "logits"
        logger.info(
            "Reloaded %s in a clean process: %s relative error %.1e",
            output_dir,
            compared,
            results["reload_relative_error"],
        )
    logger.info(
        "Converted %s (%s, %s, %.2fM parameters) to %s",
        checkpoint,
        report["architecture"],
        report["task"],
        report["num_parameters"] / 1e6,
        output_dir,
    )
    if args.push_to_hub:
        files = push_folder(
            output_dir,
            repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
        )
        verb = "Would upload" if args.dry_run else "Uploaded"
        logger.info("%s to %s: %s", verb, repo_id, ", ".join(files))
        row["pushed"] = not args.dry_run
    return row


def default_image_processor(task: str):
    """The official evaluation transform of the task, written as preprocessor_config.json."""
    try:
        from pvt_hf.image_processing_pvt import PvtImageProcessor
    except ImportError:
        return None
    if task == "semantic-segmentation":
        return PvtImageProcessor.for_semantic_segmentation()
    if task == "backbone":
        # the official COCO test scale, mmdet's keep-ratio Resize((1333, 800)), without its padding to a multiple of
        # 32 (PVT takes any size)
        return PvtImageProcessor(
            size={"shortest_edge": 800, "longest_edge": 1333}, resample="bilinear", do_center_crop=False, crop_pct=None
        )
    return PvtImageProcessor()


def run_convert(args: argparse.Namespace) -> int:
    if args.all:
        if len(args.paths) != 1:
            args.usage_error(f"with --all, give only OUTPUT_DIR after --all DIR, got {len(args.paths)} paths")
        return run_convert_all(Path(args.all), Path(args.paths[0]), args)
    if len(args.paths) != 2:
        args.usage_error(f"expected CHECKPOINT OUTPUT_DIR (or --all DIR OUTPUT_DIR), got {len(args.paths)} paths")
    checkpoint, output_dir = Path(args.paths[0]), Path(args.paths[1])
    convert_one(checkpoint, output_dir, args, repo_id=args.push_to_hub)
    return 0


def run_convert_all(folder: Path, output_root: Path, args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from pvt_hf.tools.io_utils import check_output_location, refuse_overwriting_input

    if not folder.is_dir():
        raise NotADirectoryError(f"--all {folder}: not a folder")
    refuse_overwriting_input(output_root, [folder], "output folder")
    checkpoints = sorted(path for path in folder.iterdir() if path.suffix in CHECKPOINT_SUFFIXES and path.is_file())
    if not checkpoints:
        raise FileNotFoundError(f"--all {folder}: no {'/'.join(CHECKPOINT_SUFFIXES)} files")
    check_output_location(output_root / repo_folder_name(checkpoints[0]), f"OUTPUT_DIR {output_root}")
    rows, failures, taken = [], 0, {}
    with logging_redirect_tqdm(loggers=[logger]):
        for checkpoint in tqdm(checkpoints, desc="converting", unit="checkpoint", disable=None):
            name = repo_folder_name(checkpoint)
            try:
                if name in taken:
                    raise ValueError(f"its output name {name!r} is also that of {taken[name]}; rename one of them")
                taken[name] = checkpoint.name
                repo_id = f"{args.push_to_hub.rstrip('/')}/{name}" if args.push_to_hub else None
                rows.append(convert_one(checkpoint, output_root / name, args, repo_id=repo_id))
            except Exception as error:  # one bad file must not stop the others; each is reported
                if getattr(args, "verbose", False):
                    raise
                failures += 1
                rows.append({"checkpoint": checkpoint.name, "error": " ".join(str(error).split())})
                logger.error("%s: %s", checkpoint.name, rows[-1]["error"])
    print("| checkpoint | repo | task | parameters | reload error | status |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['checkpoint']} | – | – | – | – | failed: {row['error'][:120]} |")
        else:
            error = row.get("reload_relative_error")
            print(
                f"| {row['checkpoint']} | {Path(row['output']).name} | {row['task']} | {row['num_parameters'] / 1e6:.1f}M "
                f"| {'–' if error is None else f'{error:.1e}'} | ok |"
            )
    return 1 if failures else 0
