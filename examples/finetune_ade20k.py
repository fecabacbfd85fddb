#!/usr/bin/env python
"""Train or fine-tune a PVT Semantic FPN model on ADE20K (or any data in its layout) with 🤗 Accelerate.

The defaults are the official PVT / Semantic FPN ADE20K recipe (mmseg configs of whai362/PVT):

* training pipeline: random rescale of the image to a scale of (2048, 512) times a ratio in [0.5, 2.0] (keeping the
  aspect ratio), a 512x512 random crop whose largest class covers at most 75% of the labelled pixels
  (`cat_max_ratio`), horizontal flip (p=0.5), photometric distortion (brightness, contrast, saturation, hue),
  ImageNet normalisation, padding to the crop size; labels with `reduce_zero_label` (0 -> 255 ignored, k -> k-1);
* AdamW, lr 2e-4, weight decay 1e-4, poly schedule (power 0.9) over 40k iterations at a total batch size of 32
  (8 GPUs x 4 images: `--per_device_train_batch_size 4` on 8 processes, or accumulate gradients);
* evaluation as the official test: whole-image inference with the short side resized to 512 (long side at most
  2048, aspect ratio kept, both sides rounded up to a multiple of 32), logits resized to the annotation's size,
  dataset-level mIoU (a confusion matrix summed over all images and all processes).

Run it on one GPU, several GPUs (`accelerate launch --multi_gpu --num_processes N`: DDP, BatchNorm becomes
SyncBatchNorm), several nodes, or N gloo DDP processes on the CPU (`ACCELERATE_USE_CPU=1 torchrun --standalone
--nproc_per_node N examples/finetune_ade20k.py ...`; accelerate 1.x's `accelerate launch --cpu --num_processes N` needs
mpirun):

    accelerate launch examples/finetune_ade20k.py --model_name_or_path pvt-v2-b0 \\
        --backbone_name_or_path ./pvt-v2-b0-imagenet --data_dir ./ADEChallengeData2016 --output_dir ./fpn-pvt-v2-b0 \\
        --mixed_precision bf16 --checkpointing_steps 4000 --eval_steps 8000

FSDP2 on GPUs: `accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml examples/finetune_ade20k.py ...`
(no flag of this script: under accelerate's FSDP plugin, `fsdp_version: 2`, the model is sharded with
`pvt_hf.fully_shard_pvt`; checkpoints hold the sharded state as accelerate's `save_state` writes it, the final
OUTPUT_DIR the full state dict, which `from_pretrained` loads). accelerate runs FSDP on GPUs only.

Resume an interrupted run (model, optimizer, scheduler, RNG states and the position in the data are restored):

    accelerate launch examples/finetune_ade20k.py ...same arguments... --resume_from_checkpoint latest

Checkpoints (`--checkpointing_steps`) are written to a hidden staging folder, completed with `training_state.json`
(the step and every file's size) and only then renamed to OUTPUT_DIR/step_N; `latest` takes the newest checkpoint
whose files are all there (and says which, and why any newer one was skipped); a named incomplete checkpoint is an
error that lists what is missing. Resuming checks `training_state.json` against the checkpoint (a whole-number step
that the saved scheduler state confirms) and refuses random states that cannot be read (the run would not continue
exactly) unless `--allow_inexact_resume`. (accelerate's `ProjectConfiguration(automatic_checkpoint_naming=True,
total_limit=N)` is not used: it writes `checkpoints/checkpoint_K` in place, without the staging and completion marker.)

A first run on the CPU, on `examples/make_shapes_dataset.py`'s data (background, circle, rectangle, triangle) with
128-pixel crops, is in that script's docstring and in docs/training.md; the loss is logged at step 1, then every
`--logging_steps`. `--output_dir` may not be, contain or lie inside an input (model, backbone, data); a run that
fails before writing anything leaves no empty `--output_dir`.

`--model_name_or_path` is a converted pvt-hf folder or Hub id (e.g. an ADE20K Semantic FPN model to fine-tune),
or a preset name (`pvt-v2-b0` ... `pvt-v2-b5`, `pvt-tiny` ...) for a new model; `--backbone_name_or_path` then loads
ImageNet classifier weights into its encoder. The final model, its image processor and `all_results.json` are
written to `--output_dir`; `AutoModelForSemanticSegmentation.from_pretrained(output_dir)` loads it (after
`import pvt_hf`).

`--decode_head` picks the segmentation head: `semantic-fpn` (default: the official PVT recipe,
`PvtForSemanticSegmentation`) or `upernet` (transformers' `UperNetForSemanticSegmentation` with a PVT backbone, PSP +
FPN head and an auxiliary FCN head on stage 3, `--head_config_overrides '{"hidden_size": 512}'` for its
UperNetConfig fields). With `upernet`, `--model_name_or_path` is a preset (new model), a saved UperNet model (to
fine-tune), or a pvt-hf PVT folder (a new UperNet on its encoder weights, as `--backbone_name_or_path`); the same
data pipeline, optimiser, schedule, checkpoints and evaluation apply.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForSemanticSegmentation, get_polynomial_decay_schedule_with_warmup

import pvt_hf  # noqa: F401  (registers the PVT classes with the Auto classes)
from pvt_hf import PRESETS, PvtConfig, PvtForSemanticSegmentation, PvtImageProcessor, match_gradient_layout
from pvt_hf.tools.composites import composite_config, load_pretrained_backbone, pvt_backbones
from pvt_hf.tools.evaluation import Ade20kSource, Subset, rgb_image
from pvt_hf.tools.io_utils import check_model_argument, refuse_output_over_arguments, remove_if_left_empty
from pvt_hf.tools.metrics import MeanIoU


logger = get_logger(__name__)

IGNORE_INDEX = 255
CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
CHECKPOINT_MARKER = "training_state.json"  # written last into a checkpoint: the step and the size of every file


# ----------------------------------------------------------------------------------------------------- arguments
class PeakMemory:
    """The training loop's peak memory: on CUDA the allocator's peak; on the CPU (Linux) the process's resident
    high-water mark, reset when training starts (/proc/self/clear_refs). `above_start` leaves out what was there when
    training started (the model, the data in memory): gradients, optimizer state and activations."""

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:  # not Linux, or not allowed: the high-water mark since the process started
                pass
            self.start = self._status_bytes("VmRSS")

    @staticmethod
    def _status_bytes(field: str) -> int | None:
        try:
            match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
        except OSError:
            return None
        return int(match.group(1)) * 1024 if match else None

    def peak(self) -> int | None:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        return self._status_bytes("VmHWM")

    def summary(self) -> dict[str, float]:
        peak = self.peak()
        if peak is None:
            return {}
        result = {"peak_memory_gb": round(peak / 2**30, 3)}
        if self.start is not None:
            result["peak_memory_above_start_gb"] = round(max(peak - self.start, 0) / 2**30, 3)
        return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train or fine-tune a PVT Semantic FPN model on ADE20K-style data (official recipe by default).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_dir",
        help="an ADEChallengeData2016 folder: images/{training,validation}/*.jpg and annotations/{training,validation}/*.png",
    )
    data.add_argument(
        "--dataset_name",
        help="a Hub dataset (or a local `datasets` folder, e.g. saved with save_to_disk) with image and annotation columns",
    )
    data.add_argument("--dataset_config_name", help="the dataset's configuration name")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="annotation")
    data.add_argument(
        "--train_split", default=None, help="default: 'training' with --data_dir, 'train' with --dataset_name"
    )
    data.add_argument("--validation_split", default=None, help="default: 'validation'")
    data.add_argument(
        "--id2label",
        help="JSON file {id: name} of the (reduced) classes; default: DATA_DIR/id2label.json if present, else the model's labels, else the 150 ADE20K classes",
    )
    data.add_argument(
        "--reduce_labels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ADE20K's reduce_zero_label: annotation 0 is ignored, k becomes k-1",
    )
    data.add_argument("--max_train_samples", type=int)
    data.add_argument("--max_eval_samples", type=int)

    model = parser.add_argument_group("model")
    model.add_argument(
        "--model_name_or_path",
        help=f"a pvt-hf folder or Hub id, or a preset name for a new model ({', '.join(PRESETS)})",
    )
    model.add_argument(
        "--backbone_name_or_path",
        help="a pvt-hf ImageNet classifier (folder or Hub id) whose encoder weights initialise a new model",
    )
    model.add_argument(
        "--config_overrides",
        type=json.loads,
        default=None,
        help="JSON of PvtConfig fields for a new model, e.g. '{\"neck_hidden_size\": 64}'",
    )
    model.add_argument(
        "--decode_head",
        choices=["semantic-fpn", "upernet"],
        default="semantic-fpn",
        help="semantic-fpn: PvtForSemanticSegmentation (the official PVT recipe); upernet: transformers' UperNetForSemanticSegmentation with a PVT backbone",
    )
    model.add_argument(
        "--head_config_overrides",
        type=json.loads,
        default=None,
        help='with --decode_head upernet: JSON of UperNetConfig fields for a new model, e.g. \'{"hidden_size": 256, "auxiliary_channels": 128}\'',
    )
    model.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="recompute the encoder's activations in the backward pass (less memory)",
    )
    model.add_argument(
        "--lean_training",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PVT's memory-lean training path (config.lean_training; about half the activation memory, the same gradients); --no-lean_training runs the plain modules",
    )
    model.add_argument("--torch_compile", action="store_true", help="torch.compile the training model (inductor)")

    aug = parser.add_argument_group("training pipeline")
    aug.add_argument("--crop_size", type=int, nargs="+", default=[512], help="random crop: SIZE or HEIGHT WIDTH")
    aug.add_argument(
        "--resize_scale",
        type=int,
        nargs=2,
        default=[2048, 512],
        metavar=("LONG", "SHORT"),
        help="random rescale: the image fits LONG x SHORT times the ratio",
    )
    aug.add_argument("--ratio_range", type=float, nargs=2, default=[0.5, 2.0], metavar=("MIN", "MAX"))
    aug.add_argument(
        "--cat_max_ratio",
        type=float,
        default=0.75,
        help="a crop's largest class may cover at most this share of its labelled pixels (10 tries); 1 disables",
    )
    aug.add_argument("--hflip_prob", type=float, default=0.5)
    aug.add_argument("--photometric_distortion", action=argparse.BooleanOptionalAction, default=True)

    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval_short_side", type=int, default=512, help="test-time short side (official: 512)")
    ev.add_argument(
        "--eval_long_side",
        type=int,
        default=None,
        help="test-time long-side cap (default: 4 x eval_short_side = 2048)",
    )
    ev.add_argument("--size_divisor", type=int, default=32, help="test-time sides are rounded up to a multiple of it")
    ev.add_argument(
        "--eval_steps", type=int, default=None, help="evaluate every N optimizer steps (and always at the end)"
    )
    ev.add_argument("--do_eval", action=argparse.BooleanOptionalAction, default=True, help="the final evaluation")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--learning_rate", type=float, default=2e-4)
    opt.add_argument("--weight_decay", type=float, default=1e-4)
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument("--poly_power", type=float, default=0.9)
    opt.add_argument("--min_learning_rate", type=float, default=0.0)
    opt.add_argument("--warmup_steps", type=int, default=0)
    opt.add_argument("--max_grad_norm", type=float, default=None, help="clip gradients (the official recipe does not)")
    opt.add_argument("--max_train_steps", type=int, default=40000, help="optimizer steps (official: 40k)")
    opt.add_argument("--per_device_train_batch_size", type=int, default=4)
    opt.add_argument("--gradient_accumulation_steps", type=int, default=1)

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="data-loading processes per training process (default: min(4, CPUs per process))",
    )
    run.add_argument(
        "--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="default: accelerate's configuration"
    )
    run.add_argument(
        "--checkpointing_steps",
        type=int,
        default=None,
        help="save a resumable checkpoint (OUTPUT_DIR/step_N) every N steps",
    )
    run.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep only the newest N checkpoints")
    run.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="a checkpoint folder, or 'latest' (the newest in OUTPUT_DIR; a fresh start if there is none)",
    )
    run.add_argument(
        "--allow_inexact_resume",
        action="store_true",
        help="resume even when the checkpoint's random states cannot be read (the run then no longer continues exactly)",
    )
    run.add_argument(
        "--logging_steps", type=int, default=50, help="log the loss at the first step, then every N steps"
    )
    run.add_argument(
        "--report_to", default="none", help="trackers: none, all, or a comma-separated list (tensorboard, wandb, ...)"
    )
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None, help="default: the name of OUTPUT_DIR")
    run.add_argument("--hub_private_repo", action="store_true")
    args = parser.parse_args(argv)

    if not args.data_dir and not args.dataset_name:
        parser.error("give --data_dir (an ADEChallengeData2016 folder) or --dataset_name")
    if args.data_dir and args.dataset_name:
        parser.error("give only one of --data_dir and --dataset_name")
    if not args.model_name_or_path and not args.backbone_name_or_path:
        parser.error("give --model_name_or_path (a pvt-hf folder, Hub id or preset name) or --backbone_name_or_path")
    try:  # before any work: a mistyped local folder, an output that would replace an input
        for name in ("model_name_or_path", "backbone_name_or_path"):
            if getattr(args, name) not in PRESETS:
                check_model_argument(getattr(args, name), f"--{name}")
        inputs = ("model_name_or_path", "backbone_name_or_path", "data_dir", "dataset_name")
        refuse_output_over_arguments(
            args.output_dir, "--output_dir", {f"--{name}": getattr(args, name) for name in inputs}
        )
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if args.head_config_overrides and args.decode_head != "upernet":
        parser.error("--head_config_overrides sets UperNetConfig fields: it needs --decode_head upernet")
    if len(args.crop_size) not in (1, 2):
        parser.error("--crop_size takes SIZE or HEIGHT WIDTH")
    args.crop_size = tuple(args.crop_size * 2 if len(args.crop_size) == 1 else args.crop_size)
    if args.eval_long_side is None:
        args.eval_long_side = 4 * args.eval_short_side
    for name in (
        "max_train_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "eval_short_side",
        "size_divisor",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("checkpointing_steps", "eval_steps", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.push_to_hub:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            parser.error(
                "--push_to_hub needs the Hugging Face Hub, but offline mode is on (HF_HUB_OFFLINE=1); "
                "train without --push_to_hub and upload OUTPUT_DIR later (`pvt-hf`/huggingface-cli upload)"
            )
    return args


# ---------------------------------------------------------------------------------------------------------- data
class HubSource:
    """Rows of a `datasets` split with an image column and an annotation (label map) column; a row that holds no
    image or no map of class ids is an error naming the row and the column."""

    def __init__(self, dataset, image_column: str, label_column: str, what: str = "the dataset"):
        for column in (image_column, label_column):
            if column not in dataset.column_names:
                raise ValueError(
                    f"{what} has no column {column!r} (columns: {dataset.column_names}); see --image_column/--label_column"
                )
        if len(dataset) == 0:
            raise ValueError(f"{what} has no rows")
        self.dataset, self.image_column, self.label_column, self.what = dataset, image_column, label_column, what

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        try:  # the Image feature decodes the files when the row is read
            row = self.dataset[index]
        except (OSError, SyntaxError, ValueError) as error:
            raise OSError(f"cannot read row {index} of {self.what} ({self.describe(index)}): {error}") from error
        image, label = row[self.image_column], row[self.label_column]
        for column, value in ((self.image_column, image), (self.label_column, label)):
            if value is None or isinstance(value, str):
                hint = (
                    " (cast the column to datasets.Image() to read the files it names)"
                    if isinstance(value, str)
                    else ""
                )
                raise ValueError(f"row {index} of {self.what}: column {column!r} holds {value!r}, not an image{hint}")
        image = rgb_image(
            image if isinstance(image, Image.Image) else np.asarray(image),
            f"row {index}, column {self.image_column!r}",
        )
        label_map = np.array(label)
        if label_map.ndim != 2 or label_map.dtype.kind not in "iu":
            raise ValueError(
                f"row {index} of {self.what}: column {self.label_column!r} is not a map of class ids (an array of shape "
                f"{label_map.shape} and dtype {label_map.dtype}; expected a single-channel integer image, e.g. a mode L PNG)"
            )
        if label_map.shape != (image.height, image.width):
            raise ValueError(
                f"row {index} of {self.what}: the annotation is {label_map.shape[1]}x{label_map.shape[0]}, the image {image.width}x{image.height}"
            )
        return image, label_map

    def describe(self, index: int) -> str:
        """The files of a row, as far as the dataset stores them (for error messages)."""
        import datasets

        files = []
        for column in (self.image_column, self.label_column):
            try:
                raw = self.dataset.cast_column(column, datasets.Image(decode=False))[index][column]
                files.append(f"{column}: {raw.get('path') or 'bytes in the dataset'}")
            except Exception:  # not an Image column
                files.append(f"column {column}")
        return ", ".join(files)


def load_sources(args) -> tuple:
    """(train source, validation source) from --data_dir or --dataset_name."""
    if args.data_dir:
        train = Ade20kSource(args.data_dir, args.train_split or "training")
        validation = Ade20kSource(args.data_dir, args.validation_split or "validation")
    else:
        import datasets  # only needed for --dataset_name

        if Path(args.dataset_name, "dataset_dict.json").is_file():
            splits = datasets.load_from_disk(args.dataset_name)
        else:
            splits = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
        train_split, validation_split = args.train_split or "train", args.validation_split or "validation"
        for split in (train_split, validation_split):
            if split not in splits:
                raise ValueError(
                    f"the dataset has no split {split!r} (splits: {list(splits)}); see --train_split/--validation_split"
                )
        train, validation = (
            HubSource(
                splits[split],
                args.image_column,
                args.label_column,
                f"split {split!r} of --dataset_name {args.dataset_name}",
            )
            for split in (train_split, validation_split)
        )
    if args.max_train_samples:
        train = Subset(train, args.max_train_samples)
    if args.max_eval_samples:
        validation = Subset(validation, args.max_eval_samples)
    return train, validation


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 -> 255 (ignored), k -> k - 1, 255 stays 255."""
    label = label.astype(np.int64)
    reduced = label - 1
    reduced[(label == 0) | (label == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg PhotoMetricDistortion on an RGB uint8 array: brightness (+-32), contrast (0.5-1.5) before or after
    saturation (0.5-1.5) and hue (+-18 of OpenCV's 180 degrees), each with probability 0.5."""

    def convert(array, alpha=1.0, beta=0.0):
        return np.clip(array.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.integers(2):
        image = convert(image, beta=rng.uniform(-32, 32))
    contrast_first = rng.integers(2)
    if contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(0.5, 1.5))
    do_saturation, do_hue = rng.integers(2), rng.integers(2)
    saturation, hue = rng.uniform(0.5, 1.5), int(rng.integers(-18, 19))
    if do_saturation or do_hue:
        hsv = np.array(Image.fromarray(image).convert("HSV"))
        if do_saturation:
            hsv[..., 1] = convert(hsv[..., 1], alpha=saturation)
        if do_hue:  # PIL's hue spans 0-255 for 360 degrees; OpenCV's 0-180
            hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + round(hue * 256 / 180)) % 256).astype(np.uint8)
        image = np.array(Image.fromarray(hsv, "HSV").convert("RGB"))
    if not contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(0.5, 1.5))
    return image


def normalize(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """RGB uint8 HxWx3 -> normalised float32 3xHxW (mean and std in 0-255 units)."""
    return torch.from_numpy(((image.astype(np.float32) - mean) / std).transpose(2, 0, 1).copy())


class TrainDataset(torch.utils.data.Dataset):
    """The official training pipeline. Items are `(index, epoch)` keys: the augmentation of a sample is drawn from a
    generator seeded with (seed, epoch, index), so it is the same whatever the worker, process or resumption."""

    def __init__(self, source, args):
        self.source, self.seed, self.reduce_labels = source, args.seed, args.reduce_labels
        self.crop_h, self.crop_w = args.crop_size
        self.scale_long, self.scale_short = args.resize_scale
        self.ratio_range, self.cat_max_ratio = args.ratio_range, args.cat_max_ratio
        self.hflip_prob, self.photometric = args.hflip_prob, args.photometric_distortion
        processor = eval_processor(args)  # the normalisation of the test transform
        self.mean = np.array(processor.image_mean, np.float32) * 255
        self.std = np.array(processor.image_std, np.float32) * 255

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key) -> dict:
        index, epoch = key
        rng = np.random.default_rng([self.seed, epoch, index])
        image, label = self.source.load(index)
        label = reduce_zero_label(label) if self.reduce_labels else label.astype(np.int64)
        # Random rescale (mmseg Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)).
        ratio = rng.uniform(*self.ratio_range)
        long_target, short_target = self.scale_long * ratio, self.scale_short * ratio
        scale = min(long_target / max(image.size), short_target / min(image.size))
        width, height = max(1, int(image.width * scale + 0.5)), max(1, int(image.height * scale + 0.5))
        image = np.asarray(image.resize((width, height), Image.BILINEAR))
        label = np.asarray(Image.fromarray(label.astype(np.uint8)).resize((width, height), Image.NEAREST)).astype(
            np.int64
        )

        # Random crop, retried (10 times) while one class covers more than cat_max_ratio of the labelled pixels.
        def crop_box():
            top = int(rng.integers(0, max(height - self.crop_h, 0) + 1))
            left = int(rng.integers(0, max(width - self.crop_w, 0) + 1))
            return top, left

        top, left = crop_box()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                crop = label[top : top + self.crop_h, left : left + self.crop_w]
                classes, counts = np.unique(crop, return_counts=True)
                counts = counts[classes != IGNORE_INDEX]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, left = crop_box()
        image = image[top : top + self.crop_h, left : left + self.crop_w]
        label = label[top : top + self.crop_h, left : left + self.crop_w]
        if rng.random() < self.hflip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.photometric:
            image = photometric_distortion(np.ascontiguousarray(image), rng)
        pixel_values = normalize(image, self.mean, self.std)
        labels = torch.from_numpy(np.ascontiguousarray(label))
        # Pad to the crop size (image with 0, labels with the ignore index).
        pad_h, pad_w = self.crop_h - labels.shape[0], self.crop_w - labels.shape[1]
        if pad_h or pad_w:
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h), value=0.0)
            labels = F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        return {"pixel_values": pixel_values, "labels": labels}


class EpochShuffleSampler(torch.utils.data.Sampler):
    """Yields `(index, epoch)` keys in an order drawn from (seed, epoch): the same on every process (each takes its
    own share of the batches) and after resuming. `epoch` is set by the training loop."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        epoch = self.epoch
        for index in torch.randperm(self.length, generator=generator).tolist():
            yield index, epoch


def eval_processor(args) -> PvtImageProcessor:
    """The test transform, the one saved with the model: the official ADE20K one (short side 512, long side at most
    2048, aspect ratio kept, both sides rounded up to a multiple of 32, bilinear) with this run's sizes."""
    return PvtImageProcessor.for_semantic_segmentation(
        size={"shortest_edge": args.eval_short_side, "longest_edge": args.eval_long_side},
        size_divisor=args.size_divisor,
        do_reduce_labels=args.reduce_labels,
    )


class EvalDataset(torch.utils.data.Dataset):
    """Whole images through the image processor, with their annotation at the original size (the logits are resized
    to it; the metric reduces the labels)."""

    def __init__(self, source, indices: list[int], processor: PvtImageProcessor):
        self.source, self.indices, self.processor = source, indices, processor

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict:
        image, label = self.source.load(self.indices[position])
        pixel_values = self.processor(image, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.from_numpy(label.astype(np.int64))[None]}


def resolve_labels(args, source_labels_hint) -> dict[int, str] | None:
    """id2label of the (reduced) classes: --id2label, DATA_DIR/id2label.json, or None (decided by the model)."""
    path = args.id2label or (Path(args.data_dir, "id2label.json") if args.data_dir else None)
    if path and Path(path).is_file():
        return {int(k): str(v) for k, v in json.loads(Path(path).read_text()).items()}
    if args.id2label:
        raise FileNotFoundError(f"--id2label {args.id2label}: no such file")
    return source_labels_hint


# --------------------------------------------------------------------------------------------------------- model
def init_new_classifier(model) -> None:
    """mmseg's initialisation of a new decode head's classifier (`conv_seg`, and the auxiliary head's): normal, std
    0.01, zero bias, so that a new head starts with near-uniform predictions."""
    for head in (model.decode_head, getattr(model, "auxiliary_head", None)):
        if head is not None:
            torch.nn.init.normal_(head.classifier.weight, std=0.01)
            torch.nn.init.zeros_(head.classifier.bias)


def ade20k_labels(id2label: dict[int, str] | None) -> dict[int, str]:
    if id2label is None:
        from pvt_hf.tools.conversion import load_label_names

        id2label = dict(enumerate(load_label_names("ade20k")))
    return id2label


def build_upernet(args, id2label: dict[int, str] | None):
    """--decode_head upernet: a new UperNet on a PVT backbone (preset, or a pvt-hf folder whose encoder weights are
    loaded), or a saved UperNet model to fine-tune (a new classifier when the classes differ)."""
    from transformers import UperNetForSemanticSegmentation

    overrides, head_overrides = dict(args.config_overrides or {}), dict(args.head_config_overrides or {})
    source = args.model_name_or_path
    if source is not None and source not in PRESETS:
        config = AutoConfig.from_pretrained(source)
        if config.model_type == "upernet":
            new_head = id2label is not None and {int(k): v for k, v in config.id2label.items()} != id2label
            if new_head:
                config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
            model = UperNetForSemanticSegmentation.from_pretrained(source, config=config, ignore_mismatched_sizes=True)
            if new_head:
                init_new_classifier(model)
            return model, {int(k): v for k, v in model.config.id2label.items()}
        if config.model_type != PvtConfig.model_type:
            raise ValueError(
                f"--model_name_or_path {source} is a {config.model_type!r} model: --decode_head upernet takes a preset, a pvt-hf PVT folder or an UperNet model"
            )
        if args.backbone_name_or_path:
            raise ValueError(
                f"--model_name_or_path {source} is a PVT model, whose encoder becomes the backbone: leave out --backbone_name_or_path {args.backbone_name_or_path}"
            )
    id2label = ade20k_labels(id2label)
    architecture = source if source is not None else args.backbone_name_or_path
    weights = args.backbone_name_or_path or (source if source not in PRESETS else None)
    config = composite_config(
        "upernet",
        architecture,
        backbone_overrides=overrides,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        loss_ignore_index=IGNORE_INDEX,
        **head_overrides,
    )
    model = UperNetForSemanticSegmentation(config)
    if weights:
        try:
            load_pretrained_backbone(model, weights)
        except ValueError as error:
            raise ValueError(f"--backbone_name_or_path {weights}: {error}") from error
    init_new_classifier(model)
    return model, id2label


def build_model(args, id2label: dict[int, str] | None):
    """The model to train and its final id2label; a new classifier is initialised as mmseg does."""
    if args.decode_head == "upernet":
        return build_upernet(args, id2label)
    overrides = dict(args.config_overrides or {})
    if args.model_name_or_path in PRESETS or (args.model_name_or_path is None and args.backbone_name_or_path):
        id2label = ade20k_labels(id2label)
        label_kwargs = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
        if args.backbone_name_or_path:
            model = PvtForSemanticSegmentation.from_pretrained(
                args.backbone_name_or_path, ignore_mismatched_sizes=True, **label_kwargs, **overrides
            )
            if args.model_name_or_path in PRESETS:
                expected = PvtConfig.from_preset(args.model_name_or_path)
                if (
                    list(model.config.hidden_sizes) != expected.hidden_sizes
                    or list(model.config.depths) != expected.depths
                ):
                    raise ValueError(
                        f"--backbone_name_or_path {args.backbone_name_or_path} is not a {args.model_name_or_path}"
                    )
        else:
            model = PvtForSemanticSegmentation(
                PvtConfig.from_preset(args.model_name_or_path, **label_kwargs, **overrides)
            )
        init_new_classifier(model)
        return model, id2label
    # A pvt-hf folder or Hub id: keep its head if the classes are the same, else a new classifier.
    config = AutoConfig.from_pretrained(args.model_name_or_path, **overrides)
    if config.model_type == "upernet":
        raise ValueError(
            f"--model_name_or_path {args.model_name_or_path} is an UperNet model: pass --decode_head upernet"
        )
    new_head = id2label is not None and {int(k): v for k, v in config.id2label.items()} != id2label
    if new_head:
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    model = AutoModelForSemanticSegmentation.from_pretrained(
        args.model_name_or_path, config=config, ignore_mismatched_sizes=True
    )
    if new_head:
        init_new_classifier(model)
    return model, {int(k): v for k, v in model.config.id2label.items()}


# -------------------------------------------------------------------------------------------------- checkpoints
def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """The step_N folders in output_dir (complete or not), oldest first."""
    found = []
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    return sorted(found)


def checkpoint_problems(path: Path) -> list[str]:
    """What keeps `path` from being a complete checkpoint (nothing when it is one): no completion marker, or a file
    that the marker lists missing or of another size than was written."""
    marker = path / CHECKPOINT_MARKER
    if not marker.is_file():
        return [f"{CHECKPOINT_MARKER} is missing (written last: the save did not finish)"]
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        return [f"{CHECKPOINT_MARKER} is unreadable or lists no files ({error!r})"]
    problems = []
    for name, size in sorted(files.items()):
        file = path / name
        if not file.is_file():
            problems.append(f"{name} is missing")
        elif file.stat().st_size != size:
            problems.append(f"{name} has {file.stat().st_size} bytes, {size} were written")
    return problems


def save_checkpoint(
    accelerator: Accelerator, output_dir: Path, step: int, extra: dict, total_limit: int | None
) -> Path:
    """`accelerator.save_state` into a staging folder, completed with the marker (step, process count, every file's
    size), then renamed to OUTPUT_DIR/step_N."""
    final, staging = output_dir / f"step_{step}", output_dir / f".step_{step}.incomplete"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))  # every process writes its RNG states
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*")) if p.is_file()}
        state = {"step": step, **extra, "num_processes": accelerator.num_processes, "files": files}
        (staging / f"{CHECKPOINT_MARKER}.tmp").write_text(json.dumps(state, indent=1))
        os.replace(staging / f"{CHECKPOINT_MARKER}.tmp", staging / CHECKPOINT_MARKER)
        replaced = output_dir / f".step_{step}.replaced"
        if final.exists():  # e.g. a rerun of the same steps: the old one goes only once the new one is in place
            shutil.rmtree(replaced, ignore_errors=True)
            final.rename(replaced)
        staging.rename(final)
        shutil.rmtree(replaced, ignore_errors=True)
        if total_limit is not None:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_training_state(checkpoint: Path, allow_inexact: bool, num_processes: int) -> dict:
    """The checkpoint's training_state.json, checked against what the checkpoint holds: "step" a whole number that
    matches the scheduler's state (stepped once per process and optimizer step; fewer only when an fp16 loss scaler
    skipped steps); the random states of this run's processes readable, else an error (a warning with
    `allow_inexact`). Every process checks every file, so that all of them stop (or go on) together."""
    from accelerate.utils import load

    marker = checkpoint / CHECKPOINT_MARKER
    saved = json.loads(marker.read_text())
    step, processes = saved.get("step"), saved.get("num_processes", 1)
    for key, value, least in (("step", step, 0), ("num_processes", processes, 1)):
        if type(value) is not int or value < least:
            raise ValueError(
                f"--resume_from_checkpoint: {marker}: {key!r} is {value!r}; expected a whole number >= {least}"
            )
    scheduled = load(checkpoint / "scheduler.bin")["last_epoch"]
    if scheduled != step * processes and not ((checkpoint / "scaler.pt").is_file() and scheduled < step * processes):
        raise ValueError(
            f"--resume_from_checkpoint: {marker} says step {step} ({processes} processes), but the scheduler state "
            f"(scheduler.bin) was saved after {scheduled} scheduler steps ({scheduled / processes:g} optimizer steps): "
            "the state file does not belong to this checkpoint"
        )
    for process_index in range(num_processes):
        random_states = checkpoint / f"random_states_{process_index}.pkl"
        if not random_states.is_file():  # resuming on more processes than saved it: warned about by the caller
            continue
        try:
            load(random_states)
        except Exception as error:  # whatever torch.load raises on a damaged pickle
            message = (
                f"--resume_from_checkpoint: {random_states} cannot be read ({type(error).__name__}: {error}); the random "
                "states (augmentation, dropout) cannot be restored, so the run would not continue as the interrupted one"
            )
            if not allow_inexact:
                raise ValueError(f"{message}. Pass --allow_inexact_resume to resume anyway.") from error
            logger.warning(f"{'!' * 20} INEXACT RESUME (--allow_inexact_resume): {message} {'!' * 20}")
    return saved


def find_checkpoint(value: str, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: `latest` = the newest complete step_N in output_dir (None if there is none; an
    incomplete newer one is skipped with a warning), else the named folder, which must be complete."""
    if value == "latest":
        for _, path in reversed(list_checkpoints(output_dir)):
            problems = checkpoint_problems(path)
            if not problems:
                logger.info(f"--resume_from_checkpoint latest: {path} is the newest complete checkpoint")
                return path
            logger.warning(
                f"--resume_from_checkpoint latest: skipping {path}, it is incomplete: {'; '.join(problems)}"
            )
        return None
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such directory")
    problems = checkpoint_problems(path)
    if problems:
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: not a complete checkpoint: {'; '.join(problems)}")
    return path


# ------------------------------------------------------------------------------------------------------ sharding
def shard_under_fsdp(accelerator: Accelerator, model):
    """Under accelerate's FSDP plugin (`accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml`):
    the model sharded with `pvt_hf.fully_shard_pvt` (each PvtLayer a unit, the heads' BatchNorms in float32 under a
    bf16 policy), with the plugin's mixed precision policy and `reshard_after_forward`. Done before the optimizer is
    created, so that it holds the sharded parameters; accelerate's prepare leaves a sharded model as it is. Without
    the plugin (one process, DDP, or the CPU, where accelerate drops it): the model unchanged."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)  # set only under FSDP
    if plugin is None:
        return model
    if plugin.fsdp_version != 2:
        raise ValueError(
            f"accelerate's FSDP plugin has fsdp_version {plugin.fsdp_version}; this script shards with FSDP2: set "
            "`fsdp_version: 2` in the accelerate config (examples/accelerate_configs/fsdp2.yaml)"
        )
    model.to(accelerator.device)
    return pvt_hf.fully_shard_pvt(
        model, mp_policy=plugin.mixed_precision_policy, reshard_after_forward=plugin.reshard_after_forward
    )


def process_share(num_items: int, process_index: int, num_processes: int) -> tuple[list[int], int]:
    """This process's indices of `num_items` items (every `num_processes`-th) and how many of them count: the list is
    padded with repeats of item 0 to the same length on every process, so that all of them run the same number of
    forward passes (a sharded model gathers its parameters with all processes together)."""
    indices = list(range(process_index, num_items, num_processes))
    counted = len(indices)
    return indices + [0] * (math.ceil(num_items / num_processes) - counted), counted


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, accelerator: Accelerator, source, args, num_labels: int, num_workers: int) -> dict:
    """Whole-image inference on this process's share of the images; the confusion matrices are summed over all
    processes. Returns mean_iou, mean_accuracy, overall_accuracy, per_category_iou/accuracy."""
    was_training = model.training
    model.eval()
    indices, counted = process_share(len(source), accelerator.process_index, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(
        EvalDataset(source, indices, eval_processor(args)), batch_size=None, num_workers=num_workers
    )
    metric = MeanIoU(
        num_labels, ignore_index=IGNORE_INDEX, reduce_labels=args.reduce_labels, device=accelerator.device
    )
    batches = tqdm(loader, desc="evaluating", disable=not accelerator.is_local_main_process, leave=False)
    for position, batch in enumerate(batches):
        pixel_values = batch["pixel_values"].to(accelerator.device)
        with accelerator.autocast():
            logits = model(pixel_values=pixel_values).logits
        if position < counted:  # the padding only keeps the processes in step
            metric.update(logits.float(), batch["labels"].to(accelerator.device))
    model.train(was_training)
    return metric.sync(accelerator).compute()


def summarize(scores: dict, id2label: dict[int, str]) -> dict:
    def number(value):
        value = float(value)
        return None if math.isnan(value) else value

    return {
        "mean_iou": number(scores["mean_iou"]),
        "mean_accuracy": number(scores["mean_accuracy"]),
        "overall_accuracy": number(scores["overall_accuracy"]),
        "per_category_iou": {id2label.get(i, str(i)): number(v) for i, v in enumerate(scores["per_category_iou"])},
    }


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with remove_if_left_empty(args.output_dir):  # a run that fails before writing anything leaves no empty folder
        return train(args)


def train(args: argparse.Namespace) -> dict:
    output_dir = Path(args.output_dir)
    report_to = None if args.report_to == "none" else ("all" if args.report_to == "all" else args.report_to.split(","))
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=report_to,
        project_dir=str(output_dir),
        dynamo_backend="inductor" if args.torch_compile else None,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"started as {launched} processes (WORLD_SIZE={launched}), but accelerate found no GPU to run them together, so "
            "each would train alone; for DDP on the CPU set ACCELERATE_USE_CPU=1 "
            f"(ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node {launched} examples/finetune_ade20k.py ...)"
        )
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
    set_seed(args.seed)
    checkpoint, completed_steps = None, 0
    if args.resume_from_checkpoint:
        checkpoint = find_checkpoint(args.resume_from_checkpoint, output_dir)
        if checkpoint is None:
            logger.warning(
                f"--resume_from_checkpoint latest: no complete checkpoint in {output_dir}; starting from scratch"
            )
        else:
            saved = read_training_state(checkpoint, args.allow_inexact_resume, accelerator.num_processes)
            completed_steps = saved["step"]
            if completed_steps > args.max_train_steps:
                raise ValueError(
                    f"--resume_from_checkpoint {args.resume_from_checkpoint}: {checkpoint} is at step {completed_steps}, "
                    f"past --max_train_steps {args.max_train_steps}: there is nothing to train (raise --max_train_steps "
                    "to continue the run, or resume from an earlier checkpoint)"
                )
            if completed_steps == args.max_train_steps:
                logger.warning(
                    f"--resume_from_checkpoint: {checkpoint} is already at --max_train_steps {args.max_train_steps}: "
                    "nothing is trained, the checkpoint's model is evaluated and saved"
                )
            if saved.get("num_processes", accelerator.num_processes) != accelerator.num_processes:
                logger.warning(
                    f"{checkpoint} was written by {saved['num_processes']} processes, this run has "
                    f"{accelerator.num_processes}: the data order and the random states differ from the interrupted run"
                )

    # Data.
    train_source, eval_source = load_sources(args)
    id2label = resolve_labels(args, None)
    model, id2label = build_model(args, id2label)
    num_labels = len(id2label)
    for config in {
        id(c): c for c in [model.config, *(b.config for b in pvt_backbones(model))] if isinstance(c, PvtConfig)
    }.values():
        config.lean_training = args.lean_training
    if args.gradient_checkpointing:
        # UperNet does not support it itself: its PVT backbone (the bulk of the activations) is checkpointed alone.
        for module in [model] if model.supports_gradient_checkpointing else pvt_backbones(model):
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if accelerator.num_processes > 1 and accelerator.device.type != "cpu":
        # Statistics over the whole batch, as the official SyncBN (torch's SyncBatchNorm needs GPU-like devices).
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    match_gradient_layout(model)
    model = shard_under_fsdp(accelerator, model)
    if accelerator.is_main_process:  # only now: the data and the model are good
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    num_workers = args.num_workers
    if num_workers is None:  # leave a core per training process on the machine
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        num_workers = max(0, min(4, (os.cpu_count() or 1) // max(1, local_processes) - 1))
    sampler = EpochShuffleSampler(len(train_source), args.seed)
    batch_sampler = torch.utils.data.BatchSampler(sampler, args.per_device_train_batch_size, drop_last=True)
    if len(batch_sampler) < accelerator.num_processes:
        raise ValueError(
            f"{len(train_source)} training images give fewer than one batch of {args.per_device_train_batch_size} per process "
            f"({accelerator.num_processes} processes); lower --per_device_train_batch_size"
        )
    train_dataloader = torch.utils.data.DataLoader(
        TrainDataset(train_source, args),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=accelerator.device.type == "cuda",
        persistent_workers=num_workers > 0,
        # Its own generator for the workers' base seeds, so that creating an iterator (e.g. after resuming) does
        # not draw from the global RNG that dropout uses.
        generator=torch.Generator().manual_seed(args.seed),
    )

    # Optimizer and the poly schedule (stepped once per process by accelerate, hence the factor).
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.weight_decay,
    )
    lr_scheduler = get_polynomial_decay_schedule_with_warmup(
        optimizer,
        num_warmup_steps=args.warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
        lr_end=args.min_learning_rate,
        power=args.poly_power,
    )
    raw_model = model
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler
    )
    num_update_steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    total_batch_size = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps

    if report_to is not None:
        accelerator.init_trackers("finetune_ade20k", config={k: str(v) for k, v in vars(args).items()})

    # Resume.
    starting_epoch, skip_batches = 0, 0
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        starting_epoch = completed_steps // num_update_steps_per_epoch
        skip_batches = (completed_steps % num_update_steps_per_epoch) * args.gradient_accumulation_steps
        # The learning rate of the (possibly longer) schedule of this run at the resumed step.
        schedule = lr_scheduler.scheduler
        for group, base_lr, fn in zip(optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas):
            group["lr"] = base_lr * fn(schedule.last_epoch)
        logger.info(
            f"Resumed from {checkpoint} at step {completed_steps} (epoch {starting_epoch}, batch {skip_batches})"
        )

    logger.info("***** Training *****")
    logger.info(
        f"  Training images = {len(train_source)}, validation images = {len(eval_source)}, classes = {num_labels}"
    )
    logger.info(
        f"  Batch size per device = {args.per_device_train_batch_size}, total (x processes x accumulation) = {total_batch_size}"
    )
    logger.info(
        f"  Optimizer steps = {args.max_train_steps} ({num_update_steps_per_epoch} per epoch), crop = {args.crop_size}"
    )
    if total_batch_size != 32:
        logger.info("  (the official recipe uses a total batch size of 32)")

    progress = tqdm(
        range(args.max_train_steps), initial=completed_steps, disable=not accelerator.is_local_main_process
    )
    running_loss, running_count, train_time, images_seen = 0.0, 0, 0.0, 0
    history, last_scores, last_loss, step_times = [], None, None, []
    logged = False  # the loss of the first step is always shown, then every --logging_steps
    model.train()
    step_start = time.perf_counter()
    peak_memory = PeakMemory(accelerator.device)
    for epoch in range(starting_epoch, num_epochs):
        if completed_steps >= args.max_train_steps:
            break
        sampler.epoch = epoch
        active_dataloader = train_dataloader
        if epoch == starting_epoch and skip_batches:
            active_dataloader = accelerator.skip_first_batches(train_dataloader, skip_batches)
        for batch in active_dataloader:
            with accelerator.accumulate(model):
                outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
                loss = outputs.loss
                if not torch.isfinite(loss):  # every pixel of the batch ignored: nothing to learn, keep the graph
                    loss = outputs.logits.sum() * 0.0
                else:
                    running_loss += loss.detach().float()
                    running_count += 1
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            images_seen += batch["pixel_values"].shape[0] * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            completed_steps += 1
            progress.update(1)
            if not logged or completed_steps % args.logging_steps == 0 or completed_steps == args.max_train_steps:
                logged = True
                # The mean loss of the batches that had labelled pixels, over all processes.
                totals = accelerator.reduce(
                    torch.tensor([float(running_loss), running_count], device=accelerator.device), reduction="sum"
                )
                mean_loss = (totals[0] / totals[1].clamp(min=1)).item()
                last_loss = mean_loss
                running_loss, running_count = 0.0, 0
                lr = lr_scheduler.get_last_lr()[0]
                progress.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
                if report_to is not None:
                    accelerator.log({"train/loss": mean_loss, "train/learning_rate": lr}, step=completed_steps)
                memory = peak_memory.summary()
                memory_text = f", peak memory {memory['peak_memory_gb']:.3f} GiB" if memory else ""
                if "peak_memory_above_start_gb" in memory:
                    memory_text += f" ({memory['peak_memory_above_start_gb']:.3f} GiB above the start of training)"
                logger.info(f"step {completed_steps}: loss {mean_loss:.4f}, lr {lr:.3e}{memory_text}")
            train_time += time.perf_counter() - step_start
            step_times.append((train_time, images_seen))
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                path = save_checkpoint(
                    accelerator, output_dir, completed_steps, {"epoch": epoch}, args.checkpoints_total_limit
                )
                logger.info(f"Saved checkpoint {path}")
            if args.eval_steps and completed_steps % args.eval_steps == 0 and completed_steps < args.max_train_steps:
                scores = summarize(
                    evaluate(raw_model, accelerator, eval_source, args, num_labels, num_workers), id2label
                )
                history.append(
                    {"step": completed_steps, **{k: v for k, v in scores.items() if k != "per_category_iou"}}
                )
                logger.info(
                    f"step {completed_steps}: mIoU {scores['mean_iou']:.4f}, mAcc {scores['mean_accuracy']:.4f}, aAcc {scores['overall_accuracy']:.4f}"
                )
                if report_to is not None:
                    accelerator.log(
                        {f"eval/{k}": v for k, v in history[-1].items() if k != "step"}, step=completed_steps
                    )
            step_start = time.perf_counter()
            if completed_steps >= args.max_train_steps:
                break
    progress.close()
    training_memory = peak_memory.summary()  # before the final evaluation

    results = {"step": completed_steps}
    if args.do_eval:
        eval_start = time.perf_counter()
        last_scores = summarize(evaluate(raw_model, accelerator, eval_source, args, num_labels, num_workers), id2label)
        results.update(last_scores)
        results["eval_runtime"] = round(time.perf_counter() - eval_start, 3)
        results["eval_samples"] = len(eval_source)
        logger.info(
            f"Final (step {completed_steps}): mIoU {last_scores['mean_iou']:.4f}, mAcc {last_scores['mean_accuracy']:.4f}, aAcc {last_scores['overall_accuracy']:.4f}"
        )
        if report_to is not None:
            accelerator.log(
                {f"eval/{k}": v for k, v in last_scores.items() if k != "per_category_iou"}, step=completed_steps
            )
    if last_loss is not None:
        results["train_loss"] = last_loss
    if train_time > 0:
        results["train_runtime"] = round(train_time, 3)
        results["train_samples_per_second"] = round(images_seen / train_time, 3)
    if len(step_times) >= 4:  # after the first quarter of the steps (start-up, torch.compile, cuDNN autotuning)
        (t0, n0), (t1, n1) = step_times[len(step_times) // 4], step_times[-1]
        if t1 > t0:
            results["train_samples_per_second_steady"] = round((n1 - n0) / (t1 - t0), 3)
    results.update(training_memory)
    results["lean_training"] = args.lean_training
    results["total_train_batch_size"] = total_batch_size
    results["num_processes"] = accelerator.num_processes
    if history:
        results["eval_history"] = history

    # The final model, written through a staging folder, then moved into OUTPUT_DIR.
    accelerator.wait_for_everyone()
    # Under FSDP every process takes part in gathering the full state dict (the main one receives it); otherwise the
    # unwrapped model saves its own (`get_state_dict` would keep a compiled model's `_orig_mod.` key prefix).
    sharded = getattr(accelerator.state, "fsdp_plugin", None) is not None
    state_dict = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model, keep_fp32_wrapper=False, keep_torch_compile=False)
        staging = output_dir / ".final.incomplete"
        shutil.rmtree(staging, ignore_errors=True)
        unwrapped.save_pretrained(staging, state_dict=state_dict)
        eval_processor(args).save_pretrained(staging)
        (staging / "all_results.json").write_text(json.dumps(results, indent=1))
        for path in sorted(staging.iterdir()):
            os.replace(path, output_dir / path.name)
        staging.rmdir()
        logger.info(f"Saved the model, its image processor and all_results.json to {output_dir}")
        if args.push_to_hub:
            from huggingface_hub import HfApi

            repo_id = args.hub_model_id or output_dir.absolute().name
            api = HfApi()
            api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True)
            api.upload_folder(
                folder_path=str(output_dir),
                repo_id=repo_id,
                commit_message=f"PVT Semantic FPN, step {completed_steps}",
                ignore_patterns=["step_*", "step_*/**", ".*", ".*/**"],
            )
            logger.info(f"Pushed {output_dir} to {repo_id}")
    accelerator.wait_for_everyone()
    # Tear down in order, on every process alike: the DDP wrapper (its gradient reducer) while the process group is
    # still up, then the trackers and the group. Left to interpreter exit, they die in any order and the exit may
    # hang or abort.
    del model, optimizer, train_dataloader, lr_scheduler
    accelerator.free_memory()
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
