"""Throughput of ``pvt_hf``'s PvtImageProcessor against transformers' own PVT image processors.

A batch of 32 real photos (8 photos from ``skimage.data`` of 300x451 up to 1411x1411 pixels, repeated 4
times) is processed as PIL RGB images, in one process, with the contenders' rounds interleaved.  Reported:
median images/s, speed-up of ours over each contender, and how far each output is from the official PVT
ImageNet eval transform (``Resize(256, BICUBIC)`` + ``CenterCrop(224)`` + ``ToTensor`` + ``Normalize``,
computed with torchvision when it is importable, otherwise with plain Pillow + numpy, which the test-suite
shows equals torchvision to 5e-7).

Contenders:
* ``pvt_hf`` - ``pvt_hf.PvtImageProcessor`` defaults (thread pool over the batch) and with ``num_workers=1``;
* transformers ``PvtImageProcessorPil`` - the PIL backend (``AutoImageProcessor(..., backend="pil")``);
* transformers ``PvtImageProcessor`` - the torchvision backend, only when torchvision is importable
  (transformers 5 picks it by default then; ``backend="torchvision"``).
Note transformers' PVT processors resize straight to 224x224 (no aspect-preserving resize, no crop), so
their output is *not* the official transform; the "diff" columns quantify that.

Usage::

    python benchmarks/bench_image_processor.py                      # section of benchmarks/RESULTS.md
    /tmp/tv-venv/bin/python benchmarks/bench_image_processor.py   # the torchvision section
"""

import argparse
from pathlib import Path
import os
import platform
import statistics
import sys
import time

import numpy as np
import PIL
import PIL.Image
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import transformers  # noqa: E402
from transformers.utils import is_torchvision_available  # noqa: E402

from pvt_hf.image_processing_pvt import PvtImageProcessor  # noqa: E402

PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]


def load_photos(batch_size: int) -> list:
    import skimage.data

    photos = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if isinstance(array, tuple):
            array = array[0]
        photos.append(PIL.Image.fromarray(array).convert("RGB"))
    return [photos[i % len(photos)] for i in range(batch_size)]


def official_transform(images: list) -> tuple[np.ndarray, str]:
    if is_torchvision_available():
        from torchvision import transforms

        tf = transforms.Compose(
            [
                transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(MEAN.ravel().tolist(), STD.ravel().tolist()),
            ]
        )
        return torch.stack([tf(im) for im in images]).numpy(), "torchvision"
    out = []
    for im in images:
        w, h = im.size
        if w <= h:
            rw, rh = 256, int(256 * h / w)
        else:
            rh, rw = 256, int(256 * w / h)
        top, left = int(round((rh - 224) / 2.0)), int(round((rw - 224) / 2.0))
        crop = np.asarray(im.resize((rw, rh), PIL.Image.BICUBIC).crop((left, top, left + 224, top + 224)))
        x = crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        out.append((x - MEAN) / STD)
    return np.stack(out), "Pillow + numpy"


def build_contenders() -> dict:
    from transformers.models.pvt.image_processing_pil_pvt import PvtImageProcessorPil

    contenders = {
        "pvt_hf PvtImageProcessor (threads)": PvtImageProcessor(),
        "pvt_hf PvtImageProcessor (num_workers=1)": PvtImageProcessor(num_workers=1),
        "transformers PvtImageProcessorPil (PIL backend)": PvtImageProcessorPil(),
    }
    if is_torchvision_available():
        from transformers.models.pvt.image_processing_pvt import PvtImageProcessor as HFTorchvisionPvt

        contenders["transformers PvtImageProcessor (torchvision backend)"] = HFTorchvisionPvt()
    return contenders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(HERE, "RESULTS.md"), help="results file: this run replaces its section")
    args = parser.parse_args()

    images = load_photos(args.batch_size)
    reference, reference_name = official_transform(images)
    contenders = build_contenders()

    times = {name: [] for name in contenders}
    outputs = {}
    for round_index in range(args.warmup + args.rounds):
        for name, processor in contenders.items():  # interleaved rounds
            start = time.perf_counter()
            result = processor(images, return_tensors="pt")
            elapsed = time.perf_counter() - start
            if round_index >= args.warmup:
                times[name].append(elapsed)
            outputs[name] = result["pixel_values"]

    ours = "pvt_hf PvtImageProcessor (threads)"
    ours_median = statistics.median(times[ours])
    rows = []
    for name in contenders:
        median = statistics.median(times[name])
        out = outputs[name].numpy()
        diff = np.abs(out - reference) if out.shape == reference.shape else None
        rows.append(
            (
                name,
                args.batch_size / median,
                median * 1000,
                median / ours_median,
                "n/a" if diff is None else f"{diff.mean():.2e}",
                "n/a" if diff is None else f"{diff.max():.2e}",
            )
        )

    try:
        import torchvision

        tv_version = torchvision.__version__
    except Exception:
        tv_version = "not installed"
    header = (
        f"### {'with' if is_torchvision_available() else 'without'} torchvision - Python {platform.python_version()}, "
        f"torch {torch.__version__}, torchvision {tv_version}, transformers {transformers.__version__}, "
        f"Pillow {PIL.__version__}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}\n\n"
        f"Batch of {args.batch_size} PIL RGB photos (skimage.data: {', '.join(PHOTOS)}; 300x451 to 1411x1411), "
        f'`return_tensors="pt"`, median of {args.rounds} interleaved rounds after {args.warmup} warm-up rounds. '
        f'Official transform computed with {reference_name}. "ours is Nx faster" = contender time / our time.\n\n'
    )
    table = [
        "| processor | images/s | ms / batch | ours is N x faster "
        "| mean abs diff vs official | max abs diff vs official |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ips, ms, ratio, mean_diff, max_diff in rows:
        table.append(f"| {name} | {ips:.1f} | {ms:.1f} | {ratio:.2f} | {mean_diff} | {max_diff} |")
    text = header + "\n".join(table) + "\n"
    print(text)
    from pvt_hf.benchmark import write_section

    section = "image-processor-" + ("torchvision" if "torchvision not installed" not in header else "pil")
    intro = (
        "## Image processor throughput (`benchmarks/bench_image_processor.py`)\n\n"
        "pvt_hf's `PvtImageProcessor` (official PVT eval transform, exact) vs transformers' PVT image "
        "processors (squash-resize to 224x224, not the official transform).\n\n"
    )
    write_section(Path(args.output), section, (intro if section.endswith("pil") else "") + text)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
