# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Pretrained RGB weights for images of any number of channels: `from_pretrained(path, num_channels=N)`.

Only the first convolution sees the image's channels: stage 1's patch-embedding projection. Loading an RGB checkpoint
into a model whose config asks for another `num_channels` adapts that weight as timm's `adapt_input_conv` does:

- 1 channel: the sum over the RGB channels, so the model on a single channel gives exactly (to fp32 rounding) what the
  RGB model gives on that channel repeated three times;
- N != 3 channels: the RGB weights repeated ceil(N / 3) times, cut to N and scaled by 3 / N, which keeps the
  activations' scale for inputs whose channels resemble the RGB ones (N = 6 on an RGB image given twice is the RGB
  model exactly).

The adaptation is an operation of transformers' weight loading (a `WeightConverter` registered for the `pvt_hf` model
type in `transformers.conversion_mapping`, as transformers' own checkpoint conversions are), so it serves every class
and Auto class, prefixed and unprefixed checkpoints, and `trust_remote_code=True` folders alike. It logs a warning
naming the weight; saving writes the N-channel weight, which reloads without adaptation. (Loading with a `dtype`,
transformers casts the checkpoint's weight first: the adaptation works on the cast values.)
"""

import math

import torch
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.utils import logging

from .configuration_pvt import PvtConfig


logger = logging.get_logger(__name__)

# The first patch embedding's weight, under the encoder (keys end so in every PVT class and in composites).
INPUT_CONV_WEIGHT = "stages.0.patch_embeddings.projection.weight"
RGB_CHANNELS = 3


def adapt_input_conv(weight: torch.Tensor, num_channels: int) -> torch.Tensor:
    """An RGB convolution weight `(out, 3, kh, kw)` adapted to `num_channels` input channels, as timm's
    `adapt_input_conv`: summed for 1 channel; else repeated ceil(N / 3) times, cut to N and scaled by 3 / N. Computed
    in float32 and returned in the weight's dtype; 3 channels return the weight itself."""
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"`num_channels` must be a positive integer, got {num_channels!r}.")
    if weight.ndim != 4 or weight.shape[1] != RGB_CHANNELS:
        raise ValueError(
            f"`weight` must be an RGB convolution weight of shape (out_channels, 3, height, width), got shape "
            f"{tuple(weight.shape)}."
        )
    if num_channels == RGB_CHANNELS:
        return weight
    rgb = weight.float()
    if num_channels == 1:
        adapted = rgb.sum(dim=1, keepdim=True)
    else:
        repeats = math.ceil(num_channels / RGB_CHANNELS)
        adapted = rgb.repeat(1, repeats, 1, 1)[:, :num_channels] * (RGB_CHANNELS / num_channels)
    return adapted.to(weight.dtype)


class AdaptInputChannels(ConversionOps):
    """Loading: the checkpoint's RGB input-convolution weight, adapted to the model's input channels when they differ
    (any other mismatch is left to transformers' size-mismatch report)."""

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, full_layer_name=None, model=None, **kwargs):
        (tensors,) = input_dict.values()
        weight = tensors[0] if isinstance(tensors, list) else tensors
        expected = model.get_parameter(full_layer_name).shape
        rgb_for_other_channels = (
            weight.ndim == 4
            and weight.shape[1] == RGB_CHANNELS != expected[1]
            and (weight.shape[0], *weight.shape[2:]) == (expected[0], *expected[2:])
        )
        if rgb_for_other_channels:
            num_channels = expected[1]
            rule = "summed" if num_channels == 1 else f"repeated and scaled by 3/{num_channels}"
            logger.warning(
                f"Adapted the pretrained weight `{full_layer_name}` from {RGB_CHANNELS} to {num_channels} input "
                f"channels (the RGB weights {rule}, as timm's `adapt_input_conv`), for `num_channels={num_channels}`."
            )
            weight = adapt_input_conv(weight, num_channels)
        return {target_patterns[0]: weight}

    @property
    def reverse_op(self) -> ConversionOps:
        return KeepInputChannels()


class KeepInputChannels(ConversionOps):
    """Saving: the model's input-convolution weight as it is (adapted or not, it fits the saved `num_channels`)."""

    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        (tensors,) = input_dict.values()
        return {target_patterns[0]: tensors}

    @property
    def reverse_op(self) -> ConversionOps:
        return AdaptInputChannels()


def register_input_channel_adaptation(model_type: str = PvtConfig.model_type) -> None:
    """Add the adaptation to `model_type`'s conversions in transformers' registry (keeping any others; replacing an
    earlier copy, e.g. one registered by this module loaded as remote code)."""
    others = [
        transform
        for transform in get_checkpoint_conversion_mapping(model_type) or []
        if not any(type(op).__name__ == AdaptInputChannels.__name__ for op in getattr(transform, "operations", ()))
    ]
    adaptation = WeightConverter(INPUT_CONV_WEIGHT, INPUT_CONV_WEIGHT, operations=[AdaptInputChannels()])
    register_checkpoint_conversion_mapping(model_type, [*others, adaptation], overwrite=True)
