#!/usr/bin/env python
"""Fine-tune (or train from scratch) a PVT image classifier with the 🤗 Trainer.

Data: image folders with one sub-folder per class (`--train_dir`, `--validation_dir`), or a `datasets` dataset
(`--dataset_name`: a Hub id, or a local folder written by `save_to_disk`) with an image and a class-label column.
The labels come from the data: the classifier gets a new head (`ignore_mismatched_sizes=True`) unless the classes
are the model's own, and `id2label`/`label2id` are the folder (or ClassLabel) names, so that
`pipeline("image-classification", model=OUTPUT_DIR)` answers with them.

    python examples/finetune_image_classification.py --model_name_or_path ./pvt-v2-b0 \\
        --train_dir ./flowers/train --validation_dir ./flowers/val --output_dir ./pvt-v2-b0-flowers \\
        --do_train --do_eval --num_train_epochs 30 --learning_rate 1e-4 --per_device_train_batch_size 64 \\
        --eval_strategy epoch --report_to none

`--model_name_or_path` may also be a preset name (`pvt-v2-b0`, ...) for a new, randomly initialised model;
`--config_overrides '{"hidden_sizes": [16, 32, 64, 128]}'` changes its architecture.

Several processes: `accelerate launch --multi_gpu --num_processes N examples/finetune_image_classification.py ...`
(or torchrun) on GPUs; N gloo DDP processes on the CPU: `ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N
examples/finetune_image_classification.py ...` (accelerate 1.x's `accelerate launch --cpu --num_processes N` needs
mpirun). `--save_steps K --save_strategy steps` writes OUTPUT_DIR/checkpoint-K; `--resume_from_checkpoint latest` (or
a path) continues from the newest complete one. FSDP on GPUs: the Trainer's own `--fsdp "full_shard auto_wrap"
--fsdp_config '{"transformer_layer_cls_to_wrap": ["PvtLayer"]}'` (FSDP2, the default version; or `accelerate launch
--config_file examples/accelerate_configs/fsdp2.yaml`); checkpoints keep the configured state dict type, the final
OUTPUT_DIR always gets the full state dict, which `from_pretrained` loads.

The evaluation transform is the model's `PvtImageProcessor` (the official one: short side to size / crop_pct,
bicubic, center crop), saved with the model; the training augmentations below are this script's.

Training augmentation (`--augmentation`):

* `light` (default, for small datasets): random resized crop (scale 0.35-1) and horizontal flip; no mixup.
* `official`: the PVT / DeiT ImageNet recipe: random resized crop (0.08-1, bicubic), horizontal flip, RandAugment
  `rand-m9-mstd0.5-inc1`, random erasing (p=0.25), mixup (alpha 0.8) / cutmix (alpha 1.0), label smoothing 0.1.
  The official optimiser settings are AdamW, lr 5e-4 x batch/512, weight decay 0.05, cosine schedule, 5 warm-up
  epochs, 300 epochs: pass them as Trainer arguments.
* `none`: the evaluation transform.

Each part can be changed on its own (`--rand_augment`, `--mixup_alpha`, `--cutmix_alpha`, the Trainer's
`--label_smoothing_factor` (0.1 with `official` unless given; applied while training, to mixup's targets too),
`--random_erasing_prob`, `--hflip_prob`, `--min_crop_scale`). Everything is implemented with torch and PIL: not
timm, and not torchvision's v2 RandAugment / MixUp / CutMix / RandomErasing, whose PyPI wheels require their own torch
build (torch 2.14.1, a 5 GB CUDA build, beside the CPU torch of CI) and whose RandAugment is not timm's
`rand-m9-mstd0.5-inc1` (another op set, no magnitude noise). Data are read by the library's `ImageFolderSource` /
`DatasetsSource` (`pvt_hf.tools.evaluation`, as `pvt-hf evaluate` reads them). Accuracy is computed locally (no
`evaluate.load` from the Hub). `all_results.json` in OUTPUT_DIR holds `eval_accuracy` (a fraction in [0, 1]).
`--output_dir` may not be, contain or lie inside `--model_name_or_path` or the data.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image, ImageEnhance, ImageOps
from transformers import AutoConfig, AutoModelForImageClassification, HfArgumentParser, Trainer, TrainingArguments

import pvt_hf  # noqa: F401  (registers the PVT classes with the Auto classes)
from pvt_hf import PRESETS, PvtConfig, PvtForImageClassification, PvtImageProcessor, match_gradient_layout
from pvt_hf.tools.evaluation import DatasetsSource, ImageFolderSource
from pvt_hf.tools.io_utils import (
    check_model_argument,
    refuse_output_over_arguments,
    remove_if_left_empty,
    trainer_checkpoint,
)


logger = logging.getLogger(__name__)

AUGMENTATION_PRESETS = {  # and the Trainer's label_smoothing_factor: 0.1 for "official" unless given
    "none": {
        "min_crop_scale": None,
        "hflip_prob": 0.0,
        "rand_augment": "none",
        "random_erasing_prob": 0.0,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
    },
    "light": {
        "min_crop_scale": 0.35,
        "hflip_prob": 0.5,
        "rand_augment": "none",
        "random_erasing_prob": 0.0,
        "mixup_alpha": 0.0,
        "cutmix_alpha": 0.0,
    },
    "official": {
        "min_crop_scale": 0.08,
        "hflip_prob": 0.5,
        "rand_augment": "rand-m9-mstd0.5-inc1",
        "random_erasing_prob": 0.25,
        "mixup_alpha": 0.8,
        "cutmix_alpha": 1.0,
    },
}
OFFICIAL_LABEL_SMOOTHING = 0.1


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="pvt-v2-b0",
        metadata={"help": f"a pvt-hf folder or Hub id, or a preset name for a new model ({', '.join(PRESETS)})"},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "JSON of PvtConfig fields, e.g. '{\"drop_path_rate\": 0.1}'"}
    )
    ignore_mismatched_sizes: bool = field(
        default=True, metadata={"help": "give the classifier a new head when the number of classes differs"}
    )
    trust_remote_code: bool = field(default=False)

    def __post_init__(self):
        if self.model_name_or_path not in PRESETS:
            check_model_argument(self.model_name_or_path, "--model_name_or_path")


@dataclass
class DataArguments:
    train_dir: str | None = field(default=None, metadata={"help": "a folder with one sub-folder of images per class"})
    validation_dir: str | None = field(default=None, metadata={"help": "same layout as --train_dir"})
    dataset_name: str | None = field(
        default=None, metadata={"help": "a Hub dataset, or a local `save_to_disk` folder"}
    )
    dataset_config_name: str | None = field(default=None)
    image_column_name: str = field(default="image")
    label_column_name: str = field(default="label")
    train_split: str = field(default="train")
    validation_split: str | None = field(
        default=None, metadata={"help": "default: 'validation' (else 'test') if present"}
    )
    train_val_split: float = field(
        default=0.15, metadata={"help": "share of the training data held out when there is no validation data"}
    )
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "input resolution (default: the model's image processor's crop, or the config's image_size)"
        },
    )
    crop_pct: float = field(
        default=0.875,
        metadata={
            "help": "with --image_size: evaluation resizes the short side to image_size / crop_pct, then center-crops"
        },
    )
    augmentation: str = field(
        default="light",
        metadata={"help": "none | light | official (see the module docstring)", "choices": list(AUGMENTATION_PRESETS)},
    )
    min_crop_scale: float | None = field(
        default=None, metadata={"help": "random resized crop's smallest area share (default: from --augmentation)"}
    )
    hflip_prob: float | None = field(default=None)
    rand_augment: str | None = field(default=None, metadata={"help": "'rand-m9-mstd0.5-inc1'-style spec, or 'none'"})
    random_erasing_prob: float | None = field(default=None)
    mixup_alpha: float | None = field(default=None)
    cutmix_alpha: float | None = field(default=None)
    mixup_switch_prob: float = field(default=0.5, metadata={"help": "chance of cutmix when both are on"})

    def __post_init__(self):
        if not self.dataset_name and not self.train_dir:
            raise ValueError("give --train_dir (an image folder) or --dataset_name")
        for key, value in AUGMENTATION_PRESETS[self.augmentation].items():
            if getattr(self, key) is None:
                setattr(self, key, value)


# ---------------------------------------------------------------------------------------------------------- data
class IndexedSource:
    """Some samples of a source, in the given order."""

    def __init__(self, source, indices):
        self.source, self.indices = source, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int):
        return self.source.load(self.indices[index])

    def describe(self, index: int) -> str:
        return self.source.describe(self.indices[index])


def source_labels(source) -> list[int]:
    """Every sample's label id, without reading the images (`DatasetsSource` has checked that they are integers)."""
    if isinstance(source, IndexedSource):
        labels = source_labels(source.source)
        return [labels[i] for i in source.indices]
    if isinstance(source, ImageFolderSource):
        return [label for _, label in source.samples]
    return [int(label) for label in source.dataset[source.label_column]]


def dataset_source(dataset, image_column: str, label_column: str, what: str) -> DatasetsSource:
    """A split read by the library's `DatasetsSource`, from the user's image and label columns."""
    for argument, column in (("--image_column_name", image_column), ("--label_column_name", label_column)):
        if column not in dataset.column_names:
            raise ValueError(f"{argument} {column!r}: {what} has no such column (columns: {dataset.column_names})")
    source = DatasetsSource(dataset, {}, math.inf, what=what, image_column=image_column, label_column=label_column)
    feature = dataset.features[label_column]
    source.class_names = list(feature.names) if hasattr(feature, "names") else None
    return source


def load_sources(args: DataArguments, seed: int):
    """(train source, validation source or None, class names)."""
    if args.dataset_name:
        import datasets

        data = f"--dataset_name {args.dataset_name} (label column {args.label_column_name!r})"
        if Path(args.dataset_name, "dataset_dict.json").is_file():
            splits = datasets.load_from_disk(args.dataset_name)
        else:
            splits = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
        if args.train_split not in splits:
            raise ValueError(
                f"--dataset_name {args.dataset_name}: no split {args.train_split!r} (splits: {list(splits)})"
            )
        validation_split = args.validation_split or next((s for s in ("validation", "test") if s in splits), None)
        train, validation = (
            dataset_source(
                splits[split],
                args.image_column_name,
                args.label_column_name,
                f"split {split!r} of --dataset_name {args.dataset_name}",
            )
            if split
            else None
            for split in (args.train_split, validation_split)
        )
        class_names = train.class_names or [str(i) for i in range(max(source_labels(train)) + 1)]
        names = {"training": f"split {args.train_split!r}", "validation": f"split {validation_split!r}"}
    else:
        data = f"--train_dir {args.train_dir}"
        train = ImageFolderSource(args.train_dir, {}, math.inf)  # classes: the sorted folder names
        class_names = train.classes
        validation = None
        if args.validation_dir:
            validation = ImageFolderSource(
                args.validation_dir, {name: i for i, name in enumerate(class_names)}, len(class_names)
            )
            if validation.label_mapping != "by-name":
                raise ValueError(
                    f"--validation_dir {args.validation_dir}: its classes {validation.classes} are not among the training classes {class_names}"
                )
        names = {"training": args.train_dir, "validation": f"--validation_dir {args.validation_dir}"}
    check_labels(data, names, class_names, train, validation)
    if validation is None and args.train_val_split > 0:
        order = np.random.default_rng(seed).permutation(len(train))
        held_out = max(1, int(round(len(train) * args.train_val_split)))
        train, validation = IndexedSource(train, order[held_out:]), IndexedSource(train, order[:held_out])
    if args.max_train_samples:
        train = IndexedSource(train, range(min(args.max_train_samples, len(train))))
    if validation is not None and args.max_eval_samples:
        validation = IndexedSource(validation, range(min(args.max_eval_samples, len(validation))))
    return train, validation, class_names


def check_labels(data: str, names: dict, class_names: list[str], train, validation) -> None:
    """A classifier needs at least two classes, with training images of at least two, and labels 0..classes-1."""
    if len(class_names) < 2:
        raise ValueError(f"{data}: {len(class_names)} class {class_names}; a classifier needs at least 2 classes")
    for role, source in (("training", train), ("validation", validation)):
        if source is None:
            continue
        labels = np.asarray(source_labels(source), np.int64)
        outside = labels[(labels < 0) | (labels >= len(class_names))]
        if len(outside):
            raise ValueError(
                f"{data}, {names[role]}: {len(outside)} labels outside 0..{len(class_names) - 1} (the {len(class_names)} "
                f"classes), e.g. {sorted(set(outside.tolist()))[:5]}"
            )
        present = np.unique(labels)
        if role == "training" and len(present) == 0:
            raise ValueError(f"{data}, {names[role]}: no training images")
        if role == "training" and len(present) < 2:
            raise ValueError(
                f"{data}, {names[role]}: every training image is of class {class_names[present[0]]!r}; a classifier "
                "needs training images of at least 2 classes"
            )


# ------------------------------------------------------------------------------------------------- augmentation
_FILL = (124, 116, 104)  # the ImageNet mean colour, as timm fills RandAugment's empty areas


def _shear_x(img, v):
    return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0), Image.BICUBIC, fillcolor=_FILL)


def _shear_y(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0), Image.BICUBIC, fillcolor=_FILL)


def _translate_x(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, v * img.size[0], 0, 1, 0), Image.BICUBIC, fillcolor=_FILL)


def _translate_y(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, v * img.size[1]), Image.BICUBIC, fillcolor=_FILL)


def _solarize_add(img, v, threshold=128):
    lut = [min(255, i + int(v)) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


# name -> (function, magnitude (0..1 of the maximum) -> argument, signed). "Increasing" variants (inc1): a larger
# magnitude always means a stronger change.
_RAND_AUGMENT_OPS = {
    "AutoContrast": (lambda img, _: ImageOps.autocontrast(img), None, False),
    "Equalize": (lambda img, _: ImageOps.equalize(img), None, False),
    "Invert": (lambda img, _: ImageOps.invert(img), None, False),
    "Rotate": (lambda img, v: img.rotate(v, resample=Image.BICUBIC, fillcolor=_FILL), lambda m: 30.0 * m, True),
    "PosterizeIncreasing": (lambda img, v: ImageOps.posterize(img, int(v)), lambda m: 4 - int(4 * m), False),
    "SolarizeIncreasing": (lambda img, v: ImageOps.solarize(img, v), lambda m: 256 - int(256 * m), False),
    "SolarizeAdd": (_solarize_add, lambda m: int(110 * m), False),
    "ColorIncreasing": (lambda img, v: ImageEnhance.Color(img).enhance(v), lambda m: 0.9 * m, True),
    "ContrastIncreasing": (lambda img, v: ImageEnhance.Contrast(img).enhance(v), lambda m: 0.9 * m, True),
    "BrightnessIncreasing": (lambda img, v: ImageEnhance.Brightness(img).enhance(v), lambda m: 0.9 * m, True),
    "SharpnessIncreasing": (lambda img, v: ImageEnhance.Sharpness(img).enhance(v), lambda m: 0.9 * m, True),
    "ShearX": (_shear_x, lambda m: 0.3 * m, True),
    "ShearY": (_shear_y, lambda m: 0.3 * m, True),
    "TranslateXRel": (_translate_x, lambda m: 0.45 * m, True),
    "TranslateYRel": (_translate_y, lambda m: 0.45 * m, True),
}
_ENHANCE_OPS = {"ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}


class RandAugment:
    """timm-style RandAugment from a spec such as `rand-m9-mstd0.5-inc1` (n=2 ops, magnitude 9 of 10 with a
    Gaussian jitter of std 0.5, each op applied with probability 0.5, signed ops flipped half of the time)."""

    def __init__(self, spec: str):
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment spec must start with 'rand', got {spec!r}")
        self.num_ops, self.magnitude, self.magnitude_std, self.prob = 2, 9.0, 0.0, 0.5
        for part in parts[1:]:
            key, value = (
                part[0] if not part.startswith("mstd") else "mstd",
                part[1:] if not part.startswith("mstd") else part[4:],
            )
            if key == "m":
                self.magnitude = float(value)
            elif key == "n":
                self.num_ops = int(value)
            elif key == "mstd":
                self.magnitude_std = float(value)
            elif key == "p":
                self.prob = float(value)
            elif part.startswith("inc"):
                if part != "inc1":
                    raise ValueError("only the 'increasing' op set (inc1) is implemented")
            else:
                raise ValueError(f"unknown RandAugment option {part!r} in {spec!r}")

    def __call__(self, img: Image.Image) -> Image.Image:
        for name in random.sample(list(_RAND_AUGMENT_OPS), self.num_ops):
            if random.random() > self.prob:
                continue
            function, to_argument, signed = _RAND_AUGMENT_OPS[name]
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = random.gauss(magnitude, self.magnitude_std)
            magnitude = min(10.0, max(0.0, magnitude)) / 10.0
            argument = to_argument(magnitude) if to_argument else None
            if signed and random.random() < 0.5:
                argument = -argument
            if name in _ENHANCE_OPS:
                argument = 1.0 + argument
            img = function(img, argument)
        return img


def random_resized_crop(img: Image.Image, size: int, scale: tuple[float, float]) -> Image.Image:
    """torchvision RandomResizedCrop (ratio 3/4-4/3, 10 tries, then a center crop), bicubic."""
    width, height = img.size
    area = width * height
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left, top = random.randint(0, width - w), random.randint(0, height - h)
            return img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    ratio = width / height
    if ratio < 3 / 4:
        w, h = width, int(round(width / (3 / 4)))
    elif ratio > 4 / 3:
        h, w = height, int(round(height * (4 / 3)))
    else:
        w, h = width, height
    h, w = min(h, height), min(w, width)
    left, top = (width - w) // 2, (height - h) // 2
    return img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))


def processor_geometry(processor: PvtImageProcessor, img: Image.Image) -> Image.Image:
    """The image processor's resize and crop alone (no rescaling or normalisation), as an image to augment further."""
    array = processor(img, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    return Image.fromarray(np.rint(array).clip(0, 255).astype(np.uint8).transpose(1, 2, 0))


def to_tensor(img: Image.Image, processor: PvtImageProcessor) -> torch.Tensor:
    """An augmented image normalised as the image processor does."""
    array = np.asarray(img, np.float32) * np.float32(processor.rescale_factor)
    array = (array - np.array(processor.image_mean, np.float32)) / np.array(processor.image_std, np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def random_erasing(pixel_values: torch.Tensor, prob: float) -> torch.Tensor:
    """timm RandomErasing(mode='pixel', max_count=1) on a normalised image: one box of 2-33% of the area, aspect
    ratio 0.3-3.3, filled with normal noise."""
    if random.random() >= prob:
        return pixel_values
    _, height, width = pixel_values.shape
    area = height * width
    for _ in range(10):
        target_area = random.uniform(0.02, 1 / 3) * area
        aspect = math.exp(random.uniform(math.log(0.3), math.log(1 / 0.3)))
        h, w = int(round(math.sqrt(target_area * aspect))), int(round(math.sqrt(target_area / aspect)))
        if w < width and h < height:
            top, left = random.randint(0, height - h), random.randint(0, width - w)
            pixel_values = pixel_values.clone()
            pixel_values[:, top : top + h, left : left + w] = torch.randn(pixel_values.shape[0], h, w)
            break
    return pixel_values


def input_size(processor: PvtImageProcessor) -> int:
    """The side of the model's (square) inputs: the processor's center crop, else its resize."""
    size = processor.crop_size if processor.do_center_crop else processor.size
    size = dict(size)
    side = size.get("height", size.get("shortest_edge"))
    if side is None or size.get("width", side) != side:
        raise ValueError(
            f"the image processor gives no square input size (crop_size {processor.crop_size}, size {processor.size}); pass --image_size"
        )
    return int(side)


class ClassificationDataset(torch.utils.data.Dataset):
    """Evaluation: the image processor. Training: the augmentations of DataArguments (the processor's resize and crop
    when there is no random resized crop), normalised as the processor does."""

    def __init__(self, source, processor: PvtImageProcessor, args: DataArguments | None, train: bool):
        self.source, self.processor, self.args, self.train = source, processor, args, train
        self.size = input_size(processor)
        self.rand_augment = (
            RandAugment(args.rand_augment) if train and args.rand_augment not in (None, "", "none") else None
        )

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        img, label = self.source.load(index)
        if not self.train:
            return {"pixel_values": self.processor(img, return_tensors="pt")["pixel_values"][0], "labels": label}
        if self.args.min_crop_scale is not None:
            img = random_resized_crop(img, self.size, (self.args.min_crop_scale, 1.0))
        else:
            img = processor_geometry(self.processor, img)
        if random.random() < self.args.hflip_prob:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            img = self.rand_augment(img)
        pixel_values = to_tensor(img, self.processor)
        if self.args.random_erasing_prob > 0:
            pixel_values = random_erasing(pixel_values, self.args.random_erasing_prob)
        return {"pixel_values": pixel_values, "labels": label}


def collate(examples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }


def mixup_cutmix(pixel_values, labels, num_labels, mixup_alpha, cutmix_alpha, switch_prob, smoothing):
    """timm Mixup (batch mode, prob 1): mixes each image with the batch reversed; returns mixed images and soft
    targets (label-smoothed one-hots mixed with the same weight)."""
    off, on = smoothing / num_labels, 1.0 - smoothing + smoothing / num_labels
    one_hot = torch.full((labels.shape[0], num_labels), off, device=labels.device).scatter_(1, labels[:, None], on)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or random.random() < switch_prob)
    lam = float(np.random.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else np.random.beta(mixup_alpha, mixup_alpha))
    flipped = pixel_values.flip(0)
    if use_cutmix:
        height, width = pixel_values.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(height * cut), int(width * cut)
        cy, cx = np.random.randint(height), np.random.randint(width)
        top, bottom = np.clip(cy - ch // 2, 0, height), np.clip(cy + ch // 2, 0, height)
        left, right = np.clip(cx - cw // 2, 0, width), np.clip(cx + cw // 2, 0, width)
        pixel_values = pixel_values.clone()
        pixel_values[..., top:bottom, left:right] = flipped[..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (height * width)
    else:
        pixel_values = pixel_values * lam + flipped * (1 - lam)
    return pixel_values, one_hot * lam + one_hot.flip(0) * (1 - lam)


class ClassificationTrainer(Trainer):
    """The Trainer with the recipe's loss: mixup/cutmix soft targets and label smoothing while training."""

    def __init__(self, *args, recipe: DataArguments | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.recipe = recipe

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels, pixel_values = inputs["labels"], inputs["pixel_values"]
        recipe, num_labels = self.recipe, self.model.config.num_labels
        if (
            model.training
            and recipe is not None
            and (recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0)
            and len(labels) > 1
        ):
            pixel_values, targets = mixup_cutmix(
                pixel_values,
                labels,
                num_labels,
                recipe.mixup_alpha,
                recipe.cutmix_alpha,
                recipe.mixup_switch_prob,
                self.args.label_smoothing_factor,
            )
            outputs = model(pixel_values=pixel_values)
            loss = torch.sum(-targets * F.log_softmax(outputs.logits.float(), dim=-1), dim=-1).mean()
        else:
            outputs = model(pixel_values=pixel_values)
            smoothing = self.args.label_smoothing_factor if model.training else 0.0
            loss = F.cross_entropy(outputs.logits.float(), labels, label_smoothing=smoothing)
        return (loss, outputs) if return_outputs else loss


def compute_metrics(eval_prediction) -> dict:
    logits = (
        eval_prediction.predictions[0]
        if isinstance(eval_prediction.predictions, tuple)
        else eval_prediction.predictions
    )
    return {"accuracy": float((np.argmax(logits, axis=-1) == eval_prediction.label_ids).mean())}


# ---------------------------------------------------------------------------------------------------------- main
def build_model(model_args: ModelArguments, class_names: list[str]):
    id2label = dict(enumerate(class_names))
    label2id = {name: index for index, name in id2label.items()}
    overrides = json.loads(model_args.config_overrides) if model_args.config_overrides else {}
    if model_args.model_name_or_path in PRESETS:
        config = PvtConfig.from_preset(
            model_args.model_name_or_path, id2label=id2label, label2id=label2id, **overrides
        )
        return PvtForImageClassification(config)
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path, trust_remote_code=model_args.trust_remote_code, **overrides
    )
    if {int(k): v for k, v in config.id2label.items()} != id2label:
        config.id2label, config.label2id = id2label, label2id
    return AutoModelForImageClassification.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        trust_remote_code=model_args.trust_remote_code,
    )


def image_processor_for(model_args: ModelArguments, data_args: DataArguments, model) -> PvtImageProcessor:
    """The evaluation transform, saved with the model: with --image_size the official one at that size and
    --crop_pct; else the model's saved processor; else the official one at the config's image_size."""
    if data_args.image_size is not None:
        return PvtImageProcessor(crop_size=data_args.image_size, crop_pct=data_args.crop_pct)
    if model_args.model_name_or_path not in PRESETS:
        try:
            return PvtImageProcessor.from_pretrained(model_args.model_name_or_path)
        except OSError:  # a folder or repository without preprocessor_config.json
            logger.info(
                f"{model_args.model_name_or_path} has no image processor: the official one at {model.config.image_size}px"
            )
    return PvtImageProcessor(crop_size=model.config.image_size, crop_pct=data_args.crop_pct)


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    inputs = {
        "--model_name_or_path": model_args.model_name_or_path,
        "--train_dir": data_args.train_dir,
        "--validation_dir": data_args.validation_dir,
        "--dataset_name": data_args.dataset_name,
    }
    refuse_output_over_arguments(training_args.output_dir, "--output_dir", inputs)
    if data_args.augmentation == "official" and not any(
        a.startswith("--label_smoothing_factor") for a in (argv or sys.argv)
    ):
        training_args.label_smoothing_factor = OFFICIAL_LABEL_SMOOTHING
    with remove_if_left_empty(
        training_args.output_dir
    ):  # a run that fails before writing anything leaves no empty folder
        return train(model_args, data_args, training_args)


def full_state_dict_on_save(trainer: Trainer) -> None:
    """Under FSDP, the final `save_model` writes the full state dict (gathered from all processes), a folder that
    `from_pretrained` loads; with a sharded state dict type it would write only the sharded state. The checkpoints
    written while training keep the configured type."""
    plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if plugin is not None and "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.state_dict_config = plugin.optim_state_dict_config = None  # the sharded type's, replaced by full ones
        plugin.set_state_dict_type("FULL_STATE_DICT")


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
            f"--standalone --nproc_per_node {launched} examples/finetune_image_classification.py ...) or pass --use_cpu"
        )

    train_source, eval_source, class_names = load_sources(data_args, training_args.seed)
    checkpoint = (
        trainer_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir, training_args.max_steps)
        if training_args.do_train
        else None
    )
    model = build_model(model_args, class_names)
    match_gradient_layout(model)
    processor = image_processor_for(model_args, data_args, model)
    train_dataset = ClassificationDataset(train_source, processor, data_args, train=True)
    eval_dataset = ClassificationDataset(eval_source, processor, data_args, train=False) if eval_source else None
    logger.info(
        f"{len(class_names)} classes; {len(train_source)} training / {len(eval_source) if eval_source else 0} validation images; input {train_dataset.size}px"
    )

    training_args.remove_unused_columns = False
    if training_args.ddp_find_unused_parameters is None:
        # Every parameter gets a gradient in every step (else DDP's error names the ones that did not, and
        # --ddp_find_unused_parameters true is the way out); the Trainer's default (True) makes DDP search the graph
        # each step and warn that it found nothing.
        training_args.ddp_find_unused_parameters = False
    if not torch.cuda.is_available():
        training_args.dataloader_pin_memory = False  # nothing to pin to (avoids a warning per data loader)
    trainer = ClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset if training_args.do_train else None,
        eval_dataset=eval_dataset,
        data_collator=collate,
        compute_metrics=compute_metrics,
        processing_class=processor,
        recipe=data_args,
    )

    results = {}
    output_dir = Path(training_args.output_dir)
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        # The final model goes through a staging folder, moved into OUTPUT_DIR once complete.
        staging = output_dir / ".final.incomplete"
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        full_state_dict_on_save(trainer)
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
        if eval_dataset is None:
            raise ValueError(
                "--do_eval needs validation data: --validation_dir, a validation split, or --train_val_split > 0"
            )
        metrics = {**trainer.evaluate(), "num_processes": training_args.world_size}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="image-classification")
    elif training_args.should_save:
        trainer.create_model_card(finetuned_from=model_args.model_name_or_path, tasks="image-classification")
    if torch.distributed.is_initialized():
        # Tear down in order, on every process alike: the DDP wrapper (its gradient reducer) while the gloo group is
        # still up, then the group. Left to interpreter exit, the two die in any order and the exit may hang or abort.
        del trainer
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


if __name__ == "__main__":
    main()
