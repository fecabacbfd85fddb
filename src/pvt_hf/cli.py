"""The `pvt-hf` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("pvt_hf")


def _official_args(value: str) -> dict:
    """--official-args: a JSON object, or a JSON file (an `official_args` entry inside it is used if present)."""
    text = Path(value).read_text() if Path(value).is_file() else value
    try:
        args = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {error}") from error
    if not isinstance(args, dict):
        raise argparse.ArgumentTypeError("expected a JSON object of the official constructor's keyword arguments")
    return args.get("official_args", args)


def add_convert_parser(subparsers) -> None:
    from .conversion import TASKS

    parser = subparsers.add_parser(
        "convert",
        help="convert an official PVT checkpoint into a Hub-ready pvt-hf folder",
        description="Convert an official PVT checkpoint (whai362/PVT classifier or mmseg Semantic FPN) into a "
        "folder that AutoModel*.from_pretrained loads (also with trust_remote_code=True, without pvt-hf).",
    )
    parser.add_argument("checkpoint", help="official .pth file")
    parser.add_argument("output_dir", help="folder to write (must not exist, unless --force)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--variant", help="released architecture, e.g. pvt-v2-b2, pvt_small, fpn_pvt_v2_b2_ade20k")
    source.add_argument(
        "--official-args",
        type=_official_args,
        help="JSON (or a JSON file) of the official constructor's keyword arguments: embed_dims, num_heads, "
        "mlp_ratios, depths, sr_ratios, linear, num_classes, patch_size, qkv_bias, img_size, and for segmentation "
        "neck_out_channels, head_channels",
    )
    parser.add_argument("--task", choices=TASKS, help="checked against the checkpoint (detected when omitted)")
    parser.add_argument("--force", action="store_true", help="replace output_dir if it exists")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub repository")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .conversion import convert_checkpoint
    from .io_utils import atomic_output_dir

    output_dir = Path(args.output_dir)
    if output_dir.exists() and not args.force:
        raise FileExistsError(f"{output_dir} already exists; pass --force to replace it.")
    model, report = convert_checkpoint(
        args.checkpoint, variant=args.variant, official_args=args.official_args, task=args.task
    )
    if "detected_variant" in report:
        logger.info("Detected variant: %s", report["detected_variant"])
    with atomic_output_dir(output_dir, force=args.force) as staging:
        model.save_pretrained(staging)
    logger.info(
        "Converted %s (%s, %s, %.2fM parameters) to %s",
        args.checkpoint, report["architecture"], report["task"], report["num_parameters"] / 1e6, output_dir,
    )  # fmt: skip
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(args.push_to_hub, private=args.private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(output_dir), repo_id=args.push_to_hub, repo_type="model")
        logger.info("Uploaded %s to https://huggingface.co/%s", output_dir, args.push_to_hub)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pvt-hf", description="Pyramid Vision Transformer tools for transformers")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_convert_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # one clear line for users; the traceback on request
        if getattr(args, "verbose", False):
            raise
        print(f"pvt-hf {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
