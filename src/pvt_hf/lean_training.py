# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Memory-lean training of PVT layers: the conv-FFN residual branch as one autograd function that saves its input
(and, in the wide late stages, the fc1 output) and recomputes the rest in backward; the attention branch recomputes
its LayerNorm's output instead of keeping it.

The conv-FFN (`LayerNorm -> fc1 [-> ReLU] [-> 3x3 depth-wise conv] -> activation -> fc2`) is the bulk of what PVT
saves for backward: autograd keeps fc1's input, fc1's output (the conv's input), the conv's output (the activation's
input) and the activation's output (fc2's input), the last three each `mlp_ratio` x the tokens (8x in PVT v2 stages
1-2). `LeanConvFFN` keeps the LayerNorm's input (also the residual, so alive anyway) and its statistics, and in
backward recomputes the LayerNorm, the depth-wise conv and the activation: cheap, memory-bound passes next to the
GEMMs. fc1's output is recomputed too where fc1 is narrow (`RECOMPUTE_FC1_MAX_IN_FEATURES`: PVT's first two stages,
where it is the largest saved tensor and its GEMM the cheapest) and kept in the wide stages, where fc2's and the
wide fc1's GEMMs are never recomputed. That is 26 -> 1 tokens x width saved per v2 stage-1/2 MLP (14 -> 5 where
`mlp_ratio` is 4 and fc1 is kept). Where the plain modules' forward would be exact and faster on oneDNN's fused
kernels (fp32 CPU eager), the forward runs them: bias and GELU inside the GEMM and the conv, as in `fused_ops`; the
backward's recomputation runs the forward's kernels on the same rows, so it gives the forward's values.

The model's code stays plain; this module attaches at one place, `PvtLayer.forward`, wherever
`lean_training_applies`: gradients are recorded, the branch's modules are plain `nn.LayerNorm` / `nn.Linear` /
`nn.Conv2d` modules (not PEFT-wrapped, quantized or hooked; FSDP1's plain tensor views of its parameters are fine) and
its activations have a known derivative. The MLP branch then runs lean where it needs gradients: decided on its real
input, after the attention and any adapters on it. Everything else runs the plain modules. Gradient checkpointing
recomputes this function like any other op (keeping fc1's output in checkpointed layers, see `_checkpointed`);
autocast is honoured with the dtypes autocast gives the plain modules (the LayerNorm as autocast runs it on the
device, the GEMMs and convs in the autocast dtype); the inner dropout's mask is regenerated in backward from the
random state saved in forward, so it is the forward's mask.

The Semantic FPN loss (`upsampled_cross_entropy`, at one place in `PvtForSemanticSegmentation.forward`) upsamples
the stride-4 logits to the labels' size and scores them in bands of rows, in forward and again in backward, instead of
keeping label-sized logits and their log-softmax (at 512 crops with 150 classes, 300 MiB each per two images).

One switch turns both off: `config.lean_training = False`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .layer_paths import (
    ONEDNN_AVAILABLE,
    Activation,
    is_same_size_depthwise_conv,
    known_activation,
    map_to_tokens,
    onednn_conv,
    onednn_linear,
    plain_module,
    saved_tensors_hooks_active,
    tokens_to_map,
)


aten = torch.ops.aten


@dataclass(frozen=True)
class BranchSpec:
    """The non-tensor settings of one MLP branch."""

    eps: float
    fc1_relu: bool  # v2-linear: a ReLU right after fc1
    activation: Activation
    depthwise: bool  # v2: 3x3 depth-wise conv between fc1 and the activation
    padding: int
    dropout: float  # the inner dropout's probability (after the activation) while training, else 0
    height: int
    width: int
    recompute_fc1: bool  # backward recomputes the fc1 output instead of keeping it (see `recomputes_fc1`)


# ------------------------------------------------------------------------------------------------- where it applies


def lean_training_applies(layer: nn.Module, hidden_states: torch.Tensor) -> bool:
    """Whether this `PvtLayer` runs `lean_layer_forward` on these tokens: gradients are being recorded and
    `LeanConvFFN` would run its MLP branch exactly as its plain modules do. Whether the branch then needs gradients at
    all is decided there, on the MLP's real input."""
    mlp = layer.mlp
    if not torch.is_grad_enabled() or not getattr(layer.attention.config, "lean_training", True):
        return False
    if (
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.compiler.is_exporting()
        or torch.onnx.is_in_onnx_export()
    ):
        return False
    if type(hidden_states) is not torch.Tensor or not hidden_states.is_floating_point():
        return False
    if any(parameter.device != hidden_states.device for parameter in _mlp_branch_parameters(layer)):
        return False
    if not (
        plain_module(layer.layer_norm_2, nn.LayerNorm)
        and plain_module(mlp.fc1, nn.Linear)
        and plain_module(mlp.fc2, nn.Linear)
    ):
        return False
    if (
        layer.layer_norm_2.weight is None
        or layer.layer_norm_2.bias is None
        or mlp.fc1.bias is None
        or mlp.fc2.bias is None
    ):
        return False
    if known_activation(mlp.activation) is None or (mlp.relu is not None and type(mlp.relu) is not nn.ReLU):
        return False
    if mlp.dropout.p > 0 and mlp.training and torch.compiler.is_compiling():
        return False  # the inner dropout's replay reads the random state, which compiled graphs do not expose
    conv = mlp.depthwise_conv
    if conv is not None and not (
        plain_module(conv, nn.Conv2d) and conv.bias is not None and is_same_size_depthwise_conv(conv)
    ):
        return False
    return True


def lean_layer_forward(
    layer: nn.Module, hidden_states: torch.Tensor, height: int, width: int, **kwargs
) -> torch.Tensor:
    """`PvtLayer.forward` on the memory-lean path: the attention branch keeps the first LayerNorm's input instead of
    its output (`_LayerNormOutputRecomputed`), the MLP branch runs as `LeanConvFFN` wherever it needs gradients."""
    normed = layer.layer_norm_1(hidden_states)
    with _LayerNormOutputRecomputed.where_it_applies(layer.layer_norm_1, hidden_states, normed):
        attention_output, _ = layer.attention(normed, height, width, **kwargs)
    del normed
    hidden_states = hidden_states + layer.drop_path(attention_output)
    # decided on the MLP's real input: after the attention (and any adapters on it), which may need gradients where
    # the layer's input does not
    if hidden_states.requires_grad or any(parameter.requires_grad for parameter in _mlp_branch_parameters(layer)):
        mlp_output = lean_mlp_branch(layer, hidden_states, height, width)
    else:
        mlp_output = layer.mlp(layer.layer_norm_2(hidden_states), height, width)
    return hidden_states + layer.drop_path(mlp_output)


def _mlp_branch_parameters(layer: nn.Module) -> list[torch.Tensor]:
    mlp = layer.mlp
    modules = (layer.layer_norm_2, mlp.fc1, mlp.fc2, mlp.depthwise_conv)
    return [parameter for module in modules if module is not None for parameter in module.parameters()]


class _LayerNormOutputRecomputed(torch.autograd.graph.saved_tensors_hooks):
    """While the attention runs, whatever saves the LayerNorm's output for backward (the query projection, the
    spatial-reduction conv or pooling, LoRA adapters...) saves a note instead, and backward recomputes the output from
    the LayerNorm's input, which the LayerNorm saves anyway: one tokens x width tensor less per layer. The recomputation
    is the forward's kernel on the same input: the same values.

    Only in eager autograd with no other saved-tensor hooks active (gradient checkpointing's, offloading's): compiled
    graphs choose their own recomputation, and nested hooks would bypass the outer ones."""

    def __init__(self, norm: nn.LayerNorm, hidden_states: torch.Tensor, normed: torch.Tensor):
        storage = normed.untyped_storage().data_ptr()
        device_type = hidden_states.device.type
        autocast_dtype = _autocast_dtype(device_type)  # the forward's: the recomputation runs under the same

        def pack(tensor: torch.Tensor):
            if tensor.device == hidden_states.device and tensor.untyped_storage().data_ptr() == storage:
                return _Recompute(tensor.shape, tensor.stride(), tensor.storage_offset())
            return tensor

        def unpack(packed):
            if type(packed) is not _Recompute:
                return packed
            autocast = torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
            with torch.no_grad(), autocast:
                output = F.layer_norm(hidden_states, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            return output.as_strided(packed.size, packed.stride, packed.storage_offset)

        super().__init__(pack, unpack)

    @classmethod
    def where_it_applies(cls, norm: nn.Module, hidden_states: torch.Tensor, normed: torch.Tensor):
        applies = (
            normed.requires_grad
            and plain_module(norm, nn.LayerNorm)
            and not torch.compiler.is_compiling()
            and not saved_tensors_hooks_active()
        )
        return cls(norm, hidden_states, normed) if applies else contextlib.nullcontext()


@dataclass(frozen=True)
class _Recompute:
    size: torch.Size
    stride: tuple[int, ...]
    storage_offset: int


# fc1 is recomputed in backward where its input is at most this wide: in PVT's early stages (64 and 128 channels) each
# of its outputs costs at most 128 multiply-adds to recompute, and those outputs are the largest tensor a layer saves
# (8x the tokens x width); in the wide late stages recomputing would cost more time than the memory it frees is worth.
RECOMPUTE_FC1_MAX_IN_FEATURES = 128


def recomputes_fc1(mlp: nn.Module) -> bool:
    """Whether backward recomputes this MLP's fc1 output rather than keeping it: narrow fc1s, followed by a smooth
    activation (a ReLU's kink would turn the recomputation's last-bit rounding into a different gradient)."""
    smooth = mlp.relu is None and known_activation(mlp.activation).kind != "relu"
    return smooth and mlp.fc1.in_features <= RECOMPUTE_FC1_MAX_IN_FEATURES


def _checkpointed(layer: nn.Module) -> bool:
    """Whether gradient checkpointing recomputes this layer in backward, whose own backward follows at once: fc1's
    output is kept then (in the forward and in the recomputation alike, as checkpointing requires), since it lives
    only until that backward and recomputing it a second time would make checkpointing slower than the plain modules."""
    return bool(getattr(layer, "gradient_checkpointing", False)) and layer.training


def lean_mlp_branch(layer: nn.Module, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """`layer.mlp(layer.layer_norm_2(hidden_states), height, width)` through `LeanConvFFN`."""
    mlp, norm, conv = layer.mlp, layer.layer_norm_2, layer.mlp.depthwise_conv
    spec = BranchSpec(
        eps=norm.eps,
        fc1_relu=mlp.relu is not None,
        activation=known_activation(mlp.activation),
        depthwise=conv is not None,
        padding=0 if conv is None else conv.padding[0],
        dropout=mlp.dropout.p if mlp.training else 0.0,
        height=height,
        width=width,
        recompute_fc1=recomputes_fc1(mlp) and not _checkpointed(layer),
    )
    conv_weight, conv_bias = (None, None) if conv is None else (conv.weight, conv.bias)
    output = LeanConvFFN.apply(
        hidden_states,
        spec,
        norm.weight,
        norm.bias,
        mlp.fc1.weight,
        mlp.fc1.bias,
        conv_weight,
        conv_bias,
        mlp.fc2.weight,
        mlp.fc2.bias,
    )
    return mlp.dropout(output)


# ------------------------------------------------------------------------------------------------------ the function


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _random_state(device: torch.device):
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


@contextlib.contextmanager
def _replayed_random_state(state, device: torch.device):
    """The random state of `state` inside, the current one restored after."""
    cpu_state, cuda_state = state
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.set_rng_state(cpu_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state(cuda_state, device)
        yield


def _dropout_scale(shape: torch.Size, like: torch.Tensor, probability: float) -> torch.Tensor:
    """Dropout's mask already divided by the keep probability: `F.dropout(x) == x * _dropout_scale(x.shape, x)` for
    the same random state (both draw one Bernoulli sample per element of a tensor of that shape, dtype and device)."""
    return F.dropout(like.new_ones(shape), probability, training=True)


def _onednn_eligible(tensor: torch.Tensor, *weights: torch.Tensor) -> bool:
    return (
        ONEDNN_AVAILABLE
        and tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and all(weight.dtype == torch.float32 for weight in weights)
        and not torch.compiler.is_compiling()
    )


_FP32_LAYER_NORM: dict[tuple[str, torch.dtype], bool] = {}


def _autocast_runs_layer_norm_in_fp32(device_type: str, dtype: torch.dtype) -> bool:
    """Whether this device's autocast casts LayerNorm's operands to fp32 (CUDA's does; the CPU's runs it on the
    operands as they are). Asked of autocast itself, once per device type and dtype."""
    key = (device_type, dtype)
    if key not in _FP32_LAYER_NORM:
        probe = F.layer_norm(torch.zeros(1, 2, device=device_type, dtype=dtype), (2,)).dtype == torch.float32
        if torch.compiler.is_compiling():
            return probe
        _FP32_LAYER_NORM[key] = probe
    return _FP32_LAYER_NORM[key]


def _layer_norm_operands(hidden_states, weight, bias, norm_in_fp32: bool):
    """The operands that `F.layer_norm` runs on under the forward's autocast state."""
    if norm_in_fp32:
        return hidden_states.float(), weight.float(), bias.float()
    return hidden_states, weight, bias


def _layer_norm(hidden_states, weight, bias, eps, norm_in_fp32: bool, compute_dtype):
    """The LayerNorm as the plain module runs it under the forward's autocast state, its statistics, and the dtype of
    what follows (autocast's, else the LayerNorm output's)."""
    operands = _layer_norm_operands(hidden_states, weight, bias, norm_in_fp32)
    normed, mean, rstd = aten.native_layer_norm(operands[0], [hidden_states.shape[-1]], operands[1], operands[2], eps)
    dtype = compute_dtype or normed.dtype
    return normed.to(dtype), normed.dtype, mean, rstd, dtype


def _activated(hidden: torch.Tensor, spec: BranchSpec, conv_weight, conv_bias, fused: bool) -> torch.Tensor:
    """act(dwconv(hidden)) in forward: one oneDNN conv with the activation inside where it applies."""
    if not spec.depthwise:
        return spec.activation.forward(hidden)
    feature_map = tokens_to_map(hidden, spec.height, spec.width)
    if fused and spec.activation.kind == "gelu":
        activated = onednn_conv(
            feature_map,
            conv_weight,
            conv_bias,
            [spec.padding] * 2,
            [1, 1],
            conv_weight.shape[0],
            "gelu",
            spec.activation.approximate,
        )
        return map_to_tokens(activated)
    return spec.activation.forward(_convolved(hidden, spec, conv_weight, conv_bias))


def _fc1(normed: torch.Tensor, weight, bias, spec: BranchSpec, fused: bool) -> torch.Tensor:
    """fc1 [-> ReLU], as the forward runs it (oneDNN's GEMM where `fused`)."""
    if fused:
        return onednn_linear(normed, weight, bias, "none", "")
    hidden = F.linear(normed, weight, bias)
    return F.relu(hidden) if spec.fc1_relu else hidden


def _convolved(hidden: torch.Tensor, spec: BranchSpec, conv_weight, conv_bias) -> torch.Tensor:
    feature_map = tokens_to_map(hidden, spec.height, spec.width)
    return map_to_tokens(
        F.conv2d(feature_map, conv_weight, conv_bias, padding=spec.padding, groups=conv_weight.shape[0])
    )


def _linear_backward(grad: torch.Tensor, input, weight, *, of_input=False, of_weight=False, of_bias=False):
    """Gradients of `F.linear(input, weight, bias)` for (input, weight, bias), None where not asked for (`input` is
    needed only `of_weight`, `weight` only `of_input`)."""
    grad_2d = grad.reshape(-1, grad.shape[-1])
    grad_input = (grad_2d @ weight).view(*grad.shape[:-1], weight.shape[1]) if of_input else None
    grad_weight = grad_2d.t() @ input.reshape(-1, input.shape[-1]) if of_weight else None
    grad_bias = grad_2d.sum(0) if of_bias else None
    return grad_input, grad_weight, grad_bias


def _cast(grad: torch.Tensor | None, like: torch.Tensor | None) -> torch.Tensor | None:
    return None if grad is None else grad.to(like.dtype)


class BranchInputs(NamedTuple):
    """`LeanConvFFN.apply`'s inputs by name, in order: what `ctx.needs_input_grad` flags and backward returns."""

    hidden_states: object
    spec: object
    norm_weight: object
    norm_bias: object
    fc1_weight: object
    fc1_bias: object
    conv_weight: object
    conv_bias: object
    fc2_weight: object
    fc2_bias: object


class LeanConvFFN(torch.autograd.Function):
    """`fc2(dropout(act(dwconv(fc1_act(fc1(LayerNorm(x)))))))`, saving x, the LayerNorm's statistics and, unless
    `spec.recompute_fc1`, the fc1 output (see the module's docstring)."""

    @staticmethod
    def forward(
        ctx,
        hidden_states,
        spec: BranchSpec,
        norm_weight,
        norm_bias,
        fc1_weight,
        fc1_bias,
        conv_weight,
        conv_bias,
        fc2_weight,
        fc2_bias,
    ):
        device_type = hidden_states.device.type
        compute_dtype = _autocast_dtype(device_type)
        norm_in_fp32 = compute_dtype is not None and _autocast_runs_layer_norm_in_fp32(device_type, compute_dtype)
        with torch.autocast(device_type, enabled=False):
            normed, normed_dtype, mean, rstd, dtype = _layer_norm(
                hidden_states, norm_weight, norm_bias, spec.eps, norm_in_fp32, compute_dtype
            )
            fc1_w, fc1_b, conv_w, conv_b, fc2_w, fc2_b = (
                None if w is None else w.to(dtype)
                for w in (fc1_weight, fc1_bias, conv_weight, conv_bias, fc2_weight, fc2_bias)
            )
            # oneDNN's GEMMs round differently from aten's: not before a ReLU, whose kink would turn a rounding
            # difference into a different gradient
            fused = _onednn_eligible(normed, fc1_w, fc2_w) and not spec.fc1_relu and spec.activation.kind != "relu"
            hidden = _fc1(normed, fc1_w, fc1_b, spec, fused)
            del normed
            ctx.random_state = _random_state(hidden_states.device) if spec.dropout > 0 else None
            activated = _activated(hidden, spec, conv_w, conv_b, fused)
            if spec.dropout > 0:
                activated = activated * _dropout_scale(activated.shape, activated, spec.dropout)
            if fused:
                output = onednn_linear(activated, fc2_w, fc2_b, "none", "")
            else:
                output = F.linear(activated, fc2_w, fc2_b)
        ctx.spec, ctx.compute_dtype, ctx.norm_in_fp32, ctx.normed_dtype = (
            spec,
            compute_dtype,
            norm_in_fp32,
            normed_dtype,
        )
        ctx.fused, ctx.hidden_shape = fused, hidden.shape
        ctx.save_for_backward(
            hidden_states,
            None if spec.recompute_fc1 else hidden,
            mean,
            rstd,
            norm_weight,
            norm_bias,
            fc1_weight,
            fc1_bias,
            conv_weight,
            conv_bias,
            fc2_weight,
        )
        return output

    @staticmethod
    def backward(ctx, grad_output):
        spec = ctx.spec
        (
            hidden_states,
            hidden,
            mean,
            rstd,
            norm_weight,
            norm_bias,
            fc1_weight,
            fc1_bias,
            conv_weight,
            conv_bias,
            fc2_weight,
        ) = ctx.saved_tensors
        needs = BranchInputs(*ctx.needs_input_grad)
        with torch.autocast(hidden_states.device.type, enabled=False):
            normed = _layer_norm(hidden_states, norm_weight, norm_bias, spec.eps, ctx.norm_in_fp32, ctx.compute_dtype)[
                0
            ]
            dtype = normed.dtype
            weights = {
                "fc1": fc1_weight.to(dtype),
                "fc2": fc2_weight.to(dtype),
                "conv": None if conv_weight is None else conv_weight.to(dtype),
                "conv_bias": None if conv_bias is None else conv_bias.to(dtype),
            }
            grad_output = grad_output.to(dtype)
            scale = None
            if spec.dropout > 0:  # the forward's mask, from the random state it was drawn from
                with _replayed_random_state(ctx.random_state, hidden_states.device):
                    scale = _dropout_scale(ctx.hidden_shape, normed, spec.dropout)
            fc1_bias_c = None if fc1_bias is None else fc1_bias.to(dtype)
            needs_normed = needs.hidden_states or needs.norm_weight or needs.norm_bias
            grad_normed = torch.empty_like(normed) if needs_normed else None
            weight_grads: dict[str, torch.Tensor] = {}
            batch_size = ctx.hidden_shape[0]
            for rows in _backward_chunks(ctx.hidden_shape, normed):
                # the recomputed fc1 output is the forward's: the same kernel on the same rows
                chunk_hidden = (
                    _fc1(normed[rows], weights["fc1"], fc1_bias_c, spec, ctx.fused) if hidden is None else hidden[rows]
                )
                chunk_grads = _mlp_backward(
                    spec,
                    grad_output[rows],
                    chunk_hidden,
                    normed[rows],
                    None if scale is None else scale[rows],
                    weights,
                    None if grad_normed is None else grad_normed[rows],
                    needs,
                )
                for name, grad in chunk_grads.items():
                    if name in weight_grads:
                        weight_grads[name].add_(grad)
                    else:  # accumulated in fp32 where there is more than one chunk
                        weight_grads[name] = grad.float() if rows.stop < batch_size else grad
                del chunk_hidden
            del normed, scale
            grad_input = grad_norm_w = grad_norm_b = None
            if needs_normed:
                operands = _layer_norm_operands(hidden_states, norm_weight, norm_bias, ctx.norm_in_fp32)
                grad_input, grad_norm_w, grad_norm_b = aten.native_layer_norm_backward(
                    grad_normed.to(ctx.normed_dtype),
                    operands[0],
                    [hidden_states.shape[-1]],
                    mean,
                    rstd,
                    operands[1],
                    operands[2],
                    [needs.hidden_states, needs.norm_weight, needs.norm_bias],
                )
        return tuple(
            BranchInputs(
                hidden_states=_cast(grad_input, hidden_states),
                spec=None,
                norm_weight=_cast(grad_norm_w, norm_weight),
                norm_bias=_cast(grad_norm_b, norm_bias),
                fc1_weight=_cast(weight_grads.get("fc1"), fc1_weight),
                fc1_bias=_cast(weight_grads.get("fc1_bias"), fc1_bias),
                conv_weight=_cast(weight_grads.get("conv"), conv_weight),
                conv_bias=_cast(weight_grads.get("conv_bias"), conv_bias),
                fc2_weight=_cast(weight_grads.get("fc2"), fc2_weight),
                # (the bias is not saved: it has the weight's dtype)
                fc2_bias=_cast(weight_grads.get("fc2_bias"), fc2_weight),
            )
        )


# Recomputed intermediates of more than this many bytes are recomputed a few images at a time on the CPU: glibc serves
# allocations above 32 MiB with fresh pages, so full-batch intermediates would add to the peak even when the freed
# activations of the later stages could hold them. (CUDA's caching allocator reuses freed blocks: one chunk there.)
CPU_CHUNK_BYTES = 16 * 2**20


def _backward_chunks(hidden_shape: torch.Size, like: torch.Tensor) -> list[slice]:
    """Slices of the batch over which the backward recomputes fc1's output (of `hidden_shape`, in `like`'s dtype),
    the conv and the activation, one after the other."""
    batch_size = hidden_shape[0]
    chunks = 1
    if like.device.type == "cpu" and not torch.compiler.is_compiling():
        chunks = min(batch_size, -(-hidden_shape.numel() * like.element_size() // CPU_CHUNK_BYTES))
    step = -(-batch_size // chunks)
    return [slice(start, min(start + step, batch_size)) for start in range(0, batch_size, step)]


def _mlp_backward(
    spec: BranchSpec, grad_output, hidden, normed, scale, weights, grad_normed, needs: BranchInputs
) -> dict[str, torch.Tensor]:
    """The backward from the branch's output to the LayerNorm's output, for some images of the batch: writes the
    gradient of `normed` into `grad_normed`, returns the weights' gradients. Recomputes the conv, the activation and
    the dropout in an order that keeps at most two intermediate-sized tensors alive beside `hidden`."""
    grads = {}
    pre_activation = _convolved(hidden, spec, weights["conv"], weights["conv_bias"]) if spec.depthwise else hidden
    if needs.fc2_weight or needs.fc2_bias:
        activated = spec.activation.forward(pre_activation)
        if scale is not None:
            activated.mul_(scale)
        _, grads["fc2"], grads["fc2_bias"] = _linear_backward(
            grad_output, activated, None, of_weight=True, of_bias=True
        )
        del activated
    grad_activated, _, _ = _linear_backward(grad_output, None, weights["fc2"], of_input=True)
    if scale is not None:
        grad_activated.mul_(scale)
    grad_pre_activation = spec.activation.backward_(grad_activated, pre_activation)
    del grad_activated, pre_activation
    if spec.depthwise:
        conv_weight = weights["conv"]
        grad_map, grads["conv"], grads["conv_bias"] = aten.convolution_backward(
            tokens_to_map(grad_pre_activation, spec.height, spec.width),
            tokens_to_map(hidden, spec.height, spec.width),
            conv_weight,
            [conv_weight.shape[0]],
            [1, 1],
            [spec.padding] * 2,
            [1, 1],
            False,
            [0, 0],
            conv_weight.shape[0],
            [True, needs.conv_weight, needs.conv_bias],
        )
        del grad_pre_activation
        grad_hidden = map_to_tokens(grad_map)
    else:
        grad_hidden = grad_pre_activation
    if spec.fc1_relu:
        grad_hidden = aten.threshold_backward(grad_hidden, hidden, 0)
    _, grads["fc1"], grads["fc1_bias"] = _linear_backward(
        grad_hidden, normed, None, of_weight=needs.fc1_weight, of_bias=needs.fc1_bias
    )
    if grad_normed is not None:
        # as a 2-D GEMM, as autograd's: a 3-D matmul of the (strided) conv gradient rounds differently in bf16
        torch.mm(
            grad_hidden.reshape(-1, grad_hidden.shape[-1]),
            weights["fc1"],
            out=grad_normed.view(-1, grad_normed.shape[-1]),
        )
    return {name: grad for name, grad in grads.items() if grad is not None}


# ----------------------------------------------------------------------------------------- the segmentation loss

# Output rows per band of the lean loss: the band's upsampled logits stay under this many bytes.
LOSS_BAND_BYTES = 16 * 2**20


def lean_loss_applies(config, logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether `upsampled_cross_entropy` replaces the plain `F.interpolate` + `F.cross_entropy` of the segmentation
    loss. Under torch.compile the compiler plans the memory itself, so the plain ops are traced."""
    if not getattr(config, "lean_training", True) or not torch.is_grad_enabled() or not logits.requires_grad:
        return False
    if (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
    ):
        return False
    return type(logits) is torch.Tensor and logits.is_floating_point() and logits.dim() == 4 and labels.dim() == 3


def upsampled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """`F.cross_entropy(F.interpolate(logits, size=labels.shape[-2:], mode="bilinear"), labels, ignore_index=...)`
    (mean over the labelled pixels) without the label-sized logits: at 512x512 crops with ADE20K's 150 classes the
    upsampled logits and their log-softmax are 150 floats per pixel, more than the whole encoder saves on the lean
    path. Bands of output rows are upsampled and scored one after the other, in forward and again in backward, so
    only the low-resolution logits are kept. The log-softmax runs in float32 (as autocast runs it)."""
    return _UpsampledCrossEntropy.apply(logits, labels, ignore_index)


def _source_indices(input_size: int, output_size: int, device: torch.device):
    """aten's bilinear source indices and weights (align_corners=False) of each output index."""
    scale = torch.tensor(input_size / output_size, dtype=torch.float32, device=device)
    source = ((torch.arange(output_size, dtype=torch.float32, device=device) + 0.5) * scale - 0.5).clamp_(min=0)
    lower = source.long()
    upper_weight = source - lower
    return lower, (lower + 1).clamp_(max=input_size - 1), 1 - upper_weight, upper_weight


class _Bands:
    """The output rows in bands of at most `LOSS_BAND_BYTES` of float32 logits, each with the logits rows it reads."""

    def __init__(self, logits: torch.Tensor, out_height: int, out_width: int):
        batch_size, channels, height, width = logits.shape
        self.rows = _source_indices(height, out_height, logits.device)
        self.out_width = out_width
        step = max(1, LOSS_BAND_BYTES // (batch_size * channels * out_width * 4))
        lower, upper = self.rows[0].tolist(), self.rows[1].tolist()
        self.bands = []
        for start in range(0, out_height, step):
            band = slice(start, min(start + step, out_height))
            self.bands.append((band, slice(lower[band.start], upper[band.stop - 1] + 1)))

    def upsample(self, source: torch.Tensor, band: slice, first_row: int) -> torch.Tensor:
        """The band's upsampled logits from `source`, the logits rows from `first_row` on that it reads."""
        lower, upper, lower_weight, upper_weight = (index[band] for index in self.rows)
        rows = (
            source[:, :, lower - first_row] * lower_weight[:, None]
            + source[:, :, upper - first_row] * upper_weight[:, None]
        )
        # along the rows' full width, aten's own linear kernel maps the columns as the 2-D interpolation does
        batch_size, channels, height, width = rows.shape
        upsampled = F.interpolate(
            rows.reshape(batch_size, channels * height, width), size=self.out_width, mode="linear"
        )
        return upsampled.view(batch_size, channels, height, self.out_width)


class _UpsampledCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, ignore_index):
        labels = labels.long()
        ctx.ignore_index = ignore_index
        ctx.count = (labels != ignore_index).sum()
        ctx.save_for_backward(logits, labels)
        ctx.bands = bands = _Bands(logits, *labels.shape[-2:])  # index tensors of the output's size: kept, not redone
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        with torch.autocast(logits.device.type, enabled=False):
            for band, rows in bands.bands:
                upsampled = bands.upsample(logits[:, :, rows].float(), band, rows.start)
                total += F.cross_entropy(upsampled, labels[:, band], ignore_index=ignore_index, reduction="sum")
        return total / ctx.count

    @staticmethod
    def backward(ctx, grad_loss):
        logits, labels = ctx.saved_tensors
        bands = ctx.bands
        grad_logits = torch.zeros_like(logits, dtype=torch.float32)
        scale = grad_loss.float() / ctx.count
        with torch.enable_grad(), torch.autocast(logits.device.type, enabled=False):
            for band, rows in bands.bands:
                source = logits[:, :, rows].detach().float().requires_grad_(True)
                upsampled = bands.upsample(source, band, rows.start)
                loss = F.cross_entropy(upsampled, labels[:, band], ignore_index=ctx.ignore_index, reduction="sum")
                (grad_source,) = torch.autograd.grad(loss * scale, source)
                grad_logits[:, :, rows] += grad_source
        return grad_logits.to(logits.dtype), None, None
