"""Fused CPU inference kernels for PVT layers: oneDNN's GEMMs and convolutions with bias, activation and residual add
inside.

Plain `nn.Linear` on CPU first broadcasts the bias into its fresh output, and GELU and the residual adds are passes of
their own over (B, N, 8C) activations: together ~40% of an eager pvt-v2-b2 forward on two cores. oneDNN's fused
pointwise GEMM and convolution (`layer_paths.onednn_linear` / `onednn_linear_add` / `onednn_conv`) do all of it in one
call. They have no autograd.

The model's code stays plain; this module attaches at one place, `PvtStage.forward`, which runs a layer through
`fused_layer_forward` where `fused_forward_applies` says that is exact and safe: fp32 CPU inference with nothing asking for gradients, no
autocast, no exporter tracing, plain `nn.Linear`/`nn.Conv2d` layers on real CPU tensors (not PEFT-wrapped, quantized,
offloaded, or carrying accelerate's `_hf_hook`, an instance-level `forward` or any forward hook). Everything else,
training, GPUs, bf16/fp16 and export included, runs the plain modules. `config.fused_cpu_kernels = False` turns the
path off.

The kernels are also registered as custom ops with fake kernels (`torch.ops.<NAMESPACE>.*`), which torch.compile's
graphs call: dynamo cannot trace oneDNN's ops and inductor's lowering rejects them. The namespace carries a hash of the
kernels' source, so a second copy of this module (Hub remote code of another release) never runs stale kernels. Eager
calls the kernels directly (`_kernel`): the dispatcher's round trip cost ~3%. The MLP is one op: its chunking loop
depends on the input size, which inside a graph would specialise it to that size.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
from torch import nn
from transformers.utils import logging

from .layer_paths import (
    ONEDNN_AVAILABLE,
    PLAIN_PARAMETER_TYPES,
    is_same_size_depthwise_conv,
    map_to_tokens,
    onednn_activation,
    onednn_conv,
    onednn_linear,
    onednn_linear_add,
    runs_class_forward,
    tokens_to_map,
)


logger = logging.get_logger(__name__)

# Largest block of MLP hidden activations the fused path materialises at once (see `_mlp`).
MLP_CHUNK_BYTES = 16 << 20


# ----------------------------------------------------------------------------------------------- the kernels

# Registered as custom ops (below) as they are: `layer_paths`' oneDNN calls.
_linear, _linear_add, _conv = onednn_linear, onednn_linear_add, onednn_conv


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
        hidden = _linear(
            hidden_states[:, top * width : bottom * width], fc1_weight, fc1_bias, fc1_activation, fc1_algorithm
        )
        hidden = onednn_conv(
            tokens_to_map(hidden, bottom - top, width),
            conv_weight,
            conv_bias,
            [halo, halo],
            [1, 1],
            conv_weight.shape[0],
            conv_activation,
            conv_algorithm,
        )
        hidden = map_to_tokens(hidden[:, :, start - top : end - top])
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


def _namespace() -> str:
    """`pvt_hf_<hash of the kernels' source>`: copies of this module with other kernels register ops of their own.
    The source covers the kernels here and the helpers they call in `layer_paths`."""
    kernels = (_linear, _linear_add, _conv, _mlp, tokens_to_map, map_to_tokens)
    try:
        source = "".join(inspect.getsource(kernel) for kernel in kernels)
    except (OSError, TypeError):  # no source files (a frozen or compiled install): fall back to this module's bytes
        source = repr([kernel.__code__.co_code for kernel in kernels])
    return "pvt_hf_" + hashlib.sha256(source.encode()).hexdigest()[:12]


NAMESPACE = _namespace()


def _register() -> None:
    """Registers the kernels as `torch.ops.<NAMESPACE>.*`, once per process and kernel version."""
    if hasattr(getattr(torch.ops, NAMESPACE), "mlp"):
        return  # another copy of this module with the same kernels registered them

    def linear_shape(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return input.new_empty((*input.shape[:-1], weight.shape[0]))

    linear = torch.library.custom_op(f"{NAMESPACE}::linear_pointwise", _linear, mutates_args=())
    linear.register_fake(lambda input, weight, bias, attr, algorithm: linear_shape(input, weight))
    linear_add = torch.library.custom_op(f"{NAMESPACE}::linear_add", _linear_add, mutates_args=())
    linear_add.register_fake(lambda input, other, weight, bias: linear_shape(input, weight))

    conv = torch.library.custom_op(f"{NAMESPACE}::convolution_pointwise", _conv, mutates_args=())

    @conv.register_fake
    def _(input, weight, bias, padding, stride, groups, attr, algorithm):
        size = [
            (input.shape[2 + axis] + 2 * padding[axis] - weight.shape[2 + axis]) // stride[axis] + 1 for axis in (0, 1)
        ]
        shape = (input.shape[0], weight.shape[0], *size)
        return input.new_empty(shape).contiguous(memory_format=torch.channels_last)

    mlp = torch.library.custom_op(f"{NAMESPACE}::mlp", _mlp, mutates_args=())
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
    return getattr(getattr(torch.ops, NAMESPACE), name) if torch.compiler.is_compiling() else _EAGER_KERNELS[name]


# ------------------------------------------------------------------------------------------- where they apply


def _plain_fp32_cpu_module(module: nn.Module, requires_grad: bool) -> bool:
    """Whether `module` runs its class's own forward (`layer_paths.runs_class_forward`) on plain fp32 CPU parameters:
    none on another device, of another dtype or type (meta, offloaded, bf16, quantized), none wanting gradients."""
    if not runs_class_forward(module):
        return False
    for parameter in module._parameters.values():
        if parameter is None:
            continue
        if type(parameter) not in PLAIN_PARAMETER_TYPES or not parameter.is_cpu or parameter.dtype != torch.float32:
            return False
        if requires_grad and parameter.requires_grad:
            return False
    return True


def _fusable_conv(conv: nn.Conv2d | None) -> bool:
    """The spatial reduction's conv as `onednn_conv` runs it: numeric zero padding, no dilation."""
    if conv is None:
        return True
    return (
        type(conv) is nn.Conv2d
        and isinstance(conv.padding, tuple)
        and conv.dilation == (1, 1)
        and conv.padding_mode == "zeros"
    )


def _mlp_activations(mlp: nn.Module) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """oneDNN's (attr, algorithm) for the activation after fc1 and after the depth-wise conv; None if either has none."""
    if mlp.depthwise_conv is None:
        return onednn_activation(mlp.activation), ("none", "")
    fc1_activation, conv_activation = onednn_activation(mlp.relu), onednn_activation(mlp.activation)
    if fc1_activation is None or conv_activation is None:
        return None
    return fc1_activation, conv_activation


def fused_forward_applies(layer: nn.Module, hidden_states: torch.Tensor) -> bool:
    """Whether the fused kernels may run this `PvtLayer` on these tokens, exactly as its plain modules would."""
    attention, mlp = layer.attention, layer.mlp
    if not (ONEDNN_AVAILABLE and getattr(attention.config, "fused_cpu_kernels", True)) or layer.training:
        return False
    if torch.compiler.is_exporting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if hidden_states.device.type != "cpu" or hidden_states.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
        return False
    requires_grad = torch.is_grad_enabled()
    if requires_grad and hidden_states.requires_grad:
        return False
    linears = (attention.query, attention.key_value, attention.output, mlp.fc1, mlp.fc2)
    if any(type(linear) is not nn.Linear for linear in linears):
        return False
    if not _fusable_conv(attention.spatial_reduction):
        return False
    conv = mlp.depthwise_conv
    if conv is not None and not (type(conv) is nn.Conv2d and is_same_size_depthwise_conv(conv)):
        return False
    if _mlp_activations(mlp) is None:
        return False
    return all(_plain_fp32_cpu_module(module, requires_grad) for module in layer.modules())


# ------------------------------------------------------------------------------------------------ the fused layer


def fused_layer_forward(layer: nn.Module, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`layer(hidden_states, height, width)` on the fused kernels; the plain modules if a kernel raises."""
    if torch.compiler.is_compiling():
        return _fused_layer(layer, hidden_states, height, width)
    try:
        return _fused_layer(layer, hidden_states, height, width)
    except (RuntimeError, NotImplementedError) as error:
        logger.warning_once(f"The fused CPU kernels failed ({error}); PVT layers run their plain modules instead.")
        return layer(hidden_states, height, width)


def _fused_layer(layer: nn.Module, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The block with its residual adds inside the output GEMMs (drop path and dropout are identities here)."""
    attention, mlp = layer.attention, layer.mlp
    batch_size, num_tokens, hidden_size = hidden_states.shape
    heads, head_dim = attention.num_attention_heads, attention.head_dim
    normed = layer.layer_norm_1(hidden_states)
    if attention.spatial_reduction is None:
        # Queries, keys and values all come from these tokens: one GEMM. The weights are concatenated at call time
        # (3C x C floats, little next to the GEMM), so they always follow loading and updates.
        weight = torch.cat([attention.query.weight, attention.key_value.weight])
        bias = None if attention.query.bias is None else torch.cat([attention.query.bias, attention.key_value.bias])
        qkv = _kernel("linear_pointwise")(normed, weight, bias, "none", "")
        query, key, value = qkv.view(batch_size, num_tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    else:
        query = _kernel("linear_pointwise")(normed, attention.query.weight, attention.query.bias, "none", "")
        query = query.view(batch_size, num_tokens, heads, head_dim).transpose(1, 2)
        reduced = tokens_to_map(normed, height, width)
        if attention.pool is not None:
            reduced = attention.pool_tokens(reduced)
        conv = attention.spatial_reduction
        reduced = _kernel("convolution_pointwise")(
            reduced, conv.weight, conv.bias, list(conv.padding), list(conv.stride), conv.groups, "none", ""
        )
        key_value_states = attention.layer_norm(map_to_tokens(reduced))
        if attention.activation is not None:
            key_value_states = attention.activation(key_value_states)
        key_value = _kernel("linear_pointwise")(
            key_value_states, attention.key_value.weight, attention.key_value.bias, "none", ""
        )
        key_value = key_value.view(batch_size, key_value.shape[1], 2, heads, head_dim)
        key, value = key_value.permute(2, 0, 3, 1, 4).unbind(0)
    attn_output, _ = attention.attention_function()(attention, query, key, value, None, scaling=attention.scaling)
    attn_output = attn_output.reshape(batch_size, num_tokens, hidden_size)
    hidden_states = _kernel("linear_add")(attn_output, hidden_states, attention.output.weight, attention.output.bias)

    fc1_activation, conv_activation = _mlp_activations(mlp)
    conv = mlp.depthwise_conv
    return _kernel("mlp")(
        layer.layer_norm_2(hidden_states),
        hidden_states,
        height,
        width,
        mlp.fc1.weight,
        mlp.fc1.bias,
        *fc1_activation,
        None if conv is None else conv.weight,
        None if conv is None else conv.bias,
        *conv_activation,
        mlp.fc2.weight,
        mlp.fc2.bias,
    )
