# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""PyTorch Pyramid Vision Transformer: PVT v1, PVT v2 and PVT v2-linear, as in the official whai362/PVT code.

Plain transformers modeling code. Two optimisations live beside it, each behind one config switch and attached at one
place: the fused CPU inference kernels (`fused_ops.py`, whole layers in `PvtStage.forward`, where
`fused_forward_applies`) and the memory-lean training path (`lean_training.py`, in `PvtLayer.forward`, where
`lean_training_applies`). What the three share (token/map views, the plain-module test, activations, and every use
of a private torch or transformers API) is in `layer_paths.py`.

Which implementation runs a `PvtLayer`, decided per layer and call (each gives the plain modules' outputs and
gradients; the first row that matches wins):

    device   gradients wanted        dtype           the layer's modules       path
    -------  ----------------------  --------------  ------------------------  ------------------------------------
    CPU      none: eval mode under   fp32, no        all plain (*), on fp32    fused (`fused_ops`, from `PvtStage`;
    (oneDNN) no_grad / inference     autocast        CPU weights that need     compiled graphs call it as custom
             mode, or nothing                        no gradient               ops); `config.fused_cpu_kernels`
             requires them
    any      recorded, and the MLP   any float,      the MLP's LayerNorm,      lean (`lean_training`, from
             branch's input or       autocast too    Linears and conv plain    `PvtLayer`): the MLP branch as one
             weights need them                       (*), known activation     autograd function, LayerNorm 1's
                                                                               output recomputed;
                                                                               `config.lean_training`
    anything else: inference on a GPU or in bf16 / fp16, train mode without gradients, tracing or  plain modules
    export (ONNX, torch.export, jit), recorded attentions (inference), PEFT-wrapped / hooked /
    offloaded / quantized modules in the way, a switch off

(*) plain (`layer_paths.plain_module`): exactly the torch class (not PEFT-wrapped), running its class's forward (no
forward hook bar transformers' output capturing, no accelerate `_hf_hook`, no instance `forward`), on `nn.Parameter`s
or FSDP1's plain tensor views of them (no tensor subclass: quantized, DTensor, offloaded). Gradient checkpointing,
DDP, FSDP and torch.compile keep the lean path (compiled training with MLP dropout runs the plain MLP).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_pvt import PvtConfig
from .fused_ops import fused_forward_applies, fused_layer_forward
from .input_channels import register_input_channel_adaptation
from .layer_paths import map_to_tokens, recording_outputs, tokens_to_map
from .lean_training import lean_layer_forward, lean_training_applies


# `from_pretrained(path, num_channels=N)` on an RGB checkpoint adapts the first convolution (see `input_channels`);
# registered here, so that it also holds where this file runs as remote code.
register_input_channel_adaptation()


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = attn_weights.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2)
    return attn_output, attn_weights


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drops the whole residual branch per sample."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


class PvtDropPath(nn.Module):
    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return drop_path(hidden_states, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def adaptive_avg_pool2d_as_matmuls(hidden_states: torch.Tensor, output_size: int) -> torch.Tensor:
    """`AdaptiveAvgPool2d(output_size)` as two averaging matmuls, for exporters: ONNX has no adaptive pooling, and the
    TorchScript exporter cannot size the bins of an input whose size is dynamic."""

    def averaging(length) -> torch.Tensor:  # (output_size, length): row i averages [floor(iL/o), ceil((i+1)L/o))
        index = torch.arange(output_size, device=hidden_states.device)
        start = torch.div(index * length, output_size, rounding_mode="floor")
        end = torch.div((index + 1) * length + output_size - 1, output_size, rounding_mode="floor")
        positions = torch.arange(length, device=hidden_states.device)
        inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
        return inside.to(hidden_states.dtype) / (end - start)[:, None].to(hidden_states.dtype)

    height, width = hidden_states.shape[-2:]
    return averaging(height) @ hidden_states @ averaging(width).transpose(0, 1)


class PvtPatchEmbeddings(nn.Module):
    """Strided convolution + LayerNorm. v1: non-overlapping patches; v2: overlapping (padding = kernel // 2).

    Returns the normalised patch grid (B, H, W, C): one tensor (what `enable_input_require_grads` hooks expect of an
    input-embeddings module), whose (B, H*W, C) token view is free."""

    def __init__(self, config: PvtConfig, stage_index: int):
        super().__init__()
        in_channels = config.num_channels if stage_index == 0 else config.hidden_sizes[stage_index - 1]
        kernel_size = config.patch_sizes[stage_index]
        self.projection = nn.Conv2d(
            in_channels,
            config.hidden_sizes[stage_index],
            kernel_size=kernel_size,
            stride=config.strides[stage_index],
            padding=kernel_size // 2 if config.version == 2 else 0,
        )
        self.layer_norm = nn.LayerNorm(config.hidden_sizes[stage_index], eps=config.patch_embedding_layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embeddings = self.projection(pixel_values)
        batch_size, channels, height, width = embeddings.shape
        embeddings = self.layer_norm(map_to_tokens(embeddings))
        return embeddings.reshape(batch_size, height, width, channels)


class PvtAttention(nn.Module):
    """Spatial-reduction attention: queries from every token, keys/values from a reduced map (strided conv for
    `sr_ratio > 1`, adaptive average pooling for v2-linear)."""

    def __init__(self, config: PvtConfig, hidden_size: int, num_attention_heads: int, sr_ratio: int):
        super().__init__()
        self.config = config
        self.num_attention_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_probs_dropout_prob
        self.is_causal = False

        self.query = nn.Linear(hidden_size, hidden_size, bias=config.qkv_bias)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size, bias=config.qkv_bias)
        self.output = nn.Linear(hidden_size, hidden_size)
        self.output_dropout = nn.Dropout(config.hidden_dropout_prob)

        self.pool = nn.AdaptiveAvgPool2d(config.linear_pool_size) if config.linear_attention else None
        if config.linear_attention or sr_ratio > 1:
            reduction = 1 if config.linear_attention else sr_ratio
            self.spatial_reduction = nn.Conv2d(hidden_size, hidden_size, kernel_size=reduction, stride=reduction)
            self.layer_norm = nn.LayerNorm(hidden_size, eps=config.spatial_reduction_layer_norm_eps)
        else:
            self.spatial_reduction = None
        self.activation = nn.GELU() if config.linear_attention else None

    def pool_tokens(self, token_map: torch.Tensor) -> torch.Tensor:
        """v2-linear's average pooling; as matmuls for exporters (see `adaptive_avg_pool2d_as_matmuls`)."""
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return adaptive_avg_pool2d_as_matmuls(token_map, self.pool.output_size)
        return self.pool(token_map)

    def attention_function(self) -> Callable:
        # Attention weights exist only in the eager implementation: while they are recorded, it runs.
        implementation = "eager" if recording_outputs("attentions") else self.config._attn_implementation
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, num_tokens, hidden_size = hidden_states.shape
        query = self.query(hidden_states).view(batch_size, num_tokens, self.num_attention_heads, self.head_dim)
        key_value_states = hidden_states
        if self.spatial_reduction is not None:
            reduced = tokens_to_map(hidden_states, height, width)
            if self.pool is not None:
                reduced = self.pool_tokens(reduced)
            reduced = self.spatial_reduction(reduced)
            key_value_states = self.layer_norm(map_to_tokens(reduced))
            if self.activation is not None:
                key_value_states = self.activation(key_value_states)
        key_value = self.key_value(key_value_states)
        key_value = key_value.view(batch_size, key_value.shape[1], 2, self.num_attention_heads, self.head_dim)
        key, value = key_value.permute(2, 0, 3, 1, 4).unbind(0)

        attn_output, attn_weights = self.attention_function()(
            self,
            query.transpose(1, 2),
            key,
            value,
            None,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch_size, num_tokens, hidden_size)
        return self.output_dropout(self.output(attn_output)), attn_weights


class PvtMLP(nn.Module):
    """fc1 -> [v2-linear: ReLU] -> [v2: 3x3 depth-wise conv] -> activation -> fc2."""

    def __init__(self, config: PvtConfig, hidden_size: int, mlp_ratio: float):
        super().__init__()
        intermediate_size = int(hidden_size * mlp_ratio)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.relu = nn.ReLU() if config.linear_attention else None
        self.depthwise_conv = (
            nn.Conv2d(intermediate_size, intermediate_size, 3, padding=1, groups=intermediate_size)
            if config.version == 2
            else None
        )
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        if self.relu is not None:
            hidden_states = self.relu(hidden_states)
        if self.depthwise_conv is not None:
            hidden_states = map_to_tokens(self.depthwise_conv(tokens_to_map(hidden_states, height, width)))
        hidden_states = self.dropout(self.activation(hidden_states))
        return self.dropout(self.fc2(hidden_states))


class PvtLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block (the official `Block`)."""

    def __init__(self, config: PvtConfig, stage_index: int, drop_path_rate: float):
        super().__init__()
        hidden_size = config.hidden_sizes[stage_index]
        self.layer_norm_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = PvtAttention(
            config, hidden_size, config.num_attention_heads[stage_index], config.sr_ratios[stage_index]
        )
        self.layer_norm_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = PvtMLP(config, hidden_size, config.mlp_ratios[stage_index])
        self.drop_path = PvtDropPath(drop_path_rate)

    def forward(
        self, hidden_states: torch.Tensor, height: int, width: int, **kwargs: Unpack[TransformersKwargs]
    ) -> torch.Tensor:
        # The one place where the memory-lean training path takes over (see `lean_training`): whenever gradients are
        # recorded and the MLP branch's modules are plain.
        if lean_training_applies(self, hidden_states):
            return lean_layer_forward(self, hidden_states, height, width, **kwargs)
        attention_output, _ = self.attention(self.layer_norm_1(hidden_states), height, width, **kwargs)
        hidden_states = hidden_states + self.drop_path(attention_output)
        return hidden_states + self.drop_path(self.mlp(self.layer_norm_2(hidden_states), height, width))


class PvtStage(nn.Module):
    """Patch embedding [+ v1 position embedding] -> blocks [-> v2 stage LayerNorm]."""

    def __init__(self, config: PvtConfig, stage_index: int, drop_path_rates: list[float]):
        super().__init__()
        self.stage_index = stage_index
        self.patch_embeddings = PvtPatchEmbeddings(config, stage_index)
        if config.version == 1:
            # The official grids: image_size // patch_size for stage 1, (image_size // 2**(i+1)) // patch_size after.
            size = config.image_size if stage_index == 0 else config.image_size // 2 ** (stage_index + 1)
            self.grid_size = size // config.patch_sizes[stage_index]
            # The last stage has an extra row for the cls token, even where (backbones) no cls token is used.
            self.has_cls_position = stage_index == config.num_stages - 1
            num_positions = self.grid_size**2 + int(self.has_cls_position)
            self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.hidden_sizes[stage_index]))
            self.position_dropout = nn.Dropout(config.hidden_dropout_prob)
        else:
            self.position_embeddings = None
        self.layers = nn.ModuleList([PvtLayer(config, stage_index, rate) for rate in drop_path_rates])
        self.layer_norm = (
            nn.LayerNorm(config.hidden_sizes[stage_index], eps=config.layer_norm_eps) if config.version == 2 else None
        )
        # A strided spatial reduction needs at least one full window of tokens.
        reduces = not config.linear_attention and config.sr_ratios[stage_index] > 1
        self.min_grid_size = config.sr_ratios[stage_index] if reduces else 1

    def interpolate_pos_encoding(self, position_embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        # The official code adds the stored embeddings unchanged when stage 1 has as many tokens as at training
        # size (whatever the grid's shape), else resizes them bilinearly (align_corners=False). Traced and exported
        # graphs (ONNX, torch.export) and torch.compile's graphs have no size-dependent branch, which would
        # specialise them to one size (a recompilation at the training size): they always resize, which is exact
        # (the identity) at the training grid and differs only for a non-square stage-1 grid of exactly that many
        # tokens.
        if not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.compiler.is_exporting()):
            if self.stage_index == 0 and height * width == self.grid_size**2:
                return position_embeddings
            if (height, width) == (self.grid_size, self.grid_size):
                return position_embeddings
        grid = tokens_to_map(position_embeddings, self.grid_size, self.grid_size)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return map_to_tokens(grid)

    def forward(
        self, hidden_states: torch.Tensor, cls_token: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the stage's (B, C, H, W) map and the cls token's state (or None)."""
        embeddings = self.patch_embeddings(hidden_states)
        batch_size, height, width, channels = embeddings.shape
        embeddings = embeddings.view(batch_size, height * width, channels)
        if self.position_embeddings is not None:
            patch_positions = self.position_embeddings[:, int(self.has_cls_position) :]
            embeddings = embeddings + self.interpolate_pos_encoding(patch_positions, height, width)
            if cls_token is not None:
                cls_embedding = cls_token.expand(batch_size, -1, -1) + self.position_embeddings[:, :1]
                embeddings = torch.cat([cls_embedding, embeddings], dim=1)
            embeddings = self.position_dropout(embeddings)

        # The one place where the fused CPU inference kernels take over (see `fused_ops`); recorded attention weights
        # come from the plain modules.
        may_fuse = not recording_outputs("attentions")
        for layer in self.layers:
            if may_fuse and fused_forward_applies(layer, embeddings):
                embeddings = fused_layer_forward(layer, embeddings, height, width)
            else:
                embeddings = layer(embeddings, height, width, **kwargs)
        if self.layer_norm is not None:
            embeddings = self.layer_norm(embeddings)

        cls_state = None
        if cls_token is not None:
            cls_state, embeddings = embeddings[:, 0], embeddings[:, 1:]
        return tokens_to_map(embeddings, height, width), cls_state


@dataclass
class PvtEncoderOutput(ModelOutput):
    """`last_hidden_state`: the stage-4 map; `cls_state`: the cls token's state after the last stage (v1 with a cls
    token, else None); `hidden_states`: the four stage maps; `attentions`: every layer's attention weights."""

    last_hidden_state: torch.Tensor | None = None
    cls_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class PvtPreTrainedModel(PreTrainedModel):
    config: PvtConfig
    config_class = PvtConfig
    base_model_prefix = "pvt"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["PvtStage"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        # The stage maps; the first stage's input is the pixels, not a hidden state.
        "hidden_states": OutputRecorder(
            PvtStage,
            capture_initial_hidden_state=False,
            # (older transformers, e.g. 5.17, resolve no negative `output_hidden_states` indices: no such key)
            **{key: "num_stages" for key in ["num_hidden_layers_key"] if key in OutputRecorder.__dataclass_fields__},
        ),
        "attentions": OutputRecorder(PvtAttention, index=1),
    }

    def __init__(self, config: PvtConfig, *inputs, **kwargs):
        # `from_pretrained(path, num_channels=N, ...)` sets config fields after the config's own checks: checked again
        # here, so that a bad value gets the config's error rather than one from deep inside a layer.
        config._validate_architecture()
        super().__init__(config, *inputs, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # The saved folder serves every Auto class its weights fit, also to `trust_remote_code=True` users.
        self.config.auto_map = {
            "AutoConfig": "configuration_pvt.PvtConfig",
            "AutoModel": "modeling_pvt.PvtModel",
            "AutoBackbone": "modeling_pvt.PvtBackbone",
            "AutoModelForImageClassification": "modeling_pvt.PvtForImageClassification",
        }
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """As the official code: truncated normal for linear layers and embeddings, fan-out normal for convs."""
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, mean=0.0, std=(2.0 / fan_out) ** 0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d, nn.SyncBatchNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, PvtStage) and module.position_embeddings is not None:
            init.trunc_normal_(module.position_embeddings, std=self.config.initializer_range)
        elif isinstance(module, PvtModel) and module.cls_token is not None:
            init.trunc_normal_(module.cls_token, std=self.config.initializer_range)


class PvtEncoder(PvtPreTrainedModel):
    """The four stages. Records `hidden_states` (the stage maps) and `attentions` when asked for."""

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        num_layers = sum(config.depths)
        rates = [config.drop_path_rate * index / max(num_layers - 1, 1) for index in range(num_layers)]
        starts = [sum(config.depths[:index]) for index in range(config.num_stages)]
        self.stages = nn.ModuleList(
            [
                PvtStage(config, index, rates[start : start + depth])
                for index, (start, depth) in enumerate(zip(starts, config.depths))
            ]
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.stages[0].patch_embeddings

    def stage_grid_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (height, width) token grid of each stage for an input of the given size."""
        sizes, size = [], (height, width)
        for stage in self.stages:
            conv = stage.patch_embeddings.projection
            size = tuple((s + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1 for s in size)
            sizes.append(size)
        return sizes

    def accepts_size(self, height: int, width: int) -> bool:
        grids = self.stage_grid_sizes(height, width)
        return all(min(grid) >= stage.min_grid_size for stage, grid in zip(self.stages, grids))

    def smallest_size(self) -> int:
        return next(size for size in range(1, 1 << 16) if self.accepts_size(size, size))

    def check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        """Reject input the model cannot take, with a message saying what was expected."""
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4:
            raise ValueError(
                f"`pixel_values` must be a 4-D tensor (batch_size, num_channels, height, width), got shape "
                f"{tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"`pixel_values` must have {self.config.num_channels} channels (dim 1), got shape "
                f"{tuple(pixel_values.shape)}."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError(f"`pixel_values` holds no image (batch_size 0, shape {tuple(pixel_values.shape)}).")
        height, width = pixel_values.shape[-2:]
        if not self.accepts_size(height, width):
            raise ValueError(
                f"`pixel_values` of size {height}x{width} is too small for this model: every side must be at "
                f"least {self.smallest_size()} pixels (stage grids would be {self.stage_grid_sizes(height, width)})."
            )

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, pixel_values: torch.Tensor, cls_token: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> PvtEncoderOutput:
        self.check_pixel_values(pixel_values)
        hidden_states = pixel_values.to(self.stages[0].patch_embeddings.projection.weight.dtype)
        last = len(self.stages) - 1
        for index, stage in enumerate(self.stages):
            hidden_states, cls_state = stage(hidden_states, cls_token if index == last else None, **kwargs)
        return PvtEncoderOutput(last_hidden_state=hidden_states, cls_state=cls_state)


class PvtModel(PvtPreTrainedModel):
    """The PVT encoder. `last_hidden_state` is the stage-4 map (B, C, H/32, W/32); `pooler_output` the image
    embedding the classifier sees (v1: the final-normed cls token; v2: the mean of the stage-4 tokens);
    `hidden_states` the four stage maps.

    `add_pooling_layer=False` gives the official dense-prediction backbone: for v1 no cls token and no final norm.
    """

    def __init__(self, config: PvtConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.encoder = PvtEncoder(config)
        with_cls_token = config.version == 1 and add_pooling_layer
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_sizes[-1])) if with_cls_token else None
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps) if with_cls_token else None
        self.add_pooling_layer = add_pooling_layer
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        if pixel_values is None:
            raise ValueError("`pixel_values` is required: a (batch_size, num_channels, height, width) tensor.")
        encoded = self.encoder(pixel_values, self.cls_token, **kwargs)
        last_map, pooled = encoded.last_hidden_state, None
        if self.layernorm is not None:
            # v1: the final norm covers every token; the cls token is the pooled output
            pooled = self.layernorm(encoded.cls_state)
            last_map = self.layernorm(last_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        elif self.add_pooling_layer:
            pooled = last_map.mean(dim=(2, 3))
        return BaseModelOutputWithPooling(
            last_hidden_state=last_map,
            pooler_output=pooled,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )


class PvtForImageClassification(PvtPreTrainedModel):
    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pvt = PvtModel(config)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def check_labels(self, labels: torch.Tensor, logits: torch.Tensor) -> None:
        """Class indices out of range otherwise end in an IndexError (a device-side assert on a GPU); float labels
        of the wrong shape in a RuntimeError deep in the loss."""
        if labels.is_floating_point():
            # transformers' problem types: float labels are regression values (one output), else multi-hot /
            # one-hot (or soft) targets, one value per class
            num_labels, problem_type = self.config.num_labels, self.config.problem_type
            regression = problem_type == "regression" or (problem_type is None and num_labels == 1)
            shapes = [(logits.shape[0], num_labels)] + ([(logits.shape[0],)] if num_labels == 1 else [])
            if tuple(labels.shape) not in shapes:
                kind = "regression values" if regression else "multi-label (multi-hot) or one-hot targets"
                raise ValueError(
                    f"Float `labels` are {kind} and must have shape {' or '.join(map(str, shapes))} (batch_size, "
                    f"num_labels={num_labels}), got shape {tuple(labels.shape)}; class indices must be an integer "
                    "tensor (labels.long())."
                )
            return
        if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
            raise ValueError(
                f"`labels` must be a (batch_size,) tensor of class indices with batch_size {logits.shape[0]}, got "
                f"shape {tuple(labels.shape)}."
            )
        if labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"`labels` must hold integer class indices, got dtype {labels.dtype}.")
        if torch.compiler.is_compiling():
            return  # reading the values is a data-dependent branch: a graph break under torch.compile
        invalid = (labels < 0) | (labels >= self.config.num_labels)
        if invalid.any():
            raise ValueError(
                f"`labels` must lie in [0, {self.config.num_labels - 1}] (num_labels={self.config.num_labels}); "
                f"found {torch.unique(labels[invalid])[:10].tolist()}."
            )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        outputs = self.pvt(pixel_values, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            self.check_labels(labels, logits)
            if not labels.is_floating_point():
                labels = labels.long()
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class PvtBackbone(BackboneMixin, PvtPreTrainedModel):
    """Multi-scale feature maps, as the official segmentation/detection backbones (v1: no cls token, no norm)."""

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.encoder = PvtEncoder(config)
        self.num_features = list(config.hidden_sizes)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> BackboneOutput:
        encoded = self.encoder(pixel_values, **kwargs)
        feature_maps = tuple(
            stage_map for name, stage_map in zip(self.stage_names, encoded.hidden_states) if name in self.out_features
        )
        return BackboneOutput(
            feature_maps=feature_maps, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )


__all__ = [
    "PvtPreTrainedModel",
    "PvtEncoder",
    "PvtModel",
    "PvtForImageClassification",
    "PvtBackbone",
]
