# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""PVT + Semantic FPN (Kirillov et al., 2019) as the official PVT segmentation models build it with mmseg:
an FPN neck and an FPNHead on the four stage maps of the PVT backbone."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.backbone_utils import filter_output_hidden_states
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_pvt import PvtConfig
from .layer_paths import install_output_capturing_hooks
from .lean_training import lean_loss_applies, upsampled_cross_entropy
from .modeling_pvt import PvtModel, PvtPreTrainedModel


class PvtFpnNeck(nn.Module):
    """mmseg `FPN`: 1x1 lateral convs, top-down nearest upsampling to the finer level's size, 3x3 output convs."""

    def __init__(self, config: PvtConfig):
        super().__init__()
        channels = config.neck_hidden_size
        self.lateral_convs = nn.ModuleList([nn.Conv2d(size, channels, 1) for size in config.hidden_sizes])
        self.output_convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in config.hidden_sizes])

    def forward(self, stage_maps: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        laterals = [conv(stage_map) for conv, stage_map in zip(self.lateral_convs, stage_maps)]
        for index in range(len(laterals) - 1, 0, -1):
            coarser = F.interpolate(laterals[index], size=laterals[index - 1].shape[-2:], mode="nearest")
            laterals[index - 1] = laterals[index - 1] + coarser
        return [conv(lateral) for conv, lateral in zip(self.output_convs, laterals)]


class PvtFpnConvBlock(nn.Module):
    """3x3 conv (no bias) -> BatchNorm -> ReLU (mmseg `ConvModule` with a BN norm_cfg)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.batch_norm(self.conv(hidden_states)))


class PvtFpnHead(nn.Module):
    """mmseg `FPNHead`: per level, conv blocks with 2x bilinear upsampling until stride 4; the levels are summed
    (each resized to level 1's size), then dropout and a 1x1 classifier. Logits come out at 1/4 resolution."""

    def __init__(self, config: PvtConfig):
        super().__init__()
        channels = config.decoder_hidden_size
        self.scale_heads = nn.ModuleList()
        for level in range(len(config.hidden_sizes)):
            # Level `level` has stride 4 * 2**level: one conv block per factor 2 to climb back to stride 4.
            layers = []
            for step in range(max(1, level)):
                layers.append(PvtFpnConvBlock(config.neck_hidden_size if step == 0 else channels, channels))
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(config.classifier_dropout_prob)
        self.classifier = nn.Conv2d(channels, config.num_labels, 1)

    def forward(self, fpn_maps: list[torch.Tensor]) -> torch.Tensor:
        output = self.scale_heads[0](fpn_maps[0])
        for scale_head, fpn_map in zip(self.scale_heads[1:], fpn_maps[1:]):
            upsampled = scale_head(fpn_map)
            output = output + F.interpolate(upsampled, size=output.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(output))


class PvtForSemanticSegmentation(PvtPreTrainedModel):
    """PVT backbone (v1: no cls token, no final norm; v2: stage norms) + FPN neck + FPN head.

    `logits` are (batch_size, num_labels, height / 4, width / 4); with `labels` (batch_size, height, width) the loss
    is the cross-entropy of the logits upsampled (bilinear) to the labels' size, skipping
    `config.semantic_loss_ignore_index`.
    """

    def __init__(self, config: PvtConfig):
        if config.num_labels < 1:
            raise ValueError(f"PvtForSemanticSegmentation needs `num_labels` >= 1 classes, got {config.num_labels}.")
        super().__init__(config)
        self.pvt = PvtModel(config, add_pooling_layer=False)
        self.neck = PvtFpnNeck(config)
        self.decode_head = PvtFpnHead(config)
        self.post_init()

    def post_init(self):
        # The head always records the stage maps: the recording hooks go in now (as `BackboneMixin` does), from the
        # top down (once per module), not lazily on the first call, which under torch.compile would take a lock it
        # cannot trace.
        super().post_init()
        install_output_capturing_hooks(self)

    def check_labels(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        """Bad labels otherwise end in an opaque device-side assert inside the loss on a GPU."""
        if labels.ndim != 3 or labels.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"`labels` must be a (batch_size, height, width) tensor of class indices with batch_size "
                f"{pixel_values.shape[0]}, got shape {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"`labels` must hold integer class indices, got dtype {labels.dtype}.")
        if torch.compiler.is_compiling():
            return  # the value check reads the labels (a data-dependent branch): a graph break under torch.compile
        ignore_index = self.config.semantic_loss_ignore_index
        invalid = ((labels < 0) | (labels >= self.config.num_labels)) & (labels != ignore_index)
        if invalid.any():
            values = torch.unique(labels[invalid])[:10].tolist()
            raise ValueError(
                f"`labels` must lie in [0, {self.config.num_labels - 1}] (num_labels={self.config.num_labels}) or "
                f"equal the ignore index {ignore_index}; found {values}."
            )

    @can_return_tuple
    @filter_output_hidden_states
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SemanticSegmenterOutput:
        if labels is not None:
            self.check_labels(labels, pixel_values)
        # The head reads every stage map: `filter_output_hidden_states` asks for them, and drops them unless asked.
        outputs = self.pvt(pixel_values, **kwargs)
        logits = self.decode_head(self.neck(outputs.hidden_states))

        loss = None
        if labels is not None:
            ignore_index = self.config.semantic_loss_ignore_index
            if lean_loss_applies(self.config, logits, labels):  # the same loss without the label-sized logits
                loss = upsampled_cross_entropy(logits, labels, ignore_index)
            else:
                upsampled = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
                loss = F.cross_entropy(upsampled, labels.long(), ignore_index=ignore_index)
        return SemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["PvtForSemanticSegmentation"]
