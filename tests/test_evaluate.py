"""`pvt-hf evaluate MODEL DATA`: accuracy and mIoU equal to an independent computation over the model, in every test
mode (whole image, sliding window, multi-scale and flip), on one and two processes; bad input is one clear line and
writes nothing."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import test_examples
import torch
import torch.nn.functional as F
from conftest import pvt_hf_script, tiny_config
from PIL import Image
from test_examples import load_example, truncated_copy

from pvt_hf import PvtForSemanticSegmentation, PvtImageProcessor, PvtModel
from pvt_hf.tools.demo import DEMO_DIR, digit_image, load_heldout
from pvt_hf.tools.evaluation import segmentation_logits, sliding_windows
from pvt_hf_cli import main


ade_dir = test_examples.ade_dir  # the fixture of the generated shapes (ADE20K layout)
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
SEG_SIZE = {"shortest_edge": 64, "longest_edge": 256}  # a small version of the official (512, 2048) for speed
CLASSES = load_example("make_shapes_dataset").LABELS  # the generated shapes' classes, background included


def evaluate(capsys, *argv) -> dict:
    """`pvt-hf evaluate ...` in this process; the JSON it printed."""
    capsys.readouterr()
    assert main(["evaluate", *map(str, argv), "--num-workers", "0"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def failure(capsys, *argv) -> str:
    """`pvt-hf evaluate ...` that must fail with one line on stderr; that line."""
    capsys.readouterr()
    assert main(["evaluate", *map(str, argv)]) == 1
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("pvt-hf evaluate: error:") and "Traceback" not in captured.err, captured.err
    assert captured.out == "", captured.out
    return error


# ---------------------------------------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def digits():
    """The demo model's 360 held-out digits (never seen in training) as RGB images, with their labels."""
    images, labels = load_heldout()
    return [digit_image(image) for image in images], [int(label) for label in labels]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, digits):
    """The held-out digits as an ImageNet-style folder: ROOT/<digit>/<index>.png."""
    root = tmp_path_factory.mktemp("digits")
    for index, (image, label) in enumerate(zip(*digits)):
        (root / str(label)).mkdir(exist_ok=True)
        image.save(root / str(label) / f"{index:04d}.png")
    return root


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    """A tiny random Semantic FPN for the three shapes, saved with a (smaller) official ADE20K test transform."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("seg") / "model"
    model = PvtForSemanticSegmentation(tiny_config(2, num_labels=len(CLASSES), id2label=dict(enumerate(CLASSES))))
    model.save_pretrained(folder)
    PvtImageProcessor.for_semantic_segmentation(size=SEG_SIZE).save_pretrained(folder)
    return folder


def shapes_samples(ade_dir):
    """(image, annotation) of every validation image, read here as the test's own copy."""
    images = sorted((ade_dir / "images" / "validation").glob("*.jpg"))
    return [
        (Image.open(p).convert("RGB"), np.array(Image.open(ade_dir / "annotations" / "validation" / f"{p.stem}.png")))
        for p in images
    ]


# ---------------------------------------------------------------------------------------------------------- references
def direct_accuracy(images, labels, folder=DEMO_DIR) -> tuple[float, float]:
    """Top-1 / top-5 accuracy (fractions) of a plain loop over the model: processor, forward, numpy ranks."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = np.concatenate(
            [
                model(**processor(images[i : i + 64], return_tensors="pt")).logits.numpy()
                for i in range(0, len(images), 64)
            ]
        )
    ranks = np.argsort(-logits, axis=1)
    labels = np.asarray(labels)
    return float(np.mean(ranks[:, 0] == labels)), float(np.mean((ranks[:, :5] == labels[:, None]).any(axis=1)))


def direct_segmentation(folder, samples, scales=(1.0,), flip=False, window=None) -> dict:
    """mIoU / mAcc / aAcc (fractions) and per-class IoU the way mmseg's test computes them, written out step by step: the
    processor at each scale of its size, logits bilinear to the input, (window logits summed / counted), bilinear to
    the annotation, softmax, flipped copies mirrored back, averaged, arg-max; reduce_zero_label; pooled counts."""
    model = PvtForSemanticSegmentation.from_pretrained(folder).eval()
    processor = PvtImageProcessor.from_pretrained(folder)
    num_labels = model.config.num_labels
    counts = np.zeros((num_labels, num_labels), np.int64)

    def logits_at_input(pixel_values):
        logits = model(pixel_values).logits
        return F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)

    for image, annotation in samples:
        total = 0
        for ratio in scales:
            size = {key: int(value * ratio) for key, value in SEG_SIZE.items()}
            pixel_values = processor(image, size=size, return_tensors="pt")["pixel_values"]
            for flipped in (False, True) if flip else (False,):
                inputs = pixel_values.flip(-1) if flipped else pixel_values
                with torch.no_grad():
                    if window is None:
                        logits = logits_at_input(inputs)
                    else:
                        height, width = inputs.shape[-2:]
                        logits, seen = torch.zeros(1, num_labels, height, width), torch.zeros(1, 1, height, width)
                        for top, bottom, left, right in sliding_windows(height, width, *window):
                            logits[..., top:bottom, left:right] += logits_at_input(inputs[..., top:bottom, left:right])
                            seen[..., top:bottom, left:right] += 1
                        logits = logits / seen
                    logits = F.interpolate(logits, size=annotation.shape, mode="bilinear", align_corners=False)
                scores = logits.softmax(dim=1)
                total = total + (scores.flip(-1) if flipped else scores)
        prediction = (total / (len(scales) * (2 if flip else 1))).argmax(dim=1)[0].numpy()
        reference = annotation.astype(np.int64) - 1  # reduce_zero_label: 0 (background) ignored
        keep = annotation != 0
        counts += np.bincount(reference[keep] * num_labels + prediction[keep], minlength=num_labels**2).reshape(
            num_labels, num_labels
        )
    assert (counts.sum(axis=0) > 0).sum() >= 2, "the random model should predict more than one class here"
    hits = np.diag(counts).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = hits / (counts.sum(0) + counts.sum(1) - hits)
        accuracy = hits / counts.sum(1)
    return {
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(accuracy),
        "aAcc": hits.sum() / counts.sum(),
        "per_class_iou": {name: None if np.isnan(v) else v for name, v in zip(CLASSES, iou)},
    }


def assert_segmentation_equals(result, expected):
    for key in ("mIoU", "mAcc", "aAcc"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    assert result["per_class_iou"] == pytest.approx(expected["per_class_iou"], rel=1e-12, abs=1e-12)


METRIC_KEYS = (
    "num_samples",
    "top1_accuracy",
    "top5_accuracy",
    "mIoU",
    "mAcc",
    "aAcc",
    "per_class_iou",
    "per_class_accuracy",
)


def metrics(result):
    return {key: result[key] for key in METRIC_KEYS if key in result}


# ---------------------------------------------------------------------------------------------------------- classification
def test_classification_on_an_image_folder_equals_a_direct_loop(capsys, digits_folder, digits):
    result = evaluate(capsys, DEMO_DIR, digits_folder, "--batch-size", 50)
    top1, top5 = direct_accuracy(*digits)
    assert (result["top1_accuracy"], result["top5_accuracy"]) == (pytest.approx(top1), pytest.approx(top5))
    assert result["top1_accuracy"] > 0.95 and result["num_samples"] == 360  # the demo's documented 98.3%
    assert result["task"] == "image-classification" and result["label_mapping"] == "by-name"
    assert result["num_processes"] == 1 and result["dtype"] == "float32" and result["top_k"] == 5


def test_device_and_dtype(capsys, digits_folder):
    fp32 = evaluate(capsys, DEMO_DIR, digits_folder, "--max-samples", 120, "--device", "cpu")
    bf16 = evaluate(capsys, DEMO_DIR, digits_folder, "--max-samples", 120, "--device", "cpu", "--dtype", "bf16")
    assert fp32["device"] == bf16["device"] == "cpu" and (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert abs(bf16["top1_accuracy"] - fp32["top1_accuracy"]) <= 0.025  # 3 of 120 digits may flip at bf16 precision


def test_classification_on_a_datasets_folder_equals_a_direct_loop(tmp_path, capsys, digits):
    import datasets

    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=[str(d) for d in range(10)])}
    )
    images, labels = digits
    split = datasets.Dataset.from_dict({"img": images[:150], "label": labels[:150]}, features=features)
    datasets.DatasetDict({"train": split.select(range(10)), "validation": split}).save_to_disk(tmp_path / "dict")
    split.save_to_disk(tmp_path / "single")
    top1, top5 = direct_accuracy(images[:150], labels[:150])
    for data, extra in ((tmp_path / "dict", []), (tmp_path / "single", ["--num-workers", "2"])):
        capsys.readouterr()
        assert (
            main(["evaluate", str(DEMO_DIR), str(data), "--batch-size", "16", *extra]) == 0
        )  # 2 DataLoader workers once
        result = json.loads(capsys.readouterr().out)
        assert result["num_samples"] == 150 and result["label_mapping"] == "by-name"
        assert (result["top1_accuracy"], result["top5_accuracy"]) == (pytest.approx(top1), pytest.approx(top5))
    assert evaluate(capsys, DEMO_DIR, tmp_path / "dict")["split"] == "validation"  # the default split, named
    assert evaluate(capsys, DEMO_DIR, tmp_path / "dict", "--split", "train")["num_samples"] == 10
    assert "no split 'test'" in failure(capsys, DEMO_DIR, tmp_path / "dict", "--split", "test")
    assert "single dataset" in failure(capsys, DEMO_DIR, tmp_path / "single", "--split", "validation")
    split.rename_column("label", "digit").save_to_disk(tmp_path / "unlabelled")
    assert "expected an image column (image or img) and a label column" in failure(
        capsys, DEMO_DIR, tmp_path / "unlabelled"
    )


def test_class_folders_map_by_name_else_by_sorted_index(tmp_path, capsys, digits_folder, digits):
    images, labels = digits
    # Folders named after three of the model's labels: their ids (7, 8, 9), not their positions (0, 1, 2).
    for digit in ("7", "8", "9"):
        shutil.copytree(digits_folder / digit, tmp_path / "named" / digit)
    chosen = [i for i, label in enumerate(labels) if label >= 7]
    result = evaluate(capsys, DEMO_DIR, tmp_path / "named")
    assert result["label_mapping"] == "by-name" and result["num_samples"] == len(chosen)
    assert result["top1_accuracy"] == pytest.approx(
        direct_accuracy([images[i] for i in chosen], [labels[i] for i in chosen])[0]
    )
    assert result["top1_accuracy"] > 0.90
    # Names that are no label of the model: sorted folder d0 ... d9 is label 0 ... 9 (torchvision's ImageFolder).
    for digit in range(10):
        shutil.copytree(digits_folder / str(digit), tmp_path / "other" / f"d{digit}")
    result = evaluate(capsys, DEMO_DIR, tmp_path / "other", "--max-samples", 100)
    assert result["label_mapping"] == "by-index" and result["num_samples"] == 100
    order = sorted(range(len(labels)), key=lambda i: (labels[i], i))[:100]  # the first 100 files in sorted order
    assert result["top1_accuracy"] == pytest.approx(
        direct_accuracy([images[i] for i in order], [labels[i] for i in order])[0]
    )
    # --split: DATA/SPLIT is the image folder
    result = evaluate(capsys, DEMO_DIR, tmp_path, "--split", "named")
    assert result["num_samples"] == len(chosen) and result["split"] == "named"


def test_classification_data_errors_are_one_line_naming_the_file(tmp_path, capsys, digits_folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(next((digits_folder / "3").iterdir()), flat / "a.png")
    assert "has no class sub-folders" in failure(capsys, DEMO_DIR, flat)
    mixed = tmp_path / "mixed"
    for name in ("0", "1", "cat"):
        shutil.copytree(digits_folder / "0", mixed / name)
    assert "['cat'] are not" in failure(capsys, DEMO_DIR, mixed)
    many = tmp_path / "many"
    for index in range(11):
        (many / f"class{index:02d}").mkdir(parents=True)
        shutil.copy(next((digits_folder / "3").iterdir()), many / f"class{index:02d}" / "a.png")
    assert "has 11 classes but the model has 10 labels" in failure(capsys, DEMO_DIR, many)
    nested = tmp_path / "nested"
    shutil.copytree(digits_folder / "5", nested / "val" / "5")
    assert "one level above the class folders" in failure(capsys, DEMO_DIR, nested)
    broken = tmp_path / "broken"
    shutil.copytree(digits_folder / "4", broken / "4")
    bad = truncated_copy(next((broken / "4").iterdir()), broken / "4" / "0000-broken.png")
    for workers in ("0", "1"):  # read in this process, and in a DataLoader worker
        error = failure(capsys, DEMO_DIR, broken, "--num-workers", workers)
        assert f"cannot read the image file {bad}" in error, error


def _datasets_folder(path, columns, features=None):
    import datasets

    datasets.Dataset.from_dict(columns, features=features and datasets.Features(features)).save_to_disk(path)
    return path


def test_datasets_columns_are_checked_by_name_and_row(tmp_path, capsys, digits):
    """Labels that are no class ids (floats, strings), images that are no images (paths, None), no rows: one line
    naming the column and the row, never a truncated label or an `int()` / index error."""
    import datasets

    images, labels = digits[0][:3], digits[1][:3]
    image = datasets.Image()
    cases = {
        "float labels": (
            {"image": images, "label": [0.5, 1.0, 2.0]},
            {"image": image, "label": datasets.Value("float64")},
            "the 'label' column of",
            "holds float64 values (row 0: 0.5); expected integer class ids",
        ),
        "string labels": (
            {"image": images, "label": ["one", "two", "three"]},
            {"image": image, "label": datasets.Value("string")},
            "the 'label' column of",
            "class_encode_column('label')",
        ),
        "paths": (
            {"image": ["a.png", "b.png", "c.png"], "label": labels},
            None,
            "the 'image' column of",
            "holds string values (row 0: 'a.png'); expected images",
        ),
        "no image": (
            {"image": [images[0], None, images[2]], "label": labels},
            {"image": image, "label": datasets.Value("int64")},
            "row 1 of",
            "the 'image' column holds None; expected an image",
        ),
        "no label": (
            {"image": images, "label": [1, None, 2]},
            {"image": image, "label": datasets.Value("int64")},
            "row 1 of",
            "the 'label' column holds None; expected an integer class id",
        ),
        "empty": ({"image": [], "label": []}, {"image": image, "label": datasets.Value("int64")}, "holds no rows", ""),
    }
    for name, (columns, features, where, what) in cases.items():
        folder = _datasets_folder(tmp_path / name.replace(" ", "-"), columns, features)
        error = failure(capsys, DEMO_DIR, folder, "--num-workers", 0)
        assert where in error and what in error and str(folder) in error, (name, error)


def test_datasets_source_reads_the_named_columns(digits):
    """`image_column` / `label_column` read a dataset's own columns (no renaming); errors name them."""
    import datasets

    from pvt_hf.tools.evaluation import DatasetsSource

    images, labels = digits[0][:3], digits[1][:3]
    features = datasets.Features(
        {"photo": datasets.Image(), "digit": datasets.Value("int64"), "label": datasets.Value("string")}
    )
    dataset = datasets.Dataset.from_dict(
        {"photo": images, "digit": labels, "label": ["a", "b", "c"]}, features=features
    )
    source = DatasetsSource(dataset, {}, 10, what="the digits", image_column="photo", label_column="digit")
    image, label = source.load(1)
    assert label == labels[1] and image.size == images[1].size
    with pytest.raises(ValueError, match=re.escape("label_column 'fine_label': the digits has no such column")):
        DatasetsSource(dataset, {}, 10, what="the digits", image_column="photo", label_column="fine_label")
    with pytest.raises(ValueError, match=re.escape("the 'label' column of the digits holds string values")):
        DatasetsSource(dataset, {}, 10, what="the digits", image_column="photo", label_column="label")
    floats = dataset.cast_column("digit", datasets.Value("float64"))
    with pytest.raises(ValueError, match=re.escape("the 'digit' column of the digits holds float64 values")):
        DatasetsSource(floats, {}, 10, what="the digits", image_column="photo", label_column="digit")


def test_16_bit_images_are_read_at_full_range(tmp_path, capsys, digits):
    """The same digits as 16-bit PNGs (mode I;16) and as their exact 8-bit equivalents: the same pixels read, the
    same accuracy (`convert("RGB")` clipped 16-bit values at 255: nearly white images)."""
    from pvt_hf.tools.evaluation import read_image, rgb_image

    images, labels = digits
    for index in range(0, len(images), 6):  # 60 digits
        gray = np.asarray(images[index].convert("L"))
        for depth, array in (("8", gray), ("16", gray.astype(np.uint16) * 257)):
            folder = tmp_path / depth / str(labels[index])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"{index:04d}.png")
    sixteen = next((tmp_path / "16").rglob("*.png"))
    assert Image.open(sixteen).mode == "I;16"
    eight = tmp_path / "8" / sixteen.relative_to(tmp_path / "16")
    assert np.array_equal(np.asarray(read_image(sixteen)), np.asarray(read_image(eight)))
    # mode I (how older Pillow decodes 16-bit PNGs): 16-bit data as well
    as_mode_i = Image.fromarray(np.asarray(Image.open(sixteen)).astype(np.int32))
    assert as_mode_i.mode == "I" and np.array_equal(np.asarray(rgb_image(as_mode_i)), np.asarray(read_image(eight)))
    assert metrics(evaluate(capsys, DEMO_DIR, tmp_path / "16")) == metrics(evaluate(capsys, DEMO_DIR, tmp_path / "8"))


def test_data_that_is_a_file_is_named(tmp_path, capsys):
    data = tmp_path / "digits.zip"
    data.write_bytes(b"PK")
    error = failure(capsys, DEMO_DIR, data)
    assert f"DATA {data} is a file; expected a folder" in error, error


def test_segmentation_options_and_ade20k_data_are_refused_for_a_classifier(capsys, digits_folder, ade_dir):
    assert "--sliding-window: for semantic segmentation models" in failure(
        capsys, DEMO_DIR, digits_folder, "--sliding-window", 32, 16
    )
    assert "--scales, --flip: for semantic segmentation" in failure(
        capsys, DEMO_DIR, digits_folder, "--scales", 1.0, "--flip"
    )
    assert "ADE20K layout" in failure(capsys, DEMO_DIR, ade_dir)


def test_argument_errors(tmp_path, capsys, digits_folder, seg_model):
    assert "--max-samples must be at least 1, got 0" in failure(capsys, DEMO_DIR, digits_folder, "--max-samples", 0)
    assert "--batch-size must be at least 1" in failure(capsys, DEMO_DIR, digits_folder, "--batch-size", 0)
    assert f"DATA: no such file or directory: {tmp_path / 'none'}" in failure(capsys, DEMO_DIR, tmp_path / "none")
    assert f"no such file or directory: {tmp_path / 'none'}" in failure(capsys, tmp_path / "none", digits_folder)
    PvtModel(tiny_config(2)).save_pretrained(tmp_path / "features")
    error = failure(capsys, tmp_path / "features", digits_folder)
    assert (
        f"MODEL {tmp_path / 'features'} is PvtModel, which has no classification or segmentation head; pvt-hf evaluate takes image classifiers"
        in error
    ), error


# ---------------------------------------------------------------------------------------------------------- segmentation
def test_segmentation_whole_image_equals_a_direct_computation(capsys, seg_model, ade_dir):
    result = evaluate(capsys, seg_model, ade_dir)
    assert_segmentation_equals(result, direct_segmentation(seg_model, shapes_samples(ade_dir)))
    assert result["task"] == "semantic-segmentation" and result["num_samples"] == 3 and result["mode"] == "whole"
    assert set(result["per_class_accuracy"]) == set(CLASSES) and result["reduce_labels"] is True
    assert result["scales"] == [1.0] and result["flip"] is False
    assert result["split"] == "validation"  # the default split, named
    assert all(0 <= result[key] <= 1 for key in ("mIoU", "mAcc", "aAcc"))  # fractions, as the examples report them
    # the same model and data with one scale given explicitly, and a sliding window that covers every image whole
    # (the resized images are at most 256 px): the same computation, so the same numbers exactly
    for extra in (["--scales", "1.0"], ["--sliding-window", 256, 128]):
        assert metrics(evaluate(capsys, seg_model, ade_dir, *extra)) == metrics(result), extra


def test_sliding_window_of_the_whole_image_is_whole_image_inference(seg_model):
    model = PvtForSemanticSegmentation.from_pretrained(seg_model).eval()
    pixel_values = torch.randn(1, 3, 96, 160)
    whole = segmentation_logits(model, pixel_values)
    assert whole.shape == (1, len(CLASSES), 96, 160)
    assert torch.equal(segmentation_logits(model, pixel_values, (160, 100)), whole)
    assert torch.equal(segmentation_logits(model, pixel_values, (512, 512)), whole)  # larger than the image
    assert not torch.equal(segmentation_logits(model, pixel_values, (64, 48)), whole)  # really windows


def test_sliding_windows_are_mmseg_s():
    # h_grids = max(100 - 64 + 47, 0) // 48 + 1 = 2; the last window of each row / column ends at the border
    assert sliding_windows(100, 150, 64, 48) == [
        (0, 64, 0, 64),
        (0, 64, 48, 112),
        (0, 64, 86, 150),
        (36, 100, 0, 64),
        (36, 100, 48, 112),
        (36, 100, 86, 150),
    ]
    assert sliding_windows(50, 40, 64, 32) == [(0, 50, 0, 40)]  # smaller than the crop: taken whole, no padding
    assert sliding_windows(64, 128, 64, 64) == [(0, 64, 0, 64), (0, 64, 64, 128)]


def test_sliding_window_equals_a_direct_computation(capsys, seg_model, ade_dir):
    result = evaluate(capsys, seg_model, ade_dir, "--sliding-window", 48, 32)
    assert result["mode"] == "slide" and result["sliding_window"] == [48, 32]
    assert_segmentation_equals(result, direct_segmentation(seg_model, shapes_samples(ade_dir), window=(48, 32)))


def test_multi_scale_and_flip_equal_a_direct_computation(capsys, seg_model, ade_dir):
    samples = shapes_samples(ade_dir)
    result = evaluate(capsys, seg_model, ade_dir, "--multi-scale-flip", "--scales", 0.5, 1.25)
    assert result["scales"] == [0.5, 1.25] and result["flip"] is True
    assert_segmentation_equals(result, direct_segmentation(seg_model, samples, scales=(0.5, 1.25), flip=True))
    flipped_only = evaluate(capsys, seg_model, ade_dir, "--flip")
    assert flipped_only["scales"] == [1.0] and flipped_only["flip"] is True
    assert_segmentation_equals(flipped_only, direct_segmentation(seg_model, samples, flip=True))
    unflipped = evaluate(capsys, seg_model, ade_dir, "--multi-scale-flip", "--no-flip", "--scales", 1.0)
    assert metrics(unflipped) == metrics(evaluate(capsys, seg_model, ade_dir))  # one scale, no flip: whole-image
    default = evaluate(
        capsys, seg_model, ade_dir, "--multi-scale-flip", "--sliding-window", 64, 48
    )  # mmseg's aug test
    assert (
        default["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
        and default["flip"] is True
        and default["mode"] == "slide"
    )


def test_segmentation_data_errors_are_one_line_naming_the_file(tmp_path, capsys, seg_model, ade_dir):
    assert "has no images/validation folder" in failure(capsys, seg_model, tmp_path)
    assert "has no images/testing folder" in failure(capsys, seg_model, ade_dir, "--split", "testing")
    copy = shutil.copytree(ade_dir, tmp_path / "ade")
    annotations = copy / "annotations" / "validation"
    first = min(annotations.iterdir())
    first.rename(tmp_path / "aside.png")
    image = copy / "images" / "validation" / f"{first.stem}.jpg"
    assert f"the image {image} has no annotation {first}" in failure(capsys, seg_model, copy)
    (tmp_path / "aside.png").rename(first)
    truncated_copy(image, tmp_path / "whole.jpg")
    shutil.copy(tmp_path / "whole.jpg", image)
    assert f"cannot read the image file {image}" in failure(capsys, seg_model, copy, "--num-workers", 0)
    shutil.copy(ade_dir / "images" / "validation" / image.name, image)
    label_map = np.array(Image.open(first))
    label_map[0, 0] = 9  # class 8 after reduce_zero_label, but the model has 4
    Image.fromarray(label_map).save(first)
    error = failure(capsys, seg_model, copy, "--num-workers", 0)
    assert f"{image} (annotation {first}):" in error, error
    Image.fromarray(label_map[:-1]).save(first)
    assert f"the annotation {first} is" in failure(capsys, seg_model, copy, "--num-workers", 0)


def test_segmentation_argument_errors(capsys, seg_model, ade_dir):
    assert "1 <= STRIDE <= CROP" in failure(capsys, seg_model, ade_dir, "--sliding-window", 48, 64)
    assert "1 <= STRIDE <= CROP" in failure(capsys, seg_model, ade_dir, "--sliding-window", 48, 0)
    assert "CROP 16 is smaller than the smallest input the model takes" in failure(
        capsys, seg_model, ade_dir, "--sliding-window", 16, 8
    )
    assert "--scales must be positive" in failure(capsys, seg_model, ade_dir, "--scales", 1.0, 0)
    error = failure(capsys, seg_model, ade_dir, "--scales", 1.0, 0.001)
    assert "--scales 0.001: the image processor's size times 0.001 is" in error and "smallest input" in error, error
    assert "--batch-size 4: segmentation models are evaluated one whole image at a time" in failure(
        capsys, seg_model, ade_dir, "--batch-size", 4
    )
    assert "--max-samples must be at least 1, got 0" in failure(capsys, seg_model, ade_dir, "--max-samples", 0)
    assert evaluate(capsys, seg_model, ade_dir, "--max-samples", 2)["num_samples"] == 2


# ---------------------------------------------------------------------------------------------------------- output
def test_output_is_written_atomically_and_replaced_only_with_force(tmp_path, capsys, seg_model, ade_dir):
    output = tmp_path / "results" / "ade.json"
    result = evaluate(capsys, seg_model, ade_dir, "--max-samples", 1, "--output", output)
    assert json.loads(output.read_text()) == result and result["num_samples"] == 1
    assert oct(output.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # like any file the user writes
    assert "already exists; pass --force" in failure(capsys, seg_model, ade_dir, "--output", output)
    assert json.loads(output.read_text()) == result
    replaced = evaluate(capsys, seg_model, ade_dir, "--max-samples", 2, "--output", output, "--force")
    assert json.loads(output.read_text()) == replaced and replaced["num_samples"] == 2
    # a run that fails writes nothing, and leaves nothing behind
    assert "1 <= STRIDE <= CROP" in failure(
        capsys, seg_model, ade_dir, "--output", tmp_path / "new.json", "--sliding-window", 8, 9
    )
    assert "has no images/validation" in failure(capsys, seg_model, tmp_path, "--output", tmp_path / "new.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"] and os.listdir(output.parent) == ["ade.json"]
    # never over an input, even with --force
    config = (seg_model / "config.json").read_bytes()
    assert "inside the input" in failure(capsys, seg_model, ade_dir, "--output", seg_model / "config.json", "--force")
    assert (seg_model / "config.json").read_bytes() == config
    assert "is the input" in failure(capsys, seg_model, ade_dir, "--output", ade_dir, "--force")
    assert "is a folder" in failure(capsys, seg_model, ade_dir, "--output", tmp_path / "results", "--force")


def test_output_location_is_checked_before_evaluating(tmp_path, capsys, monkeypatch, seg_model, ade_dir):
    """An --output that cannot be written is refused before any evaluation, naming --output and the path given."""
    import pvt_hf.tools.evaluation

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated although --output cannot be written")

    monkeypatch.setattr(pvt_hf.tools.evaluation, "evaluate", no_evaluation)
    (tmp_path / "file").write_text("not a folder")
    error = failure(capsys, seg_model, ade_dir, "--output", tmp_path / "file" / "result.json")
    assert f"--output {tmp_path / 'file' / 'result.json'}: {tmp_path / 'file'} is not a folder" in error, error
    dangling = tmp_path / "link.json"
    dangling.symlink_to(tmp_path / "gone" / "result.json")
    error = failure(capsys, seg_model, ade_dir, "--output", dangling)
    assert (
        f"--output {dangling} is a symbolic link to {tmp_path / 'gone' / 'result.json'}, which does not exist" in error
    ), error
    assert "another process" not in error
    if Path("/proc/self").is_dir():  # a location where no one, root included, can create a file
        error = failure(capsys, seg_model, ade_dir, "--output", "/proc/pvt-hf-result.json")
        assert "--output /proc/pvt-hf-result.json: cannot create files in /proc" in error, error
    if os.geteuid() != 0:  # root writes into read-only folders
        read_only = tmp_path / "read-only"
        read_only.mkdir(mode=0o555)
        error = failure(capsys, seg_model, ade_dir, "--output", read_only / "result.json")
        assert f"--output {read_only / 'result.json'}: cannot create files in {read_only}" in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "link.json"] + (
        ["read-only"] if os.geteuid() else []
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(seg_model), str(ade_dir), "--output", ""])
    assert exit_info.value.code == 2 and "--output: expected the path of the JSON file" in capsys.readouterr().err


def test_a_failed_write_keeps_the_printed_result(tmp_path, capsys, monkeypatch, seg_model, ade_dir):
    """The result is printed before --output is written: a write that fails at the end (disk full) loses nothing,
    and its error names --output as given, not the staging file."""
    import pvt_hf_cli.evaluate

    def disk_full(path, *args):
        raise OSError(28, "No space left on device", str(path.parent / f".{path.name}.incomplete-0-x"))

    monkeypatch.setattr(pvt_hf_cli.evaluate, "_write_staged", disk_full)
    output = tmp_path / "result.json"
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                str(seg_model),
                str(ade_dir),
                "--max-samples",
                "1",
                "--num-workers",
                "0",
                "--output",
                str(output),
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["num_samples"] == 1
    error = captured.err.strip().splitlines()[-1]
    assert f"--output {output}: cannot write the result (No space left on device); it was printed above" in error, (
        error
    )
    assert ".incomplete" not in error


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# ---------------------------------------------------------------------------------------------------------- processes
@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_two_processes_give_the_single_process_result(tmp_path, capsys, task, digits_folder, seg_model, ade_dir):
    """`ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 -m pvt_hf_cli evaluate ...`: two gloo processes,
    each on its share; a sample count that the processes (and batches) do not divide, so accelerate repeats samples
    to even them out and `gather_for_metrics` must drop them again."""
    argv = (
        [str(DEMO_DIR), str(digits_folder), "--batch-size", "16", "--max-samples", "101"]
        if task == "classification"
        else [str(seg_model), str(ade_dir), "--sliding-window", "48", "32"]
    )
    single = evaluate(capsys, *argv)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pvt_hf_cli",
        "evaluate",
        *argv,
        "--num-workers",
        "0",
        "--output",
        str(tmp_path / "two.json"),
    ]
    ran = subprocess.run(
        command, capture_output=True, text=True, env={**ENV, "ACCELERATE_USE_CPU": "1"}, timeout=1200, cwd=tmp_path
    )
    assert ran.returncode == 0, ran.stderr[-4000:]
    printed = json.loads(ran.stdout)  # printed once, by the main process
    assert printed == json.loads((tmp_path / "two.json").read_text()) and printed["num_processes"] == 2
    assert metrics(printed) == metrics(single) and single["num_processes"] == 1


def test_help_imports_nothing_heavy():
    script = (
        "import sys\n"
        "from pvt_hf_cli import main\n"
        "try:\n"
        "    main(['evaluate', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0\n"
        "print('HEAVY', sorted(n for n in ('pvt_hf', 'torch', 'transformers', 'accelerate', 'numpy', 'PIL') if n in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 0 and "HEAVY []" in result.stderr, result.stderr[-2000:]
    assert "--sliding-window CROP STRIDE" in result.stdout and "--multi-scale-flip" in result.stdout
    script = Path(pvt_hf_script())
    if script.exists():  # the installed console script knows the command
        result = subprocess.run(
            [str(script), "evaluate", "--help"], capture_output=True, text=True, timeout=120, env=ENV
        )
        assert result.returncode == 0 and "usage: pvt-hf evaluate" in result.stdout, result.stderr
