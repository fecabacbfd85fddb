# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Configuration of the Pyramid Vision Transformer family: PVT v1, PVT v2 and PVT v2-linear."""

from __future__ import annotations

import copy
import math

from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneConfigMixin
from transformers.configuration_utils import PreTrainedConfig


# The released architectures, keyed by preset name. Values are the official constructors' settings
# (whai362/PVT `classification/pvt.py` and `classification/pvt_v2.py`).
_V1_STAGE_SETTINGS = {
    "hidden_sizes": [64, 128, 320, 512],
    "num_attention_heads": [1, 2, 5, 8],
    "mlp_ratios": [8, 8, 4, 4],
}
_V2_STAGE_SETTINGS = {"num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1]}
PRESETS: dict[str, dict] = {
    "pvt-tiny": {"version": 1, **_V1_STAGE_SETTINGS, "depths": [2, 2, 2, 2]},
    "pvt-small": {"version": 1, **_V1_STAGE_SETTINGS, "depths": [3, 4, 6, 3]},
    "pvt-medium": {"version": 1, **_V1_STAGE_SETTINGS, "depths": [3, 4, 18, 3]},
    "pvt-large": {"version": 1, **_V1_STAGE_SETTINGS, "depths": [3, 8, 27, 3]},
    "pvt-v2-b0": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [32, 64, 160, 256],
        "mlp_ratios": [8, 8, 4, 4],
        "depths": [2, 2, 2, 2],
    },
    "pvt-v2-b1": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [64, 128, 320, 512],
        "mlp_ratios": [8, 8, 4, 4],
        "depths": [2, 2, 2, 2],
    },
    "pvt-v2-b2": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [64, 128, 320, 512],
        "mlp_ratios": [8, 8, 4, 4],
        "depths": [3, 4, 6, 3],
    },
    "pvt-v2-b2-linear": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [64, 128, 320, 512],
        "mlp_ratios": [8, 8, 4, 4],
        "depths": [3, 4, 6, 3],
        "linear_attention": True,
    },
    "pvt-v2-b3": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [64, 128, 320, 512],
        "mlp_ratios": [8, 8, 4, 4],
        "depths": [3, 4, 18, 3],
    },
    "pvt-v2-b4": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [64, 128, 320, 512],
        "mlp_ratios": [8, 8, 4, 4],
        "depths": [3, 8, 27, 3],
    },
    "pvt-v2-b5": {
        "version": 2,
        **_V2_STAGE_SETTINGS,
        "hidden_sizes": [64, 128, 320, 512],
        "mlp_ratios": [4, 4, 4, 4],
        "depths": [3, 6, 40, 3],
    },
}

_PER_STAGE_FIELDS = (
    "hidden_sizes",
    "num_attention_heads",
    "mlp_ratios",
    "depths",
    "sr_ratios",
    "patch_sizes",
    "strides",
)

# Largest accepted value of each size setting (per stage for the lists). Generous for every released and plausible
# PVT (the largest released: width 512, depth 40, MLP ratio 8, reduction 8, patch 7, 1000 classes), they stop absurd
# values (depths of 1e9, widths of 2**40) from hanging or exhausting memory before a clear error.
LIMITS: dict[str, int] = {
    "hidden_sizes": 16384,
    "num_attention_heads": 16384,
    "mlp_ratios": 64,
    "depths": 1024,
    "sr_ratios": 64,
    "patch_sizes": 64,
    "strides": 64,
    "num_stages": 8,
    "num_channels": 1024,
    "image_size": 8192,
    "linear_pool_size": 256,
    "neck_hidden_size": 16384,
    "decoder_hidden_size": 16384,
    "num_labels": 100_000,  # ImageNet-21k has 21,841
}


def out_of_range(name: str, value) -> str | None:
    """Why `value` (a number, or a per-stage list) is not a valid `name` of `PvtConfig` by range alone, or None: the
    check `PvtConfig` makes, also for callers that name the setting otherwise (`--official-args`)."""
    per_stage = isinstance(value, (list, tuple))
    values = value if per_stage else [value]
    if name == "mlp_ratios":
        kind, bounds = "numbers", f"(0, {LIMITS[name]}]"
        valid = all(
            isinstance(item, (int, float)) and math.isfinite(item) and 0 < item <= LIMITS[name] for item in values
        )
    else:
        minimum = 0 if name == "num_labels" else 1
        kind, bounds = "integers", f"[{minimum}, {LIMITS[name]:,}]"
        valid = all(isinstance(item, int) and minimum <= item <= LIMITS[name] for item in values)
    if valid and not any(isinstance(item, bool) for item in values):
        return None
    expected = f"hold {kind} in {bounds}, one per stage" if per_stage else f"be an {kind[:-1]} in {bounds}"
    return f"must {expected}, got {value!r}"


class PvtConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    One configuration for PVT v1 (arXiv:2102.12122), PVT v2 and PVT v2-linear (arXiv:2106.13797), for
    classification, backbones and Semantic FPN segmentation.

    Args:
        version (`int`, defaults to 2): 1 for PVT v1 (non-overlapping patches, position embeddings, cls token in
            stage 4), 2 for PVT v2 (overlapping patches, depth-wise conv in the MLP, a LayerNorm after each stage).
        linear_attention (`bool`, defaults to `False`): PVT v2-linear: keys/values from a `linear_pool_size` adaptive
            average pool, and a ReLU after the MLP's first layer. `sr_ratios` are then unused.
        hidden_sizes, num_attention_heads, mlp_ratios, depths, sr_ratios (`list[int]`, one entry per stage):
            the official `embed_dims`, `num_heads`, `mlp_ratios`, `depths` and `sr_ratios`.
        patch_sizes, strides (`list[int]`, *optional*): kernel size and stride of each stage's patch embedding.
            Default: v1 `[4, 2, 2, 2]` for both (non-overlapping); v2 `[7, 3, 3, 3]` and `[4, 2, 2, 2]`.
        image_size (`int`, defaults to 224): the training resolution; v1 position embeddings are learnt on its grid
            and interpolated to other input sizes.
        layer_norm_eps (`float`, defaults to 1e-6): epsilon of the block and stage LayerNorms.
        patch_embedding_layer_norm_eps, spatial_reduction_layer_norm_eps (`float`, defaults to 1e-5): epsilons of
            the patch-embedding LayerNorm and of the LayerNorm after the spatial reduction (the official code leaves
            these at torch's default).
        hidden_dropout_prob, attention_probs_dropout_prob, drop_path_rate (`float`): the official `drop_rate`,
            `attn_drop_rate` and `drop_path_rate` (stochastic depth, rising linearly over all blocks).
        neck_hidden_size (`int`, defaults to 256), decoder_hidden_size (`int`, defaults to 128): channels of the
            Semantic FPN neck and of the FPN head (mmseg's `FPN.out_channels` and `FPNHead.channels`).
        classifier_dropout_prob (`float`, defaults to 0.1): dropout before the segmentation classifier.
        semantic_loss_ignore_index (`int`, defaults to 255): label ignored by the segmentation loss and metric.
        fused_cpu_kernels (`bool`, defaults to `True`): run fp32 CPU inference on oneDNN's fused kernels where that is
            exact and safe (`pvt_hf/fused_ops.py`); `False` runs the plain modules everywhere. Outputs agree to fp32
            rounding either way.
        lean_training (`bool`, defaults to `True`): whenever gradients are needed, run each layer's MLP branch as one
            autograd function that saves only its input (and, in the wide stages, the fc1 output) and recomputes the
            rest in backward, and recompute the attention's LayerNorm output; the Semantic FPN loss upsamples and
            scores the logits in bands of rows instead of at the labels' size (`pvt_hf/lean_training.py`): about a
            quarter to a half of the activation memory of a training step, same gradients. `False` runs the plain
            modules.

    Every size setting (and `num_labels`) has an upper bound, `LIMITS` in this module, far above any released or
    plausible PVT: an absurd value is a `ValueError` naming the setting, not a hang or an exhausted memory.
    """

    model_type = "pvt_hf"

    version: int = 2
    linear_attention: bool = False
    num_channels: int = 3
    image_size: int = 224
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 320, 512)
    num_attention_heads: list[int] | tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: list[int] | list[float] | tuple[int, ...] = (8, 8, 4, 4)
    depths: list[int] | tuple[int, ...] = (3, 4, 6, 3)
    sr_ratios: list[int] | tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: list[int] | tuple[int, ...] | None = None
    strides: list[int] | tuple[int, ...] | None = None
    linear_pool_size: int = 7
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-6
    patch_embedding_layer_norm_eps: float = 1e-5
    spatial_reduction_layer_norm_eps: float = 1e-5
    neck_hidden_size: int = 256
    decoder_hidden_size: int = 128
    classifier_dropout_prob: float = 0.1
    semantic_loss_ignore_index: int = 255
    fused_cpu_kernels: bool = True
    lean_training: bool = True
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.version not in (1, 2):
            raise ValueError(f"`version` must be 1 (PVT v1) or 2 (PVT v2), got {self.version!r}.")
        if self.patch_sizes is None:
            self.patch_sizes = [4, 2, 2, 2] if self.version == 1 else [7, 3, 3, 3]
        if self.strides is None:
            self.strides = list(self.patch_sizes) if self.version == 1 else [4, 2, 2, 2]
        for name in _PER_STAGE_FIELDS:
            setattr(self, name, list(getattr(self, name)))
        self._validate_architecture()
        self.stage_names = [f"stage{index}" for index in range(1, self.num_stages + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_labels(self) -> int | None:
        return super().num_labels

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        # checked before transformers builds `id2label` with one entry per label
        problem = out_of_range("num_labels", num_labels)
        if problem is not None:
            raise ValueError(f"`num_labels` {problem}.")
        PreTrainedConfig.num_labels.fset(self, num_labels)

    def _validate_architecture(self) -> None:
        for name in _PER_STAGE_FIELDS:
            values = getattr(self, name)
            kinds = (int, float) if name == "mlp_ratios" else (int,)
            if any(isinstance(value, bool) or not isinstance(value, kinds) for value in values):
                expected = "numbers" if name == "mlp_ratios" else "integers"
                raise ValueError(f"`{name}` must hold positive {expected}, one per stage, got {values}.")
        lengths = {name: len(getattr(self, name)) for name in _PER_STAGE_FIELDS}
        if len(set(lengths.values())) != 1 or not 0 < self.num_stages <= LIMITS["num_stages"]:
            raise ValueError(
                f"The per-stage lists must all have one entry per stage (same length, 1 to {LIMITS['num_stages']} "
                f"stages), got lengths {lengths}."
            )
        for name in _PER_STAGE_FIELDS:
            values = getattr(self, name)
            if any(not value > 0 for value in values):
                raise ValueError(f"`{name}` must hold positive values, got {values}.")
            problem = out_of_range(name, values)
            if problem is not None:
                raise ValueError(f"`{name}` {problem}.")
        for stage, (hidden_size, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads), start=1):
            if hidden_size % heads:
                raise ValueError(
                    f"Stage {stage}: `hidden_sizes` ({hidden_size}) must be divisible by `num_attention_heads` ({heads})."
                )
        for stage, (hidden_size, ratio) in enumerate(zip(self.hidden_sizes, self.mlp_ratios), start=1):
            if int(hidden_size * ratio) < 1:
                raise ValueError(f"Stage {stage}: `hidden_sizes` x `mlp_ratios` ({hidden_size} x {ratio}) is below 1.")
        if self.linear_attention and self.version != 2:
            raise ValueError("`linear_attention=True` exists only for PVT v2 (`version=2`).")
        if self.version == 1 and self.sr_ratios[-1] != 1:
            raise ValueError(
                f"PVT v1 carries its cls token through the last stage, whose `sr_ratios` entry must be 1, got {self.sr_ratios}."
            )
        positive = ("num_channels", "image_size", "linear_pool_size", "neck_hidden_size", "decoder_hidden_size")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
            if value > LIMITS[name]:
                raise ValueError(f"`{name}` must be at most {LIMITS[name]:,}, got {value!r}.")
        for name in ("layer_norm_eps", "patch_embedding_layer_norm_eps", "spatial_reduction_layer_norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"`{name}` must be a positive number, got {value!r}.")
        if self.version == 1:
            # v1 learns position embeddings on each stage's grid at `image_size`: every grid needs a token.
            grids = [
                (self.image_size if index == 0 else self.image_size // 2 ** (index + 1)) // patch
                for index, patch in enumerate(self.patch_sizes)
            ]
            if min(grids) < 1:
                raise ValueError(
                    f"`image_size` {self.image_size} is too small for PVT v1's patch sizes {self.patch_sizes}: the "
                    f"position-embedding grids would be {grids}; every stage needs at least 1."
                )
        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` must name an activation of transformers' ACT2FN, got {self.hidden_act!r}.")
        for name in (
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "drop_path_rate",
            "classifier_dropout_prob",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1), got {getattr(self, name)}.")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> PvtConfig:
        """The configuration of a released PVT architecture, e.g. `PvtConfig.from_preset("pvt-v2-b2", num_labels=10)`."""
        if name not in PRESETS:
            raise ValueError(f"Unknown PVT preset {name!r}; expected one of: {', '.join(PRESETS)}.")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})


__all__ = ["LIMITS", "PvtConfig", "PRESETS"]
