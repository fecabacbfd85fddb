"""The converted models reproduce the official code's outputs (shared/reference) to fp32 rounding."""

import pytest
import torch
from conftest import CLASSIFICATION_CASES, SEGMENTATION_CASES, reference_case, relative_error
from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

import pvt_hf


ATTENTION = ["sdpa", "eager"]
# fp32 CPU inference runs the fused kernels by default; `fused_cpu_kernels=False` the plain modules (training, GPUs,
# offloading, autocast): both are held to the official outputs.
PATHS = {"fused": True, "plain": False}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("attn_implementation", ATTENTION)
@pytest.mark.parametrize("name", CLASSIFICATION_CASES)
def test_classification_logits_match_official(name, attn_implementation, path, converted):
    spec, tensors = reference_case(name)
    folder = converted(name)
    options = {"attn_implementation": attn_implementation, "fused_cpu_kernels": PATHS[path]}
    model = AutoModelForImageClassification.from_pretrained(folder, **options).eval()
    base = AutoModel.from_pretrained(folder, **options).eval()
    assert model.config.fused_cpu_kernels is PATHS[path]
    assert type(model).__name__ == "PvtForImageClassification" and type(base).__name__ == "PvtModel"
    for case in spec["cases"]:
        pixel_values = tensors[case["pixel_values"]]
        with torch.no_grad():
            logits = model(pixel_values).logits
            pooled = base(pixel_values).pooler_output
        assert relative_error(logits, tensors[case["logits"]]) <= 1e-6, case
        assert relative_error(pooled, tensors[case["pooled"]]) <= 1e-6, case


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("attn_implementation", ATTENTION)
@pytest.mark.parametrize("name", SEGMENTATION_CASES)
def test_segmentation_matches_official(name, attn_implementation, path, converted):
    spec, tensors = reference_case(name)
    folder = converted(name)
    options = {"attn_implementation": attn_implementation, "fused_cpu_kernels": PATHS[path]}
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, **options).eval()
    for case in spec["cases"]:
        pixel_values = tensors[case["pixel_values"]]
        with torch.no_grad():
            outputs = model(pixel_values, output_hidden_states=True)
            fpn_maps = model.neck(outputs.hidden_states)
        assert relative_error(outputs.logits, tensors[case["logits"]]) <= 1e-5, case
        upsampled = torch.nn.functional.interpolate(
            outputs.logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False
        )
        assert relative_error(upsampled, tensors[case["upsampled_logits"]]) <= 1e-5, case
        for got, key in zip(outputs.hidden_states, case["stages"]):
            assert relative_error(got, tensors[key]) <= 1e-6, key
        for got, key in zip(fpn_maps, case["fpn"]):
            assert relative_error(got, tensors[key]) <= 1e-5, key


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", SEGMENTATION_CASES)
def test_backbone_stage_maps_match_official(name, path, converted):
    """The backbone (v1: no cls token, no norm) gives the official segmentation backbone's four maps.

    transformers 5.23's `AutoBackbone.from_pretrained` asks the Hub whether the name is a repo before anything else
    (so it fails on local folders and offline); the Auto class is reached through `from_config` here."""
    spec, tensors = reference_case(name)
    config = AutoConfig.from_pretrained(converted(name), out_indices=[0, 1, 2, 3])
    assert type(AutoBackbone.from_config(config)).__name__ == "PvtBackbone"
    backbone = pvt_hf.PvtBackbone.from_pretrained(
        converted(name), out_indices=[0, 1, 2, 3], fused_cpu_kernels=PATHS[path]
    ).eval()
    assert backbone.channels == spec["neck"]["in_channels"]
    for case in spec["cases"]:
        with torch.no_grad():
            feature_maps = backbone(tensors[case["pixel_values"]]).feature_maps
        assert len(feature_maps) == 4
        for got, key in zip(feature_maps, case["stages"]):
            assert relative_error(got, tensors[key]) <= 1e-6, key
