# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Multiply-accumulates (MACs) and parameters of PVT models: MACs counted analytically from the configuration and the
input size, parameters read off the model (built on the meta device: no memory, no weights).

    from pvt_hf.tools.flops import count_flops
    report = count_flops("pvt-v2-b2", 224, 224)      # a preset name, a folder, a Hub id, a PvtConfig or a model
    report.total_gmacs, report.total_parameters      # 4.05, 25362856
    report.stages[0].key_length                      # 49: stage 1's 56x56 queries attend to a 7x7 reduced map

Units: the "GFLOPs" of the PVT papers (and of most vision papers) are GMACs: one multiply-accumulate counts once.
torch's `FlopCounterMode` counts 2 FLOPs per MAC (the tests hold the two to each other on the model's own forward
pass, per stage and per head).

Counted, as fvcore's `FlopCountAnalysis` counts them by default: every convolution and linear layer (the patch
embeddings; the attention's query, key/value and output projections and its spatial reduction: the strided
`sr_ratio` convolution, or v2-linear's 1x1 convolution on the `linear_pool_size`² pooled map; the MLP's fc1, v2's 3x3
depth-wise convolution, fc2; the classifier, or the Semantic FPN neck and head) and the attention's two matmuls Q·K^T
and A·V, whose key length is the REDUCED one: N' = (H_i // sr) x (W_i // sr) for a stage grid of H_i x W_i tokens,
7 x 7 for v2-linear, all N tokens where sr = 1 (PVT v1's last stage: plus the cls token). Module-based counters
(mmcv's, ptflops) see no module in those matmuls and miss them (the official repository's first issue). Also as
fvcore: LayerNorms 5 per element (including the one after the spatial reduction), BatchNorms 2 per element,
v2-linear's average pooling 1 per input element, resizing 4 (bilinear: v1's position embeddings away from the
training grid, the FPN head) or 1 (nearest: the FPN neck) per output element. Not counted: activations, softmax,
bias and residual adds, dropout.

Shapes are the model's: stage grids are its patch-embedding convolutions' output sizes (v2: overlapping,
`ceil(size / stride)`; v1: `floor(size / patch)`), spatial reductions floor, and sizes it refuses are refused here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..configuration_pvt import PRESETS, PvtConfig


# Architectures counted, by class name; a config without `architectures` is counted as the classifier.
ARCHITECTURES = ("PvtForImageClassification", "PvtModel", "PvtBackbone", "PvtForSemanticSegmentation")
DEFAULT_ARCHITECTURE = "PvtForImageClassification"

# Per-stage MACs, by the module that computes them (`attention_scores` Q·K^T and `attention_values` A·V have none).
# The matmul and convolution components are what `FlopCounterMode` counts; the others are element-wise.
ATTENTION_COMPONENTS = ("query", "spatial_reduction", "key_value", "attention_scores", "attention_values", "output")
MLP_COMPONENTS = ("fc1", "depthwise_conv", "fc2")
STAGE_MATMUL_COMPONENTS = ("patch_embedding", *ATTENTION_COMPONENTS, *MLP_COMPONENTS)
STAGE_ELEMENTWISE_COMPONENTS = ("layer_norms", "pooling", "position_embedding")
STAGE_COMPONENTS = STAGE_MATMUL_COMPONENTS + STAGE_ELEMENTWISE_COMPONENTS
HEAD_MATMUL_COMPONENTS = ("neck_lateral", "neck_output", "head_convs", "classifier")


class InputSizeError(ValueError):
    """An input size the model refuses (too small, or not a positive integer)."""


# fvcore's default counts of the element-wise operations (per element).
LAYER_NORM_MACS = 5  # mean, variance, normalise, scale, shift
BATCH_NORM_MACS = 2  # inference: scale and shift
BILINEAR_MACS = 4  # per output element: four taps

COUNTING_NOTE = (
    'MACs: one multiply-accumulate counts once, the "GFLOPs" of the PVT papers; torch\'s FlopCounterMode reports '
    "2 x MACs. Counted as fvcore counts: convolutions, linear layers, the attention matmuls Q.K^T and A.V over the "
    "reduced key length, norms, pooling and resizing; not counted: activations, softmax, bias and residual adds."
)


@dataclass
class StageCount:
    """One stage, all its layers: `grid` the token grid (H_i, W_i); `num_tokens` the query tokens (v1's last stage:
    + the cls token); `key_length` the keys each query attends to; `macs` per component (`STAGE_COMPONENTS`);
    `parameters` the stage's (patch embedding, [v1: position embeddings], layers, [v2: closing LayerNorm])."""

    name: str
    grid: tuple[int, int]
    num_tokens: int
    key_length: int
    num_layers: int
    macs: dict[str, int]
    parameters: int

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())

    @property
    def matmul_macs(self) -> int:
        """The convolutions, linear layers and attention matmuls: what `FlopCounterMode` counts (x 2)."""
        return sum(self.macs[name] for name in STAGE_MATMUL_COMPONENTS)

    @property
    def attention_matmul_macs(self) -> int:
        """Q·K^T and A·V: what module-based counters miss."""
        return self.macs["attention_scores"] + self.macs["attention_values"]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "grid": list(self.grid),
            "num_tokens": self.num_tokens,
            "key_length": self.key_length,
            "num_layers": self.num_layers,
            "macs": dict(self.macs),
            "total_macs": self.total_macs,
            "parameters": self.parameters,
        }


@dataclass
class FlopsReport:
    """MACs and parameters of one architecture at one input size (batch 1). `head_macs`: the classifier (v1: and the
    final LayerNorm), or the Semantic FPN neck and head; `head_parameters`: everything outside the stages (v1's cls
    token and final LayerNorm, the classifier, the neck and head)."""

    architecture: str
    height: int
    width: int
    stages: list[StageCount]
    head_macs: dict[str, int] = field(default_factory=dict)
    head_parameters: int = 0

    @property
    def head_total_macs(self) -> int:
        return sum(self.head_macs.values())

    @property
    def total_macs(self) -> int:
        return sum(stage.total_macs for stage in self.stages) + self.head_total_macs

    @property
    def total_gmacs(self) -> float:
        """What papers call GFLOPs."""
        return self.total_macs / 1e9

    @property
    def total_parameters(self) -> int:
        return sum(stage.parameters for stage in self.stages) + self.head_parameters

    def to_dict(self) -> dict:
        return {
            "architecture": self.architecture,
            "height": self.height,
            "width": self.width,
            "unit": "MACs",
            "counting": COUNTING_NOTE,
            "stages": [stage.to_dict() for stage in self.stages],
            "head": {
                "macs": dict(self.head_macs),
                "total_macs": self.head_total_macs,
                "parameters": self.head_parameters,
            },
            "total_macs": self.total_macs,
            "total_gmacs": self.total_gmacs,
            "total_parameters": self.total_parameters,
        }


def load_config(name_or_path: str) -> PvtConfig:
    """A preset name (a 1000-class classifier, as the papers count them), or a model folder / Hub id (its
    config.json only: no weights are read)."""
    if name_or_path in PRESETS and not Path(name_or_path).exists():
        return PvtConfig.from_preset(name_or_path, num_labels=1000, architectures=[DEFAULT_ARCHITECTURE])
    from transformers import AutoConfig

    import pvt_hf  # noqa: F401 - registers PvtConfig with AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        if Path(name_or_path).exists():
            raise
        raise OSError(
            f"{name_or_path}: not a preset ({', '.join(PRESETS)}), nor a model folder, nor a Hub model id that "
            f"could be loaded ({error})"
        ) from error
    if not isinstance(config, PvtConfig):
        raise ValueError(
            f"{name_or_path}: not a pvt-hf model (its config has model_type {config.model_type!r}, expected "
            f"{PvtConfig.model_type!r}); convert it first with `pvt-hf convert`."
        )
    return config


def _model(model_or_config, architecture: str | None):
    """The model to count: the one given, or `architecture` (else the config's, else the classifier) built on the
    meta device."""
    import torch
    from torch import nn

    from .. import modeling_pvt, modeling_pvt_segmentation

    if isinstance(model_or_config, (str, Path)):
        model_or_config = load_config(str(model_or_config))
    if isinstance(model_or_config, nn.Module):
        name = type(model_or_config).__name__
        if not isinstance(getattr(model_or_config, "config", None), PvtConfig) or name not in ARCHITECTURES:
            raise TypeError(f"count_flops counts the pvt-hf models {ARCHITECTURES}, got a {name}.")
        if architecture is not None and architecture != name:
            raise ValueError(f"architecture={architecture!r} disagrees with the model given, a {name}.")
        return model_or_config
    if not isinstance(model_or_config, PvtConfig):
        raise TypeError(
            f"count_flops takes a PvtConfig, a pvt-hf model, a preset name, a model folder or a Hub id, got "
            f"{type(model_or_config).__name__}."
        )
    if architecture is None:
        named = [name for name in (getattr(model_or_config, "architectures", None) or []) if name in ARCHITECTURES]
        architecture = named[0] if named else DEFAULT_ARCHITECTURE
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}.")
    module = modeling_pvt_segmentation if architecture == "PvtForSemanticSegmentation" else modeling_pvt
    with torch.device("meta"):
        return getattr(module, architecture)(model_or_config)


def _count_stage(config: PvtConfig, stage, grid: tuple[int, int], with_cls_token: bool) -> StageCount:
    index = stage.stage_index
    hidden = config.hidden_sizes[index]
    in_channels = config.num_channels if index == 0 else config.hidden_sizes[index - 1]
    kernel = config.patch_sizes[index]
    intermediate = int(hidden * config.mlp_ratios[index])
    depth = config.depths[index]
    spatial_tokens = grid[0] * grid[1]
    num_tokens = spatial_tokens + int(with_cls_token)

    # Keys and values: from a pooled map (v2-linear), a strided reduction (sr > 1) or every token.
    sr_ratio = config.sr_ratios[index]
    if config.linear_attention:
        key_length = config.linear_pool_size**2
        reduction_macs, pooling_macs = key_length * hidden * hidden, spatial_tokens * hidden
    elif sr_ratio > 1:
        key_length = (grid[0] // sr_ratio) * (grid[1] // sr_ratio)
        reduction_macs, pooling_macs = key_length * hidden * hidden * sr_ratio**2, 0
    else:
        key_length, reduction_macs, pooling_macs = num_tokens, 0, 0
    reduced = config.linear_attention or sr_ratio > 1
    # layer_norm_1 and layer_norm_2 over every token, the reduction's LayerNorm over the reduced ones
    layer_norm_elements = (2 * num_tokens + (key_length if reduced else 0)) * hidden

    per_layer = {
        "query": num_tokens * hidden * hidden,
        "spatial_reduction": reduction_macs,
        "key_value": key_length * hidden * 2 * hidden,
        "attention_scores": num_tokens * key_length * hidden,  # every head: head_dim x heads = hidden
        "attention_values": num_tokens * key_length * hidden,
        "output": num_tokens * hidden * hidden,
        "fc1": num_tokens * hidden * intermediate,
        "depthwise_conv": spatial_tokens * intermediate * 9 if config.version == 2 else 0,
        "fc2": num_tokens * intermediate * hidden,
        "layer_norms": LAYER_NORM_MACS * layer_norm_elements,
        "pooling": pooling_macs,
    }
    macs = {name: value * depth for name, value in per_layer.items()}
    macs["patch_embedding"] = spatial_tokens * hidden * in_channels * kernel * kernel
    # The patch embedding's LayerNorm, and v2's closing one.
    macs["layer_norms"] += LAYER_NORM_MACS * (spatial_tokens + (num_tokens if config.version == 2 else 0)) * hidden
    # v1 resizes its position embeddings away from the training grid (the condition of `interpolate_pos_encoding`).
    resized = config.version == 1 and (
        spatial_tokens != stage.grid_size**2 if index == 0 else grid != (stage.grid_size, stage.grid_size)
    )
    macs["position_embedding"] = BILINEAR_MACS * spatial_tokens * hidden if resized else 0
    parameters = sum(parameter.numel() for parameter in stage.parameters())
    return StageCount(
        f"stage{index + 1}",
        grid,
        num_tokens,
        key_length,
        depth,
        {name: macs[name] for name in STAGE_COMPONENTS},
        parameters,
    )


def _count_head(config: PvtConfig, architecture: str, grids: list[tuple[int, int]], with_cls_token: bool) -> dict:
    macs = {}
    last = config.hidden_sizes[-1]
    if with_cls_token:  # v1's final LayerNorm, over the cls token and the stage-4 tokens
        macs["final_layer_norm"] = LAYER_NORM_MACS * (grids[-1][0] * grids[-1][1] + 1) * last
    if architecture == "PvtForImageClassification" and config.num_labels > 0:
        macs["classifier"] = last * config.num_labels
    elif architecture == "PvtForSemanticSegmentation":
        neck, channels = config.neck_hidden_size, config.decoder_hidden_size
        areas = [height * width for height, width in grids]
        macs["neck_lateral"] = sum(area * size * neck for area, size in zip(areas, config.hidden_sizes))
        macs["neck_upsampling"] = sum(areas[:-1]) * neck  # nearest, each coarser level to the next finer one
        macs["neck_output"] = sum(area * neck * neck * 9 for area in areas)
        # FPN head: level l climbs back to stride 4 with max(1, l) blocks (3x3 conv, BatchNorm, ReLU), each but
        # level 0's followed by a 2x bilinear upsampling; levels 1-3 are then resized to level 0's grid.
        head_convs = batch_norms = upsampling = 0
        for level, (height, width) in enumerate(grids):
            for step in range(max(1, level)):
                area = (height * 2**step) * (width * 2**step)
                head_convs += area * (neck if step == 0 else channels) * channels * 9
                batch_norms += area * channels
                if level > 0:
                    upsampling += 4 * area * channels
            if level > 0:
                upsampling += areas[0] * channels
        macs["head_convs"] = head_convs
        macs["head_batch_norms"] = BATCH_NORM_MACS * batch_norms
        macs["head_upsampling"] = BILINEAR_MACS * upsampling
        macs["classifier"] = areas[0] * channels * config.num_labels
    return macs


def count_flops(model_or_config, height: int, width: int, *, architecture: str | None = None) -> FlopsReport:
    """MACs (the papers' "GFLOPs" x 1e9) and parameters of one image of `height` x `width` pixels.

    `model_or_config`: a pvt-hf model (its class and, for PvtModel, `add_pooling_layer` decide the head), a PvtConfig
    (counted as `architecture`, else its `architectures` entry, else the classifier), or what `load_config` takes (a
    preset name, a model folder, a Hub id). Raises InputSizeError (a ValueError) for a size the model refuses. See the module
    docstring for what is counted.
    """
    from ..modeling_pvt import PvtEncoder

    model = _model(model_or_config, architecture)
    config, architecture = model.config, type(model).__name__
    for value in (height, width):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputSizeError(f"height and width must be positive integers, got {height!r} x {width!r}.")
    encoder = next(module for module in model.modules() if isinstance(module, PvtEncoder))
    if not encoder.accepts_size(height, width):
        raise InputSizeError(
            f"{height}x{width} is too small for this model: every side must be at least {encoder.smallest_size()} "
            f"pixels (stage grids would be {encoder.stage_grid_sizes(height, width)})."
        )
    grids = encoder.stage_grid_sizes(height, width)
    with_cls_token = any(getattr(module, "cls_token", None) is not None for module in model.modules())  # v1
    last = config.num_stages - 1
    stages = [
        _count_stage(config, stage, grid, with_cls_token and index == last)
        for index, (stage, grid) in enumerate(zip(encoder.stages, grids))
    ]
    stage_parameters = sum(stage.parameters for stage in stages)
    head_parameters = sum(parameter.numel() for parameter in model.parameters()) - stage_parameters
    return FlopsReport(
        architecture, height, width, stages, _count_head(config, architecture, grids, with_cls_token), head_parameters
    )


__all__ = [
    "ARCHITECTURES",
    "COUNTING_NOTE",
    "FlopsReport",
    "InputSizeError",
    "StageCount",
    "count_flops",
    "load_config",
]
