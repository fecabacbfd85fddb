# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf flops`: multiply-accumulates and parameters of a PVT model, per stage and in total."""

from __future__ import annotations

import argparse
import json

from ._common import _local_path, check_model_or_preset


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {value!r}")
    return number


def _check_pvt_config(config_file, model: str) -> None:
    """A model folder's config.json must be a pvt-hf one: said here in the user's terms, not transformers'."""
    from pvt_hf import PvtConfig

    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"MODEL {model}: cannot read {config_file} as JSON ({error})") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != PvtConfig.model_type:
        found = f"model_type {model_type!r}" if model_type else "no model_type"
        raise ValueError(
            f"MODEL {model}: its config.json has {found}; pvt-hf flops counts pvt-hf models (model_type "
            f"{PvtConfig.model_type!r}); convert an official or timm checkpoint first with `pvt-hf convert`"
        )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="count the MACs (the papers' GFLOPs) and parameters of a PVT model, per stage",
        usage="%(prog)s MODEL [--size H W] [--json]",
        description="Count the multiply-accumulates (MACs: what the PVT papers call FLOPs) and the parameters of a "
        "PVT model for one image of H x W pixels, per stage and in total, analytically: the attention matmuls over "
        "the spatially reduced keys, the reduction convolution and its LayerNorm, v2-linear's pooling, the MLPs' "
        "depth-wise convolutions, the patch embeddings, norms and the head, as fvcore counts them (torch's "
        "FlopCounterMode reports 2 FLOPs per MAC). MODEL is a preset name (counted as the 1000-class ImageNet "
        "classifier, as the papers do), a model folder or a Hub id (only its config.json is read).",
    )
    parser.add_argument("model", metavar="MODEL", help="preset name (e.g. pvt-v2-b2), model folder or Hub id")
    parser.add_argument(
        "--size",
        nargs=2,
        type=_positive_int,
        default=[224, 224],
        metavar=("H", "W"),
        help="input height and width in pixels (default 224 224); any size the model accepts",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_flops)


def run_flops(args: argparse.Namespace) -> int:
    check_model_or_preset(args.model)
    if _local_path(args.model).is_dir():
        _check_pvt_config(_local_path(args.model) / "config.json", args.model)
    from pvt_hf.tools.flops import InputSizeError, count_flops

    height, width = args.size
    try:
        report = count_flops(args.model, height, width)
    except InputSizeError as error:
        raise ValueError(f"--size {height} {width}: {error}") from error
    if args.json:
        print(json.dumps({"model": args.model, **report.to_dict()}, indent=1))
        return 0
    print(f"{args.model} ({report.architecture}), one {height}x{width} image; GMACs = the papers' GFLOPs")
    rows = [("", "grid", "tokens", "keys", "GMACs", "attn matmul", "params (M)")]
    for stage in report.stages:
        rows.append(
            (
                stage.name,
                f"{stage.grid[0]}x{stage.grid[1]}",
                str(stage.num_tokens),
                str(stage.key_length),
                f"{stage.total_macs / 1e9:.3f}",
                f"{stage.attention_matmul_macs / 1e9:.3f}",
                f"{stage.parameters / 1e6:.2f}",
            )
        )
    rows.append(("head", "", "", "", f"{report.head_total_macs / 1e9:.3f}", "", f"{report.head_parameters / 1e6:.2f}"))
    rows.append(("total", "", "", "", f"{report.total_gmacs:.3f}", "", f"{report.total_parameters / 1e6:.2f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]))
    print(
        f"parameters: {report.total_parameters:,}; keys: the reduced key length each query attends to; "
        f"attn matmul: Q.K^T and A.V"
    )
    return 0
