"""pipelines and `pvt-hf predict` end to end on converted folders, offline, on real photos."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
import torch
from conftest import make_hub_cache
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as hf_logging

import pvt_hf  # noqa: F401
from pvt_hf_cli import main


def same_predictions(got, want):
    return [p["label"] for p in got] == [p["label"] for p in want] and all(
        g["score"] == pytest.approx(w["score"], rel=1e-5) for g, w in zip(got, want)
    )


PHOTOS = {
    name: Image.fromarray(getattr(skimage.data, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")
}


@pytest.fixture(scope="module")
def classifier_folder(converted):
    return converted("pvt_v2_mini_cls")


def test_classification_pipeline_from_folder_model_object_and_hub_id(classifier_folder, tmp_path):
    images = list(PHOTOS.values())
    from_folder = pipeline("image-classification", model=classifier_folder, device="cpu")
    assert type(from_folder.image_processor).__module__ == "pvt_hf.image_processing_pvt"
    results = from_folder(images, top_k=3, batch_size=2)
    assert len(results) == 4 and all(len(r) == 3 for r in results)
    model = AutoModelForImageClassification.from_pretrained(classifier_folder).eval()
    inputs = from_folder.image_processor(images[0], return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**inputs).logits.softmax(-1)[0]
    best = int(probabilities.argmax())
    assert results[0][0]["label"] == model.config.id2label[best]
    assert results[0][0]["score"] == pytest.approx(probabilities[best].item(), rel=1e-5)

    from_object = pipeline("image-classification", model=model, image_processor=from_folder.image_processor)
    assert same_predictions(from_object(images[0], top_k=3), results[0])

    # a Hub id, resolved from the Hugging Face cache offline (huggingface_hub reads its cache path at import)
    make_hub_cache(tmp_path / "hub", "pvt-hf/pvt-v2-mini", classifier_folder)
    PHOTOS["astronaut"].save(tmp_path / "astronaut.png")
    code = (
        "import json, pvt_hf\nfrom transformers import pipeline\n"
        "pipe = pipeline('image-classification', model='pvt-hf/pvt-v2-mini')\n"
        f"print(json.dumps(pipe({str(tmp_path / 'astronaut.png')!r}, top_k=3)))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert same_predictions(json.loads(result.stdout.strip().splitlines()[-1]), results[0])


def test_feature_extraction_pipeline_gives_pooled_features(classifier_folder):
    extractor = pipeline("image-feature-extraction", model=classifier_folder)
    features = np.array(extractor(PHOTOS["chelsea"], pool=True))
    model = pvt_hf.PvtModel.from_pretrained(classifier_folder).eval()
    with torch.no_grad():
        pooled = model(**extractor.image_processor(PHOTOS["chelsea"], return_tensors="pt")).pooler_output
    np.testing.assert_allclose(features.reshape(-1), pooled.numpy().reshape(-1), rtol=1e-5, atol=1e-6)


def test_segmentation_pipeline_masks_have_the_photo_size(converted):
    with CaptureLogger(hf_logging.get_logger("transformers.pipelines.base")) as log:
        segmenter = pipeline("image-segmentation", model=converted("pvt_v2_mini_seg"))
    assert "not supported" not in log.out  # the pipeline knows the registered segmentation model
    labels = set(segmenter.model.config.id2label.values())
    for name in ("coffee", "astronaut"):
        photo = PHOTOS[name]
        segments = segmenter(photo)
        assert segments, name
        assert all(segment["mask"].size == photo.size for segment in segments)
        assert {segment["label"] for segment in segments} <= labels
        # one mask per present class, covering the image exactly once
        coverage = sum(np.array(segment["mask"], dtype=np.int64) // 255 for segment in segments)
        assert (coverage == 1).all()


def test_predict_cli(classifier_folder, tmp_path, capsys):
    PHOTOS["coffee"].save(tmp_path / "coffee.jpg")
    PHOTOS["rocket"].save(tmp_path / "rocket.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = [str(tmp_path / name) for name in ("coffee.jpg", "broken.jpg", "rocket.png")]
    assert main(["predict", *paths, "--model", classifier_folder, "--top-k", "2", "--json"]) == 1
    results = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in results] == paths
    assert "cannot read the image file" in results[1]["error"]
    assert len(results[0]["predictions"]) == 2 and len(results[2]["predictions"]) == 2
    assert main(["predict", paths[0], "--model", classifier_folder, "--top-k", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(paths[0]) and "LABEL_" in text


def test_predict_console_script_reports_a_bad_model(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pvt_hf_cli", "predict", "x.jpg", "--model", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert result.returncode == 1 and "pvt-hf predict: error:" in result.stderr and "Traceback" not in result.stderr
