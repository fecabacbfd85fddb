import json
import math

import pytest
import torch

from conftest import REFERENCE
from pvt_hf import PRESETS, PvtConfig, PvtForImageClassification
from pvt_hf.conversion import normalize_variant

MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())
EXPECTED_PRESETS = [
    "pvt-tiny", "pvt-small", "pvt-medium", "pvt-large", "pvt-v2-b0", "pvt-v2-b1", "pvt-v2-b2", "pvt-v2-b2-linear",
    "pvt-v2-b3", "pvt-v2-b4", "pvt-v2-b5",
]  # fmt: skip


def test_every_released_variant_has_a_preset():
    assert sorted(PRESETS) == sorted(EXPECTED_PRESETS)


@pytest.mark.parametrize("name", EXPECTED_PRESETS)
def test_preset_has_the_official_parameter_count(name):
    manifest = MANIFESTS[name.replace("-linear", "-li").replace("-", "_")]
    official = sum(math.prod(shape) for shape in manifest.values())
    with torch.device("meta"):
        model = PvtForImageClassification(PvtConfig.from_preset(name, num_labels=1000))
    assert sum(parameter.numel() for parameter in model.parameters()) == official


def test_preset_overrides_and_round_trip(tmp_path):
    config = PvtConfig.from_preset("pvt-v2-b2", num_labels=10, drop_path_rate=0.1)
    assert config.num_labels == 10 and config.drop_path_rate == 0.1 and config.depths == [3, 4, 6, 3]
    assert config.model_type == "pvt_hf"
    config.save_pretrained(tmp_path)
    loaded = PvtConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    # the presets themselves are not changed by overrides
    assert PvtConfig.from_preset("pvt-v2-b2").num_labels == 2


def test_version_defaults():
    v1, v2 = PvtConfig.from_preset("pvt-small"), PvtConfig.from_preset("pvt-v2-b0")
    assert (v1.patch_sizes, v1.strides) == ([4, 2, 2, 2], [4, 2, 2, 2])
    assert (v2.patch_sizes, v2.strides) == ([7, 3, 3, 3], [4, 2, 2, 2])
    assert v1.layer_norm_eps == 1e-6 and v1.patch_embedding_layer_norm_eps == 1e-5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"depths": [2, 2, 2]}, "one entry per stage"),
        ({"num_attention_heads": [1, 2, 3, 8]}, "divisible by `num_attention_heads`"),
        ({"sr_ratios": [8, 4, 0, 1]}, "`sr_ratios` must hold positive values"),
        ({"mlp_ratios": [8, -1, 4, 4]}, "`mlp_ratios` must hold positive values"),
        ({"version": 3}, "`version` must be 1"),
        ({"version": 1, "linear_attention": True}, "only for PVT v2"),
        ({"version": 1, "sr_ratios": [8, 4, 2, 2]}, "cls token"),
        ({"drop_path_rate": 1.5}, "`drop_path_rate` must lie in"),
        ({"layer_norm_eps": 0.0}, "`layer_norm_eps` must be a positive number"),
        ({"patch_embedding_layer_norm_eps": -1e-5}, "`patch_embedding_layer_norm_eps` must be a positive"),
        ({"num_labels": -1}, "`num_labels` must be an integer >= 0"),
        ({"neck_hidden_size": 0}, "`neck_hidden_size` must be a positive integer"),
        ({"decoder_hidden_size": -8}, "`decoder_hidden_size` must be a positive integer"),
        ({"hidden_act": "bogus"}, "`hidden_act` must name an activation"),
        ({"depths": [2.0, 2, 2, 2]}, "`depths` must hold positive integers"),
        ({"hidden_sizes": [64, 128, 320, "512"]}, "`hidden_sizes` must hold positive integers"),
        ({"mlp_ratios": [0.01, 8, 4, 4], "hidden_sizes": [32, 64, 160, 256]}, "below 1"),
        ({"version": 1, "image_size": 31}, "`image_size` 31 is too small for PVT v1"),
    ],
)
def test_invalid_configs_are_rejected_clearly(overrides, message):
    with pytest.raises(ValueError, match=message):
        PvtConfig(**overrides)


def test_segmentation_needs_classes():
    from pvt_hf import PvtForSemanticSegmentation

    with pytest.raises(ValueError, match="needs `num_labels` >= 1"):
        PvtForSemanticSegmentation(PvtConfig(num_labels=0, depths=[1, 1, 1, 1]))


def test_random_configs_build_or_fail_clearly():
    """Random valid and invalid settings: either a model that runs, or a ValueError that names the argument."""
    import random

    import torch

    from pvt_hf import PvtForSemanticSegmentation

    rng = random.Random(0)
    choices = {
        "version": [1, 2, 3, 0],
        "linear_attention": [False, True],
        "hidden_sizes": [[8, 16, 24, 32], [8, 16], [8, 16, 24, -32], [8, 16, 24, 32.5]],
        "num_attention_heads": [[1, 2, 3, 4], [1, 1, 1, 1], [3, 3, 3, 3]],
        "depths": [[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 1]],
        "mlp_ratios": [[2, 2, 2, 2], [0.5, 1, 1, 1], [0, 1, 1, 1]],
        "sr_ratios": [[8, 4, 2, 1], [1, 1, 1, 1], [2, 2, 2, 2]],
        "layer_norm_eps": [1e-6, 0.0, -1.0],
        "hidden_act": ["gelu", "relu", "nope"],
        "num_labels": [3, 1, 0, -2],
        "image_size": [224, 64, 3],
        "neck_hidden_size": [8, 0],
        "decoder_hidden_size": [4, -1],
        "drop_path_rate": [0.0, 0.5, 1.0],
    }
    for _ in range(60):
        settings = {name: rng.choice(values) for name, values in choices.items() if rng.random() < 0.6}
        try:
            config = PvtConfig(**settings)
        except ValueError as error:
            assert any(f"`{name}`" in str(error) or name in str(error) for name in settings) or "per-stage" in str(error), (settings, error)
            continue
        if config.num_labels < 1:
            continue
        model = PvtForSemanticSegmentation(config).eval()
        with torch.no_grad():
            assert torch.isfinite(model(torch.randn(1, 3, 64, 64)).logits).all(), settings


def test_unknown_preset():
    with pytest.raises(ValueError, match="expected one of"):
        PvtConfig.from_preset("pvt-v3")


@pytest.mark.parametrize(
    "name, preset",
    [("pvt_v2_b2_li", "pvt-v2-b2-linear"), ("fpn_pvt_small_ade20k", "pvt-small"), ("PVT-v2-B5", "pvt-v2-b5")],
)
def test_variant_names_people_use(name, preset):
    assert normalize_variant(name) == preset
