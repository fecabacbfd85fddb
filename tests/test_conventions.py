"""The conventions every transformers model meets (the properties transformers' own common model, backbone and config
tests check), for v1, v2 and v2-linear and every model class."""

import json

import pytest
import torch
from conftest import VARIANTS, relative_error
from transformers import AutoBackbone, AutoConfig, AutoModelForImageClassification

from pvt_hf import (
    PvtBackbone,
    PvtConfig,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtModel,
)


MODEL_CLASSES = [PvtModel, PvtForImageClassification, PvtForSemanticSegmentation, PvtBackbone]
PIXEL_VALUES = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
STAGE_MAP_SHAPES = [(2, 16, 16, 24), (2, 32, 8, 12), (2, 48, 4, 6), (2, 64, 2, 3)]


@pytest.fixture(params=list(VARIANTS))
def config(request):
    torch.manual_seed(0)
    return VARIANTS[request.param]()


def build(model_class, config):
    torch.manual_seed(0)
    return model_class(config).eval()


def first_output(outputs):
    return outputs.feature_maps[-1] if hasattr(outputs, "feature_maps") else outputs[0]


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_hidden_states_and_attentions_from_arguments_and_config(model_class, config):
    """Four stage maps (no stem: the first input is the pixels); one attention map per layer, (B, heads, N, M)."""
    model = build(model_class, config)
    with torch.no_grad():
        plain = model(PIXEL_VALUES)
        asked = model(PIXEL_VALUES, output_hidden_states=True, output_attentions=True)
    assert plain.get("hidden_states") is None and plain.get("attentions") is None
    assert [tuple(stage_map.shape) for stage_map in asked.hidden_states] == STAGE_MAP_SHAPES
    assert len(asked.attentions) == sum(config.depths)
    tokens = [16 * 24, 8 * 12, 4 * 6, 2 * 3]
    layer = 0
    for stage, depth in enumerate(config.depths):
        for _ in range(depth):
            attention = asked.attentions[layer]
            cls_token = int(
                config.version == 1 and stage == 3 and model_class in (PvtModel, PvtForImageClassification)
            )
            assert attention.shape[:3] == (2, config.num_attention_heads[stage], tokens[stage] + cls_token)
            torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
            layer += 1
    assert relative_error(first_output(asked), first_output(plain)) <= 1e-6

    config._attn_implementation = "eager"  # transformers' configs take `output_attentions` only with eager attention
    config.output_hidden_states = config.output_attentions = True
    from_config = build(model_class, config)
    with torch.no_grad():
        outputs = from_config(PIXEL_VALUES)
    assert len(outputs.hidden_states) == 4 and len(outputs.attentions) == sum(config.depths)
    with torch.no_grad():
        overridden = from_config(PIXEL_VALUES, output_hidden_states=False, output_attentions=False)
    assert overridden.get("hidden_states") is None and overridden.get("attentions") is None


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_return_dict_false_tuples_equal_the_dataclass_fields(model_class, config):
    model = build(model_class, config)
    for kwargs in [{}, {"output_hidden_states": True}, {"output_hidden_states": True, "output_attentions": True}]:
        with torch.no_grad():
            as_dict = model(PIXEL_VALUES, **kwargs)
            as_tuple = model(PIXEL_VALUES, return_dict=False, **kwargs)
        assert isinstance(as_tuple, tuple)
        expected = as_dict.to_tuple()
        assert len(as_tuple) == len(expected)
        for got, want in zip(torch.utils._pytree.tree_leaves(as_tuple), torch.utils._pytree.tree_leaves(expected)):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_batched_equals_single_images(model_class, config):
    model = build(model_class, config)
    with torch.no_grad():
        batched = first_output(model(PIXEL_VALUES))
        single = torch.cat([first_output(model(PIXEL_VALUES[i : i + 1])) for i in range(2)])
    assert relative_error(batched, single) <= 1e-5


@pytest.mark.parametrize("implementation", ["eager", "flex_attention"])
def test_attention_implementations_agree_with_sdpa(implementation):
    """`attn_implementation=` at load time and `set_attn_implementation` afterwards; plain path and fused path."""
    config = VARIANTS["v2"]()
    model = build(PvtForImageClassification, config)
    with torch.no_grad():
        expected = model(PIXEL_VALUES).logits
    model.set_attn_implementation(implementation)
    assert model.config._attn_implementation == implementation
    for fused in (True, False):
        model.config.fused_cpu_kernels = fused
        with torch.no_grad():
            torch.testing.assert_close(model(PIXEL_VALUES).logits, expected, rtol=1e-5, atol=1e-5)


def test_attn_implementation_at_load_time(tmp_path):
    build(PvtForImageClassification, VARIANTS["v1"]()).save_pretrained(tmp_path)
    for implementation in ("eager", "sdpa"):
        model = AutoModelForImageClassification.from_pretrained(tmp_path, attn_implementation=implementation)
        assert model.config._attn_implementation == implementation


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_init_weights_covers_every_parameter_and_buffer(model_class, config):
    """Every parameter is set by `_init_weights` (what loading a checkpoint that lacks it relies on)."""
    model = model_class(config)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            tensor.fill_(float("nan"))
    for module in model.modules():
        model._init_weights(module)
    untouched = [
        name
        for name, p in list(model.named_parameters()) + list(model.named_buffers())
        if p.is_floating_point() and p.isnan().any()
    ]
    assert not untouched


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_missing_weights_are_initialised_on_load(model_class, config, tmp_path):
    """A checkpoint without some weights: they are initialised (not left as uninitialised memory) and reported."""
    from safetensors.torch import load_file, save_file

    model = build(model_class, config)
    model.save_pretrained(tmp_path)
    state_dict = load_file(tmp_path / "model.safetensors")
    dropped = [key for key in state_dict if "layers.0.mlp.fc1" in key]
    save_file(
        {k: v for k, v in state_dict.items() if k not in dropped},
        tmp_path / "model.safetensors",
        metadata={"format": "pt"},
    )
    reloaded, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(dropped)
    weight = dict(reloaded.named_parameters())[next(key for key in dropped if key.endswith("weight"))]
    assert torch.isfinite(weight).all() and 0 < weight.std() < 0.1  # trunc_normal(std=0.02)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_save_load_round_trips(model_class, config, tmp_path):
    """Plain, sharded (several safetensors files and an index), and in another dtype."""
    model = build(model_class, config)
    with torch.no_grad():
        expected = first_output(model(PIXEL_VALUES))
    model.save_pretrained(tmp_path / "plain")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    for folder in ("plain", "sharded"):
        reloaded = model_class.from_pretrained(tmp_path / folder).eval()
        with torch.no_grad():
            torch.testing.assert_close(first_output(reloaded(PIXEL_VALUES)), expected, rtol=0, atol=0)
    in_bf16 = model_class.from_pretrained(tmp_path / "plain", dtype=torch.bfloat16)
    assert all(parameter.dtype == torch.bfloat16 for parameter in in_bf16.parameters())


def test_ignore_mismatched_sizes_gives_a_new_head(tmp_path):
    build(PvtForImageClassification, VARIANTS["v2"]()).save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch|ignore_mismatched_sizes"):
        AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3)
    model, info = AutoModelForImageClassification.from_pretrained(
        tmp_path, num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.classifier.out_features == 3
    assert {key for key, *_ in info["mismatched_keys"]} == {"classifier.weight", "classifier.bias"}
    with torch.no_grad():
        assert model(PIXEL_VALUES).logits.shape == (2, 3)


def test_classification_problem_types(config):
    """Integer labels: single-label cross-entropy (int32 too); float multi-hot labels: multi-label BCE; one output:
    regression. Labels out of range or of the wrong shape are a ValueError, not an IndexError."""
    model = build(PvtForImageClassification, config)
    labels = torch.tensor([0, 4])
    loss = model(PIXEL_VALUES, labels=labels.to(torch.int32)).loss
    torch.testing.assert_close(loss, model(PIXEL_VALUES, labels=labels).loss)
    config.problem_type = "multi_label_classification"
    multi = build(PvtForImageClassification, config)
    outputs = multi(PIXEL_VALUES, labels=torch.tensor([[1.0, 0, 1, 0, 0], [0, 1, 0, 0, 1]]))
    assert outputs.loss.ndim == 0 and torch.isfinite(outputs.loss)
    for bad, message in [
        (torch.tensor([0, 5]), r"must lie in \[0, 4\]"),
        (torch.tensor([-1, 0]), r"must lie in \[0, 4\].*\[-1\]"),
        (torch.tensor([0, 1, 2]), "batch_size 2"),
    ]:
        with pytest.raises(ValueError, match=message):
            model(PIXEL_VALUES, labels=bad)


def test_empty_batch_is_a_clear_error(config):
    with pytest.raises(ValueError, match="batch_size 0"):
        build(PvtForImageClassification, config)(torch.randn(0, 3, 64, 64))


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_input_embeddings_return_a_tensor(model_class, config):
    """`enable_input_require_grads` hooks the input embeddings and calls `requires_grad_` on their output."""
    model = build(model_class, config)
    embeddings = model.get_input_embeddings()
    assert isinstance(embeddings, torch.nn.Module)
    assert isinstance(embeddings(PIXEL_VALUES), torch.Tensor)
    model.enable_input_require_grads()
    with torch.enable_grad():
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        output = first_output(model(PIXEL_VALUES))
    assert output.requires_grad


def test_forward_signature_starts_with_pixel_values():
    import inspect

    for model_class in MODEL_CLASSES:
        assert list(inspect.signature(model_class.forward).parameters)[1] == "pixel_values"


# ----------------------------------------------------------------------------------------------------- config


def without_path(config: PvtConfig) -> dict:
    """The config's dict less where it was loaded from and the remote-code map that saving adds."""
    return {key: value for key, value in config.to_dict().items() if key not in ("_name_or_path", "auto_map")}


def test_config_round_trips(tmp_path):
    config = PvtConfig.from_preset("pvt-v2-b2-linear", num_labels=7, out_features=["stage2", "stage4"])
    as_dict = without_path(config)
    assert json.loads(config.to_json_string())["hidden_sizes"] == [64, 128, 320, 512]
    for copy in (PvtConfig.from_dict(as_dict), PvtConfig(**json.loads(config.to_json_string()))):
        assert without_path(copy) == as_dict
    config.to_json_file(tmp_path / "config.json")
    assert without_path(PvtConfig.from_json_file(tmp_path / "config.json")) == as_dict
    config.save_pretrained(tmp_path / "saved")
    reloaded = AutoConfig.from_pretrained(tmp_path / "saved")
    assert type(reloaded) is PvtConfig and without_path(reloaded) == as_dict
    assert (
        reloaded.num_labels == 7 and reloaded.out_features == ["stage2", "stage4"] and reloaded.out_indices == [1, 3]
    )
    config.save_pretrained(tmp_path / "with_subfolder" / "sub")
    assert without_path(PvtConfig.from_pretrained(tmp_path / "with_subfolder", subfolder="sub")) == as_dict


def test_config_common_properties_and_arguments():
    config = PvtConfig(hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 2, 3, 4], num_channels=4)
    assert config.hidden_sizes == [8, 16, 24, 32] and config.num_attention_heads == [1, 2, 3, 4]
    assert config.num_channels == 4 and PvtConfig().num_channels == 3
    common = {
        "return_dict": False,
        "output_hidden_states": True,
        "output_attentions": True,
        "problem_type": "regression",
        "id2label": {0: "a"},
        "label2id": {"a": 0},
    }
    config = PvtConfig(**common)
    for key, value in common.items():
        assert getattr(config, key) == value, key
    config.num_labels = 4
    assert len(config.id2label) == 4 and len(config.label2id) == 4


def test_backbone_common_attributes():
    config = VARIANTS["v2"](out_indices=[-2, -1])
    assert config.out_features == ["stage3", "stage4"] and config.stage_names == [
        "stage1",
        "stage2",
        "stage3",
        "stage4",
    ]
    backbone = AutoBackbone.from_config(config).eval()
    assert backbone.out_features == ["stage3", "stage4"] and backbone.channels == [48, 64]
    assert backbone.num_features == config.hidden_sizes
    with torch.no_grad():
        outputs = backbone(PIXEL_VALUES, output_hidden_states=True, output_attentions=True)
    assert [tuple(feature_map.shape) for feature_map in outputs.feature_maps] == STAGE_MAP_SHAPES[2:]
    assert len(outputs.hidden_states) == 4 and len(outputs.attentions) == sum(config.depths)
    with pytest.raises(ValueError):
        VARIANTS["v2"](out_features=["stage5"])


def test_gradient_checkpointing_plain_and_fused_paths_share_weights(config):
    """Training (plain path) after inference (fused path) sees the same weights: one set of parameters, no cache."""
    model = build(PvtForImageClassification, config)
    with torch.no_grad():
        before = model(PIXEL_VALUES).logits
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(PIXEL_VALUES, labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(PIXEL_VALUES).logits
        model.config.fused_cpu_kernels = False
        plain = model(PIXEL_VALUES).logits
    assert relative_error(after, before) > 1e-4
    torch.testing.assert_close(after, plain, rtol=1e-5, atol=1e-5)
