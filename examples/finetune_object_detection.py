#!/usr/bin/env python
"""Train or fine-tune an object detector with a PVT backbone (RT-DETR or Deformable DETR) with the 🤗 Trainer.

Data: COCO-format annotation files with their image folders (`--train_annotations`, `--train_images`,
`--validation_annotations`, `--validation_images`), or a `datasets` dataset (`--dataset_name`: a Hub id, or a local
folder written by `save_to_disk`) with an image column and an `objects` column holding COCO `bbox` ([x, y, w, h] in
pixels) and `category` lists (the layout of e.g. cppe-5). `examples/make_shapes_detection_dataset.py` writes a small
COCO-format dataset to try it on.

    python examples/finetune_object_detection.py --architecture rt-detr --backbone_name_or_path ./pvt-v2-b0 \\
        --train_annotations ./coco/annotations/instances_train2017.json --train_images ./coco/train2017 \\
        --validation_annotations ./coco/annotations/instances_val2017.json --validation_images ./coco/val2017 \\
        --output_dir ./rt-detr-pvt-v2-b0 --do_train --do_eval --max_steps 90000 --learning_rate 1e-4 \\
        --per_device_train_batch_size 4 --eval_strategy steps --eval_steps 5000 --report_to none

The model: `--model_name_or_path` continues from a saved detector (a folder this script wrote, or any RT-DETR /
Deformable DETR folder or Hub id with a PVT backbone; a new class head when the classes differ); otherwise a new
`--architecture` (`rt-detr` | `deformable-detr`) detector whose PVT backbone is `--backbone_name_or_path`: a converted
pvt-hf folder or Hub id (classifier, backbone or Semantic FPN model: its encoder weights are loaded, exactly) or a
preset name (`pvt-v2-b0`, ...: random initialisation). `--config_overrides` sets fields of the detector's config
(`{"d_model": 128, "num_queries": 100}`), `--backbone_config_overrides` fields of the PvtConfig.

Training augmentation (each with its own argument): photometric distortion (brightness, contrast, saturation, hue),
a random crop (`--crop_prob`, area share `--min_crop_scale`..1; boxes are clipped to it and dropped when less than
`--min_box_visibility` of them stays in view or a side falls under 1 px), horizontal flip (boxes mirrored), and a
random resize: each batch goes through the image processor at `--image_size` times a factor drawn from
`--scale_range` (a multiple of 32). The evaluation transform is the image processor saved with the model
(RT-DETR: `image_size` x `image_size`; Deformable DETR: short side `image_size`, long side at most 1333/800 of it).

Evaluation: COCO box mAP with pycocotools' COCOeval (the reference implementation; torchmetrics' MeanAveragePrecision
wraps it but also requires torchvision) on the detections post-processed to the original image sizes.
`all_results.json` in OUTPUT_DIR holds `eval_map`, `eval_map_50`, `eval_map_75`, `eval_mar_100`, ... and
`num_processes`; `pipeline("object-detection", model=OUTPUT_DIR)` loads the result (after `import pvt_hf`).

Several processes: `accelerate launch --multi_gpu --num_processes N examples/finetune_object_detection.py ...` (or
torchrun) on GPUs; N gloo DDP processes on the CPU: `ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N
examples/finetune_object_detection.py ...`. `--save_steps K --save_strategy steps` writes OUTPUT_DIR/checkpoint-K;
`--resume_from_checkpoint latest` (or a path) continues from the newest complete one.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image, ImageEnhance
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForObjectDetection,
    DeformableDetrForObjectDetection,
    HfArgumentParser,
    RTDetrForObjectDetection,
    Trainer,
    TrainingArguments,
)
from transformers.utils import is_torchvision_available

import pvt_hf  # noqa: F401  (registers the PVT classes with the Auto classes)
from pvt_hf import PRESETS, match_gradient_layout
from pvt_hf.tools.composites import composite_config, load_pretrained_backbone
from pvt_hf.tools.evaluation import read_image, rgb_image
from pvt_hf.tools.io_utils import (
    check_model_argument,
    refuse_output_over_arguments,
    remove_if_left_empty,
    trainer_checkpoint,
)


logger = logging.getLogger(__name__)

ARCHITECTURES = {
    "rt-detr": ("rt_detr", RTDetrForObjectDetection),
    "deformable-detr": ("deformable_detr", DeformableDetrForObjectDetection),
}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "a saved detector (folder or Hub id) to continue from; default: a new --architecture detector"
        },
    )
    architecture: str = field(
        default="rt-detr", metadata={"help": "the detector of a new model", "choices": list(ARCHITECTURES)}
    )
    backbone_name_or_path: str = field(
        default="pvt-v2-b0",
        metadata={
            "help": f"a new detector's PVT backbone: a converted pvt-hf folder or Hub id (weights loaded), or a preset ({', '.join(PRESETS)}) for random initialisation"
        },
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": 'JSON of detector config fields, e.g. \'{"d_model": 128, "num_queries": 100}\''},
    )
    backbone_config_overrides: str | None = field(
        default=None, metadata={"help": "JSON of PvtConfig fields, e.g. '{\"drop_path_rate\": 0.1}'"}
    )

    def __post_init__(self):
        for name in ("model_name_or_path", "backbone_name_or_path"):
            if getattr(self, name) not in PRESETS:
                check_model_argument(getattr(self, name), f"--{name}")
        for name in ("config_overrides", "backbone_config_overrides"):
            value = getattr(self, name)
            if value:
                try:
                    parsed = json.loads(value)
                except json.JSONDecodeError as error:
                    raise ValueError(f"--{name}: not valid JSON ({error}): {value}") from error
                if not isinstance(parsed, dict):
                    raise ValueError(f"--{name}: expected a JSON object of config fields, got {value}")


@dataclass
class DataArguments:
    train_annotations: str | None = field(
        default=None, metadata={"help": "a COCO-format annotation file (json) of the training images"}
    )
    train_images: str | None = field(
        default=None, metadata={"help": "the folder of the training images (file_name is relative to it)"}
    )
    validation_annotations: str | None = field(default=None)
    validation_images: str | None = field(default=None)
    dataset_name: str | None = field(
        default=None, metadata={"help": "a Hub dataset, or a local `save_to_disk` folder"}
    )
    dataset_config_name: str | None = field(default=None)
    image_column_name: str = field(default="image")
    objects_column_name: str = field(
        default="objects", metadata={"help": "a column of {'bbox': [[x, y, w, h], ...], 'category': [...]}"}
    )
    train_split: str = field(default="train")
    validation_split: str | None = field(
        default=None, metadata={"help": "default: 'validation' (else 'test') if present"}
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "share of the training images held out when there is no validation data"}
    )
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "input size (default: the model's image processor's, or 640 for RT-DETR / 800 for Deformable DETR)"
        },
    )
    scale_range: list[float] = field(
        default_factory=lambda: [0.75, 1.25],
        metadata={"help": "training batches are resized to image_size times a factor in this range", "nargs": 2},
    )
    hflip_prob: float = field(default=0.5)
    crop_prob: float = field(default=0.5)
    min_crop_scale: float = field(default=0.3, metadata={"help": "a random crop's smallest area share"})
    min_box_visibility: float = field(
        default=0.3, metadata={"help": "a cropped box is kept if at least this share of it is in view"}
    )
    photometric_prob: float = field(
        default=0.5, metadata={"help": "chance of each photometric change (brightness, contrast, saturation, hue)"}
    )
    eval_threshold: float = field(
        default=0.0, metadata={"help": "score threshold of the detections evaluated (COCO: all, up to 100 per image)"}
    )

    def __post_init__(self):
        if self.dataset_name and (self.train_annotations or self.train_images):
            raise ValueError("give either --dataset_name or --train_annotations/--train_images, not both")
        if not self.dataset_name:
            if not self.train_annotations or not self.train_images:
                raise ValueError("give --train_annotations and --train_images (COCO format), or --dataset_name")
            if bool(self.validation_annotations) != bool(self.validation_images):
                raise ValueError("give both --validation_annotations and --validation_images, or neither")
            for name in ("train_annotations", "validation_annotations"):
                path = getattr(self, name)
                if path and not Path(path).is_file():
                    raise FileNotFoundError(f"--{name} {path}: no such file")
            for name in ("train_images", "validation_images"):
                path = getattr(self, name)
                if path and not Path(path).is_dir():
                    raise FileNotFoundError(f"--{name} {path}: no such folder")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"--scale_range must be 0 < MIN <= MAX, got {self.scale_range}")
        if not 0 < self.min_crop_scale <= 1:
            raise ValueError(f"--min_crop_scale must lie in (0, 1], got {self.min_crop_scale}")


# ---------------------------------------------------------------------------------------------------------- data
@dataclass
class Sample:
    """One image's ground truth: boxes [x, y, w, h] in pixels, class indices 0..K-1, COCO areas and crowd flags."""

    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray
    areas: np.ndarray
    crowd: np.ndarray


class CocoSource:
    """A COCO-format annotation file and its image folder. Category ids (any, e.g. COCO's 1..90 with gaps) map to
    class indices in the order of `category_ids` (default: this file's categories sorted by id)."""

    def __init__(self, annotation_file: str, image_dir: str, argument: str, category_ids: list[int] | None = None):
        self.annotation_file, self.image_dir, self.argument = Path(annotation_file), Path(image_dir), argument
        try:
            document = json.loads(self.annotation_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"--{argument} {annotation_file}: not a readable JSON file ({error})") from error
        for key in ("images", "annotations", "categories"):
            if not isinstance(document, dict) or key not in document:
                raise ValueError(f"--{argument} {annotation_file}: not a COCO annotation file (no {key!r} list)")
        categories = {int(c["id"]): str(c["name"]) for c in document["categories"]}
        if category_ids is None:
            category_ids = sorted(categories)
        unknown = sorted(set(categories) - set(category_ids))
        if unknown:
            raise ValueError(
                f"--{argument} {annotation_file}: categories {unknown} are not among the training data's {category_ids}"
            )
        self.category_ids, self.class_names = list(category_ids), [categories.get(i, str(i)) for i in category_ids]
        index_of = {category: index for index, category in enumerate(self.category_ids)}
        self.images = {int(image["id"]): image for image in document["images"]}
        objects: dict[int, list] = {image_id: [] for image_id in self.images}
        dropped = 0
        for annotation in document["annotations"]:
            image_id, category = int(annotation["image_id"]), int(annotation["category_id"])
            if image_id not in self.images:
                raise ValueError(
                    f"--{argument} {annotation_file}: annotation {annotation.get('id')} refers to image_id {image_id}, which is not in 'images'"
                )
            if category not in index_of:
                raise ValueError(
                    f"--{argument} {annotation_file}: annotation {annotation.get('id')} has category_id {category}, not in 'categories'"
                )
            x, y, w, h = (float(v) for v in annotation["bbox"])
            if not (w > 0 and h > 0):
                dropped += 1
                continue
            objects[image_id].append(
                (
                    x,
                    y,
                    w,
                    h,
                    index_of[category],
                    float(annotation.get("area", w * h)),
                    int(annotation.get("iscrowd", 0)),
                )
            )
        if dropped:
            logger.warning(
                f"--{argument} {annotation_file}: skipped {dropped} annotations with an empty box (width or height <= 0)"
            )
        self.ids = sorted(self.images)
        if not self.ids:
            raise ValueError(f"--{argument} {annotation_file}: no images")
        self.objects = objects

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, index: int) -> Sample:
        image_id = self.ids[index]
        info, rows = self.images[image_id], self.objects[image_id]
        array = np.asarray(rows, np.float64).reshape(-1, 7)
        return Sample(
            image_id,
            int(info["width"]),
            int(info["height"]),
            array[:, :4].astype(np.float32),
            array[:, 4].astype(np.int64),
            array[:, 5],
            array[:, 6].astype(np.int64),
        )

    def load(self, index: int) -> tuple[Image.Image, Sample]:
        sample = self.sample(index)
        try:
            image = read_image(self.image_dir / self.images[sample.image_id]["file_name"])
        except OSError as error:
            raise OSError(f"--{self.argument} {self.annotation_file}: {error}") from error
        if image.size != (sample.width, sample.height):  # the file wins over the annotation's stated size
            sample.width, sample.height = image.size
        return image, sample


class HubSource:
    """A `datasets` split with an image column and a COCO-style objects column (bbox [x, y, w, h], category)."""

    def __init__(self, dataset, image_column: str, objects_column: str, class_names: list[str] | None = None):
        for column in (image_column, objects_column):
            if column not in dataset.column_names:
                raise ValueError(f"the dataset has no column {column!r} (columns: {dataset.column_names})")
        self.dataset, self.image_column, self.objects_column = dataset, image_column, objects_column
        self.class_names = class_names or self._class_names(dataset.features[objects_column]) or self._scan_names()

    @staticmethod
    def _class_names(feature) -> list[str] | None:
        """ClassLabel names of the objects' category: Sequence({"category": ClassLabel}) or {"category": List(ClassLabel)}."""
        inner = getattr(feature, "feature", feature)
        category = inner.get("category") if isinstance(inner, dict) else None
        category = getattr(category, "feature", category)
        return list(category.names) if hasattr(category, "names") else None

    def _scan_names(self) -> list[str]:
        categories = sorted({int(c) for objects in self.dataset[self.objects_column] for c in objects["category"]})
        return [str(c) for c in range(max(categories) + 1)] if categories else ["0"]

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int, row=None) -> Sample:
        row = self.dataset[index] if row is None else row
        objects = row[self.objects_column]
        boxes = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
        classes = np.asarray(objects["category"], np.int64).reshape(-1)
        keep = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        areas = np.asarray(
            objects["area"] if objects.get("area") is not None else boxes[:, 2] * boxes[:, 3], np.float64
        ).reshape(-1)
        crowd = np.asarray(
            objects["iscrowd"] if objects.get("iscrowd") is not None else np.zeros(len(boxes)), np.int64
        ).reshape(-1)
        # The row index is the image id (unique within the split, whatever the dataset's own ids).
        return Sample(
            index,
            int(row.get("width") or 0),
            int(row.get("height") or 0),
            boxes[keep],
            classes[keep],
            areas[keep],
            crowd[keep],
        )

    def load(self, index: int) -> tuple[Image.Image, Sample]:
        try:
            row = self.dataset[index]
        except (OSError, SyntaxError, ValueError) as error:
            raise OSError(f"cannot read row {index} of the dataset (column {self.image_column!r}): {error}") from error
        image = row[self.image_column]
        if image is None or isinstance(image, str):
            hint = (
                " (cast the column to datasets.Image() to read the files it names)" if isinstance(image, str) else ""
            )
            raise ValueError(
                f"row {index} of the dataset: column {self.image_column!r} holds {image!r}, not an image{hint}"
            )
        image = rgb_image(
            image if isinstance(image, Image.Image) else np.asarray(image),
            f"row {index}, column {self.image_column!r}",
        )
        sample = self.sample(index, row)
        sample.width, sample.height = image.size
        return image, sample


class IndexedSource:
    def __init__(self, source, indices):
        self.source, self.indices, self.class_names = source, list(indices), source.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int):
        return self.source.load(self.indices[index])


def load_sources(args: DataArguments, seed: int):
    """(train source, validation source or None, class names)."""
    if args.dataset_name:
        import datasets

        if Path(args.dataset_name, "dataset_dict.json").is_file():
            splits = datasets.load_from_disk(args.dataset_name)
        else:
            splits = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
        if args.train_split not in splits:
            raise ValueError(
                f"--dataset_name {args.dataset_name}: no split {args.train_split!r} (splits: {list(splits)})"
            )
        train = HubSource(splits[args.train_split], args.image_column_name, args.objects_column_name)
        validation_split = args.validation_split or next((s for s in ("validation", "test") if s in splits), None)
        validation = (
            HubSource(splits[validation_split], args.image_column_name, args.objects_column_name, train.class_names)
            if validation_split
            else None
        )
    else:
        train = CocoSource(args.train_annotations, args.train_images, "train_annotations")
        validation = None
        if args.validation_annotations:
            validation = CocoSource(
                args.validation_annotations, args.validation_images, "validation_annotations", train.category_ids
            )
    class_names = train.class_names
    if validation is None and args.train_val_split > 0:
        order = np.random.default_rng(seed).permutation(len(train))
        held_out = max(1, int(round(len(train) * args.train_val_split)))
        if held_out >= len(train):
            raise ValueError(
                f"{len(train)} training images: too few to hold out --train_val_split {args.train_val_split} for validation"
            )
        train, validation = IndexedSource(train, order[held_out:]), IndexedSource(train, order[:held_out])
    if args.max_train_samples:
        train = IndexedSource(train, range(min(args.max_train_samples, len(train))))
    if validation is not None and args.max_eval_samples:
        validation = IndexedSource(validation, range(min(args.max_eval_samples, len(validation))))
    return train, validation, class_names


# ------------------------------------------------------------------------------------------------- augmentation
def photometric(image: Image.Image, prob: float) -> Image.Image:
    """Brightness, contrast, saturation (factors 0.75-1.25) and hue (+-0.05 turn), each with probability `prob`."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if random.random() < prob:
            image = enhancer(image).enhance(random.uniform(0.75, 1.25))
    if random.random() < prob:
        hsv = np.asarray(image.convert("HSV"), np.int16).copy()
        hsv[..., 0] = (hsv[..., 0] + int(random.uniform(-0.05, 0.05) * 255)) % 256
        image = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    return image


def crop_boxes(
    boxes: np.ndarray, window: tuple[float, float, float, float], min_visibility: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [x, y, w, h] clipped to the window (left, top, right, bottom), in its coordinates; and which are kept:
    those with at least `min_visibility` of their area inside and both sides at least 1 px."""
    left, top, right, bottom = window
    x0, y0 = np.clip(boxes[:, 0], left, right), np.clip(boxes[:, 1], top, bottom)
    x1, y1 = np.clip(boxes[:, 0] + boxes[:, 2], left, right), np.clip(boxes[:, 1] + boxes[:, 3], top, bottom)
    clipped = np.stack([x0 - left, y0 - top, x1 - x0, y1 - y0], 1).astype(np.float32)
    visible = (clipped[:, 2] * clipped[:, 3]) / np.maximum(boxes[:, 2] * boxes[:, 3], 1e-6)
    keep = (clipped[:, 2] >= 1) & (clipped[:, 3] >= 1) & (visible >= min_visibility)
    return clipped, keep


def augment(image: Image.Image, sample: Sample, args: DataArguments) -> tuple[Image.Image, Sample]:
    """Photometric distortion, random crop (boxes clipped, hidden ones dropped), horizontal flip (boxes mirrored)."""
    image = photometric(image, args.photometric_prob)
    boxes, classes, areas, crowd = sample.boxes, sample.classes, sample.areas, sample.crowd
    width, height = image.size
    if random.random() < args.crop_prob:
        for _ in range(10):
            scale, ratio = (
                random.uniform(args.min_crop_scale, 1.0),
                math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3))),
            )
            crop_w, crop_h = (
                int(round(math.sqrt(scale * width * height * ratio))),
                int(round(math.sqrt(scale * width * height / ratio))),
            )
            if not (16 <= crop_w <= width and 16 <= crop_h <= height):
                continue
            left, top = random.randint(0, width - crop_w), random.randint(0, height - crop_h)
            clipped, keep = crop_boxes(boxes, (left, top, left + crop_w, top + crop_h), args.min_box_visibility)
            if len(boxes) and not keep.any():
                continue  # a crop without any object: try another
            image = image.crop((left, top, left + crop_w, top + crop_h))
            boxes, classes, crowd = clipped[keep], classes[keep], crowd[keep]
            areas = boxes[:, 2] * boxes[:, 3]
            width, height = crop_w, crop_h
            break
    if random.random() < args.hflip_prob:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        boxes = boxes.copy()
        boxes[:, 0] = width - boxes[:, 0] - boxes[:, 2]
    return image, Sample(sample.image_id, width, height, boxes, classes, np.asarray(areas, np.float64), crowd)


def coco_target(sample: Sample) -> dict:
    """The image processors' `coco_detection` annotation format."""
    return {
        "image_id": sample.image_id,
        "annotations": [
            {"bbox": [float(v) for v in box], "category_id": int(label), "area": float(area), "iscrowd": int(crowd)}
            for box, label, area, crowd in zip(sample.boxes, sample.classes, sample.areas, sample.crowd)
        ],
    }


def processor_size(processor, image_size: int) -> dict:
    """The processor's `size` at `image_size`: fixed square (RT-DETR) or short side with a proportional long-side cap."""
    size = dict(processor.size) if processor.size is not None else {}
    if size.get("height") and size.get("width"):
        return {"height": image_size, "width": image_size}
    return {"shortest_edge": image_size, "longest_edge": int(round(image_size * 1333 / 800))}


def input_size(processor) -> int:
    size = dict(processor.size)
    return int(size.get("height") or size.get("shortest_edge"))


class TrainDataset(torch.utils.data.Dataset):
    def __init__(self, source, args: DataArguments):
        self.source, self.args = source, args

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Image.Image, Sample]:
        image, sample = self.source.load(index)
        return augment(image, sample, self.args)


class TrainCollator:
    """A batch through the image processor at a random scale: pixel_values (padded, with pixel_mask where the
    processor pads) and `labels` (class_labels, boxes as normalised cx, cy, w, h)."""

    def __init__(self, processor, args: DataArguments):
        self.processor, self.args, self.base = processor, args, input_size(processor)

    def __call__(self, examples: list[tuple[Image.Image, Sample]]) -> dict:
        factor = random.uniform(*self.args.scale_range)
        size = max(32, int(round(self.base * factor / 32)) * 32)
        images = [image for image, _ in examples]
        annotations = [coco_target(sample) for _, sample in examples]
        encoded = self.processor(
            images=images, annotations=annotations, size=processor_size(self.processor, size), return_tensors="pt"
        )
        batch = {
            "pixel_values": encoded["pixel_values"],
            "labels": [{"class_labels": t["class_labels"], "boxes": t["boxes"]} for t in encoded["labels"]],
        }
        if "pixel_mask" in encoded:
            batch["pixel_mask"] = encoded["pixel_mask"]
        return batch


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def detect(
    model, processor, images: list[Image.Image], threshold: float, autocast=contextlib.nullcontext
) -> list[dict]:
    """Post-processed detections (boxes x0, y0, x1, y1 in the original image's pixels) of a batch of images."""
    device = next(model.parameters()).device
    encoded = processor(images=images, return_tensors="pt")
    inputs = {"pixel_values": encoded["pixel_values"].to(device)}
    if "pixel_mask" in encoded:
        inputs["pixel_mask"] = encoded["pixel_mask"].to(device)
    with autocast():
        outputs = model(**inputs)
    outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
    # The processors normalise training boxes by the padded canvas (they rescale them when padding), so predictions
    # are relative to it: a padded image's canvas, in its original pixels, is its size times canvas / valid region.
    sizes = []
    for index, image in enumerate(images):
        height, width = float(image.height), float(image.width)
        if "pixel_mask" in encoded:
            mask = encoded["pixel_mask"][index].bool()
            height *= mask.shape[0] / max(int(mask.any(1).sum()), 1)
            width *= mask.shape[1] / max(int(mask.any(0).sum()), 1)
        sizes.append((height, width))
    return processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=torch.tensor(sizes))


def coco_map(ground_truth: list[Sample], detections: list[dict], num_classes: int) -> dict:
    """COCO box metrics (pycocotools' COCOeval, maxDets 1/10/100): map, map_50, map_75, map_small/medium/large,
    mar_1/10/100 (the size-range ones only where the data have objects of that size)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for sample, found in zip(ground_truth, detections):
        images.append({"id": sample.image_id, "width": sample.width, "height": sample.height})
        for box, label, area, crowd in zip(sample.boxes, sample.classes, sample.areas, sample.crowd):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": sample.image_id,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "area": float(area),
                    "iscrowd": int(crowd),
                }
            )
        order = torch.argsort(found["scores"], descending=True)[:100]
        for score, label, (x0, y0, x1, y1) in zip(
            found["scores"][order].tolist(), found["labels"][order].tolist(), found["boxes"][order].tolist()
        ):
            results.append(
                {
                    "image_id": sample.image_id,
                    "category_id": int(label),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
    names = [
        "map",
        "map_50",
        "map_75",
        "map_small",
        "map_medium",
        "map_large",
        "mar_1",
        "mar_10",
        "mar_100",
        "mar_small",
        "mar_medium",
        "mar_large",
    ]
    if not annotations:
        raise ValueError("the validation images have no objects: COCO mAP is undefined")
    if not results:
        return dict.fromkeys(names, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i} for i in range(num_classes)],
        }
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(names, evaluator.stats) if value >= 0}


class DetectionTrainer(Trainer):
    """The Trainer with COCO-mAP evaluation: each process detects on its share of the validation images (whole
    images through the saved image processor), the detections are gathered, and every process computes the same
    metrics."""

    def __init__(self, *args, eval_source=None, data_args: DataArguments | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_source, self.data_args = eval_source, data_args

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        if self.eval_source is None:
            raise ValueError(
                "evaluation needs validation data: --validation_annotations/--validation_images, a validation split, or --train_val_split > 0"
            )
        start = time.perf_counter()
        model, processor = self.model, self.processing_class
        was_training = model.training
        model.eval()
        rank, world = self.args.process_index, self.args.world_size
        indices = list(range(rank, len(self.eval_source), world))
        batch_size = self.args.per_device_eval_batch_size
        mine = []
        for first in range(0, len(indices), batch_size):
            loaded = [self.eval_source.load(i) for i in indices[first : first + batch_size]]
            found = detect(
                model,
                processor,
                [image for image, _ in loaded],
                self.data_args.eval_threshold,
                self.autocast_smart_context_manager,
            )
            mine.extend(
                (position, sample, {k: v.cpu() for k, v in result.items()})
                for position, (_, sample), result in zip(indices[first:], loaded, found)
            )
        model.train(was_training)
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, mine)
            mine = [item for part in gathered for item in part]
        mine.sort(key=lambda item: item[0])
        scores = coco_map(
            [sample for _, sample, _ in mine], [found for _, _, found in mine], len(self.model.config.id2label)
        )
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in scores.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - start, 4)
        metrics[f"{metric_key_prefix}_samples"] = len(self.eval_source)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


# ---------------------------------------------------------------------------------------------------------- model
def default_processor(model_type: str, image_size: int | None):
    """The composite's own image processor (torchvision backend when available, else PIL) at `image_size`."""
    if model_type == "rt_detr":
        from transformers import RTDetrImageProcessor, RTDetrImageProcessorPil

        cls = RTDetrImageProcessor if is_torchvision_available() else RTDetrImageProcessorPil
        size = image_size or 640
        return cls(size={"height": size, "width": size})
    from transformers import DeformableDetrImageProcessor, DeformableDetrImageProcessorPil

    cls = DeformableDetrImageProcessor if is_torchvision_available() else DeformableDetrImageProcessorPil
    size = image_size or 800
    return cls(size={"shortest_edge": size, "longest_edge": int(round(size * 1333 / 800))})


def build_model(model_args: ModelArguments, data_args: DataArguments, class_names: list[str]):
    """The detector and its image processor."""
    id2label = dict(enumerate(class_names))
    label2id = {name: index for index, name in id2label.items()}
    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    backbone_overrides = (
        json.loads(model_args.backbone_config_overrides) if model_args.backbone_config_overrides else {}
    )
    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **overrides)
        if config.model_type == "pvt_hf":
            raise ValueError(
                f"--model_name_or_path {model_args.model_name_or_path} is a PVT {config.architectures or 'model'}, not a detector: "
                "pass it as --backbone_name_or_path (with --architecture) to build a detector on its weights"
            )
        if config.model_type not in {model_type for model_type, _ in ARCHITECTURES.values()}:
            logger.warning(
                f"--model_name_or_path {model_args.model_name_or_path} is a {config.model_type!r} model; this script is tested with rt_detr and deformable_detr"
            )
        if {int(k): v for k, v in config.id2label.items()} != id2label:
            config.id2label, config.label2id = id2label, label2id
        model = AutoModelForObjectDetection.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True
        )
        try:
            processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path)
            if data_args.image_size:
                processor.size = processor_size(processor, data_args.image_size)
        except OSError:  # a folder without preprocessor_config.json
            processor = default_processor(config.model_type, data_args.image_size)
        return model, processor
    model_type, model_class = ARCHITECTURES[model_args.architecture]
    backbone = model_args.backbone_name_or_path
    config = composite_config(
        model_type, backbone, backbone_overrides=backbone_overrides, id2label=id2label, label2id=label2id, **overrides
    )
    model = model_class(config)
    if backbone not in PRESETS or Path(backbone).exists():
        load_pretrained_backbone(model, backbone)
        logger.info(f"Loaded the PVT backbone weights of {backbone}")
    return model, default_processor(model_type, data_args.image_size)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    inputs = {
        "--model_name_or_path": model_args.model_name_or_path,
        "--backbone_name_or_path": model_args.backbone_name_or_path,
        "--train_images": data_args.train_images,
        "--validation_images": data_args.validation_images,
        "--dataset_name": data_args.dataset_name,
    }
    refuse_output_over_arguments(training_args.output_dir, "--output_dir", inputs)
    with remove_if_left_empty(
        training_args.output_dir
    ):  # a run that fails before writing anything leaves no empty folder
        return train(model_args, data_args, training_args)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments) -> dict:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=[logging.StreamHandler(sys.stdout)]
    )
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    logging.getLogger("pvt_hf").setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.set_seed(training_args.seed)

    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size == 1:
        raise RuntimeError(
            f"started as {launched} processes (WORLD_SIZE={launched}), but the Trainer found no GPU to run them together, "
            "so each would train alone; for DDP on the CPU set ACCELERATE_USE_CPU=1 (ACCELERATE_USE_CPU=1 torchrun "
            f"--standalone --nproc_per_node {launched} examples/finetune_object_detection.py ...) or pass --use_cpu"
        )

    train_source, eval_source, class_names = load_sources(data_args, training_args.seed)
    checkpoint = (
        trainer_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir, training_args.max_steps)
        if training_args.do_train
        else None
    )
    model, processor = build_model(model_args, data_args, class_names)
    match_gradient_layout(model)
    smallest = min(
        input_size(processor), max(32, int(round(input_size(processor) * data_args.scale_range[0] / 32)) * 32)
    )
    if model.config.model_type == "deformable_detr" and smallest < 65:
        # Its extra feature level (stride 64) goes through GroupNorm(32 groups), which needs 2 values per group.
        raise ValueError(
            f"Deformable DETR needs inputs of at least 65 px (its stride-64 level must be 2x2), but --image_size "
            f"{input_size(processor)} with --scale_range {data_args.scale_range} gives batches of {smallest} px"
        )
    logger.info(
        f"{type(model).__name__}, {len(class_names)} classes; {len(train_source)} training / "
        f"{len(eval_source) if eval_source else 0} validation images; input {input_size(processor)}px"
    )

    training_args.remove_unused_columns = False
    if training_args.ddp_find_unused_parameters is None:
        # Every parameter gets a gradient in every step (RT-DETR's denoising and Deformable DETR's heads included).
        training_args.ddp_find_unused_parameters = False
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False
    trainer = DetectionTrainer(
        model=model,
        args=training_args,
        train_dataset=TrainDataset(train_source, data_args) if training_args.do_train else None,
        # eval_dataset only tells the Trainer that there is validation data (for --eval_strategy): `evaluate` reads
        # eval_source itself.
        eval_dataset=eval_source,
        data_collator=TrainCollator(processor, data_args),
        processing_class=processor,
        eval_source=eval_source,
        data_args=data_args,
    )

    results = {}
    output_dir = Path(training_args.output_dir)
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        # The final model goes through a staging folder, moved into OUTPUT_DIR once complete.
        staging = output_dir / ".final.incomplete"
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        trainer.save_model(str(staging))
        trainer.accelerator.wait_for_everyone()
        if trainer.is_world_process_zero():
            for path in sorted(staging.iterdir()):
                os.replace(path, output_dir / path.name)
            staging.rmdir()
        metrics = {**train_result.metrics, "num_processes": training_args.world_size}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:
        output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {**trainer.evaluate(), "num_processes": training_args.world_size}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(
            finetuned_from=model_args.model_name_or_path or model_args.backbone_name_or_path, tasks="object-detection"
        )
    elif training_args.should_save and training_args.do_train:
        trainer.create_model_card(
            finetuned_from=model_args.model_name_or_path or model_args.backbone_name_or_path, tasks="object-detection"
        )
    if torch.distributed.is_initialized():
        # Tear down in order, on every process alike: the DDP wrapper while the gloo group is still up, then the group.
        del trainer
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
