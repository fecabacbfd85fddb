# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""What the three implementations of a PVT layer share: the plain modules (`modeling_pvt.py`), the fused CPU inference
kernels (`fused_ops.py`) and the memory-lean training path (`lean_training.py`). Which one runs when is tabled in
`modeling_pvt.py`'s docstring.

Here live the token <-> map views, the test of whether a module is "plain" (runs its class's forward on ordinary
tensors, so that a path may run its maths instead), the activations with a known derivative and oneDNN equivalent,
the depth-wise conv check, and every use of a private torch or transformers API: each behind one named helper
(`tests/test_layer_paths.py` fails loudly where a release moves one).

A flat sibling of the modeling file: it ships with it as Hub remote code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation
from transformers.utils.output_capturing import _active_collector, maybe_install_capturing_hooks


aten = torch.ops.aten

# ---------------------------------------------------------------------------------------------- token <-> map views


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map: a view, channels-last in memory, so convolutions run in NHWC without
    transposing copies. (Split first, then permuted: one image keeps a batch stride of H*W*C, which convolutions
    recognise as channels-last; `transpose(1, 2).reshape(...)` would not.)"""
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens (a view where the map is channels-last)."""
    return feature_map.flatten(2).transpose(1, 2)


# -------------------------------------------------------------------------------------------------- plain modules

# Parameter types a path may compute with directly: `nn.Parameter`, and the plain tensor views that FSDP1
# (`use_orig_params=True`) puts in `module._parameters` during forward. Subclasses (quantized, offloaded, DTensor...)
# carry their own maths and are refused.
PLAIN_PARAMETER_TYPES = (nn.Parameter, torch.Tensor)


def runs_class_forward(module: nn.Module) -> bool:
    """Whether calling `module` runs its class's forward and nothing else: no accelerate hook (`_hf_hook`: offloading,
    device maps), no instance-level `forward`, no forward pre-hook, no forward hook other than transformers' output
    capturing ones (installed for good on the modules its models record from, they record only while a caller asks
    for those outputs, and `PvtStage` runs the plain modules while attentions are recorded)."""
    attributes = module.__dict__
    if "_hf_hook" in attributes or module._forward_pre_hooks:
        return False
    # (an instance `forward` that is the class's own, bound, is what accelerate leaves when it removes its hook)
    if "forward" in attributes and getattr(attributes["forward"], "__func__", None) is not type(module).forward:
        return False
    hooks = module._forward_hooks
    return not hooks or all(is_output_capturing_hook(hook) for hook in hooks.values())


def plain_module(module: nn.Module, kind: type) -> bool:
    """A module of exactly `kind` (not PEFT-wrapped or quantized) that runs its class's forward
    (`runs_class_forward`) on plain parameters (`PLAIN_PARAMETER_TYPES`)."""
    if type(module) is not kind or not runs_class_forward(module):
        return False
    return all(
        type(parameter) in PLAIN_PARAMETER_TYPES for parameter in module._parameters.values() if parameter is not None
    )


def is_same_size_depthwise_conv(conv: nn.Conv2d) -> bool:
    """A depth-wise conv that keeps the map's size: square kernel, zero 'same' padding, stride 1, no dilation, one
    group per channel (PvtMLP's 3x3 conv), as the fused and lean paths run it."""
    kernel_size = conv.kernel_size
    return (
        kernel_size[0] == kernel_size[1]
        and conv.padding == (kernel_size[0] // 2,) * 2
        and conv.padding_mode == "zeros"
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == conv.in_channels == conv.out_channels
    )


# ---------------------------------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class Activation:
    """An activation with a known derivative: 'gelu' (approximate 'none' or 'tanh'), 'relu' or 'silu'."""

    kind: str
    approximate: str = "none"

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.kind == "gelu":
            return F.gelu(tensor, approximate=self.approximate)
        return F.relu(tensor) if self.kind == "relu" else F.silu(tensor)

    def backward_(self, grad: torch.Tensor, input: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to the activation's input, written over `grad` (for 'relu', the activation's
        output works as `input` as well)."""
        if self.kind == "gelu":
            return aten.gelu_backward.grad_input(grad, input, approximate=self.approximate, grad_input=grad)
        if self.kind == "relu":
            return aten.threshold_backward.grad_input(grad, input, 0, grad_input=grad)
        return aten.silu_backward.grad_input(grad, input, grad_input=grad)

    @property
    def onednn(self) -> tuple[str, str] | None:
        """oneDNN's (attr, algorithm) for this activation, None where oneDNN has no exact equivalent."""
        if self.kind == "gelu":
            return "gelu", self.approximate
        return ("relu", "") if self.kind == "relu" else None


def known_activation(module: nn.Module | None) -> Activation | None:
    """The `Activation` an activation module computes, None for any other module."""
    if type(module) is nn.GELU:
        return Activation("gelu", module.approximate)
    if type(module) is GELUActivation and module.act is F.gelu:
        return Activation("gelu")
    if type(module) is nn.ReLU:
        return Activation("relu")
    if type(module) is nn.SiLU:
        return Activation("silu")
    return None


def onednn_activation(module: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN's (attr, algorithm) for an activation module ("none" for no module), None where it has no exact
    equivalent."""
    if module is None:
        return "none", ""
    activation = known_activation(module)
    return None if activation is None else activation.onednn


# ---------------------------------------------------------------------- private APIs: oneDNN's fused-pointwise ops

# oneDNN's GEMM and convolution with bias, activation or a residual add inside (private ops of torch's CPU build,
# which inductor's CPU backend calls): reached only through the three functions below.
ONEDNN_AVAILABLE = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
)


def onednn_linear(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, attr: str, algorithm: str
) -> torch.Tensor:
    """`act(F.linear(input, weight, bias))` in one oneDNN GEMM; `attr`/`algorithm` as `onednn_activation` gives."""
    return torch.ops.mkldnn._linear_pointwise(input, weight, bias, attr, [], algorithm)


def onednn_linear_add(
    input: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`F.linear(input, weight, bias) + other` in one oneDNN GEMM."""
    return torch.ops.mkldnn._linear_pointwise.binary(input, other, weight, bias, "add")


def onednn_conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: list[int],
    stride: list[int],
    groups: int,
    attr: str,
    algorithm: str,
) -> torch.Tensor:
    """`act(F.conv2d(input, weight, bias, stride, padding, groups=groups))` in one oneDNN convolution, channels-last
    (what oneDNN returns for the channels-last token views: no copy; what the fused path's fake kernel promises)."""
    output = torch.ops.mkldnn._convolution_pointwise(
        input, weight, bias, padding, stride, [1, 1], groups, attr, [], algorithm
    )
    return output.contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------ private APIs: autograd


def saved_tensors_hooks_active() -> bool:
    """Whether saved-tensor hooks (gradient checkpointing's, offloading's, a user's) are active on this thread."""
    return torch._C._autograd._top_saved_tensors_default_hooks(False) is not None


# -------------------------------------------------------------------------- private APIs: transformers' output capture

# The name of the forward hook that `capture_outputs` installs on the modules named in `_can_record_outputs`.
OUTPUT_CAPTURING_HOOK_NAME = "output_capturing_hook"


def is_output_capturing_hook(hook) -> bool:
    """Whether a forward hook is transformers' output-capturing hook."""
    return getattr(hook, "__name__", "") == OUTPUT_CAPTURING_HOOK_NAME


def recording_outputs(name: str) -> bool:
    """Whether transformers' output capture (`capture_outputs`) is recording `name` (e.g. "attentions") right now."""
    collected = _active_collector.get()
    return collected is not None and name in collected


def install_output_capturing_hooks(model: nn.Module) -> None:
    """Install transformers' output-capturing hooks on `model`'s recorded modules now (they are otherwise installed
    lazily on the first call, which under torch.compile takes a lock that dynamo cannot trace)."""
    maybe_install_capturing_hooks(model)
