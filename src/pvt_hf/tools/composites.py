"""PVT as the backbone of transformers' dense-prediction models.

transformers' composite models build their backbone with `load_backbone(config)` from `config.backbone_config`; a
`PvtConfig` there gives them a `PvtBackbone` (`import pvt_hf` registers it with `AutoBackbone`). What each composite
needs of it (read from transformers 5's modeling code):

* `upernet` (`UperNetForSemanticSegmentation`): `backbone.channels` of every out_feature; the auxiliary FCN head reads
  the third map: stage1..stage4.
* `mask2former` (`Mask2FormerForUniversalSegmentation`): four maps at strides `feature_strides` (4, 8, 16, 32), the
  last three into its deformable pixel decoder: stage1..stage4. (Its config warns that only Swin is "supported":
  the warning is about which backbones were tried, the contract is only the four maps.)
* `rt_detr` (`RTDetrForObjectDetection`): three maps at strides `feat_strides` (8, 16, 32) whose channels are
  `encoder_in_channels`: stage2..stage4.
* `deformable_detr` (`DeformableDetrForObjectDetection`): the maps' `backbone.channels`, `num_feature_levels` = maps
  + 1 extra strided conv level: stage2..stage4.
* `detr` (`DetrForObjectDetection`): detection uses the last map only: stage4 (DetrForSegmentation's mask head
  would need all four).

Not supported: `dpt` (`DPTForDepthEstimation`). Apart from a hard-coded `swinv2`, its neck reassembles ViT-style
token sequences: it reads `backbone_config.patch_size`, splits a cls token off every feature (`hidden_state[:, 0]`),
and projects all of them from one `backbone_config.hidden_size`. A hierarchical backbone's (B, C, H, W) maps with
per-stage channels fit none of that (see `UNSUPPORTED`).

transformers 5 does not load pretrained backbone weights itself: `use_pretrained_backbone` is accepted and dropped,
and `backbone="<name>"` is resolved through a Hub lookup (`repo_exists`), else taken as a timm model name. Hence
`load_pretrained_backbone(model, folder_or_hub_id)`, which copies a converted PVT checkpoint's encoder weights into
every `PvtBackbone` of a composite.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from ..configuration_pvt import PRESETS, PvtConfig
from ..modeling_pvt import PvtBackbone


# The PvtConfig fields that decide the backbone's weights and what they compute (not labels, not head sizes).
ARCHITECTURE_FIELDS = (
    "version",
    "linear_attention",
    "num_channels",
    "image_size",
    "hidden_sizes",
    "num_attention_heads",
    "mlp_ratios",
    "depths",
    "sr_ratios",
    "patch_sizes",
    "strides",
    "linear_pool_size",
    "qkv_bias",
    "hidden_act",
    "layer_norm_eps",
    "patch_embedding_layer_norm_eps",
    "spatial_reduction_layer_norm_eps",
)
# Architecture fields that a backbone's weights do not fix (they may differ between a checkpoint and a composite).
_FREE_FIELDS = (
    "hidden_act",
    "layer_norm_eps",
    "patch_embedding_layer_norm_eps",
    "spatial_reduction_layer_norm_eps",
    "image_size",
)
# Fields kept when a checkpoint's config becomes a backbone config (no labels, no Semantic FPN head sizes).
_BACKBONE_FIELDS = ARCHITECTURE_FIELDS + (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "drop_path_rate",
    "initializer_range",
    "fused_cpu_kernels",
    "lean_training",
)

STAGES = ["stage1", "stage2", "stage3", "stage4"]
# model_type -> the stages the composite takes from the backbone.
OUT_FEATURES = {
    "upernet": STAGES,
    "mask2former": STAGES,
    "rt_detr": STAGES[1:],
    "deformable_detr": STAGES[1:],
    "detr": STAGES[-1:],
}
UNSUPPORTED = {
    "dpt": (
        "DPTForDepthEstimation cannot take a PVT backbone: apart from a hard-coded 'swinv2', its neck expects ViT-style "
        "token sequences (it reads backbone_config.patch_size, splits a cls token off each feature and projects all "
        "features from a single backbone_config.hidden_size), not a hierarchical backbone's (B, C, H, W) maps with "
        "per-stage channels."
    ),
}


def _is_local(value: str) -> bool:
    return Path(value).expanduser().exists() or value.startswith((".", "/", "~"))


def pvt_backbone_config(
    backbone: str | PvtConfig = "pvt-v2-b0",
    out_features: list[str] | None = None,
    out_indices: list[int] | None = None,
    **overrides,
) -> PvtConfig:
    """A `PvtConfig` to put into a composite's `backbone_config`.

    `backbone`: a preset name (`pvt-v2-b0`, `pvt-small`, ...), a converted pvt-hf folder or Hub id (classifier,
    backbone or Semantic FPN model: only its architecture is kept, not its labels or head sizes), or a `PvtConfig`.
    `out_features` / `out_indices`: the stages to return (default: all four). `overrides`: PvtConfig fields.
    """
    hub_kwargs = {
        k: overrides.pop(k)
        for k in ("revision", "token", "cache_dir", "local_files_only", "trust_remote_code")
        if k in overrides
    }
    if isinstance(backbone, PvtConfig):
        settings = {name: copy.deepcopy(getattr(backbone, name)) for name in _BACKBONE_FIELDS}
    elif not isinstance(backbone, str):
        raise TypeError(
            f"`backbone` must be a preset name, a folder or Hub id, or a PvtConfig; got {type(backbone).__name__}"
        )
    elif backbone in PRESETS and not Path(backbone).exists():
        settings = copy.deepcopy(PRESETS[backbone])
    else:
        if _is_local(backbone) and not Path(backbone).expanduser().is_dir():
            raise FileNotFoundError(
                f"backbone {backbone!r}: no such folder (expected a preset name ({', '.join(PRESETS)}), a pvt-hf folder or a Hub id)"
            )
        config_dict, _ = PvtConfig.get_config_dict(
            str(Path(backbone).expanduser()) if _is_local(backbone) else backbone, **hub_kwargs
        )
        if config_dict.get("model_type") != PvtConfig.model_type:
            raise ValueError(
                f"backbone {backbone!r} is a {config_dict.get('model_type')!r} model, not a pvt-hf one (model_type "
                f"{PvtConfig.model_type!r}); give a converted PVT classifier, backbone or Semantic FPN folder"
            )
        settings = {name: config_dict[name] for name in _BACKBONE_FIELDS if name in config_dict}
    if out_features is None and out_indices is None:
        out_features = list(STAGES)
    return PvtConfig(**{**settings, **overrides}, out_features=out_features, out_indices=out_indices)


def composite_config(
    model_type: str, backbone: str | PvtConfig = "pvt-v2-b0", backbone_overrides: dict | None = None, **kwargs
):
    """The config of transformers' composite `model_type` (`upernet`, `mask2former`, `rt_detr`, `deformable_detr`,
    `detr`) with a PVT backbone taking the stages that composite reads (`OUT_FEATURES`). `backbone` as for
    `pvt_backbone_config` (its weights are not loaded: see `load_pretrained_backbone`); `kwargs` are the composite
    config's fields (`num_labels`, `id2label`, `d_model`, ...).

        config = composite_config("rt_detr", "pvt-v2-b0", id2label={0: "cat", 1: "dog"})
        model = RTDetrForObjectDetection(config)
    """
    from transformers import AutoConfig

    if model_type in UNSUPPORTED:
        raise ValueError(UNSUPPORTED[model_type])
    if model_type not in OUT_FEATURES:
        raise ValueError(f"unknown composite {model_type!r}; PVT backbones are tested in: {', '.join(OUT_FEATURES)}")
    overrides = dict(backbone_overrides or {})
    if "out_features" not in overrides and "out_indices" not in overrides:
        overrides["out_features"] = OUT_FEATURES[model_type]
    backbone_config = pvt_backbone_config(backbone, **overrides)
    channels = [
        backbone_config.hidden_sizes[backbone_config.stage_names.index(name)] for name in backbone_config.out_features
    ]
    defaults = {}
    if model_type == "rt_detr":
        # The hybrid encoder's input channels and strides must be the backbone's maps'.
        strides = [4 * 2 ** backbone_config.stage_names.index(name) for name in backbone_config.out_features]
        defaults = {"encoder_in_channels": channels, "feat_strides": strides, "num_feature_levels": len(channels)}
    elif model_type == "mask2former":
        defaults = {
            "feature_strides": [
                4 * 2 ** backbone_config.stage_names.index(name) for name in backbone_config.out_features
            ]
        }
    elif model_type == "deformable_detr":
        defaults = {"num_feature_levels": len(channels) + 1}
    return AutoConfig.for_model(model_type, backbone_config=backbone_config, **{**defaults, **kwargs})


def pvt_backbones(model: torch.nn.Module) -> list[PvtBackbone]:
    """The `PvtBackbone` modules inside a model."""
    return [module for module in model.modules() if isinstance(module, PvtBackbone)]


def _differences(ours: PvtConfig, theirs: PvtConfig) -> list[str]:
    fixed = [name for name in ARCHITECTURE_FIELDS if name not in _FREE_FIELDS]
    if ours.version == 1:
        fixed.append("image_size")  # v1's position embeddings have image_size's grid
    return [
        f"{name}: model {getattr(ours, name)!r}, checkpoint {getattr(theirs, name)!r}"
        for name in fixed
        if _normalise(getattr(ours, name)) != _normalise(getattr(theirs, name))
    ]


def _normalise(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def load_pretrained_backbone(model: torch.nn.Module, pretrained: str, **from_pretrained_kwargs) -> torch.nn.Module:
    """Load a converted PVT checkpoint's encoder weights into every `PvtBackbone` of `model` (e.g. an
    `UperNetForSemanticSegmentation` or `RTDetrForObjectDetection` whose `backbone_config` is a `PvtConfig`).

    `pretrained`: a pvt-hf folder or Hub id of a PVT classifier, backbone (e.g. converted from an official detection
    checkpoint: `pvt-hf convert mask_rcnn_pvt_v2_b2_fpn_1x_coco.pth OUT`) or Semantic FPN model with the backbone's
    architecture. The composite's feature maps are then exactly those of `PvtBackbone.from_pretrained(pretrained)`.
    Raises ValueError when the model holds no PvtBackbone, when the architectures differ, or when the checkpoint lacks
    encoder weights. Returns `model`.

        model = UperNetForSemanticSegmentation(composite_config("upernet", "./pvt-v2-b2", num_labels=150))
        load_pretrained_backbone(model, "./pvt-v2-b2")
    """
    backbones = pvt_backbones(model)
    if not backbones:
        raise ValueError(
            f"{type(model).__name__} holds no PvtBackbone: its backbone_config must be a PvtConfig (model_type "
            f"{PvtConfig.model_type!r}), e.g. from pvt_hf.composite_config(...)"
        )
    if not isinstance(pretrained, (str, Path)):
        raise TypeError(f"`pretrained` must be a folder or Hub id, got {type(pretrained).__name__}")
    pretrained = str(pretrained)
    if _is_local(pretrained) and not Path(pretrained).expanduser().is_dir():
        raise FileNotFoundError(f"pretrained backbone {pretrained!r}: no such folder")
    source_config = pvt_backbone_config(
        pretrained,
        **{
            k: v
            for k, v in from_pretrained_kwargs.items()
            if k in ("revision", "token", "cache_dir", "local_files_only")
        },
    )
    for backbone in backbones:
        differences = _differences(backbone.config, source_config)
        if differences:
            raise ValueError(
                f"{pretrained} does not fit the PvtBackbone of {type(model).__name__}: " + "; ".join(differences)
            )
        # A classifier's or Semantic FPN model's head weights are expected leftovers: no report of them.
        verbosity = transformers_logging.get_verbosity()
        transformers_logging.set_verbosity_error()
        try:
            source, info = PvtBackbone.from_pretrained(
                pretrained,
                out_features=list(backbone.out_features),
                output_loading_info=True,
                **from_pretrained_kwargs,
            )
        finally:
            transformers_logging.set_verbosity(verbosity)
        missing = info.get("missing_keys") or []
        if missing:
            missing = sorted(missing)
            raise ValueError(
                f"{pretrained} lacks {len(missing)} of the backbone's weights (e.g. {missing[:3]}): not a PVT encoder checkpoint"
            )
        backbone.load_state_dict(source.state_dict(), strict=True)
    return model


__all__ = [
    "OUT_FEATURES",
    "UNSUPPORTED",
    "composite_config",
    "load_pretrained_backbone",
    "pvt_backbone_config",
    "pvt_backbones",
]
