# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Evaluation of image classifiers and semantic segmentation models on a dataset, on one process or several.

* `evaluate(model, data, ...)`: what `pvt-hf evaluate MODEL DATA` runs. The model (a folder or Hub id, loaded with the
  Auto classes) decides the task; DATA is read accordingly; returns the result document (a JSON-ready dict).
* `evaluate_classification(model, processor, dataset, ...)`: top-1 / top-5 accuracy with the given processor.
* `evaluate_segmentation(model, processor, dataset, ...)`: mIoU, mAcc, aAcc and per-class IoU / accuracy with
  mmseg's test procedure: whole-image or sliding-window inference, optionally multi-scale and flipped.
* Dataset readers: `ImageFolderSource` (`ROOT/<class name>/<image files>`), `DatasetsSource` (a `datasets` dataset,
  or a folder saved with `save_to_disk`), `Ade20kSource` (the `ADEChallengeData2016` layout). Each has `len()`,
  `load(index) -> (RGB image, label)` and `describe(index)` (the file names, for error messages).
* `read_image(path)`: the one image reader of the command line, the evaluation and the examples (8-bit RGB, 16-bit
  files at full range, as the image processor reads them).

Accuracies and IoUs are fractions in [0, 1] (as the examples' `all_results.json` reports them), not percentages.

Several processes (`accelerate launch`, or `ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N` on CPUs)
each evaluate their share of the data, through accelerate's prepared data loader; the per-sample results are joined
with `gather_for_metrics` (which drops the samples repeated to give every process as many batches), so the result
equals the single-process one exactly (counts and confusion matrices are integers).

mmseg's test procedure (`EncoderDecoder.inference`, `slide_inference`, `aug_test`), which this follows:

* The model's image processor resizes the image (the official ADE20K transform: keep the aspect ratio within
  (2048, 512), sides rounded up to a multiple of 32) and normalizes it; multi-scale evaluation multiplies the
  processor's size by each ratio, as `MultiScaleFlipAug(img_ratios=...)` multiplies `img_scale`.
* The logits (1/4 resolution for Semantic FPN) are resized bilinearly to the network input (`encode_decode`); in
  sliding-window mode every CROP x CROP window's logits are, summed where the windows overlap and divided by the
  number of windows covering each pixel (the last window of a row or column is moved back to end at the border; an
  image side shorter than CROP is taken whole, mmseg pads nothing).
* Those logits are resized bilinearly to the annotation's size, turned into probabilities (softmax), flipped back
  for a flipped copy; the probabilities of all scales and flips are averaged, and the arg-max is the prediction.
* The metric is the library's streaming confusion matrix (`pvt_hf.tools.metrics`): all pixels of all images pooled, ADE20K's
  `reduce_zero_label` (annotation 0 ignored, every other class k becomes k - 1).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from ..image_processing_pvt import IGNORE_INDEX, PvtHfImageProcessor, _open_image
from .metrics import confusion_matrix, scores_from_confusion_matrix


logger = logging.getLogger(__name__)

__all__ = [
    "MULTI_SCALE_RATIOS",
    "Ade20kSource",
    "DatasetsSource",
    "ImageFolderSource",
    "evaluate",
    "evaluate_classification",
    "evaluate_segmentation",
    "load_model",
    "model_task",
    "read_classification_data",
    "read_image",
    "read_segmentation_data",
    "rgb_image",
    "segmentation_logits",
    "segmentation_scores",
    "sliding_windows",
]

TASKS = ("image-classification", "semantic-segmentation")
# torchvision's ImageFolder extensions (IMG_EXTENSIONS), compared case-insensitively
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # mmseg's ADE20K aug test
SIZE_KEYS = ("height", "width", "shortest_edge", "longest_edge")  # the sides of an image processor's `size`
IMAGE_COLUMNS, LABEL_COLUMNS = ("image", "img"), ("label", "labels")
DEFAULT_BATCH_SIZE = 32


# ---------------------------------------------------------------------------------------------------------- reading
_RGB_CONVERTER = PvtHfImageProcessor()  # its `process_image` is the one conversion of any input to 8-bit RGB


def rgb_image(image: PIL.Image.Image | np.ndarray, name: str = "image") -> PIL.Image.Image:
    """An image (PIL, or an (H, W[, C]) array) as an 8-bit RGB PIL image, converted as the image processor converts
    its inputs: 16-bit data (mode I;16, uint16 arrays) and float data scaled to 8 bits at full range (not clipped at
    255 as `convert("RGB")` clips them), grayscale and palette images expanded to RGB, alpha composited on white.
    Mode I holding values in [0, 65535] is 16-bit data too (no 8-bit file decodes to mode I; older Pillow decodes
    16-bit PNGs so)."""
    if isinstance(image, PIL.Image.Image) and image.mode == "I":
        values = np.asarray(image)
        if values.size and 0 <= values.min() and values.max() <= 65535:
            image = values.astype(np.uint16)
    converted = _RGB_CONVERTER.process_image(image, do_convert_rgb=True, name=name)
    return converted if isinstance(converted, PIL.Image.Image) else PIL.Image.fromarray(converted)


def read_image(path: str | os.PathLike) -> PIL.Image.Image:
    """The image file as an 8-bit RGB image, decoded now (EXIF orientation applied, 16-bit files at full range:
    `rgb_image`); a missing, damaged, truncated or unknown file is an `OSError` naming it."""
    try:
        image = rgb_image(_open_image(os.fspath(path), str(path), keep_mode=True), str(path))
    except (OSError, SyntaxError, ValueError) as error:
        reason = error.__cause__ or error  # the decoder's own words, without the loader's prefix
        message = " ".join(str(reason).split()).replace(f"`{path}`: ", "")
        raise OSError(f"cannot read the image file {path}: {message}") from error
    image.filename = str(path)  # as Pillow names an opened file: the image processor's errors name it
    return image


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A segmentation annotation (PNG of class ids) as a 2-D integer array; an `OSError` / `ValueError` naming it."""
    try:
        with PIL.Image.open(path) as image:
            label_map = np.array(image)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise OSError(f"cannot read the annotation file {path}: {' '.join(str(error).split())}") from error
    if label_map.ndim != 2 or label_map.dtype.kind not in "iu":
        raise ValueError(
            f"the annotation file {path} is not a single-channel map of class ids (got an array of shape "
            f"{label_map.shape} and dtype {label_map.dtype}; expected a mode L, P or I;16 PNG)"
        )
    return label_map


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _match_labels(
    names: Sequence[str], label2id: Mapping[str, int], num_labels: int, what: str
) -> tuple[list[int], str]:
    """Label ids for the data's class names: the model's ids by name when every name is one of its labels, else the
    position in `names` (sorted folders, a ClassLabel's order); some names matching and others not is an error."""
    matching = [name for name in names if name in label2id]
    if len(matching) == len(names):
        return [int(label2id[name]) for name in names], "by-name"
    if matching:
        others = [name for name in names if name not in label2id]
        raise ValueError(
            f"{what}: {len(matching)} of the {len(names)} class names are labels of the model but {others[:5]} are not; "
            "name every class as one of the model's labels (config.label2id), or none of them (the sorted order then "
            "gives the label ids)"
        )
    if len(names) > num_labels:
        raise ValueError(
            f"{what} has {len(names)} classes but the model has {num_labels} labels (and no class name is one of its "
            "labels, so the classes would be label ids 0, 1, ... in sorted order)"
        )
    return list(range(len(names))), "by-index"


class ImageFolderSource:
    """An ImageNet-style folder: `root/<class name>/<image files>` (torchvision's ImageFolder layout, the images
    directly in the class folders; other files are skipped, hidden folders too).

    Label ids: when every class folder is named after one of the model's labels (`label2id`), that label's id
    ("by-name"); when none is, the folder's position in sorted order, as torchvision's ImageFolder numbers them
    ("by-index"; ImageNet's `n01440764`-style folders sort into the standard class ids). Only some names matching is
    an error, as are more classes than `num_labels`."""

    def __init__(self, root: str | os.PathLike, label2id: Mapping[str, int], num_labels: int):
        self.root = root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"DATA: no such directory: {root}")
        self.classes = sorted(
            entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")
        )
        if not self.classes:
            raise FileNotFoundError(
                f"{root} has no class sub-folders; expected {root}/<class name>/<image files> (one folder per class, "
                "as torchvision's ImageFolder), an ADE20K folder for segmentation, or a datasets folder (save_to_disk)"
            )
        if {"images", "annotations"} <= set(self.classes):
            raise ValueError(
                f"{root} holds images/ and annotations/ (a segmentation dataset in the ADE20K layout), but the model "
                "is an image classifier"
            )
        ids, self.label_mapping = _match_labels(self.classes, label2id, num_labels, f"the class folders of {root}")
        self.samples: list[tuple[Path, int]] = []
        for name, label in zip(self.classes, ids):
            files = _image_files(root / name)
            if not files:
                nested = any(entry.is_dir() for entry in (root / name).iterdir())
                raise FileNotFoundError(
                    f"the class folder {root / name} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                    + (
                        f"; it holds folders: is {root} one level above the class folders (see --split)?"
                        if nested
                        else ""
                    )
                )
            self.samples += [(path, label) for path in files]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[PIL.Image.Image, int]:
        path, label = self.samples[index]
        return read_image(path), label

    def describe(self, index: int) -> str:
        return str(self.samples[index][0])


class DatasetsSource:
    """Rows of a `datasets.Dataset` with an image column (`image_column`; by default `image` or `img`) and a label
    column (`label_column`; by default `label` or `labels`).

    A `ClassLabel` column's names are matched to the model's labels as `ImageFolderSource` matches folder names; plain
    integers are taken as the model's label ids."""

    def __init__(
        self,
        dataset,
        label2id: Mapping[str, int],
        num_labels: int,
        what: str = "the dataset",
        image_column: str | None = None,
        label_column: str | None = None,
    ):
        import datasets

        columns = dataset.column_names
        for kind, name in (("image_column", image_column), ("label_column", label_column)):
            if name is not None and name not in columns:
                raise ValueError(f"{kind} {name!r}: {what} has no such column (columns: {columns})")
        self.image_column = image_column or next((c for c in IMAGE_COLUMNS if c in columns), None)
        self.label_column = label_column or next((c for c in LABEL_COLUMNS if c in columns), None)
        if self.image_column is None or self.label_column is None:
            raise ValueError(
                f"{what} has the columns {columns}; expected an image column ({' or '.join(IMAGE_COLUMNS)}) and a label "
                f"column ({' or '.join(LABEL_COLUMNS)})"
            )
        self.dataset, self.what, self.num_labels, self.split = dataset, what, num_labels, None
        if len(dataset) == 0:
            raise ValueError(f"{what} holds no rows (an empty dataset)")
        image_feature = dataset.features[self.image_column]
        if isinstance(image_feature, datasets.Value):  # strings (file paths?) or numbers, not images
            raise ValueError(
                f"the {self.image_column!r} column of {what} holds {image_feature.dtype} values (row 0: "
                f"{dataset[0][self.image_column]!r}); expected images (a datasets.Image column; file paths become one "
                f"with dataset.cast_column({self.image_column!r}, datasets.Image()))"
            )
        feature = dataset.features[self.label_column]
        self.id_map, self.label_mapping = None, "dataset-ids"
        if isinstance(feature, datasets.ClassLabel):
            ids, self.label_mapping = _match_labels(
                feature.names, label2id, num_labels, f"the {self.label_column!r} names of {what}"
            )
            self.id_map = ids if self.label_mapping == "by-name" else None
        elif not (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
            kind = feature.dtype if isinstance(feature, datasets.Value) else type(feature).__name__
            hint = (
                f"; class names become a ClassLabel (matched to the model's labels by name) with "
                f"dataset.class_encode_column({self.label_column!r})"
                if kind in ("string", "large_string")
                else ""
            )
            raise ValueError(
                f"the {self.label_column!r} column of {what} holds {kind} values (row 0: "
                f"{dataset[0][self.label_column]!r}); expected integer class ids (the model's label ids) or a "
                f"datasets.ClassLabel{hint}"
            )

    @classmethod
    def from_disk(cls, path: str | os.PathLike, split: str | None, label2id: Mapping[str, int], num_labels: int):
        """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (then `split`, by default
        "validation", else "test", else its only split)."""
        import datasets

        try:
            loaded = datasets.load_from_disk(str(path))
        except (IndexError, ValueError, OSError, KeyError) as error:  # datasets cannot load a saved empty dataset
            empty = [
                state.parent for state in Path(path).rglob("state.json") if '"_data_files": []' in state.read_text()
            ]
            if empty:
                raise ValueError(f"{empty[0]} holds no rows (an empty dataset)") from error
            raise ValueError(f"DATA {path}: cannot read it as a datasets folder (save_to_disk): {error}") from error
        if isinstance(loaded, datasets.DatasetDict):
            splits = list(loaded)
            if split is None:
                split = next(
                    (s for s in ("validation", "test") if s in splits), splits[0] if len(splits) == 1 else None
                )
                if split is None:
                    raise ValueError(f"{path} has the splits {splits}; choose one with --split")
            if split not in splits:
                raise ValueError(f"--split: {path} has no split {split!r} (splits: {splits})")
            source = cls(loaded[split], label2id, num_labels, what=f"{path} (split {split!r})")
            source.split = split
            return source
        if split is not None:
            raise ValueError(
                f"--split {split!r}: {path} is a single dataset (saved from a Dataset, not a DatasetDict)"
            )
        return cls(loaded, label2id, num_labels, what=str(path))

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> tuple[PIL.Image.Image, int]:
        where = f"row {index} of {self.what}"
        try:  # the Image feature decodes the file when the row is read
            row = self.dataset[index]
            image = row[self.image_column]
        except (OSError, SyntaxError, ValueError, TypeError) as error:
            raise OSError(f"cannot read the image of {where} ({self.describe(index)}): {error}") from error
        if not isinstance(image, (PIL.Image.Image, np.ndarray, list)):
            raise ValueError(f"{where}: the {self.image_column!r} column holds {image!r}; expected an image")
        try:
            image = rgb_image(
                np.asarray(image) if isinstance(image, list) else image, f"{self.image_column} of {where}"
            )
        except (OSError, ValueError) as error:
            raise OSError(f"cannot read the image of {where} ({self.describe(index)}): {error}") from error
        label = row[self.label_column]
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise ValueError(
                f"{where}: the {self.label_column!r} column holds {label!r}; expected an integer class id"
            )
        label = int(label)
        if self.id_map is not None:
            if not 0 <= label < len(self.id_map):  # -1: a ClassLabel's "no label"
                raise ValueError(
                    f"{where}: the {self.label_column!r} column holds {label}, not one of its {len(self.id_map)} classes"
                )
            label = self.id_map[label]
        if not 0 <= label < self.num_labels:
            raise ValueError(
                f"{where}: the {self.label_column!r} column holds label {label}; the model's labels are 0 .. {self.num_labels - 1}"
            )
        return image, label

    def describe(self, index: int) -> str:
        """The row and its image file, as far as the dataset stores it."""
        import datasets

        try:
            raw = self.dataset.cast_column(self.image_column, datasets.Image(decode=False))[index][self.image_column]
            return f"row {index}: {raw.get('path') or 'image bytes in the dataset'}"
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
        ):  # not an Image column: the row number is all there is
            return f"row {index}"


class Ade20kSource:
    """One split of an `ADEChallengeData2016` folder: `images/SPLIT/*.jpg` with `annotations/SPLIT/<same stem>.png`
    (as mmseg's ADE20KDataset; images of the other common formats are read too)."""

    def __init__(self, root: str | os.PathLike, split: str = "validation"):
        self.root = root = Path(root)
        image_dir, annotation_dir = root / "images" / split, root / "annotations" / split
        for folder in (image_dir, annotation_dir):
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"{root} has no {folder.relative_to(root)} folder; expected the ADE20K layout {root}/images/{split}/*.jpg "
                    f"and {root}/annotations/{split}/*.png (see --split)"
                )
        images = _image_files(image_dir)
        if not images:
            raise FileNotFoundError(f"no image files in {image_dir}")
        missing = [p for p in images if not (annotation_dir / f"{p.stem}.png").is_file()]
        if missing:
            raise FileNotFoundError(
                f"the image {missing[0]} has no annotation {annotation_dir / (missing[0].stem + '.png')}"
                + (f" ({len(missing)} images have none)" if len(missing) > 1 else "")
            )
        self.pairs = [(p, annotation_dir / f"{p.stem}.png") for p in images]
        self.split = split

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[PIL.Image.Image, np.ndarray]:
        image_path, annotation_path = self.pairs[index]
        image, label_map = read_image(image_path), read_label_map(annotation_path)
        if label_map.shape != (image.height, image.width):
            raise ValueError(
                f"the annotation {annotation_path} is {label_map.shape[1]}x{label_map.shape[0]} but its image "
                f"{image_path} is {image.width}x{image.height}"
            )
        return image, label_map

    def describe(self, index: int) -> str:
        image_path, annotation_path = self.pairs[index]
        return f"{image_path} (annotation {annotation_path})"


class Subset:
    """The first `count` samples of a source."""

    def __init__(self, source, count: int):
        self.source, self.count = source, min(count, len(source))

    def __len__(self) -> int:
        return self.count

    def load(self, index: int):
        return self.source.load(index)

    def describe(self, index: int) -> str:
        return _describe(self.source, index)


def _describe(source, index: int) -> str:
    return source.describe(index) if hasattr(source, "describe") else f"sample {index}"


def _is_datasets_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def check_data_folder(data: str | os.PathLike) -> None:
    """DATA must be a folder (every dataset layout read here is one); a file or a missing path is named."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"DATA: no such file or directory: {data}")
    if not data.is_dir():
        raise NotADirectoryError(
            f"DATA {data} is a file; expected a folder: an image folder (DATA/<class name>/<images>) or a datasets "
            "folder (save_to_disk) for a classifier, an ADE20K folder (images/, annotations/) for a segmentation model"
        )


def read_classification_data(
    data: str | os.PathLike, label2id: Mapping[str, int], num_labels: int, split: str | None = None
):
    """DATA for a classifier: a `save_to_disk` folder (`DatasetsSource`), else an image folder (`ImageFolderSource`)
    of `data/split` when `split` is given, of `data` otherwise."""
    data = Path(data)
    check_data_folder(data)
    if _is_datasets_folder(data):
        return DatasetsSource.from_disk(data, split, label2id, num_labels)
    root = data / split if split is not None else data
    if split is not None and not root.is_dir():
        raise FileNotFoundError(f"--split {split!r}: no folder {root}")
    return ImageFolderSource(root, label2id, num_labels)


def read_segmentation_data(data: str | os.PathLike, split: str | None = None) -> Ade20kSource:
    """DATA for a segmentation model: an ADE20K-layout folder, split "validation" unless `split` says otherwise."""
    data = Path(data)
    check_data_folder(data)
    return Ade20kSource(data, split or "validation")


# ---------------------------------------------------------------------------------------------------------- models
TASK_AUTO_CLASSES = {
    "image-classification": "AutoModelForImageClassification",
    "semantic-segmentation": "AutoModelForSemanticSegmentation",
}


def model_task(config, argument: str = "MODEL", command: str = "pvt-hf evaluate") -> str:
    """ "image-classification" or "semantic-segmentation": the task whose Auto class builds `config.architectures`
    (through transformers' mappings, or the `auto_map` of remote code). Other models (a bare `PvtModel`, a
    `PvtBackbone`, ...) are a `ValueError` naming `argument` and what `command` takes."""
    import transformers

    architectures = set(getattr(config, "architectures", None) or [])
    auto_map = getattr(config, "auto_map", None) or {}
    for task, auto_name in TASK_AUTO_CLASSES.items():
        names = set()
        try:
            mapped = getattr(transformers, auto_name)._model_mapping[type(config)]
            names.update(c.__name__ for c in (mapped if isinstance(mapped, (list, tuple)) else [mapped]))
        except KeyError:
            pass
        if auto_name in auto_map:
            names.add(str(auto_map[auto_name]).rsplit(".", 1)[-1])
        if names & architectures:
            return task
    described = (
        ", ".join(sorted(architectures)) or f"a {config.model_type} model without `architectures` in its config"
    )
    raise ValueError(
        f"{argument} {getattr(config, 'name_or_path', '') or ''} is {described}, which has no classification or "
        f"segmentation head; {command} takes image "
        "classifiers (AutoModelForImageClassification) and semantic segmentation models "
        "(AutoModelForSemanticSegmentation)"
    )


def load_model(
    model: str,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    argument: str = "MODEL",
    command: str = "pvt-hf evaluate",
):
    """`(model, image processor, task)` of a model folder or Hub id, loaded with the Auto classes (in eval mode).
    The config's `architectures` decide the task (`model_task`; `argument` and `command` name them in its error);
    a checkpoint that lacks weights of the model (a head that would be initialised at random) is a `ValueError`.

    `dtype`: a torch dtype or a name of `pvt_hf.tools.hub.DTYPES` ("bf16", "float16", ...) for the weights; default: as
    saved. A pvt-hf folder without a saved image processor gets the official transform of its task (logged)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor

    from .. import PvtConfig, PvtImageProcessor
    from .hub import DTYPES

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype]
    config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    task = model_task(config, argument, command)
    auto_class = getattr(transformers, TASK_AUTO_CLASSES[task])
    loaded, loading_info = auto_class.from_pretrained(
        model, trust_remote_code=trust_remote_code, output_loading_info=True, **({"dtype": dtype} if dtype else {})
    )
    missing = sorted(loading_info.get("missing_keys") or [])
    if missing:
        raise ValueError(
            f"{argument} {model}: its weights lack {len(missing)} tensors of {type(loaded).__name__} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}), which would be random; give a folder "
            "saved from this model class"
        )
    try:
        processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        if not isinstance(config, PvtConfig):
            raise ValueError(f"{argument} {model}: cannot load its image processor ({error})") from error
        processor = (
            PvtImageProcessor.for_semantic_segmentation() if task == "semantic-segmentation" else PvtImageProcessor()
        )
        logger.warning("%s has no image processor; using the official %s transform", model, task)
    return loaded.eval(), processor, task


# ---------------------------------------------------------------------------------------------------------- inference
def sliding_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg's `slide_inference` windows over a `height` x `width` image: `(top, bottom, left, right)` of every
    crop, row by row; windows start every `stride` pixels, the last of a row / column ends at the border, and a side
    shorter than `crop` is covered by one window of its length."""
    _check_window(crop, stride)
    rows = max(height - crop + stride - 1, 0) // stride + 1
    columns = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for row in range(rows):
        for column in range(columns):
            bottom, right = min(row * stride + crop, height), min(column * stride + crop, width)
            windows.append((max(bottom - crop, 0), bottom, max(right - crop, 0), right))
    return windows


def _input_size_logits(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """mmseg's `encode_decode`: the model's logits, resized bilinearly to the input's size, in float32."""
    logits = model(pixel_values=pixel_values).logits.float()
    if logits.shape[-2:] != pixel_values.shape[-2:]:
        logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    return logits


@torch.inference_mode()
def segmentation_logits(
    model, pixel_values: torch.Tensor, sliding_window: tuple[int, int] | None = None
) -> torch.Tensor:
    """Segmentation logits `(B, num_labels, H, W)` at the size of `pixel_values` `(B, 3, H, W)`: whole-image
    inference, or with `sliding_window=(crop, stride)` mmseg's `slide_inference` (window logits summed, divided by
    the number of windows covering each pixel). Float32 whatever the model's dtype."""
    pixel_values = pixel_values.to(model.device, model.dtype)
    if sliding_window is None:
        return _input_size_logits(model, pixel_values)
    height, width = pixel_values.shape[-2:]
    summed, counts = None, pixel_values.new_zeros((1, 1, height, width), dtype=torch.float32)
    for top, bottom, left, right in sliding_windows(height, width, *sliding_window):
        logits = _input_size_logits(model, pixel_values[..., top:bottom, left:right])
        if summed is None:
            summed = logits.new_zeros((*logits.shape[:2], height, width))
        summed[..., top:bottom, left:right] += logits
        counts[..., top:bottom, left:right] += 1
    return summed / counts


@torch.inference_mode()
def segmentation_scores(
    model,
    pixel_values: Sequence[torch.Tensor],
    size: tuple[int, int],
    flip: bool = False,
    sliding_window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """mmseg's `simple_test` / `aug_test` scores `(B, num_labels, *size)`: for each input of `pixel_values` (one per
    scale) and, with `flip`, its horizontal mirror, the logits (`segmentation_logits`) resized bilinearly to `size`
    (the annotation's), softmax-ed, mirrored back; the mean of them all. The prediction is their arg-max."""
    total, count = None, 0
    for inputs in pixel_values:
        for flipped in (False, True) if flip else (False,):
            logits = segmentation_logits(model, inputs.flip(-1) if flipped else inputs, sliding_window)
            if tuple(logits.shape[-2:]) != tuple(size):
                logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
            scores = logits.softmax(dim=1)
            scores = scores.flip(-1) if flipped else scores
            total = scores if total is None else total.add_(scores)
            count += 1
    return total / count


def scaled_size(size, ratio: float) -> dict[str, int]:
    """An image processor's `size` with every side multiplied by `ratio`, rounded down (mmseg's `img_ratios`:
    `(int(2048 * ratio), int(512 * ratio))`)."""
    if isinstance(size, int):
        size = {"shortest_edge": size}
    sides = {key: size.get(key) if isinstance(size, Mapping) else getattr(size, key, None) for key in SIZE_KEYS}
    scaled = {key: int(value * ratio) for key, value in sides.items() if value}
    if not scaled:
        raise ValueError(f"--scales: the image processor's size {size} has no height / width or edge to scale")
    return scaled


# ---------------------------------------------------------------------------------------------------------- running
class _ClassificationItems(torch.utils.data.Dataset):
    """Samples through the image processor; a sample that cannot be read becomes `{"error": message}` (raised by
    the evaluation loop, on every process at once, instead of a worker's traceback)."""

    def __init__(self, source, processor):
        self.source, self.processor = source, processor

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        try:
            image, label = self.source.load(index)  # its errors name the file
        except (OSError, ValueError) as error:
            return {"error": " ".join(str(error).split())}
        try:
            pixel_values = self.processor(image, return_tensors="pt")["pixel_values"][0]
        except (OSError, ValueError) as error:
            return {"error": _sample_error(self.source, index, error)}
        return {"pixel_values": pixel_values, "labels": label, "index": index}


class _SegmentationItems(torch.utils.data.Dataset):
    """An image at every scale through the image processor, with its annotation at the original size."""

    def __init__(self, source, processor, scales: Sequence[float]):
        self.source, self.processor = source, processor
        self.sizes = [None if ratio == 1.0 else scaled_size(processor.size, ratio) for ratio in scales]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        try:
            image, label_map = self.source.load(index)  # its errors name the files
        except (OSError, ValueError) as error:
            return {"error": " ".join(str(error).split())}
        try:
            pixel_values = [
                self.processor(image, return_tensors="pt", **({"size": size} if size else {}))["pixel_values"]
                for size in self.sizes
            ]
        except (OSError, ValueError) as error:
            return {"error": _sample_error(self.source, index, error)}
        return {"pixel_values": pixel_values, "labels": label_map, "index": index}


def _sample_error(source, index: int, error: Exception) -> str:
    """One line naming the sample's files (`describe`) and what went wrong."""
    return f"{_describe(source, index)}: {' '.join(str(error).split())}"


def _collate_classification(items: list[dict]) -> dict:
    errors = [item["error"] for item in items if "error" in item]
    if errors:
        return {"error": errors[0]}
    return torch.utils.data.default_collate(items)


def _only_item(items: list[dict]) -> dict:
    return items[0]


def _raise_if_any_failed(accelerator, device: torch.device, error: str | None, cause: Exception | None = None) -> None:
    """A collective step: if any process met an error (`error`, a message naming the sample), every process raises
    it, as a `ValueError` (one process raising alone would leave the others waiting in the next gather)."""
    failed = error is not None
    if accelerator.num_processes > 1:
        failed = bool(accelerator.gather(torch.tensor([failed], device=device)).any())
        if failed:
            from accelerate.utils import gather_object

            messages = gather_object([error])  # collective: every process takes part
            error = error or next(message for message in messages if message)
    if failed:
        raise ValueError(error) from cause


def _default_num_workers() -> int:
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(4, (os.cpu_count() or 1) // max(1, local_processes) - 1))


def _accelerator(accelerator=None):
    """The given Accelerator, or a new one; launched as several processes that accelerate did not join, an error."""
    try:
        from accelerate import Accelerator
    except ImportError as error:
        raise ImportError("pvt-hf evaluate needs accelerate: pip install accelerate (or pvt-hf[examples])") from error
    accelerator = accelerator or Accelerator()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes == 1:
        raise RuntimeError(
            f"started as {launched} processes (WORLD_SIZE={launched}), but accelerate found no GPU to run them together, "
            "so each would evaluate everything alone; on CPUs set ACCELERATE_USE_CPU=1 (ACCELERATE_USE_CPU=1 torchrun "
            f"--standalone --nproc_per_node {launched} -m pvt_hf_cli evaluate ...)"
        )
    return accelerator


def _evaluation_device(accelerator, device) -> torch.device:
    """`device` on a single process (default: the accelerator's); with several processes each one's own device."""
    if accelerator.num_processes > 1:
        if device is not None and torch.device(device).type != accelerator.device.type:
            raise ValueError(
                f"--device {device}: with {accelerator.num_processes} processes each runs on its accelerate device "
                f"({accelerator.device.type}); leave --device out"
            )
        return accelerator.device
    return torch.device(device) if device is not None else accelerator.device


def _loader(accelerator, dataset, batch_size: int, collate_fn, num_workers: int | None):
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        num_workers=_default_num_workers() if num_workers is None else num_workers,
    )
    return accelerator.prepare_data_loader(loader, device_placement=False)


def _progress(loader, accelerator):
    from tqdm.auto import tqdm

    return tqdm(loader, desc="evaluating", disable=True if not accelerator.is_local_main_process else None)


def _label2id(config) -> dict[str, int]:
    """The config's label2id, else the inverse of its id2label (a config given only id2label may store no label2id)."""
    return config.label2id or {str(name): int(index) for index, name in (config.id2label or {}).items()}


def _check_dataset(dataset, model, what: str):
    if not hasattr(dataset, "load"):  # a `datasets.Dataset`
        dataset = DatasetsSource(dataset, _label2id(model.config), model.config.num_labels)
    if len(dataset) == 0:
        raise ValueError(f"{what} holds no samples")
    return dataset


@torch.inference_mode()
def evaluate_classification(
    model,
    processor,
    dataset,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    accelerator=None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (fractions in [0, 1]) of an image classifier on `dataset` (a source of this module, or a
    `datasets.Dataset`), with `processor` (the model's image processor) as the evaluation transform.

    Top-5 is top-`min(5, num_labels)`. Returns `top1_accuracy`, `top5_accuracy`, `num_samples`, `num_processes`.
    With several processes (an `accelerate` launch) every process evaluates its share and returns the total."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    accelerator = _accelerator(accelerator)
    device = _evaluation_device(accelerator, device)
    dataset = _check_dataset(dataset, model, "the dataset")
    model = model.to(device).eval()
    top_k = min(5, model.config.num_labels)
    loader = _loader(
        accelerator, _ClassificationItems(dataset, processor), batch_size, _collate_classification, num_workers
    )
    totals = torch.zeros(3, dtype=torch.int64, device=device)  # samples, top-1 hits, top-k hits
    for batch in _progress(loader, accelerator):
        error, cause = batch.get("error"), None
        if error is None:
            try:
                logits = model(pixel_values=batch["pixel_values"].to(device, model.dtype)).logits.float()
                labels = batch["labels"].to(device)
                best = logits.topk(top_k, dim=-1).indices
                hits = torch.stack([best[:, 0] == labels, (best == labels[:, None]).any(dim=-1)], dim=1).long()
            except (ValueError, RuntimeError) as failure:  # an input the model refuses, out of memory, ...
                first = _describe(dataset, int(batch["index"][0]))
                error, cause = (
                    f"the batch of {len(batch['index'])} samples from {first}: {' '.join(str(failure).split())}",
                    failure,
                )
        _raise_if_any_failed(accelerator, device, error, cause)
        hits = accelerator.gather_for_metrics(hits)
        totals += torch.cat([hits.new_tensor([len(hits)]), hits.sum(dim=0)])
    samples, top1, top5 = totals.tolist()
    return {
        "num_samples": samples,
        "top1_accuracy": top1 / samples,
        "top5_accuracy": top5 / samples,
        "top_k": top_k,
        "num_processes": accelerator.num_processes,
    }


def _check_window(crop: int, stride: int) -> None:
    if crop < 1 or not 1 <= stride <= crop:
        raise ValueError(
            f"--sliding-window CROP STRIDE: need CROP >= 1 and 1 <= STRIDE <= CROP (a larger stride would leave pixels "
            f"that no window covers), got CROP {crop} and STRIDE {stride}"
        )


def _smallest_input(model) -> int:
    """The smallest image side a PVT model takes (1 for other models: they say so themselves)."""
    encoder = getattr(getattr(model, "pvt", None), "encoder", None)
    return encoder.smallest_size() if hasattr(encoder, "smallest_size") else 1


def _check_scales(model, processor, scales: Sequence[float]) -> None:
    """Every scaled size of the processor must be one the model takes: `--scales 0.001` is named, not the
    model's complaint about a 1x1 input."""
    if not scales or any(not (ratio > 0 and math.isfinite(ratio)) for ratio in scales):
        raise ValueError(f"--scales must be positive ratios, got {list(scales)}")
    smallest = _smallest_input(model)
    for ratio in scales:
        sides = scaled_size(processor.size, ratio)
        if min(sides.values()) < smallest:
            raise ValueError(
                f"--scales {ratio:g}: the image processor's size times {ratio:g} is {sides}, below the smallest input "
                f"the model takes ({smallest} px); use larger ratios"
            )


def _check_sliding_window(model, sliding_window) -> tuple[int, int] | None:
    """`(crop, stride)` checked against each other and against the smallest input a PVT model takes."""
    if sliding_window is None:
        return None
    crop, stride = (int(v) for v in sliding_window)
    _check_window(crop, stride)
    smallest = _smallest_input(model)
    if crop < smallest:
        raise ValueError(
            f"--sliding-window: CROP {crop} is smaller than the smallest input the model takes ({smallest} px)"
        )
    return crop, stride


@torch.inference_mode()
def evaluate_segmentation(
    model,
    processor,
    dataset,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    sliding_window: tuple[int, int] | None = None,
    reduce_labels: bool = True,
    num_workers: int | None = None,
    accelerator=None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """mIoU, mAcc, aAcc and per-class IoU / accuracy (fractions in [0, 1]; `None` for a class absent from
    annotations and predictions) of a semantic segmentation model on `dataset` (`Ade20kSource` or any source of (image, label map)),
    with mmseg's test procedure (see the module docstring): one image at a time, `processor` (the model's image
    processor) at each of `scales` (ratios of its size), with `flip` the mirrored copies too, `sliding_window=(crop,
    stride)` or whole-image inference. `reduce_labels`: ADE20K's reduce_zero_label on the annotations."""
    scales = [float(ratio) for ratio in scales]
    _check_scales(model, processor, scales)
    sliding_window = _check_sliding_window(model, sliding_window)
    accelerator = _accelerator(accelerator)
    device = _evaluation_device(accelerator, device)
    dataset = _check_dataset(dataset, model, "the dataset")
    model = model.to(device).eval()
    num_labels = model.config.num_labels
    loader = _loader(accelerator, _SegmentationItems(dataset, processor, scales), 1, _only_item, num_workers)
    total = torch.zeros((num_labels, num_labels), dtype=torch.int64, device=device)
    samples = 0
    for item in _progress(loader, accelerator):
        error, cause = item.get("error"), None
        if error is None:
            labels = torch.as_tensor(np.asarray(item["labels"], dtype=np.int64), device=device)[None]
            try:
                scores = segmentation_scores(model, item["pixel_values"], labels.shape[-2:], flip, sliding_window)
                counts = confusion_matrix(scores.argmax(dim=1), labels, num_labels, IGNORE_INDEX, reduce_labels)
            except (ValueError, RuntimeError) as failure:  # class ids outside the model's labels, out of memory, ...
                error, cause = _sample_error(dataset, item["index"], failure), failure
        _raise_if_any_failed(accelerator, device, error, cause)
        gathered = accelerator.gather_for_metrics(counts[None])
        total += gathered.sum(dim=0)
        samples += len(gathered)
    scores = scores_from_confusion_matrix(total)
    names = [str(model.config.id2label.get(i, i)) for i in range(num_labels)]

    def fraction(value) -> float | None:
        value = float(value)
        return None if math.isnan(value) else value

    return {
        "num_samples": samples,
        "mIoU": fraction(scores["mean_iou"]),
        "mAcc": fraction(scores["mean_accuracy"]),
        "aAcc": fraction(scores["overall_accuracy"]),
        "per_class_iou": {name: fraction(v) for name, v in zip(names, scores["per_category_iou"])},
        "per_class_accuracy": {name: fraction(v) for name, v in zip(names, scores["per_category_accuracy"])},
        "mode": "slide" if sliding_window else "whole",
        "sliding_window": list(sliding_window) if sliding_window else None,
        "scales": scales,
        "flip": bool(flip),
        "reduce_labels": bool(reduce_labels),
        "num_processes": accelerator.num_processes,
    }


def evaluate(
    model: str,
    data: str | os.PathLike,
    *,
    split: str | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    max_samples: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    sliding_window: tuple[int, int] | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    multi_scale_flip: bool = False,
    reduce_labels: bool = True,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """`pvt-hf evaluate MODEL DATA`: load `model` (folder or Hub id), read `data` for its task, evaluate, and return
    the result document: the task's metrics (`evaluate_classification` / `evaluate_segmentation`) with what was
    evaluated. Every process of a distributed launch returns it.

    Classification: `batch_size` (default 32). Segmentation: one image at a time (`batch_size` must be 1 or unset);
    `multi_scale_flip` is mmseg's aug test (`scales` default 0.5 ... 1.75 and `flip`), `scales` / `flip` override it.
    `max_samples`: only the first N samples, in the readers' order (sorted files)."""
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"--max-samples must be at least 1, got {max_samples}")
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"--num-workers must be 0 or more, got {num_workers}")
    check_data_folder(data)
    accelerator = _accelerator()
    loaded, processor, task = load_model(model, dtype, trust_remote_code)
    segmentation_options = {
        "--sliding-window": sliding_window,
        "--scales": scales,
        "--flip": flip,
        "--multi-scale-flip": multi_scale_flip or None,
    }
    if task == "image-classification":
        given = [name for name, value in segmentation_options.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: for semantic segmentation models; MODEL {model} is an image classifier"
            )
        source = read_classification_data(data, _label2id(loaded.config), loaded.config.num_labels, split)
    else:
        if batch_size not in (None, 1):
            raise ValueError(
                f"--batch-size {batch_size}: segmentation models are evaluated one whole image at a time (as mmseg); "
                "leave --batch-size out"
            )
        source = read_segmentation_data(data, split)
    label_mapping = getattr(source, "label_mapping", None)
    source_split = getattr(source, "split", split)
    if max_samples is not None:
        source = Subset(source, max_samples)
    if accelerator.is_main_process:
        logger.info(
            "Evaluating %s (%s) on %d samples of %s on %d process(es)",
            model,
            task,
            len(source),
            data,
            accelerator.num_processes,
        )
    if task == "image-classification":
        metrics = evaluate_classification(
            loaded,
            processor,
            source,
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
            num_workers=num_workers,
            accelerator=accelerator,
            device=device,
        )
        details = {"label_mapping": label_mapping}
    else:
        metrics = evaluate_segmentation(
            loaded,
            processor,
            source,
            scales=scales or (MULTI_SCALE_RATIOS if multi_scale_flip else (1.0,)),
            flip=multi_scale_flip if flip is None else flip,
            sliding_window=sliding_window,
            reduce_labels=reduce_labels,
            num_workers=num_workers,
            accelerator=accelerator,
            device=device,
        )
        details = {}
    return {
        "task": task,
        "model": str(model),
        "data": str(data),
        "split": source_split,  # the split read (the default one too); None: data without splits
        **details,
        **metrics,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "device": str(_evaluation_device(accelerator, device)),
    }
