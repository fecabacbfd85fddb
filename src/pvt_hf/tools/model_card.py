"""Model cards (README.md with Hub metadata) for converted PVT repositories."""

from __future__ import annotations

import json


# Figures reported by the PVT authors (official READMEs and papers), with their sources: not measured by pvt-hf, and
# stated in the cards as `verified: false`.
IMAGENET_SOURCE = "whai362/PVT classification README (ImageNet-1K val, 224x224, single crop)"
IMAGENET_SOURCE_URL = "https://github.com/whai362/PVT/tree/v2/classification"
IMAGENET_TOP1_AND_PARAMS = {
    "pvt-tiny": (75.1, 13.2),
    "pvt-small": (79.8, 24.5),
    "pvt-medium": (81.2, 44.2),
    "pvt-large": (81.7, 61.4),
    "pvt-v2-b0": (70.5, 3.7),
    "pvt-v2-b1": (78.7, 14.0),
    "pvt-v2-b2": (82.0, 25.4),
    "pvt-v2-b2-linear": (82.1, 22.6),
    "pvt-v2-b3": (83.1, 45.2),
    "pvt-v2-b4": (83.6, 62.6),
    "pvt-v2-b5": (83.8, 82.0),
}
ADE20K_SOURCE = {
    1: "PVT v1 paper (arXiv:2102.12122), Semantic FPN on ADE20K val; the official segmentation README reports "
    "{released} mIoU for the released model",
    2: "PVT v2 paper (arXiv:2106.13797), Semantic FPN on ADE20K val",
}
ADE20K_SOURCE_URL = {1: "https://arxiv.org/abs/2102.12122", 2: "https://arxiv.org/abs/2106.13797"}
ADE20K_MIOU = {  # paper value, and (v1) the value of the released model with the official code
    "pvt-tiny": (35.7, 36.6),
    "pvt-small": (39.8, 41.9),
    "pvt-medium": (41.6, 43.5),
    "pvt-large": (42.1, 43.5),
    "pvt-v2-b0": (37.2, None),
    "pvt-v2-b1": (42.5, None),
    "pvt-v2-b2": (45.2, None),
    "pvt-v2-b3": (47.3, None),
    "pvt-v2-b4": (47.9, None),
    "pvt-v2-b5": (48.7, None),
}
CITATION = """@inproceedings{wang2021pyramid,
  title     = {Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions},
  author    = {Wang, Wenhai and Xie, Enze and Li, Xiang and Fan, Deng-Ping and Song, Kaitao and Liang, Ding and Lu, Tong and Luo, Ping and Shao, Ling},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2021}
}

@article{wang2022pvtv2,
  title   = {PVT v2: Improved Baselines with Pyramid Vision Transformer},
  author  = {Wang, Wenhai and Xie, Enze and Li, Xiang and Fan, Deng-Ping and Song, Kaitao and Liang, Ding and Lu, Tong and Luo, Ping and Shao, Ling},
  journal = {Computational Visual Media},
  volume  = {8},
  number  = {3},
  pages   = {415--424},
  year    = {2022}
}"""


def official_figure(variant: str | None, task: str) -> tuple[str, float, str, str] | None:
    """(metric name, value, source, source URL) as the PVT authors report it, or None for architectures they do not
    list."""
    if task == "classification" and variant in IMAGENET_TOP1_AND_PARAMS:
        return (
            "top-1 accuracy (ImageNet-1K)",
            IMAGENET_TOP1_AND_PARAMS[variant][0],
            IMAGENET_SOURCE,
            IMAGENET_SOURCE_URL,
        )
    if task == "semantic-segmentation" and variant in ADE20K_MIOU:
        paper, released = ADE20K_MIOU[variant]
        version = 1 if variant.startswith("pvt-") and not variant.startswith("pvt-v2") else 2
        return "mIoU (ADE20K)", paper, ADE20K_SOURCE[version].format(released=released), ADE20K_SOURCE_URL[version]
    return None


def checks_paragraph(checks: dict, outputs: str = "logits") -> str:
    """What was checked when the folder was written (not the official figure: that is the authors'). `outputs`: what
    the reload check compared (`logits`, or a backbone's `feature maps`)."""
    lines = []
    if "reload_relative_error" in checks:
        lines.append(
            "the folder was reloaded in a clean process with "
            f"{'the Auto classes' if outputs == 'logits' else 'PvtBackbone'} and gave the converted model's {outputs} "
            f"(relative error {checks['reload_relative_error']:.1e})"
        )
    if "timm_relative_error" in checks:
        lines.append(
            "timm's implementation loaded with the same official weights gave the same logits (relative error "
            f"{checks['timm_relative_error']:.1e})"
        )
    if not lines:
        return "No check was run when this folder was written (converted with `--no-verify`)."
    return "Checked when this folder was written: " + "; ".join(lines) + "."


def _backbone_card_body(
    config, variant: str | None, repo_id: str, num_parameters: int, source: str, checks: dict | None
) -> str:
    """The card's text for a backbone converted from a detection checkpoint: no classes, no figure of its own."""
    architecture = (
        variant or f"PVT v{config.version}{'-linear' if config.linear_attention else ''} (custom architecture)"
    )
    name = repo_id.split("/")[-1]
    return f"""
# {name}

{architecture} backbone: the four stage feature maps (`stage1` ... `stage4`, strides 4, 8, 16, 32) of the official
detection backbone, converted from the detection checkpoint `{source}` with pvt-hf for Hugging Face transformers. The
detector's neck and heads are not included. {num_parameters / 1e6:.1f}M parameters.

The PVT authors report box and mask AP for whole detectors (backbone, neck and heads): no figure belongs to this
backbone alone, and none is given.

{checks_paragraph(checks or {}, "feature maps")} pvt-hf's implementation itself is tested against the official code's
outputs (small models with random weights, in pvt-hf's test suite).

## Use with pvt-hf

```python
import pvt_hf  # registers PVT with the Auto classes
from PIL import Image
from transformers import AutoBackbone, AutoImageProcessor

processor = AutoImageProcessor.from_pretrained("{repo_id}")
backbone = AutoBackbone.from_pretrained("{repo_id}")
feature_maps = backbone(**processor(Image.open("image.jpg"), return_tensors="pt")).feature_maps
```

In a transformers detector or segmenter (UperNet, Mask2Former, RT-DETR, Deformable DETR, DETR):

```python
from transformers import RTDetrForObjectDetection

config = pvt_hf.composite_config("rt_detr", "{repo_id}", id2label={{0: "cat", 1: "dog"}})
model = pvt_hf.load_pretrained_backbone(RTDetrForObjectDetection(config), "{repo_id}")
```

## Use without installing pvt-hf

The repository carries its modeling code:

```python
from transformers import AutoBackbone

backbone = AutoBackbone.from_pretrained("{repo_id}", trust_remote_code=True)
```

## Citation

```bibtex
{CITATION}
```
"""


def model_card(
    config, variant: str | None, task: str, repo_id: str, num_parameters: int, source: str, checks: dict | None = None
) -> str:
    """README.md for a converted repository: Hub metadata, what the model is, the authors' figure (unverified here),
    what was checked, usage, citation. `checks`: `reload_relative_error`, `timm_relative_error` where measured."""
    segmentation, backbone = task == "semantic-segmentation", task == "backbone"
    pipeline_tag = (
        "image-segmentation" if segmentation else "image-feature-extraction" if backbone else "image-classification"
    )
    dataset = "scene_parse_150" if segmentation else "imagenet-1k"
    figure = official_figure(variant, task) if config.num_labels == (150 if segmentation else 1000) else None
    metadata = [
        "---",
        "license: apache-2.0",
        "library_name: transformers",
        f"pipeline_tag: {pipeline_tag}",
        "tags:",
        "- vision",
        "- pvt",
        "- pyramid-vision-transformer",
        f"- {pipeline_tag}",
        *(["- semantic-segmentation", "- semantic-fpn"] if segmentation else []),
        *(["- backbone", "- object-detection"] if backbone else []),
        "- pvt-hf",
        *(["datasets:", f"- {dataset}"] if figure is not None else []),
    ]
    if figure is not None:
        metric, value, figure_source, figure_url = figure
        metadata += [
            "model-index:",
            f"- name: {repo_id.split('/')[-1]}",
            "  results:",
            "  - task:",
            f"      type: {pipeline_tag}",
            "    dataset:",
            f"      name: {'ADE20K' if segmentation else 'ImageNet-1K'}",
            f"      type: {dataset}",
            "    metrics:",
            f"    - type: {'mean_iou' if segmentation else 'accuracy'}",
            f"      value: {value}",
            f"      name: {metric}",
            "      verified: false",
            "    source:",
            f"      name: {json.dumps('reported by the PVT authors: ' + figure_source)}",
            f"      url: {figure_url}",
        ]
    metadata.append("---")
    if backbone:
        return (
            "\n".join(metadata) + "\n" + _backbone_card_body(config, variant, repo_id, num_parameters, source, checks)
        )

    architecture = (
        variant or f"PVT v{config.version}{'-linear' if config.linear_attention else ''} (custom architecture)"
    )
    head = "with the Semantic FPN head (FPN neck + FPN head, as in mmseg)" if segmentation else "image classifier"
    released = variant is not None and config.num_labels == (150 if segmentation else 1000)
    # what the file is cannot be known from its shapes: say only what they show
    trained_on = (
        f"with the {'ADE20K' if segmentation else 'ImageNet-1K'} classes and the architecture of the PVT authors' "
        "released model"
        if released
        else f"with {config.num_labels} classes"
    )
    what = f"{architecture} {head}, {trained_on}"
    auto_class = "AutoModelForSemanticSegmentation" if segmentation else "AutoModelForImageClassification"
    figure_line = (
        f"Reported by the PVT authors (not measured by pvt-hf): **{figure[1]}** {figure[0]}; source: {figure[2]}."
        if figure is not None
        else "The official READMEs report no figure for this architecture."
    )
    usage_output = (
        "masks = processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0]"
        if segmentation
        else "print(model.config.id2label[outputs.logits.argmax(-1).item()])"
    )
    body = f"""
# {repo_id.split("/")[-1]}

{what}, converted from `{source}` with pvt-hf for Hugging Face transformers. {num_parameters / 1e6:.1f}M parameters.

{figure_line}

{checks_paragraph(checks or {})} pvt-hf's implementation itself is tested against the official code's outputs
(small models with random weights, in pvt-hf's test suite); this file's accuracy was not measured.

## Use with pvt-hf

```python
import pvt_hf  # registers PVT with the Auto classes
from PIL import Image
from transformers import AutoImageProcessor, {auto_class}

processor = AutoImageProcessor.from_pretrained("{repo_id}")
model = {auto_class}.from_pretrained("{repo_id}")
image = Image.open("image.jpg")
outputs = model(**processor(image, return_tensors="pt"))
{usage_output}
```

## Use without installing pvt-hf

The repository carries its modeling code:

```python
from transformers import pipeline

pipe = pipeline("{pipeline_tag}", model="{repo_id}", trust_remote_code=True)
print(pipe("image.jpg"))
```

## Citation

```bibtex
{CITATION}
```
"""
    return "\n".join(metadata) + "\n" + body
