"""The README's user journey through the installed `pvt-hf` console script, each command in a fresh process that
never imported `pvt_hf` (as a user runs it), on folders written by `pvt-hf convert` and by `save_pretrained`:
convert, predict (a classifier and a segmentation model), evaluate (an image folder and an ADE20K folder), flops,
export-onnx, demo, --help, --version, and the first mistakes a user makes (a typo in a model path)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import pvt_hf_script
from PIL import Image
from skimage import data as photos


ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT / "src"),
    "TQDM_DISABLE": "1",
}
# what transformers prints when it gives a model weights that the checkpoint lacks (a random head)
RANDOM_WEIGHTS_SIGNS = ("newly initialized", "MISSING", "were not initialized")


def pvt_hf(*argv, env=None, timeout=600) -> subprocess.CompletedProcess:
    """`pvt-hf ARGV` as a user runs it: the installed console script, a new process."""
    command = [pvt_hf_script()]
    return subprocess.run(
        [*command, *map(str, argv)], capture_output=True, text=True, env=env or ENV, timeout=timeout, cwd=ROOT
    )


def succeeded(ran: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "Traceback" not in ran.stderr and not any(sign in ran.stderr for sign in RANDOM_WEIGHTS_SIGNS), ran.stderr[
        -3000:
    ]
    return ran


def one_line_error(ran: subprocess.CompletedProcess, command: str) -> str:
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran.stderr[-3000:]
    error = ran.stderr.strip().splitlines()[-1]
    assert error.startswith(f"pvt-hf {command}: error:"), ran.stderr[-3000:]
    return error


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Official mini checkpoints converted by `pvt-hf convert` (a classifier with 10 classes, a Semantic FPN with 7)."""
    root = tmp_path_factory.mktemp("converted")
    for case in ("pvt_v2_mini_cls", "pvt_v2_mini_seg"):
        succeeded(
            pvt_hf(
                "convert",
                REFERENCE / f"{case}.pth",
                root / case,
                "--official-args",
                REFERENCE / f"{case}.json",
                "--no-verify",
            )
        )
    return root / "pvt_v2_mini_cls", root / "pvt_v2_mini_seg"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Folders written by save_pretrained: a tiny classifier with named labels, and a bare PvtModel (no head)."""
    import torch
    from conftest import tiny_config

    from pvt_hf import PvtForImageClassification, PvtImageProcessor, PvtModel

    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    classifier = PvtForImageClassification(
        tiny_config(2, num_labels=3, id2label={0: "astronaut", 1: "coffee", 2: "cat"})
    )
    classifier.save_pretrained(root / "classifier")
    PvtImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}).save_pretrained(
        root / "classifier"
    )
    PvtModel(tiny_config(2)).save_pretrained(root / "features")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real photos (skimage.data), small: 8-bit RGB files and a 16-bit grayscale PNG."""
    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        Image.fromarray(getattr(photos, name)()).resize((72, 64)).save(root / f"{name}.png")
    gray = np.asarray(Image.fromarray(photos.camera()).resize((64, 64)))
    Image.fromarray(gray.astype(np.uint16) * 257).save(root / "camera16.png")
    return root


def test_help_and_version():
    ran = succeeded(pvt_hf("--help"))
    assert "usage: pvt-hf" in ran.stdout and all(
        name in ran.stdout for name in ("predict", "evaluate", "flops", "export-onnx")
    )
    from pvt_hf import __version__

    assert succeeded(pvt_hf("--version")).stdout.strip() == f"pvt-hf {__version__}"


def test_convert_writes_a_loadable_folder(converted):
    classifier, segmenter = converted
    for folder, architecture in ((classifier, "PvtForImageClassification"), (segmenter, "PvtForSemanticSegmentation")):
        assert json.loads((folder / "config.json").read_text())["architectures"] == [architecture]
        assert (folder / "model.safetensors").is_file() and (folder / "preprocessor_config.json").is_file()


def test_predict_classifies_with_a_classifier(saved, images):
    """The regression of issue 25: a fresh process built the pipeline before anything registered pvt-hf."""
    ran = succeeded(
        pvt_hf(
            "predict",
            images / "astronaut.png",
            images / "camera16.png",
            "--model",
            saved / "classifier",
            "--json",
            "--top-k",
            2,
        )
    )
    results = json.loads(ran.stdout)
    assert [Path(result["image"]).name for result in results] == ["astronaut.png", "camera16.png"]
    for result in results:
        assert result["task"] == "image-classification" and len(result["predictions"]) == 2
        assert {prediction["label"] for prediction in result["predictions"]} <= {"astronaut", "coffee", "cat"}
        assert 0 < sum(prediction["score"] for prediction in result["predictions"]) <= 1 + 1e-6


def test_predict_segments_with_a_segmentation_model(converted, images):
    """A Semantic FPN segments (never gets a random classifier head): the classes present and their areas."""
    ran = succeeded(pvt_hf("predict", images / "coffee.png", "--model", converted[1], "--json"))
    (result,) = json.loads(ran.stdout)
    assert result["task"] == "semantic-segmentation" and "predictions" not in result
    labels = json.loads((converted[1] / "config.json").read_text())["id2label"].values()
    assert {segment["label"] for segment in result["segments"]} <= set(labels)
    assert sum(segment["area"] for segment in result["segments"]) == pytest.approx(1.0)
    text = succeeded(pvt_hf("predict", images / "coffee.png", "--model", converted[1])).stdout
    assert "fraction of the pixels" in text and result["segments"][0]["label"] in text


def test_predict_refuses_a_model_without_a_head(saved, images):
    error = one_line_error(pvt_hf("predict", images / "coffee.png", "--model", saved / "features"), "predict")
    assert f"--model {saved / 'features'} is PvtModel, which has no classification or segmentation head" in error, (
        error
    )
    assert "pvt-hf predict takes image classifiers" in error


def test_evaluate_a_classifier_on_an_image_folder(saved, images, tmp_path):
    for index, name in enumerate(("astronaut", "coffee", "cat")):
        (tmp_path / "data" / name).mkdir(parents=True)
        shutil.copy(images / f"{'chelsea' if name == 'cat' else name}.png", tmp_path / "data" / name / f"{index}.png")
    result = json.loads(
        succeeded(pvt_hf("evaluate", saved / "classifier", tmp_path / "data", "--num-workers", 0)).stdout
    )
    assert result["task"] == "image-classification" and result["num_samples"] == 3 and result["split"] is None
    assert result["label_mapping"] == "by-name" and 0 <= result["top1_accuracy"] <= result["top5_accuracy"] == 1.0


def test_evaluate_a_segmentation_model_on_an_ade20k_folder(converted, images, tmp_path):
    ade = tmp_path / "ADEChallengeData2016"
    for folder in ("images", "annotations"):
        (ade / folder / "validation").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee"):
        image = Image.open(images / f"{name}.png")
        image.save(ade / "images" / "validation" / f"{name}.jpg")
        labels = rng.integers(0, 8, size=(image.height, image.width), dtype=np.uint8)  # 0 ignored, 1..7 -> 0..6
        Image.fromarray(labels).save(ade / "annotations" / "validation" / f"{name}.png")
    ran = succeeded(pvt_hf("evaluate", converted[1], ade, "--num-workers", 0))
    result = json.loads(ran.stdout)
    assert result["task"] == "semantic-segmentation" and result["num_samples"] == 2 and result["split"] == "validation"
    assert all(0 <= result[key] <= 1 for key in ("mIoU", "mAcc", "aAcc"))


def test_flops_of_a_converted_folder(converted):
    report = json.loads(succeeded(pvt_hf("flops", converted[0], "--json", "--size", 64, 96)).stdout)
    assert report["total_macs"] > 0 and report["total_parameters"] > 0
    error = one_line_error(pvt_hf("flops", converted[0] / "model.safetensors"), "flops")
    assert "is a file; MODEL takes a preset name (" in error and "a model folder (config.json) or a Hub id" in error, (
        error
    )


@pytest.mark.slow  # the export and onnxruntime's check at several sizes; tests/test_onnx.py covers the library
def test_export_onnx_of_a_converted_folder(converted, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    output = tmp_path / "model.onnx"
    ran = succeeded(pvt_hf("export-onnx", converted[0], output, "--exporter", "torchscript"))
    assert output.stat().st_size > 0 and f"wrote {output}" in ran.stdout


@pytest.mark.slow  # 360 digits classified twice; tests/test_cli.py runs the demo in-process
def test_demo_json():
    result = json.loads(succeeded(pvt_hf("demo", "--json")).stdout)
    assert result["pipeline_accuracy"] > 0.9 and result["model_accuracy"] > 0.9, result


def test_a_typo_in_a_model_path_fails_at_once(tmp_path):
    """`--model fpn-b0-shape` (a local folder misspelt, which looks like a Hub id): said to be no local folder, and
    then either offline or not reachable on the Hub (asked once, without the Hub client's retries), instead of
    transformers' "couldn't connect"."""
    error = one_line_error(pvt_hf("predict", "x.png", "--model", "fpn-b0-shape"), "predict")
    assert "--model fpn-b0-shape: no such local folder" in error and "offline: HF_HUB_OFFLINE is set" in error, error
    unreachable = {**ENV, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    error = one_line_error(pvt_hf("evaluate", "fpn-b0-shape", tmp_path, env=unreachable), "evaluate")
    assert "MODEL fpn-b0-shape: no such local folder" in error and "the Hub could not be reached" in error, error
    assert "couldn't connect" not in error
