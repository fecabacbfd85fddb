# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""`pvt-hf export-onnx`: one ONNX file with dynamic batch, height and width, checked with onnxruntime."""

from __future__ import annotations

import argparse

from ._common import _local_path, check_model_or_preset


def _tolerance(value: str) -> float:
    """--tolerance: a positive, finite relative error (0 would refuse every export, NaN or a negative one all)."""
    try:
        tolerance = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not 0 < tolerance < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive, finite relative error (e.g. 1e-4), got {value!r}")
    return tolerance


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a PVT model to ONNX (dynamic batch, height and width), verified with onnxruntime",
        usage="%(prog)s MODEL OUT.onnx [options]",
        description="Export a PVT model to one self-contained ONNX file whose input `pixel_values` has dynamic "
        "batch, height and width, then run it with onnxruntime at several sizes (square, non-square, odd) and "
        "compare with PyTorch. MODEL is a model folder, a Hub id or a preset name (e.g. pvt-v2-b2: random weights, "
        "for trying deployment). Needs onnx and onnxruntime: `pip install 'pvt-hf[onnx]'` (onnxscript too for the "
        "dynamo exporter).",
    )
    parser.add_argument("model", metavar="MODEL", help="model folder, Hub id or preset name")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--exporter",
        default="auto",
        choices=["auto", "dynamo", "torchscript"],
        help="torch exporter (default: dynamo when onnxscript is installed, else torchscript)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18 dynamo, 17 torchscript)")
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=1e-4,
        help="largest relative error accepted, a positive number (default 1e-4)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists (never a file of MODEL)")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    check_model_or_preset(args.model)
    if not args.no_verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "verifying needs onnxruntime: `pip install 'pvt-hf[onnx]'` (or pass --no-verify)"
            ) from error
    from pvt_hf.tools.io_utils import check_output_location
    from pvt_hf.tools.onnx_export import export_onnx

    # The library refuses an existing file without --force, a file of the input, a folder, an unwritable location
    # and a file another pvt-hf process is writing, before it loads the model; named here as the user gave them.
    output = _local_path(args.output)
    check_output_location(output, f"OUT.onnx {args.output}")
    result = export_onnx(
        args.model,
        output,
        exporter=args.exporter,
        opset_version=args.opset,
        verify=not args.no_verify,
        tolerance=args.tolerance,
        force=args.force,
    )
    size = output.stat().st_size / 2**20
    print(
        f"wrote {output} ({size:.1f} MiB, {result.exporter} exporter, opset {result.opset_version}, outputs: {', '.join(result.output_names)})"
    )
    if result.errors:
        sizes = ", ".join(f"{b}x3x{h}x{w}" for b, h, w in result.errors)
        print(f"onnxruntime vs PyTorch at {sizes}: max relative error {result.max_relative_error:.2e}")
    return 0
