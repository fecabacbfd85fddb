"""Throughput of pvt_hf's image processor against transformers' own PIL-backend image processors, single-threaded.

Real photos from ``skimage.data`` (300x451 up to 1411x1411 pixels) as PIL RGB images, processed in one process with
the contenders' rounds interleaved and torch limited to one thread (parallelism belongs to DataLoader workers).
Reported: median images per second of CPU time (and of wall time) on a batch of 32 (the 8 photos, 4 times), the same
per photo (a batch of 8 copies), and how far each output is from the official PVT ImageNet eval transform
(``Resize(256, BICUBIC)`` + ``CenterCrop(224)`` + ``ToTensor`` + ``Normalize``; torchvision when importable, else the
same steps in Pillow + numpy, which the tests tie to torchvision).

Contenders:
* ``pvt_hf`` - ``PvtHfImageProcessor()``: the official eval transform;
* transformers ``PvtImageProcessorPil`` - transformers' PVT processor, PIL backend: squash-resize to 224x224 (bicubic),
  no crop, so a different output;
* transformers ``ViTImageProcessorPil`` - the slow ViT processor: squash-resize to 224x224 (bilinear);
* transformers ``ConvNextImageProcessorPil(size={"shortest_edge": 224}, crop_pct=0.875)`` with the ImageNet mean / std:
  the same work as ours (short side to 256 bicubic, center crop 224; its crop offsets round down, torchvision's to
  nearest, hence a small diff);
* transformers ``PvtImageProcessor`` (torchvision backend), only when torchvision is importable;
* for scale, the Pillow resize alone: no exact implementation that resizes whole images can be faster.

Usage::

    python benchmarks/bench_image_processor.py [--rounds 15]
"""

import argparse
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
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402
from transformers.utils import is_torchvision_available  # noqa: E402

from pvt_hf.image_processing_pvt import PvtHfImageProcessor  # noqa: E402


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
MEAN = np.array(IMAGENET_DEFAULT_MEAN, dtype=np.float32)[:, None, None]
STD = np.array(IMAGENET_DEFAULT_STD, dtype=np.float32)[:, None, None]
OURS = "pvt_hf PvtHfImageProcessor (official eval)"


def load_photos() -> dict:
    import skimage.data

    photos = {}
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        photos[name] = PIL.Image.fromarray(array[0] if isinstance(array, tuple) else array).convert("RGB")
    return photos


def official_transform(images: list) -> tuple[np.ndarray, str]:
    if is_torchvision_available():
        from torchvision import transforms

        transform = transforms.Compose(
            [
                transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
            ]
        )
        return torch.stack([transform(image) for image in images]).numpy(), "torchvision"
    out = []
    for image in images:
        w, h = image.size
        rw, rh = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
        top, left = int(round((rh - 224) / 2.0)), int(round((rw - 224) / 2.0))
        crop = np.asarray(image.resize((rw, rh), PIL.Image.BICUBIC).crop((left, top, left + 224, top + 224)))
        out.append((crop.transpose(2, 0, 1).astype(np.float32) / np.float32(255) - MEAN) / STD)
    return np.stack(out), "Pillow + numpy"


class PillowResizeOnly:
    """Not a processor: the Pillow resize alone (short side to 256, bicubic), the floor of any exact implementation
    that resizes whole images (only a crop-aware resample, which pvt_hf no longer does, computes less)."""

    def __call__(self, images: list, return_tensors=None) -> dict:
        for image in images:
            w, h = image.size
            image.resize((256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256), PIL.Image.BICUBIC)
        return {"pixel_values": torch.zeros(0)}


def build_contenders() -> dict:
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.pvt.image_processing_pil_pvt import PvtImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    contenders = {
        OURS: PvtHfImageProcessor(),
        "transformers PvtImageProcessorPil (squash 224, bicubic)": PvtImageProcessorPil(),
        "transformers ViTImageProcessorPil (squash 224, bilinear)": ViTImageProcessorPil(),
        "transformers ConvNextImageProcessorPil (short side 256 + crop 224, bicubic)": ConvNextImageProcessorPil(
            size={"shortest_edge": 224},
            crop_pct=0.875,
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
        ),
    }
    if is_torchvision_available():
        from transformers.models.pvt.image_processing_pvt import PvtImageProcessor as TorchvisionPvt

        contenders["transformers PvtImageProcessor (torchvision backend)"] = TorchvisionPvt()
    contenders["Pillow resize alone (the floor: short side 256, bicubic, nothing else)"] = PillowResizeOnly()
    return contenders


def time_rounds(contenders: dict, images: list, rounds: int, warmup: int) -> tuple[dict, dict, dict]:
    """Images per second of each contender: median over rounds, by this thread's CPU time and by the wall clock.

    CPU time is the fair measure on a shared machine (all of it runs on one thread); wall time is what a user sees.
    """
    cpu_times, wall_times = {name: [] for name in contenders}, {name: [] for name in contenders}
    outputs = {}
    for round_index in range(warmup + rounds):
        for name, processor in contenders.items():  # interleaved, so load changes hit everyone alike
            cpu_start, wall_start = time.thread_time(), time.perf_counter()
            outputs[name] = processor(images, return_tensors="pt")["pixel_values"]
            if round_index >= warmup:
                cpu_times[name].append(time.thread_time() - cpu_start)
                wall_times[name].append(time.perf_counter() - wall_start)

    def speed(times):
        return {name: len(images) / statistics.median(values) for name, values in times.items()}

    return speed(cpu_times), speed(wall_times), outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)

    photos = load_photos()
    images = list(photos.values()) * 4
    reference, reference_name = official_transform(images)
    contenders = build_contenders()
    speeds, wall_speeds, outputs = time_rounds(contenders, images, args.rounds, args.warmup)

    lines = [
        f"Python {platform.python_version()}, torch {torch.__version__} (1 thread), transformers "
        f"{transformers.__version__}, Pillow {PIL.__version__}, {os.cpu_count()} CPU cores. Batch of {len(images)} PIL "
        f'RGB photos (skimage.data: {", ".join(PHOTOS)}), `return_tensors="pt"`, median of {args.rounds} interleaved '
        f"rounds after {args.warmup} warm-up rounds; official transform by {reference_name}.",
        "",
        "| processor | images / CPU-s | ours is N x faster | images / s (wall) | mean abs diff vs official "
        "| max abs diff vs official |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, speed in speeds.items():
        out = outputs[name].numpy()
        diff = np.abs(out - reference) if out.shape == reference.shape else None
        mean_diff, max_diff = ("n/a", "n/a") if diff is None else (f"{diff.mean():.1e}", f"{diff.max():.1e}")
        ratio = speeds[OURS] / speed
        lines.append(f"| {name} | {speed:.1f} | {ratio:.2f} | {wall_speeds[name]:.1f} | {mean_diff} | {max_diff} |")

    others = [name for name in contenders if name != OURS]
    lines += [
        "",
        "Per photo (a batch of 8 copies): images / CPU-s, and ours is N x faster:",
        "",
        "| photo (W x H) | ours | "
        + " | ".join(name.split(" (")[0].removeprefix("transformers ") for name in others)
        + " |",
        "|---|---:|" + "---:|" * len(others),
    ]
    for photo_name, photo in photos.items():
        per_photo, _, _ = time_rounds(contenders, [photo] * 8, max(3, args.rounds // 3), 1)
        cells = [f"{per_photo[name]:.0f} ({per_photo[OURS] / per_photo[name]:.2f}x)" for name in others]
        lines.append(
            f"| {photo_name} ({photo.width} x {photo.height}) | {per_photo[OURS]:.0f} | {' | '.join(cells)} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
