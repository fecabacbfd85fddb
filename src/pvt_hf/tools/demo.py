"""Offline demo of the main path on a model shipped with the package (`pvt-hf demo`, whose options live in
`pvt_hf_cli/demo.py`: the library never imports the command line).

The shipped model (`pvt_hf/data/digits-demo/`) is a tiny PVT v2 (0.32M parameters, 1.3 MB) trained FROM SCRATCH with
`examples/finetune_image_classification.py` on scikit-learn's 8x8 handwritten digits (upscaled to 32x32). It is not an
official PVT checkpoint and knows nothing but the ten digits. The demo

1. writes it as a Hub-ready folder (config with id2label, safetensors weights, image processor, modeling code, model
   card) with `pvt_hf.tools.hub.write_repo_folder`, which reloads it in a clean process to verify it;
2. loads the folder back with `AutoModelForImageClassification` and `pipeline("image-classification")`;
3. classifies the held-out digits shipped beside it (never seen in training) and prints the accuracy and images/s.

`pvt-hf demo --prepare-data DIR` writes the train/test image folders the model was trained and evaluated
on (needs scikit-learn), to retrain it with the example script (the command is in benchmarks/RESULTS.md,
"Fine-tuning examples", and in tests/test_examples.py::test_digits_from_scratch_reaches_95_percent).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:  # imported where used: the demo's options load without them
    import numpy as np
    from PIL import Image


DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "digits-demo"
HELDOUT_FILE = "heldout_digits.npz"
IMAGE_SIZE = 32
SPLIT_SEED, TEST_SIZE = 0, 0.2

DESCRIPTION = (
    "A tiny PVT v2 ({params:.2f}M parameters) trained from scratch on scikit-learn's 8x8 handwritten digits "
    "(upscaled to 32x32) with examples/finetune_image_classification.py — a demo model shipped with pvt-hf, "
    "not an official PVT checkpoint."
)


def digit_image(digit: np.ndarray) -> Image.Image:
    """An 8x8 digit (values 0-16, as in `sklearn.datasets.load_digits`) as a 32x32 RGB image (bicubic upscale)."""
    import numpy as np
    from PIL import Image

    gray = np.clip(np.rint(np.asarray(digit, np.float64) * 255.0 / 16.0), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC).convert("RGB")


def split_digits():
    """scikit-learn's digits, split 80/20 (stratified, seed 0): (train images, train labels, test images, test labels)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(
        digits.images, digits.target, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=digits.target
    )


def prepare_data(root: str | Path) -> Path:
    """Write `root/train/<digit>/*.png` and `root/test/<digit>/*.png` (the demo's split), and the test set as .npz."""
    import numpy as np

    root = Path(root)
    train_x, test_x, train_y, test_y = split_digits()
    for split, images, labels in (("train", train_x, train_y), ("test", test_x, test_y)):
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / str(int(label))
            folder.mkdir(parents=True, exist_ok=True)
            digit_image(image).save(folder / f"{index:04d}.png")
    np.savez_compressed(root / HELDOUT_FILE, images=test_x.astype(np.uint8), labels=test_y.astype(np.uint8))
    return root


def load_heldout(folder: Path | None = None):
    """The held-out digits shipped with the demo model: (images, labels) arrays."""
    import numpy as np

    with np.load((folder or DEMO_DIR) / HELDOUT_FILE) as data:
        return data["images"], data["labels"]


def _model_card(params: float, accuracy: float | None) -> str:
    return f"""---
library_name: transformers
pipeline_tag: image-classification
tags:
- vision
- pvt
- pvt-hf
- image-classification
---

# pvt-digits-demo

{DESCRIPTION.format(params=params)}

Held-out accuracy (the 360 test digits of a stratified 80/20 split, seed 0): {"n/a" if accuracy is None else f"{accuracy:.2%}"}.

```python
import pvt_hf
from transformers import pipeline

classifier = pipeline("image-classification", model="path/to/this/folder")
print(classifier("digit.png"))
```
"""


def run_demo(
    output_dir: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 64,
    quiet: bool = False,
    force: bool = False,
    stream=None,
) -> dict:
    """Write, reload and evaluate the demo model; returns the measured numbers. An existing `output_dir` is
    replaced only with `force`, and never one that is or contains the shipped model. The narration goes to
    `stream` (default: stdout), nowhere with `quiet`."""
    import numpy as np
    import torch
    from transformers import AutoModelForImageClassification, pipeline

    from .. import PvtForImageClassification
    from ..image_processing_pvt import PvtImageProcessor
    from .hub import write_repo_folder
    from .io_utils import refuse_overwriting_input

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=stream or sys.stdout))
    if output_dir is not None:
        refuse_overwriting_input(output_dir, [DEMO_DIR], "--output-dir")
    if not (DEMO_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(f"the demo model is missing from the installation ({DEMO_DIR})")
    model = PvtForImageClassification.from_pretrained(DEMO_DIR)
    processor = PvtImageProcessor.from_pretrained(DEMO_DIR)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    say(DESCRIPTION.format(params=params))

    scratch = None
    if output_dir is None:
        scratch = tempfile.mkdtemp(prefix="pvt-digits-demo-")
        folder = Path(scratch) / "pvt-digits-demo"
    else:
        folder = Path(output_dir)
    try:
        start = time.perf_counter()
        written = write_repo_folder(
            model,
            folder,
            variant=None,
            source="digits-demo",
            repo_id="pvt-digits-demo",
            force=force,
            image_processor=processor,
        )
        say(f"1. Wrote a Hub-ready folder in {time.perf_counter() - start:.1f} s: {folder}")
        say(f"   files: {', '.join(written['files'])}")
        say(f"   reloaded in a clean process: logits relative error {written['reload_relative_error']:.1e}")

        reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
        classifier = pipeline("image-classification", model=str(folder), device=device)
        say(
            f"2. Loaded it back: {type(reloaded).__name__} via AutoModelForImageClassification, "
            f"and pipeline('image-classification') with {type(classifier.image_processor).__name__}"
        )

        digits, labels = load_heldout()
        images = [digit_image(d) for d in digits]
        classifier(images[:batch_size], batch_size=batch_size, top_k=1)  # warm-up
        start = time.perf_counter()
        answers = classifier(images, batch_size=batch_size, top_k=1)
        pipeline_seconds = time.perf_counter() - start
        predicted = [answer[0]["label"] for answer in answers]
        pipeline_accuracy = float(np.mean([p == str(int(y)) for p, y in zip(predicted, labels)]))

        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            reloaded(pixel_values[:batch_size])
            start = time.perf_counter()
            logits = torch.cat(
                [reloaded(pixel_values[i : i + batch_size]).logits for i in range(0, len(images), batch_size)]
            )
            model_seconds = time.perf_counter() - start
        model_accuracy = float((logits.argmax(-1).numpy() == labels).mean())
        (folder / "README.md").write_text(_model_card(params, model_accuracy))

        results = {
            "model": "pvt-digits-demo (tiny PVT v2 trained from scratch on 8x8 digits; not an official checkpoint)",
            "parameters_millions": round(params, 3),
            "heldout_images": len(images),
            "pipeline_accuracy": pipeline_accuracy,
            "model_accuracy": model_accuracy,
            "pipeline_images_per_second": round(len(images) / pipeline_seconds, 1),
            "model_images_per_second": round(len(images) / model_seconds, 1),
            "folder": str(folder) if output_dir is not None else None,
        }
        say(f"3. Held-out digits ({len(images)} images, never seen in training):")
        say(
            f"   pipeline('image-classification'): accuracy {pipeline_accuracy:.2%}, "
            f"{results['pipeline_images_per_second']:.0f} images/s (batch {batch_size}, PIL images in, labels out)"
        )
        say(
            f"   AutoModelForImageClassification:  accuracy {model_accuracy:.2%}, "
            f"{results['model_images_per_second']:.0f} images/s (preprocessed tensors, forward only)"
        )
        example = answers[0][0]
        say(
            f"   e.g. the first test digit (a {int(labels[0])}): {example['label']!r} with score {example['score']:.3f}"
        )
        return results
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
