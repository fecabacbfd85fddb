"""Fused CPU inference kernels: oneDNN's GEMMs and convolutions with bias, activation and residual add inside.

Plain `nn.Linear` on CPU first broadcasts the bias into its fresh output, and GELU and the residual adds are passes of
their own over (B, N, 8C) activations: together ~40% of an eager pvt-v2-b2 forward on two cores. oneDNN's
`mkldnn._linear_pointwise` / `_convolution_pointwise` do all of it in one call. They have no autograd, so only
inference takes them (`use_onednn`); training and GPUs run the plain modules, and so do exporters (ONNX has no such
ops).

The kernels are also registered as custom ops (`torch.ops.pvt_hf.*`) with fake kernels, which torch.compile's graphs
call: dynamo cannot trace oneDNN's ops and inductor's lowering rejects them, so a compiled model used to fall back to
the plain modules (0.71x the speed of this eager path). Eager calls the kernels directly (`_kernel`): the dispatcher's
round trip cost ~3%. The MLP is one op: its chunking loop depends on the input size, which inside a graph would
specialise it to that size.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import GELUActivation

AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

# Largest block of MLP hidden activations the fused path materialises at once (see `_mlp`).
MLP_CHUNK_BYTES = 16 << 20


def tokens_to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map: a view, channels-last in memory, so convolutions run in NHWC.

    Split first, then permuted: the batch stride stays H*W*C also for one image. (`transpose(1, 2).reshape(...)`
    gives a single image a batch stride of C, which convolutions do not recognise as channels-last: they then copy
    the input to NCHW and return NCHW, and the tokens after them need another transposing copy; 1.5x slower for a
    single 512x512 image.)"""
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


def use_onednn(hidden_states: torch.Tensor, module: nn.Module) -> bool:
    """Whether `module` may run on the fused kernels: float32 CPU inference, nothing asking for gradients, no
    exporter tracing."""
    if torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if not AVAILABLE or module.training:
        return False
    if hidden_states.device.type != "cpu" or hidden_states.dtype != torch.float32:
        return False
    return not torch.is_grad_enabled() or not (
        hidden_states.requires_grad or any(parameter.requires_grad for parameter in module.parameters())
    )


def hookless(*modules: nn.Module) -> bool:
    """Whether the fused kernels may replace these modules' forward: wrapped (PEFT) or hooked (accelerate offload,
    quantizers) layers must run their own."""
    return all(
        type(module) in (nn.Linear, nn.Conv2d) and not (module._forward_hooks or module._forward_pre_hooks)
        for module in modules
    )


def onednn_activation(activation: nn.Module | None) -> tuple[str, str] | None:
    """oneDNN's (attr, algorithm) for an activation module, None where it has no exact equivalent."""
    if activation is None:
        return "none", ""
    if type(activation) is nn.ReLU:
        return "relu", ""
    if type(activation) is nn.GELU:
        return "gelu", activation.approximate
    if type(activation) is GELUActivation and activation.act is torch.nn.functional.gelu:
        return "gelu", "none"
    return None


# ----------------------------------------------------------------------------------------------- the kernels


def _linear(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, attr: str, algorithm: str
) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(input, weight, bias, attr, [], algorithm)


def _linear_add(
    input: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise.binary(input, other, weight, bias, "add")


def _conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: list[int],
    stride: list[int],
    groups: int,
    attr: str,
    algorithm: str,
) -> torch.Tensor:
    output = torch.ops.mkldnn._convolution_pointwise(
        input, weight, bias, padding, stride, [1, 1], groups, attr, [], algorithm
    )
    # The fake kernel promises channels-last (what oneDNN returns for the channels-last token views).
    return output.contiguous(memory_format=torch.channels_last)


def _mlp(
    hidden_states: torch.Tensor,
    residual: torch.Tensor,
    height: int,
    width: int,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor | None,
    fc1_activation: str,
    fc1_algorithm: str,
    conv_weight: torch.Tensor | None,
    conv_bias: torch.Tensor | None,
    conv_activation: str,
    conv_algorithm: str,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor | None,
) -> torch.Tensor:
    """`residual + fc2(conv_act(dwconv(fc1_act(fc1(hidden_states)))))` (v1: no conv, the GELU is fc1's activation).

    The (B, N, 8C) hidden activations exist only a chunk (whole images, or bands of rows) of at most
    `MLP_CHUNK_BYTES` at a time: small blocks that the allocator reuses and the caches hold, instead of fresh,
    page-faulting allocations of 51 MiB (224x224, batch 8) to 0.5 GiB (one 2048x2048 image) per block."""
    batch_size, num_tokens, _ = hidden_states.shape
    unit = width if conv_weight is not None else 1  # v2 chunks whole rows: the conv needs them
    halo = conv_weight.shape[-2] // 2 if conv_weight is not None else 0
    num_units = num_tokens // unit
    units_per_chunk = max(1, MLP_CHUNK_BYTES // (unit * fc1_weight.shape[0] * hidden_states.element_size()))
    images, band = max(1, units_per_chunk // num_units), min(units_per_chunk, num_units)

    def mlp_rows(hidden_states: torch.Tensor, residual: torch.Tensor, start: int, end: int) -> torch.Tensor:
        """The MLP on rows [start, end) (v1: tokens) of these images."""
        if conv_weight is None:
            hidden = _linear(hidden_states[:, start:end], fc1_weight, fc1_bias, fc1_activation, fc1_algorithm)
            return _linear_add(hidden, residual[:, start:end], fc2_weight, fc2_bias)
        # fc1 on `halo` more rows above and below (where the image has them): the conv's neighbourhood
        top, bottom = max(start - halo, 0), min(end + halo, num_units)
        hidden = _linear(hidden_states[:, top * width : bottom * width], fc1_weight, fc1_bias, fc1_activation, fc1_algorithm)
        hidden = torch.ops.mkldnn._convolution_pointwise(
            tokens_to_map(hidden, bottom - top, width),
            conv_weight,
            conv_bias,
            [halo, halo],
            [1, 1],
            [1, 1],
            conv_weight.shape[0],
            conv_activation,
            [],
            conv_algorithm,
        )
        hidden = hidden[:, :, start - top : end - top].flatten(2).transpose(1, 2)
        return _linear_add(hidden, residual[:, start * width : end * width], fc2_weight, fc2_bias)

    if images >= batch_size and band >= num_units:
        return mlp_rows(hidden_states, residual, 0, num_units).contiguous()
    output = residual.new_empty(residual.shape)
    for first_image in range(0, batch_size, images):
        chunk = slice(first_image, first_image + images)
        for start in range(0, num_units, band):
            end = min(start + band, num_units)
            output[chunk, start * unit : end * unit] = mlp_rows(hidden_states[chunk], residual[chunk], start, end)
    return output


def _register() -> None:
    """Registers the kernels as `torch.ops.pvt_hf.*` (once per process: remote-code copies of this module reuse them)."""
    try:
        torch.ops.pvt_hf.mlp
        return
    except (AttributeError, RuntimeError):
        pass

    def linear_shape(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return input.new_empty((*input.shape[:-1], weight.shape[0]))

    linear = torch.library.custom_op("pvt_hf::linear_pointwise", _linear, mutates_args=())
    linear.register_fake(lambda input, weight, bias, attr, algorithm: linear_shape(input, weight))
    linear_add = torch.library.custom_op("pvt_hf::linear_add", _linear_add, mutates_args=())
    linear_add.register_fake(lambda input, other, weight, bias: linear_shape(input, weight))

    conv = torch.library.custom_op("pvt_hf::convolution_pointwise", _conv, mutates_args=())

    @conv.register_fake
    def _(input, weight, bias, padding, stride, groups, attr, algorithm):
        size = [
            (input.shape[2 + axis] + 2 * padding[axis] - weight.shape[2 + axis]) // stride[axis] + 1 for axis in (0, 1)
        ]
        shape = (input.shape[0], weight.shape[0], *size)
        return input.new_empty(shape).contiguous(memory_format=torch.channels_last)

    mlp = torch.library.custom_op("pvt_hf::mlp", _mlp, mutates_args=())
    mlp.register_fake(lambda hidden_states, residual, *args: residual.new_empty(residual.shape))


_register()

_EAGER_KERNELS = {
    "linear_pointwise": _linear,
    "linear_add": _linear_add,
    "convolution_pointwise": _conv,
    "mlp": _mlp,
}


def _kernel(name: str):
    """The registered op while torch.compile traces, else the kernel itself (no dispatcher round trip in eager)."""
    return getattr(torch.ops.pvt_hf, name) if torch.compiler.is_compiling() else _EAGER_KERNELS[name]


# ------------------------------------------------------------------------------------ the modules' fused forward


def linear(layer: nn.Linear, hidden_states: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
    """`residual + layer(hidden_states)`, in one oneDNN call where the module allows."""
    if not hookless(layer):
        output = layer(hidden_states)
        return output if residual is None else residual + output
    if residual is not None:
        return _kernel("linear_add")(hidden_states, residual, layer.weight, layer.bias)
    return linear_weights(hidden_states, layer.weight, layer.bias)


def linear_weights(
    hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """`F.linear` on the fused kernel (for weights that are no single module's, like a concatenated qkv)."""
    return _kernel("linear_pointwise")(hidden_states, weight, bias, "none", "")


def conv2d(conv: nn.Conv2d, hidden_states: torch.Tensor) -> torch.Tensor:
    """`conv(hidden_states)` on oneDNN's kernel where the module allows."""
    if hookless(conv) and isinstance(conv.padding, tuple) and conv.dilation == (1, 1):
        return _kernel("convolution_pointwise")(
            hidden_states, conv.weight, conv.bias, list(conv.padding), list(conv.stride), conv.groups, "none", ""
        )
    return conv(hidden_states)


def mlp(
    fc1: nn.Linear,
    fc1_activation: nn.Module | None,
    depthwise_conv: nn.Conv2d | None,
    conv_activation: nn.Module | None,
    fc2: nn.Linear,
    hidden_states: torch.Tensor,
    height: int,
    width: int,
    residual: torch.Tensor,
) -> torch.Tensor | None:
    """`residual + mlp(hidden_states)` in one op (see `_mlp`); None where the modules do not allow it."""
    fc1_fusable = onednn_activation(fc1_activation)
    conv_fusable = onednn_activation(conv_activation) if depthwise_conv is not None else ("none", "")
    modules = (fc1, fc2) if depthwise_conv is None else (fc1, depthwise_conv, fc2)
    if fc1_fusable is None or conv_fusable is None or not hookless(*modules):
        return None
    if depthwise_conv is not None and not (
        depthwise_conv.padding == (depthwise_conv.kernel_size[0] // 2,) * 2
        and depthwise_conv.kernel_size[0] == depthwise_conv.kernel_size[1]
        and depthwise_conv.stride == depthwise_conv.dilation == (1, 1)
        and depthwise_conv.groups == depthwise_conv.in_channels == depthwise_conv.out_channels
    ):
        return None
    return _kernel("mlp")(
        hidden_states,
        residual,
        height,
        width,
        fc1.weight,
        fc1.bias,
        *fc1_fusable,
        None if depthwise_conv is None else depthwise_conv.weight,
        None if depthwise_conv is None else depthwise_conv.bias,
        *conv_fusable,
        fc2.weight,
        fc2.bias,
    )
