"""What the plain, fused and lean paths share (`pvt_hf/layer_paths.py`): the token/map views, the plain-module test,
the activation table, and every private torch / transformers API the paths use, each checked against the installed
releases here, so that a release that moves one fails these tests instead of silently switching a path off."""

import pytest
import torch
import torch.nn.functional as F
from conftest import VARIANTS
from torch import nn
from transformers.activations import ACT2FN

from pvt_hf import PvtForImageClassification, PvtModel, layer_paths
from pvt_hf.layer_paths import (
    Activation,
    is_output_capturing_hook,
    is_same_size_depthwise_conv,
    known_activation,
    map_to_tokens,
    onednn_activation,
    plain_module,
    recording_outputs,
    runs_class_forward,
    saved_tensors_hooks_active,
    tokens_to_map,
)
from pvt_hf.modeling_pvt import PvtAttention, PvtMLP


def test_token_and_map_views():
    tokens = torch.randn(2, 5 * 7, 8)
    feature_map = tokens_to_map(tokens, 5, 7)
    assert feature_map.shape == (2, 8, 5, 7) and feature_map.is_contiguous(memory_format=torch.channels_last)
    assert feature_map.data_ptr() == tokens.data_ptr()  # a view: convolutions read the tokens in place
    torch.testing.assert_close(feature_map, tokens.transpose(1, 2).reshape(2, 8, 5, 7), rtol=0, atol=0)
    assert (
        torch.equal(map_to_tokens(feature_map), tokens) and map_to_tokens(feature_map).data_ptr() == tokens.data_ptr()
    )


# ---------------------------------------------------------------------------------------------------- oneDNN's ops


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_onednn_ops_exist_and_compute_what_their_names_say():
    """torch's private fused-pointwise oneDNN ops (`torch.ops.mkldnn._linear_pointwise`, its `.binary` overload,
    `_convolution_pointwise`): present wherever oneDNN is, with the signatures and results the paths rely on."""
    assert layer_paths.ONEDNN_AVAILABLE
    torch.manual_seed(0)
    tokens, weight, bias, other = torch.randn(2, 35, 8), torch.randn(16, 8), torch.randn(16), torch.randn(2, 35, 16)
    tolerance = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(
        layer_paths.onednn_linear(tokens, weight, bias, "gelu", "tanh"),
        F.gelu(F.linear(tokens, weight, bias), approximate="tanh"),
        **tolerance,
    )
    torch.testing.assert_close(
        layer_paths.onednn_linear(tokens, weight, None, "none", ""), F.linear(tokens, weight), **tolerance
    )
    torch.testing.assert_close(
        layer_paths.onednn_linear_add(tokens, other, weight, bias), F.linear(tokens, weight, bias) + other, **tolerance
    )
    feature_map = tokens_to_map(torch.randn(2, 35, 16), 5, 7)
    conv_weight, conv_bias = torch.randn(16, 1, 3, 3), torch.randn(16)
    got = layer_paths.onednn_conv(feature_map, conv_weight, conv_bias, [1, 1], [1, 1], 16, "gelu", "none")
    torch.testing.assert_close(
        got, F.gelu(F.conv2d(feature_map, conv_weight, conv_bias, padding=1, groups=16)), **tolerance
    )


# ------------------------------------------------------------------------------------------------------- autograd


def test_saved_tensors_hooks_active():
    """torch's private `torch._C._autograd._top_saved_tensors_default_hooks`: what the lean path asks before stacking
    its own saved-tensor hooks (nested hooks would bypass checkpointing's or offloading's)."""
    assert not saved_tensors_hooks_active()
    with torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor):
        assert saved_tensors_hooks_active()
    with torch.autograd.graph.save_on_cpu():
        assert saved_tensors_hooks_active()
    assert not saved_tensors_hooks_active()


# ----------------------------------------------------------------------------------- transformers' output capture


def test_recording_outputs_follows_the_output_capture():
    """transformers' private `_active_collector`: says what `capture_outputs` records during the forward."""
    torch.manual_seed(0)
    model = PvtModel(VARIANTS["v2"]()).eval()
    seen = []
    model.encoder.stages[0].register_forward_pre_hook(
        lambda *args: seen.append((recording_outputs("attentions"), recording_outputs("hidden_states")))
    )
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(pixel_values)
        model(pixel_values, output_attentions=True)
        model(pixel_values, output_hidden_states=True)
    assert seen == [(False, False), (True, False), (False, True)]
    assert not recording_outputs("attentions")


def test_output_capturing_hooks_are_recognised():
    """transformers installs its recording hooks (a function named "output_capturing_hook") on the modules of
    `_can_record_outputs`, for good: `install_output_capturing_hooks` puts them there at once, and the plain-module
    test lets them through, but no other hook."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]())
    attention = model.pvt.encoder.stages[0].layers[0].attention
    assert not attention._forward_hooks
    layer_paths.install_output_capturing_hooks(model)
    hooks = list(attention._forward_hooks.values())
    assert len(hooks) == 1 and is_output_capturing_hook(hooks[0])
    assert runs_class_forward(attention)
    handle = attention.register_forward_hook(lambda *args: None)
    assert not is_output_capturing_hook(list(attention._forward_hooks.values())[-1])
    assert not runs_class_forward(attention)
    handle.remove()
    assert runs_class_forward(attention)


# ------------------------------------------------------------------------------------------------- plain modules


class MarkedTensor(torch.Tensor):
    """A tensor subclass, as quantized or offloaded weights are."""


def test_plain_module_sees_hooks_wrappers_and_parameter_types():
    """The nn.Module internals the test reads (`_forward_hooks`, `_forward_pre_hooks`, `_parameters`) and accelerate's
    `_hf_hook` are where they say what the test needs."""
    accelerate_hooks = pytest.importorskip("accelerate.hooks")
    linear = nn.Linear(4, 4)
    assert plain_module(linear, nn.Linear) and not plain_module(linear, nn.Conv2d)
    for register in (linear.register_forward_pre_hook, linear.register_forward_hook):
        handle = register(lambda *args: None)
        assert not plain_module(linear, nn.Linear)
        handle.remove()
    assert plain_module(linear, nn.Linear)
    accelerate_hooks.add_hook_to_module(linear, accelerate_hooks.ModelHook())
    assert "_hf_hook" in linear.__dict__ and not plain_module(linear, nn.Linear)
    accelerate_hooks.remove_hook_from_module(linear)
    assert plain_module(linear, nn.Linear)
    linear.forward = lambda input: input
    assert not plain_module(linear, nn.Linear)
    del linear.forward
    # FSDP1 (use_orig_params=True) puts plain tensor views in `_parameters` during forward: plain; subclasses are not
    linear._parameters["weight"] = linear.weight.detach().clone()
    assert plain_module(linear, nn.Linear)
    linear._parameters["weight"] = torch.Tensor._make_subclass(MarkedTensor, torch.randn(4, 4))
    assert not plain_module(linear, nn.Linear)


def test_the_depthwise_conv_check():
    mlp = PvtMLP(VARIANTS["v2"](), hidden_size=8, mlp_ratio=2)
    assert is_same_size_depthwise_conv(mlp.depthwise_conv)
    assert is_same_size_depthwise_conv(nn.Conv2d(4, 4, 5, padding=2, groups=4))
    for conv in (
        nn.Conv2d(4, 4, 3, padding=1, groups=2),  # not depth-wise
        nn.Conv2d(4, 4, 3, padding=1, groups=4, stride=2),
        nn.Conv2d(4, 4, 3, padding=2, groups=4, dilation=2),
        nn.Conv2d(4, 4, 3, padding=0, groups=4),
        nn.Conv2d(4, 4, 3, padding="same", groups=4),
        nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"),
        nn.Conv2d(4, 4, (3, 1), padding=(1, 0), groups=4),
    ):
        assert not is_same_size_depthwise_conv(conv), conv


def test_the_activation_table():
    """transformers' GELU (`GELUActivation` wrapping `F.gelu`, which the check reads) and torch's activations map to
    the derivatives and oneDNN algorithms the lean and fused paths use; anything else to None (the plain modules)."""
    assert known_activation(ACT2FN["gelu"]) == Activation("gelu")
    assert known_activation(nn.GELU(approximate="tanh")) == Activation("gelu", "tanh")
    assert known_activation(ACT2FN["relu"]) == Activation("relu")
    assert known_activation(nn.SiLU()) == Activation("silu")
    assert known_activation(ACT2FN["gelu_new"]) is None and known_activation(nn.Tanh()) is None
    assert onednn_activation(None) == ("none", "")
    assert onednn_activation(ACT2FN["gelu"]) == ("gelu", "none")
    assert onednn_activation(nn.GELU(approximate="tanh")) == ("gelu", "tanh")
    assert onednn_activation(nn.ReLU()) == ("relu", "")
    assert onednn_activation(nn.SiLU()) is None  # no exact oneDNN equivalent used: the plain modules
    tensor = torch.randn(64, dtype=torch.float64, requires_grad=True)
    for activation in (Activation("gelu"), Activation("gelu", "tanh"), Activation("relu"), Activation("silu")):
        output = activation.forward(tensor)
        (expected,) = torch.autograd.grad(output.sum(), tensor)
        got = activation.backward_(torch.ones_like(tensor), tensor.detach())
        torch.testing.assert_close(got, expected)


def test_attention_and_mlp_modules_are_what_the_paths_expect():
    """The fused and lean paths read these attributes of the model's modules; a renamed one must fail here."""
    config = VARIANTS["v2"]()
    attention = PvtAttention(config, hidden_size=8, num_attention_heads=1, sr_ratio=2)
    for name in ("query", "key_value", "output", "spatial_reduction", "layer_norm", "pool", "activation", "scaling"):
        assert hasattr(attention, name), name
    mlp = PvtMLP(config, hidden_size=8, mlp_ratio=2)
    for name in ("fc1", "relu", "depthwise_conv", "activation", "fc2", "dropout"):
        assert hasattr(mlp, name), name
