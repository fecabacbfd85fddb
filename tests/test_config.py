import json
import math
import os
import subprocess

import pytest
import torch
from conftest import REFERENCE, pvt_hf_script

from pvt_hf import PRESETS, PvtConfig, PvtForImageClassification
from pvt_hf.tools.conversion import normalize_variant


MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())
EXPECTED_PRESETS = [
    "pvt-tiny",
    "pvt-small",
    "pvt-medium",
    "pvt-large",
    "pvt-v2-b0",
    "pvt-v2-b1",
    "pvt-v2-b2",
    "pvt-v2-b2-linear",
    "pvt-v2-b3",
    "pvt-v2-b4",
    "pvt-v2-b5",
]


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
        ({"num_labels": -1}, r"`num_labels` must be an integer in \[0,"),
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


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"depths": [10**9, 1, 1, 1]}, "depths"),
        ({"num_labels": 10**9}, "num_labels"),
        ({"hidden_sizes": [2**40] * 4, "num_attention_heads": [1, 1, 1, 1]}, "hidden_sizes"),
        ({"sr_ratios": [10**6, 4, 2, 1]}, "sr_ratios"),
        ({"num_attention_heads": [2**20] * 4, "hidden_sizes": [2**20] * 4}, "hidden_sizes"),
        ({"mlp_ratios": [1e9, 8, 4, 4]}, "mlp_ratios"),
        ({"mlp_ratios": [math.inf, 8, 4, 4]}, "mlp_ratios"),
        ({"patch_sizes": [10**5, 3, 3, 3]}, "patch_sizes"),
        ({"strides": [4, 2, 2, 10**5]}, "strides"),
        ({"image_size": 10**7}, "image_size"),
        ({"num_channels": 10**7}, "num_channels"),
        ({"linear_pool_size": 10**6, "linear_attention": True}, "linear_pool_size"),
        ({"neck_hidden_size": 2**40}, "neck_hidden_size"),
        ({"decoder_hidden_size": 2**40}, "decoder_hidden_size"),
    ],
)
def test_absurd_sizes_fail_at_once_naming_the_field(overrides, field):
    """Sizes that would hang or exhaust memory (a 1e9-entry id2label, 1e9 layers) are refused before any work."""
    with pytest.raises(ValueError, match=f"`{field}` must"):
        PvtConfig(**overrides)


def test_num_labels_is_bounded_also_when_set_later(tmp_path):
    config = PvtConfig(num_labels=3)
    with pytest.raises(ValueError, match="`num_labels` must be an integer in"):
        config.num_labels = 10**9
    config.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="`num_labels` must be an integer in"):
        PvtConfig.from_pretrained(tmp_path, num_labels=10**9)


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_every_official_architecture_is_within_the_limits(name):
    """The bounds are generous: every released checkpoint's architecture (from its shapes) passes them."""
    from pvt_hf.tools.conversion import architecture_from_state_dict

    shapes = {key: torch.empty(shape, device="meta") for key, shape in MANIFESTS[name].items()}
    task = "semantic-segmentation" if name.startswith("fpn_") else "classification"
    architecture = architecture_from_state_dict(shapes, task)
    heads = PRESETS[normalize_variant(name)]["num_attention_heads"]
    config = PvtConfig(
        **{key: value for key, value in architecture.items() if value is not None}, num_attention_heads=heads
    )
    assert config.depths == architecture["depths"]


def test_flops_command_refuses_an_absurd_config_folder_at_once(tmp_path):
    """`pvt-hf flops` on a config folder with 1e9 layers hung; now it fails at once, naming the field."""
    folder = tmp_path / "absurd"
    folder.mkdir()
    config = {"model_type": "pvt_hf", "architectures": ["PvtForImageClassification"], "depths": [10**9, 1, 1, 1]}
    (folder / "config.json").write_text(json.dumps(config))
    result = subprocess.run(
        [pvt_hf_script(), "flops", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 1, result.stderr
    assert "`depths` must hold integers in [1, 1,024]" in result.stderr and "Traceback" not in result.stderr


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
            assert any(f"`{name}`" in str(error) or name in str(error) for name in settings) or "per-stage" in str(
                error
            ), (settings, error)
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


def test_float_labels_of_the_wrong_shape_are_a_clear_error():
    """transformers' problem types: float labels are multi-hot / one-hot targets (batch, num_labels), or with one
    output regression values; any other shape is the documented ValueError, not torch's RuntimeError in the loss."""
    tiny = {"hidden_sizes": [8, 16, 24, 32], "num_attention_heads": [1, 1, 1, 1], "depths": [1, 1, 1, 1]}
    model = PvtForImageClassification(PvtConfig(**tiny, num_labels=5))
    pixel_values = torch.randn(2, 3, 64, 64)
    for labels in (torch.tensor([0.5, 1.0]), torch.ones(2, 3), torch.ones(3, 5)):
        with pytest.raises(ValueError, match=r"Float `labels` are multi-label .* must have shape \(2, 5\)"):
            model(pixel_values, labels=labels)
    assert torch.isfinite(model(pixel_values, labels=torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 0]])).loss)
    regression = PvtForImageClassification(PvtConfig(**tiny, num_labels=1))
    assert torch.isfinite(regression(pixel_values, labels=torch.tensor([0.5, 1.0])).loss)
    with pytest.raises(ValueError, match=r"Float `labels` are regression values .* \(2, 1\) or \(2,\)"):
        regression(pixel_values, labels=torch.tensor([0.5, 1.0, 2.0]))
