"""Conversion of the official PVT checkpoints (whai362/PVT classifiers, mmseg Semantic FPN models) to pvt-hf.

The official layouts and ours differ only in names; this module holds the one mapping between them, infers the
architecture from a checkpoint's shapes, and refuses to convert unless every official weight is used and every
model weight is filled.
"""

from __future__ import annotations

import json
import logging
import re
from importlib import resources
from pathlib import Path

import torch

from .configuration_pvt import PRESETS, PvtConfig

logger = logging.getLogger(__name__)

TASKS = ("classification", "semantic-segmentation")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# Names: official -> pvt-hf. Backbone names are relative to the backbone (official classifier root, or mmseg's
# `backbone.`); ours are relative to `PvtModel`.
_BACKBONE_RULES = [
    (r"patch_embed(\d+)\.proj\.", "encoder.stages.{stage}.patch_embeddings.projection."),
    (r"patch_embed(\d+)\.norm\.", "encoder.stages.{stage}.patch_embeddings.layer_norm."),
    (r"pos_embed(\d+)$", "encoder.stages.{stage}.position_embeddings"),
    (r"norm(\d+)\.", "encoder.stages.{stage}.layer_norm."),
    (r"cls_token$", "cls_token"),
    (r"norm\.", "layernorm."),
]
_BLOCK_RULES = {  # within a block
    "norm1.": "layer_norm_1.",
    "norm2.": "layer_norm_2.",
    "attn.q.": "attention.query.",
    "attn.kv.": "attention.key_value.",
    "attn.proj.": "attention.output.",
    "attn.sr.": "attention.spatial_reduction.",
    "attn.norm.": "attention.layer_norm.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
    "mlp.dwconv.dwconv.": "mlp.depthwise_conv.",
}


def _rename_backbone_key(key: str) -> str | None:
    block = re.match(r"block(\d+)\.(\d+)\.(.+)$", key)
    if block is not None:
        for old, new in _BLOCK_RULES.items():
            if block[3].startswith(old):
                return f"encoder.stages.{int(block[1]) - 1}.layers.{block[2]}.{new}{block[3][len(old):]}"
        return None
    for pattern, replacement in _BACKBONE_RULES:
        match = re.match(pattern, key)
        if match is not None:
            stage = int(match[1]) - 1 if match.groups() else None
            return replacement.format(stage=stage) + key[match.end() :]
    return None


def _rename_segmentation_key(key: str) -> str | None:
    if key.startswith("backbone."):
        renamed = _rename_backbone_key(key[len("backbone.") :])
        return None if renamed is None else "pvt." + renamed
    match = re.match(r"neck\.(lateral|fpn)_convs\.(\d+)\.conv\.(.+)$", key)
    if match:
        kind = "lateral_convs" if match[1] == "lateral" else "output_convs"
        return f"neck.{kind}.{match[2]}.{match[3]}"
    match = re.match(r"decode_head\.scale_heads\.(\d+)\.(\d+)\.(conv|bn)\.(.+)$", key)
    if match:
        part = "conv" if match[3] == "conv" else "batch_norm"
        return f"decode_head.scale_heads.{match[1]}.{match[2]}.{part}.{match[4]}"
    match = re.match(r"decode_head\.conv_seg\.(.+)$", key)
    if match:
        return f"decode_head.classifier.{match[1]}"
    return None


def rename_official_key(key: str, task: str) -> str | None:
    """Our name for an official weight, or None if the key is not part of the official layout."""
    if task == "semantic-segmentation":
        return _rename_segmentation_key(key)
    if key.startswith("head."):
        return "classifier." + key[len("head.") :]
    renamed = _rename_backbone_key(key)
    return None if renamed is None else "pvt." + renamed


# ----------------------------------------------------------------------------------------------------------------
# Other layouts people have: timm's `pvt_v2_*` and transformers' own `pvt` / `pvt_v2`. They are first renamed to the
# official layout, so that one mapping (above) and one set of checks serve every source.


def _timm_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    official = {}
    for key, value in state_dict.items():
        key = re.sub(r"^patch_embed\.", "patch_embed1.", key)
        key = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", key)
        key = re.sub(r"^stages\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}.", key)
        key = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", key)
        official[key.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")] = value
    return official


_TRANSFORMERS_RENAMES = [  # (pattern, replacement) on keys without the model prefix
    (r"^encoder\.layers\.(\d+)\.patch_embedding\.proj\.", lambda m: f"patch_embed{int(m[1]) + 1}.proj."),
    (r"^encoder\.layers\.(\d+)\.patch_embedding\.layer_norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
    (r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}."),
    (r"^encoder\.layers\.(\d+)\.layer_norm\.", lambda m: f"norm{int(m[1]) + 1}."),
    (r"^encoder\.patch_embeddings\.(\d+)\.projection\.", lambda m: f"patch_embed{int(m[1]) + 1}.proj."),
    (r"^encoder\.patch_embeddings\.(\d+)\.layer_norm\.", lambda m: f"patch_embed{int(m[1]) + 1}.norm."),
    (r"^encoder\.patch_embeddings\.(\d+)\.position_embeddings$", lambda m: f"pos_embed{int(m[1]) + 1}"),
    (r"^encoder\.patch_embeddings\.\d+\.cls_token$", lambda m: "cls_token"),
    (r"^encoder\.block\.(\d+)\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}."),
    (r"^encoder\.layer_norm\.", lambda m: "norm."),
    (r"^classifier\.", lambda m: "head."),
]
_TRANSFORMERS_BLOCK_RENAMES = {
    "layer_norm_1.": "norm1.", "layer_norm_2.": "norm2.", "attention.self.query.": "attn.q.",
    "attention.query.": "attn.q.", "attention.output.dense.": "attn.proj.", "attention.proj.": "attn.proj.",
    "attention.self.sequence_reduction.": "attn.sr.", "attention.spatial_reduction.": "attn.sr.",
    "attention.self.layer_norm.": "attn.norm.", "attention.layer_norm.": "attn.norm.", "mlp.dense1.": "mlp.fc1.",
    "mlp.dense2.": "mlp.fc2.",
}  # fmt: skip


def _transformers_to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    official, keys, values = {}, {}, {}
    for key, value in state_dict.items():
        key = re.sub(r"^(pvt_v2|pvt)\.", "", key)
        for pattern, replacement in _TRANSFORMERS_RENAMES:
            key = re.sub(pattern, replacement, key)
        block = re.match(r"(block\d+\.\d+\.)(.+)$", key)
        if block is not None:
            rest = block[2]
            for old, new in _TRANSFORMERS_BLOCK_RENAMES.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            # separate key and value projections become the official fused `kv`
            kv = re.match(r"attention\.(?:self\.)?(key|value)\.(weight|bias)$", rest)
            if kv is not None:
                (keys if kv[1] == "key" else values)[f"{block[1]}attn.kv.{kv[2]}"] = value
                continue
            key = block[1] + rest
        official[key] = value
    for name, key_tensor in keys.items():
        official[name] = torch.cat([key_tensor, values.pop(name)])
    official.update({f"{name}.unpaired_value": value for name, value in values.items()})  # reported as unused
    return official


def _transformers_official_args(config: dict) -> dict:
    return {
        "embed_dims": config["hidden_sizes"],
        "num_heads": config["num_attention_heads"],
        "mlp_ratios": config["mlp_ratios"],
        "depths": config["depths"],
        "sr_ratios": config.get("sr_ratios") or config.get("sequence_reduction_ratios"),
        "linear": config.get("linear_attention", False),
        "qkv_bias": config.get("qkv_bias", True),
        "num_classes": len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2),
        "img_size": config["image_size"][0] if isinstance(config.get("image_size"), list) else config.get("image_size", 224),
    }


def _load_transformers_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict, dict]:
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") not in ("pvt", "pvt_v2"):
        raise ConversionError(
            f"{folder} is a folder with model_type {config.get('model_type')!r}; only transformers' `pvt` and "
            "`pvt_v2` folders (or official .pth files) can be converted."
        )
    weights = sorted(folder.glob("*.safetensors"))
    if weights:
        state_dict = {key: value for path in weights for key, value in load_file(path).items()}
    else:
        state_dict = {}
        for path in sorted(folder.glob("pytorch_model*.bin")):
            state_dict.update(torch.load(path, map_location="cpu", weights_only=True))
    if not state_dict:
        raise ConversionError(f"No weights (*.safetensors or pytorch_model*.bin) in {folder}.")
    meta = {"CLASSES": [config["id2label"][str(i)] for i in range(len(config["id2label"]))]} if config.get("id2label") else {}
    return _transformers_to_official(state_dict), meta, _transformers_official_args(config)


def checkpoint_format(state_dict: dict[str, torch.Tensor]) -> str:
    if "patch_embed.proj.weight" in state_dict and any(key.startswith("stages.") for key in state_dict):
        return "timm"
    if any(re.match(r"^(pvt_v2\.|pvt\.)?encoder\.(layers|patch_embeddings|block)\.", key) for key in state_dict):
        return "transformers"
    return "official"


# ----------------------------------------------------------------------------------------------------------------
# Reading checkpoints


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
    """Any supported source as `(state_dict with official names, meta, official_args or None)`: an official .pth,
    a timm `pvt_v2_*` state dict, or a transformers `pvt` / `pvt_v2` folder (whose config gives the arguments)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConversionError(f"{path} is a folder without config.json: not a transformers model folder.")
        return _load_transformers_folder(path)
    state_dict, meta = load_official_checkpoint(path)
    layout = checkpoint_format(state_dict)
    if layout == "timm":
        state_dict = _timm_to_official(state_dict)
    elif layout == "transformers":
        state_dict = _transformers_to_official(state_dict)
    return state_dict, meta, None


def load_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and metadata of an official checkpoint: a raw state dict, or one wrapped in `{"model": ...}`,
    `{"state_dict": ...}` (mmseg, with `meta`). DataParallel's `module.` prefix is removed."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for truncated or foreign files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConversionError(
            f"Cannot read {path} as a PyTorch checkpoint (truncated, corrupt or not a checkpoint?): {first_line}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not a state dict.")
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    state_dict = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors or not state_dict:
        raise ConversionError(f"{path} is not a state dict of tensors (non-tensor entries: {not_tensors[:5]}).")
    return state_dict, meta


def detect_task(state_dict: dict[str, torch.Tensor]) -> str:
    return "semantic-segmentation" if any(key.startswith("decode_head.") for key in state_dict) else "classification"


# ----------------------------------------------------------------------------------------------------------------
# Architectures


def normalize_variant(name: str) -> str:
    """Preset name for the names people use: `pvt_v2_b2`, `fpn_pvt_v2_b2_ade20k`, `PVT-v2-b2-li`, `pvt-small`."""
    normalized = name.strip().lower().replace("_", "-")
    normalized = normalized.removeprefix("fpn-").removesuffix("-ade20k")
    if normalized.endswith("-li"):
        normalized += "near"
    if normalized not in PRESETS:
        raise ConversionError(f"Unknown variant {name!r}; expected one of: {', '.join(PRESETS)}.")
    return normalized


def _backbone_view(state_dict: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    if task == "semantic-segmentation":
        return {key[len("backbone.") :]: value for key, value in state_dict.items() if key.startswith("backbone.")}
    return state_dict


def architecture_from_state_dict(state_dict: dict[str, torch.Tensor], task: str) -> dict:
    """Every architecture setting the shapes determine (all but the number of heads)."""
    backbone = _backbone_view(state_dict, task)
    num_stages = len([key for key in backbone if re.fullmatch(r"patch_embed\d+\.proj\.weight", key)])
    if num_stages == 0:
        raise ConversionError("No `patch_embed1.proj.weight` in the checkpoint: this is not a PVT checkpoint.")
    version = 1 if "pos_embed1" in backbone else 2
    hidden_sizes, depths, mlp_ratios, sr_ratios, patch_sizes, strides = [], [], [], [], [], []
    linear = False
    for stage in range(1, num_stages + 1):
        projection = backbone[f"patch_embed{stage}.proj.weight"]
        hidden_sizes.append(projection.shape[0])
        patch_sizes.append(projection.shape[-1])
        depth = len({key.split(".")[1] for key in backbone if key.startswith(f"block{stage}.")})
        depths.append(depth)
        fc1 = backbone.get(f"block{stage}.0.mlp.fc1.weight")
        ratio = fc1.shape[0] / fc1.shape[1] if fc1 is not None else 4
        mlp_ratios.append(int(ratio) if float(ratio).is_integer() else ratio)
        reduction = backbone.get(f"block{stage}.0.attn.sr.weight")
        sr_ratios.append(reduction.shape[-1] if reduction is not None else 1)
        linear = linear or (reduction is not None and reduction.shape[-1] == 1)
    if version == 1:
        strides = list(patch_sizes)
    else:
        strides = [4] + [2] * (num_stages - 1)
        patch_sizes = None  # v2 kernels follow from the strides; keep the config's defaults
    architecture = {
        "version": version,
        "linear_attention": linear,
        "hidden_sizes": hidden_sizes,
        "depths": depths,
        "mlp_ratios": mlp_ratios,
        "sr_ratios": [8, 4, 2, 1][:num_stages] if linear else sr_ratios,
        "qkv_bias": "block1.0.attn.q.bias" in backbone,
    }
    if version == 1:
        architecture["patch_sizes"] = patch_sizes
        architecture["strides"] = strides
        grid = int(round((backbone["pos_embed1"].shape[1]) ** 0.5))
        architecture["image_size"] = grid * patch_sizes[0]
    if task == "semantic-segmentation":
        architecture["neck_hidden_size"] = state_dict["neck.lateral_convs.0.conv.weight"].shape[0]
        architecture["decoder_hidden_size"] = state_dict["decode_head.conv_seg.weight"].shape[1]
        architecture["num_labels"] = state_dict["decode_head.conv_seg.weight"].shape[0]
    elif "head.weight" in state_dict:
        architecture["num_labels"] = state_dict["head.weight"].shape[0]
    return architecture


def config_from_official_args(args: dict, state_dict: dict[str, torch.Tensor], task: str) -> PvtConfig:
    """A config from the official constructor's keyword arguments (as in `shared/reference/*.json`); the version
    (v1 or v2) is read from the checkpoint, which the arguments do not name."""
    known = {
        "embed_dims", "num_heads", "mlp_ratios", "depths", "sr_ratios", "linear", "num_classes", "patch_size",
        "qkv_bias", "img_size", "layer_norm_eps", "neck_out_channels", "head_channels", "in_chans", "num_stages",
    }  # fmt: skip
    unknown = sorted(set(args) - known)
    if unknown:
        raise ConversionError(f"--official-args: unknown keys {unknown}; expected some of {sorted(known)}.")
    detected = architecture_from_state_dict(state_dict, task)
    fields = {
        "version": detected["version"],
        "linear_attention": bool(args.get("linear", False)),
        "hidden_sizes": args.get("embed_dims"),
        "num_attention_heads": args.get("num_heads"),
        "mlp_ratios": args.get("mlp_ratios"),
        "depths": args.get("depths"),
        "sr_ratios": args.get("sr_ratios"),
        "qkv_bias": args.get("qkv_bias"),
        "image_size": args.get("img_size"),
        "layer_norm_eps": args.get("layer_norm_eps"),
        "num_channels": args.get("in_chans"),
        "num_labels": args.get("num_classes"),
        "neck_hidden_size": args.get("neck_out_channels"),
        "decoder_hidden_size": args.get("head_channels"),
    }
    if "patch_size" in args and detected["version"] == 1:
        fields["patch_sizes"] = [args["patch_size"]] + [2] * (len(args.get("depths") or detected["depths"]) - 1)
    fields = {key: value for key, value in fields.items() if value is not None}
    missing = [name for name in ("embed_dims", "num_heads", "depths") if name not in args]
    if missing:
        raise ConversionError(f"--official-args must give at least {missing}.")
    try:
        return PvtConfig(**fields)
    except (TypeError, ValueError) as error:
        raise ConversionError(f"--official-args do not describe a valid PVT: {error}") from error


def config_from_variant(variant: str, state_dict: dict[str, torch.Tensor], task: str) -> PvtConfig:
    """The preset's config, with the label count (and head sizes) the checkpoint has; refuses a checkpoint whose
    shapes do not fit the preset."""
    preset = normalize_variant(variant)
    detected = architecture_from_state_dict(state_dict, task)
    expected = PvtConfig.from_preset(preset)
    mismatches = [
        f"{name}: checkpoint {detected[name]}, {preset} {getattr(expected, name)}"
        for name in ("version", "linear_attention", "hidden_sizes", "depths", "mlp_ratios", "sr_ratios")
        if detected[name] != getattr(expected, name)
    ]
    if mismatches:
        raise ConversionError(f"The checkpoint is not a {preset}: " + "; ".join(mismatches))
    overrides = {
        key: detected[key]
        for key in ("num_labels", "neck_hidden_size", "decoder_hidden_size", "image_size", "qkv_bias")
        if key in detected
    }
    return PvtConfig.from_preset(preset, **overrides)


def detect_variants(state_dict: dict[str, torch.Tensor], task: str) -> list[str]:
    """The presets whose architecture fits the checkpoint's shapes."""
    candidates = []
    for preset in PRESETS:
        try:
            config_from_variant(preset, state_dict, task)
        except ConversionError:
            continue
        candidates.append(preset)
    return candidates


# ----------------------------------------------------------------------------------------------------------------
# Weights


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module, task: str
) -> dict[str, torch.Tensor]:
    """Our state dict for `model` from an official one. Raises, listing the keys, unless every official weight is
    used and every model weight is filled with a tensor of the right shape."""
    expected = model.state_dict()
    converted, unused = {}, []
    for key, value in state_dict.items():
        new_key = rename_official_key(key, task)
        if new_key is None or new_key not in expected:
            unused.append(key)
        else:
            converted[new_key] = value
    missing = sorted(set(expected) - set(converted))
    wrong_shape = [
        f"{key}: checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)}"
        for key, value in converted.items()
        if value.shape != expected[key].shape
    ]
    problems = []
    if unused:
        problems.append(f"{len(unused)} checkpoint weights have no place in the model: {sorted(unused)}")
    if missing:
        problems.append(f"{len(missing)} model weights are not in the checkpoint: {missing}")
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} weights have the wrong shape: {wrong_shape}")
    if problems:
        raise ConversionError("The checkpoint does not match the model. " + " | ".join(problems))
    return {key: value.to(expected[key].dtype) if value.is_floating_point() else value for key, value in converted.items()}


def load_label_names(name: str) -> list[str]:
    """Class names shipped with the package: `imagenet-1k` (1000) or `ade20k` (150)."""
    text = resources.files("pvt_hf").joinpath("data", f"{name}-labels.json").read_text()
    return json.loads(text)


def label_names_for(config: PvtConfig, task: str, meta: dict) -> list[str] | None:
    classes = meta.get("CLASSES")
    if classes is not None and len(classes) == config.num_labels:
        return [str(name) for name in classes]
    if task == "classification" and config.num_labels == 1000:
        return load_label_names("imagenet-1k")
    if task == "semantic-segmentation" and config.num_labels == 150:
        return load_label_names("ade20k")
    return None


def convert_checkpoint(
    checkpoint: str | Path,
    variant: str | None = None,
    official_args: dict | None = None,
    task: str | None = None,
):
    """Load a checkpoint (see `load_checkpoint`) and convert it: see `convert_official_state_dict`."""
    state_dict, meta, folder_args = load_checkpoint(checkpoint)
    if official_args is None and variant is None:
        official_args = folder_args
    return convert_official_state_dict(state_dict, meta, variant=variant, official_args=official_args, task=task)


def convert_official_state_dict(
    state_dict: dict[str, torch.Tensor],
    meta: dict | None = None,
    variant: str | None = None,
    official_args: dict | None = None,
    task: str | None = None,
):
    """Return `(model, report)`: the converted pvt-hf model (in eval mode, sharing the checkpoint's tensors) and a
    dict saying what was detected. The architecture comes from `official_args`, else `variant`, else the shapes."""
    from .modeling_pvt import PvtForImageClassification
    from .modeling_pvt_segmentation import PvtForSemanticSegmentation

    detected_task = detect_task(state_dict)
    if task is not None and task != detected_task:
        raise ConversionError(f"--task {task}, but the checkpoint is a {detected_task} checkpoint.")
    task = detected_task
    report = {"task": task}
    if official_args is not None:
        config = config_from_official_args(official_args, state_dict, task)
        report["architecture"] = "from --official-args"
    else:
        if variant is None:
            candidates = detect_variants(state_dict, task)
            if len(candidates) != 1:
                raise ConversionError(
                    "Cannot tell the variant from the checkpoint's shapes "
                    + (f"(candidates: {', '.join(candidates)})" if candidates else "(no released variant fits)")
                    + "; pass --variant NAME or --official-args JSON."
                )
            variant = candidates[0]
            report["detected_variant"] = variant
        config = config_from_variant(variant, state_dict, task)
        report["architecture"] = normalize_variant(variant)
    names = label_names_for(config, task, meta or {})
    if names is not None:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: index for index, name in enumerate(names)}
    model_class = PvtForSemanticSegmentation if task == "semantic-segmentation" else PvtForImageClassification
    with torch.device("meta"):
        model = model_class(config)
    weights = convert_state_dict(state_dict, model, task)
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    report["num_parameters"] = sum(parameter.numel() for parameter in model.parameters())
    return model, report


__all__ = [
    "ConversionError",
    "TASKS",
    "architecture_from_state_dict",
    "config_from_official_args",
    "config_from_variant",
    "convert_checkpoint",
    "convert_official_state_dict",
    "convert_state_dict",
    "detect_variants",
    "load_checkpoint",
    "load_official_checkpoint",
    "normalize_variant",
    "rename_official_key",
]
