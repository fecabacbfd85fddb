"""Benchmark: cost of `pvt_hf.tools.metrics.MeanIoU.update` next to a pvt-v2-b0 forward pass on the same batch.

Goal: accumulating one batch of 16 ADE20K-sized label maps (512 x 512, 150 classes, some pixels 255) takes less than
a tenth of the time of the forward pass of a pvt-v2-b0 backbone on that batch (16 x 3 x 512 x 512).

    python benchmarks/bench_metric.py --write-results      # CPU; also a section of benchmarks/RESULTS.md
    python benchmarks/bench_metric.py --device cuda

The model is `pvt_hf.PvtModel(PvtConfig.from_preset("pvt-v2-b0"))`; if pvt_hf's model cannot be built, transformers'
`PvtV2Model` with the same architecture (same cost) is used instead, and the report says which. Weights are random:
the cost does not depend on them. Exits with status 1 if the goal is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from pvt_hf.tools.metrics import MeanIoU


GOAL_RATIO = 0.1


def build_model():
    """(model, description): pvt_hf's pvt-v2-b0, else transformers' PvtV2Model of the same architecture."""
    try:
        import pvt_hf

        model = pvt_hf.PvtModel(pvt_hf.PvtConfig.from_preset("pvt-v2-b0"))
        return model, "pvt_hf.PvtModel(PvtConfig.from_preset('pvt-v2-b0'))"
    except Exception as error:  # the model code is optional for this benchmark
        print(f"pvt_hf.PvtModel unavailable ({type(error).__name__}: {error}); using transformers' PvtV2Model")
        from transformers import PvtV2Config, PvtV2Model

        config = PvtV2Config(
            hidden_sizes=[32, 64, 160, 256],
            depths=[2, 2, 2, 2],
            num_attention_heads=[1, 2, 5, 8],
            mlp_ratios=[8, 8, 4, 4],
        )
        return PvtV2Model(config), "transformers.PvtV2Model (pvt-v2-b0 architecture; pvt_hf model unavailable)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        function()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def describe(times: list[float]) -> tuple[float, float, str]:
    return min(times), statistics.median(times), f"{len(times)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--num-labels", type=int, default=150)
    parser.add_argument("--ignored-fraction", type=float, default=0.05)
    parser.add_argument("--metric-repeats", type=int, default=10)
    parser.add_argument("--forward-repeats", type=int, default=2, help="forward passes timed (after one warm-up)")
    parser.add_argument("--forward-warmup", type=int, default=1)
    parser.add_argument(
        "--write-results",
        nargs="?",
        const=str(Path(__file__).with_name("RESULTS.md")),
        default=None,
        metavar="FILE",
        help="also write the results as a section of FILE (default FILE: benchmarks/RESULTS.md); without this option nothing is written",
    )
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    batch, size, num_labels = args.batch_size, args.size, args.num_labels
    generator = torch.Generator().manual_seed(0)
    references = torch.randint(0, num_labels, (batch, size, size), generator=generator)
    references[torch.rand(batch, size, size, generator=generator) < args.ignored_fraction] = 255
    predictions = torch.randint(0, num_labels, (batch, size, size), generator=generator)
    predictions, references = predictions.to(device), references.to(device)
    references_uint8 = references.to(torch.uint8)  # how datasets usually deliver ADE20K maps
    logits = torch.randn(batch, num_labels, size // 4, size // 4, generator=generator).to(device)

    metric = MeanIoU(num_labels, ignore_index=255, device=device)
    rows = []  # (what, times)
    update_times = timed(lambda: metric.update(predictions, references), device, args.metric_repeats)
    rows.append((f"`MeanIoU.update`, int64 label maps {batch}x{size}x{size}", update_times))
    rows.append(
        (
            "`MeanIoU.update`, int64 predictions + uint8 references",
            timed(lambda: metric.update(predictions, references_uint8), device, args.metric_repeats),
        )
    )
    rows.append(("`MeanIoU.compute` (150x150 matrix -> scores)", timed(metric.compute, device, args.metric_repeats)))
    rows.append(
        (
            f"(info) `MeanIoU.update` from logits {batch}x{num_labels}x{size // 4}x{size // 4}: bilinear resize + argmax",
            timed(lambda logits=logits: metric.update(logits, references), device, max(1, args.metric_repeats // 5)),
        )
    )
    del logits

    model, model_description = build_model()
    model = model.to(device).eval()
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).to(device)

    def forward():
        with torch.inference_mode():
            model(pixel_values)

    print(f"timing {args.forward_warmup} + {args.forward_repeats} forward passes of {model_description}", flush=True)
    forward_times = timed(forward, device, args.forward_repeats, warmup=args.forward_warmup)
    rows.append((f"forward pass, {model_description}, {batch}x3x{size}x{size}", forward_times))

    ratio = min(update_times) / min(forward_times)
    passed = ratio < GOAL_RATIO
    command = " ".join([f"python benchmarks/{Path(__file__).name}", *(argv if argv is not None else sys.argv[1:])])
    if device.type == "cuda":
        device_description = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or platform.machine()
        device_description = f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    lines = [
        "# MeanIoU update vs pvt-v2-b0 forward",
        "",
        f"Command: `{command}`",
        "",
        f"- device: {device} ({device_description})",
        f"- torch {torch.__version__}, Python {platform.python_version()}",
        f"- model: {model_description}, random weights, `torch.inference_mode()`",
        f"- data: {batch} random label maps {size}x{size}, {num_labels} classes, "
        f"{args.ignored_fraction:.0%} of the references 255 (ignored)",
        "",
        "| what | best (s) | median (s) | runs |",
        "| --- | ---: | ---: | ---: |",
    ]
    for what, times in rows:
        best, median, runs = describe(times)
        lines.append(f"| {what} | {best:.4f} | {median:.4f} | {runs} |")
    lines += [
        "",
        f"**update / forward = {ratio:.4f}** (best of each; goal < {GOAL_RATIO}): {'PASS' if passed else 'FAIL'}",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write_results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from benchmark import write_section  # benchmarks/benchmark.py

        write_section(Path(args.write_results), "metric-" + args.device, report.replace("# MeanIoU", "## MeanIoU", 1))
        print(f"wrote {args.write_results}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
