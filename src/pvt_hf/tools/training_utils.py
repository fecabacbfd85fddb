# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Helpers for training scripts (not part of the model's remote code)."""

import torch
from torch import nn


def match_gradient_layout(model: nn.Module) -> None:
    """Store each 4-D (convolution) weight whose default and channels-last strides differ only in size-1 dimensions
    (1x1 and depth-wise kernels, in PVT and in the heads that read its maps) with the channels-last strides. PVT's maps
    are channels-last views of its tokens (`layer_paths.tokens_to_map`), so autograd gives these weights' gradients
    channels-last strides; DDP's gradient buckets take the parameters' strides, and a mismatch costs a copy per step
    (and the warning "Grad strides do not match bucket view strides"). The values' memory order is the same either
    way: nothing else changes. Call it on the model before wrapping it for distributed training."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() != 4 or not parameter.is_contiguous(memory_format=torch.channels_last):
                continue
            channels_last = torch.empty_like(parameter, memory_format=torch.channels_last)
            if parameter.is_contiguous() and channels_last.stride() != parameter.stride():
                parameter.set_(channels_last.copy_(parameter))
