"""Conversion of the official PVT checkpoints (whai362/PVT classifiers, mmseg Semantic FPN models, the backbones of
mmdet detectors) to pvt-hf.

The official layouts and ours differ only in names; this module holds the one mapping between them, infers the
architecture from a checkpoint's shapes, and refuses to convert unless every official weight is used and every
model weight is filled.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from importlib import resources
from pathlib import Path

import torch

from ..configuration_pvt import PRESETS, PvtConfig, out_of_range


logger = logging.getLogger(__name__)

TASKS = ("classification", "semantic-segmentation", "backbone")

# The official mmdet detectors (RetinaNet, Mask R-CNN, Cascade Mask R-CNN, ATSS, GFL, Sparse R-CNN) hold `backbone.`
# beside their neck and heads (`neck.`, `rpn_head.`, `roi_head.`, `bbox_head.` ...), which a `PvtBackbone` leaves out.
# In a detector's `backbone.`: the parts of the classification network that the official detection backbones do not
# use (the ImageNet weights they started from may carry them); left out like the neck and heads.
_CLASSIFICATION_ONLY = re.compile(r"backbone\.(cls_token$|norm\.|head\.)")


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message says why."""


# ----------------------------------------------------------------------------------------------------------------
# Names: one table of (official, pvt-hf) pairs serves both directions: converting, and naming a missing weight as the
# checkpoint would. `{stage}` is a stage number (official: from 1, ours: from 0); `{i}` and `{j}` are other indices,
# kept as they are. A pair ending in "." names a prefix (the rest of the key is kept); otherwise the whole key.
_BLOCK_NAMES = {  # within a block
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
_BACKBONE_NAMES = [  # relative to the official backbone (classifier root, or mmseg's `backbone.`) and to `PvtModel`
    ("patch_embed{stage}.proj.", "encoder.stages.{stage}.patch_embeddings.projection."),
    ("patch_embed{stage}.norm.", "encoder.stages.{stage}.patch_embeddings.layer_norm."),
    ("pos_embed{stage}", "encoder.stages.{stage}.position_embeddings"),
    ("norm{stage}.", "encoder.stages.{stage}.layer_norm."),
    ("cls_token", "cls_token"),
    ("norm.", "layernorm."),
    *(
        (f"block{{stage}}.{{i}}.{old}", f"encoder.stages.{{stage}}.layers.{{i}}.{new}")
        for old, new in _BLOCK_NAMES.items()
    ),
]
_NAMES = {
    "classification": [("head.", "classifier."), *((old, "pvt." + new) for old, new in _BACKBONE_NAMES)],
    "semantic-segmentation": [
        *(("backbone." + old, "pvt." + new) for old, new in _BACKBONE_NAMES),
        ("neck.lateral_convs.{i}.conv.", "neck.lateral_convs.{i}."),
        ("neck.fpn_convs.{i}.conv.", "neck.output_convs.{i}."),
        ("decode_head.scale_heads.{i}.{j}.conv.", "decode_head.scale_heads.{i}.{j}.conv."),
        ("decode_head.scale_heads.{i}.{j}.bn.", "decode_head.scale_heads.{i}.{j}.batch_norm."),
        ("decode_head.conv_seg.", "decode_head.classifier."),
    ],
    # a detector's backbone, as `PvtBackbone` (no `pvt.` prefix; no cls token or final norm: see `_CLASSIFICATION_ONLY`)
    "backbone": [("backbone." + old, new) for old, new in _BACKBONE_NAMES if new not in ("cls_token", "layernorm.")],
}


@functools.cache
def _name_pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(stage|i|j)\}", template)  # literal, field, literal, field, ...
    pattern = "".join(re.escape(part) if index % 2 == 0 else rf"(?P<{part}>\d+)" for index, part in enumerate(parts))
    return re.compile(pattern + ("(?P<rest>.+)" if template.endswith(".") else ""))


def _translate(key: str, task: str, to_ours: bool) -> str | None:
    for official, ours in _NAMES[task]:
        source, target = (official, ours) if to_ours else (ours, official)
        match = _name_pattern(source).fullmatch(key)
        if match is not None:
            fields = match.groupdict()
            rest = fields.pop("rest", None) or ""
            if "stage" in fields:
                fields["stage"] = int(fields["stage"]) + (-1 if to_ours else 1)
            return target.format(**fields) + rest
    return None


def rename_official_key(key: str, task: str) -> str | None:
    """Our name for an official weight, or None if the key is not part of the official layout."""
    return _translate(key, task, to_ours=True)


def official_key(key: str, task: str) -> str | None:
    """The official name of one of our weights (as the checkpoint would have it), or None."""
    return _translate(key, task, to_ours=False)


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
    "layer_norm_1.": "norm1.",
    "layer_norm_2.": "norm2.",
    "attention.self.query.": "attn.q.",
    "attention.query.": "attn.q.",
    "attention.output.dense.": "attn.proj.",
    "attention.proj.": "attn.proj.",
    "attention.self.sequence_reduction.": "attn.sr.",
    "attention.spatial_reduction.": "attn.sr.",
    "attention.self.layer_norm.": "attn.norm.",
    "attention.layer_norm.": "attn.norm.",
    "mlp.dense1.": "mlp.fc1.",
    "mlp.dense2.": "mlp.fc2.",
}


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
        "img_size": config["image_size"][0]
        if isinstance(config.get("image_size"), list)
        else config.get("image_size", 224),
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
    meta = (
        {"CLASSES": [config["id2label"][str(i)] for i in range(len(config["id2label"]))]}
        if config.get("id2label")
        else {}
    )
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


def _pickled_callables(path: Path) -> list[str]:
    """The callables a plain (not torch.save's zip) pickle file would call when unpickled, read from its opcodes
    without running anything; [] for a file that is not such a pickle."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path):
        return []
    found, strings = [], []
    try:
        with open(path, "rb") as file:
            for opcode, argument, _ in pickletools.genops(file):
                if opcode.name == "GLOBAL":
                    found.append(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(".".join(strings[-2:]))
                elif isinstance(argument, str):
                    strings.append(argument)
    except Exception:  # not a pickle, or a damaged one: nothing to name
        return found
    return found


def _unreadable_checkpoint_message(path: Path, error: Exception) -> str:
    """Why `torch.load(path, weights_only=True)` failed, in the user's terms. torch's own message advises loading
    with `weights_only=False` -- running the file's code -- even for random bytes: never passed on."""
    text = str(error)
    safe_loading = (
        "pvt-hf reads checkpoints with torch.load(weights_only=True), which accepts only tensors, numbers, strings "
        "and containers of them, because unpickling anything else can run code from the file"
    )
    found = re.search(r"GLOBAL ([\w.]+)", text)
    callables = [found[1]] if found else _pickled_callables(path) if "Weights only load failed" in text else []
    if callables:
        blocked = found is None or re.search(r"whose module ([\w.]+) is blocked", text)
        danger = f": loading it would call {callables[0]}, running code" if blocked else ""
        return (
            f"{path} was refused as unsafe{danger}. It holds a Python object ({callables[0]}) besides tensors; "
            f"{safe_loading}. Save the state dict alone: torch.save(model.state_dict(), path)."
        )
    reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    detail = reason[1].strip() if reason else f"{type(error).__name__}: {(text.strip().splitlines() or [''])[0]}"
    return f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another format): {detail}"


def load_official_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and metadata of an official checkpoint: a raw state dict, or one wrapped in `{"model": ...}`,
    `{"state_dict": ...}` (mmseg, with `meta`). DataParallel's `module.` prefix is removed."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for truncated or foreign files
        raise ConversionError(_unreadable_checkpoint_message(path, error)) from error
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not a state dict.")
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    else:
        wrapper = None
    state_dict = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    if not state_dict:
        where = f"its `{wrapper}` entry is empty" if wrapper else "it is an empty dict"
        raise ConversionError(f"{path} holds no weights: {where}; expected a state dict of the model's tensors.")
    not_tensors = [key for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(
            f"{path} is not a state dict of tensors: {len(not_tensors)} entries are no tensors "
            f"({', '.join(map(repr, not_tensors[:5]))}{', ...' if len(not_tensors) > 5 else ''})."
        )
    return state_dict, meta


def detect_task(state_dict: dict[str, torch.Tensor]) -> str:
    """`semantic-segmentation` for an mmseg Semantic FPN checkpoint (`decode_head.`), `backbone` for the other
    `backbone.`-prefixed ones (mmdet detectors: `backbone.` with `neck.`, `rpn_head.`, `roi_head.` ...), else
    `classification`."""
    if any(key.startswith("decode_head.") for key in state_dict):
        return "semantic-segmentation"
    if any(key.startswith("backbone.") for key in state_dict):
        return "backbone"
    return "classification"


def _describe_task(task: str, state_dict: dict[str, torch.Tensor]) -> str:
    if task != "backbone":
        return f"a {task} checkpoint"
    parts = sorted({key.split(".")[0] for key in state_dict if not key.startswith("backbone.")})
    return (
        "a detection checkpoint (`backbone.` weights"
        + (f" with the detector's {', '.join(parts)}" if parts else "")
        + "): only its backbone converts, with --task backbone (the default for it)"
    )


def split_detection_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """A detection checkpoint's backbone weights (keys still under `backbone.`), and how many tensors are left out,
    by prefix: the neck and heads by their top-level name (`neck`, `rpn_head`, ...), the classification-only backbone
    parts by theirs (`backbone.cls_token`, `backbone.norm`, `backbone.head`)."""
    backbone, left_out = {}, {}
    for key, value in state_dict.items():
        if key.startswith("backbone.") and _CLASSIFICATION_ONLY.match(key) is None:
            backbone[key] = value
            continue
        prefix = ".".join(key.split(".")[:2]) if key.startswith("backbone.") else key.split(".")[0]
        left_out[prefix] = left_out.get(prefix, 0) + 1
    return backbone, left_out


def left_out_summary(left_out: dict[str, int]) -> str:
    """`left out 212 detection neck/head tensors (neck: 16, rpn_head: 7, roi_head: 189)`, from
    `split_detection_state_dict`'s counts."""
    heads = {prefix: count for prefix, count in left_out.items() if not prefix.startswith("backbone.")}
    unused = {prefix: count for prefix, count in left_out.items() if prefix.startswith("backbone.")}
    parts = []
    if heads:
        listed = ", ".join(f"{prefix}: {count}" for prefix, count in heads.items())
        parts.append(f"{sum(heads.values())} detection neck/head tensors ({listed})")
    if unused:
        listed = ", ".join(f"{prefix}: {count}" for prefix, count in unused.items())
        parts.append(
            f"{sum(unused.values())} classification-only backbone tensors the detection backbone does not use ({listed})"
        )
    return "left out " + " and ".join(parts) if parts else "left out nothing: the checkpoint holds only the backbone"


def _check_pvt_backbone(state_dict: dict[str, torch.Tensor], source: str | None) -> None:
    """A detector's `backbone.` must be a PVT: a ResNet's or Swin's is refused by name, before the shapes are read."""
    if "backbone.patch_embed1.proj.weight" in state_dict:
        return
    found = sorted(key for key in state_dict if key.startswith("backbone."))
    raise ConversionError(
        f"{source or 'The checkpoint'} is a detection checkpoint whose backbone is not a PVT: its `backbone.` weights "
        f"are {', '.join(found[:3])}{', ...' if len(found) > 3 else ''} ({len(found)} tensors); expected the official "
        "PVT v1 / v2 keys, `backbone.patch_embed1.proj.weight`, `backbone.block1.0.attn.q.weight`, "
        "`backbone.norm1.weight` (v2) or `backbone.pos_embed1` (v1), ..."
    )


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
    if task in ("semantic-segmentation", "backbone"):
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
        for key in ("neck.lateral_convs.0.conv.weight", "decode_head.conv_seg.weight"):
            if key not in state_dict:
                raise ConversionError(
                    f"No `{key}` in the checkpoint: an mmseg Semantic FPN checkpoint has it (the checkpoint has "
                    "`decode_head.` keys, so it was taken for one)."
                )
        architecture["neck_hidden_size"] = state_dict["neck.lateral_convs.0.conv.weight"].shape[0]
        architecture["decoder_hidden_size"] = state_dict["decode_head.conv_seg.weight"].shape[1]
        architecture["num_labels"] = state_dict["decode_head.conv_seg.weight"].shape[0]
    elif "head.weight" in state_dict:
        architecture["num_labels"] = state_dict["head.weight"].shape[0]
    return architecture


_OFFICIAL_PER_STAGE = ("embed_dims", "num_heads", "mlp_ratios", "depths", "sr_ratios")
_OFFICIAL_COUNTS = (
    "num_classes",
    "patch_size",
    "img_size",
    "in_chans",
    "num_stages",
    "neck_out_channels",
    "head_channels",
)
_OFFICIAL_FLAGS = ("linear", "qkv_bias")
OFFICIAL_ARG_NAMES = (*_OFFICIAL_PER_STAGE, *_OFFICIAL_COUNTS, *_OFFICIAL_FLAGS, "layer_norm_eps")
_OFFICIAL_TO_CONFIG = {  # the `PvtConfig` setting whose bounds (`configuration_pvt.LIMITS`) each count takes
    "embed_dims": "hidden_sizes",
    "num_heads": "num_attention_heads",
    "mlp_ratios": "mlp_ratios",
    "depths": "depths",
    "sr_ratios": "sr_ratios",
    "num_classes": "num_labels",
    "patch_size": "patch_sizes",
    "img_size": "image_size",
    "in_chans": "num_channels",
    "num_stages": "num_stages",
    "neck_out_channels": "neck_hidden_size",
    "head_channels": "decoder_hidden_size",
}


def _is_positive(value, kinds=(int,)) -> bool:
    return isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def validate_official_args(args) -> dict:
    """Check the official constructor's keyword arguments (`--official-args`): the names it knows, per-stage lists of
    positive numbers of one length, positive counts, booleans. Raises ConversionError naming what is wrong."""
    if not isinstance(args, dict):
        raise ConversionError(
            f"--official-args must be a JSON object of the official constructor's keyword arguments, got "
            f"{type(args).__name__} {str(args)[:60]}"
        )
    problems = []
    unknown = sorted(set(args) - set(OFFICIAL_ARG_NAMES))
    if unknown:
        problems.append(f"unknown keys {unknown} (expected some of {sorted(OFFICIAL_ARG_NAMES)})")
    missing = [name for name in ("embed_dims", "num_heads", "depths") if name not in args]
    if missing:
        problems.append(f"it must give at least {missing}")
    for name in _OFFICIAL_PER_STAGE:
        kinds = (int, float) if name == "mlp_ratios" else (int,)
        values = args.get(name, [1])
        if not isinstance(values, list) or not values or not all(_is_positive(value, kinds) for value in values):
            problems.append(
                f"{name} must be a list of positive {'numbers' if name == 'mlp_ratios' else 'integers'}, one per stage, got {values!r}"
            )
        elif (problem := out_of_range(_OFFICIAL_TO_CONFIG[name], values)) is not None:
            problems.append(f"{name} {problem}")  # PvtConfig's bounds, checked before the checkpoint is read
    lengths = {name: len(args[name]) for name in _OFFICIAL_PER_STAGE if isinstance(args.get(name), list)}
    if len(set(lengths.values())) > 1:
        problems.append(f"the per-stage lists must have one length, got {lengths}")
    for name in _OFFICIAL_COUNTS:
        if name in args and not _is_positive(args[name]):
            problems.append(f"{name} must be a positive integer, got {args[name]!r}")
        elif name in args and (problem := out_of_range(_OFFICIAL_TO_CONFIG[name], args[name])) is not None:
            problems.append(f"{name} {problem}")
    if "num_stages" in args and lengths and args["num_stages"] not in lengths.values():
        problems.append(f"num_stages {args['num_stages']!r} does not match the per-stage lists {lengths}")
    for name in _OFFICIAL_FLAGS:
        if name in args and not isinstance(args[name], bool):
            problems.append(f"{name} must be true or false, got {args[name]!r}")
    if "layer_norm_eps" in args and not _is_positive(args["layer_norm_eps"], (int, float)):
        problems.append(f"layer_norm_eps must be a positive number, got {args['layer_norm_eps']!r}")
    if problems:
        raise ConversionError("--official-args: " + "; ".join(problems) + ".")
    return args


def config_from_official_args(args: dict, state_dict: dict[str, torch.Tensor], task: str) -> PvtConfig:
    """A config from the official constructor's keyword arguments (as in `tests/fixtures/reference/*.json`); the
    version (v1 or v2) is read from the checkpoint, which the arguments do not name."""
    validate_official_args(args)
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
    if task == "backbone":  # a backbone has no classes and no Semantic FPN head: their sizes are not its
        fields.update(num_labels=None, neck_hidden_size=None, decoder_hidden_size=None)
    if "patch_size" in args and detected["version"] == 1:
        fields["patch_sizes"] = [args["patch_size"]] + [2] * (len(args.get("depths") or detected["depths"]) - 1)
    fields = {key: value for key, value in fields.items() if value is not None}
    try:
        return PvtConfig(**fields)
    except (TypeError, ValueError) as error:
        raise ConversionError(f"--official-args do not describe a valid PVT: {error}") from error


def _variant_mismatches(preset: str, detected: dict) -> list[str]:
    expected = PvtConfig.from_preset(preset)
    return [
        f"{name}: checkpoint {detected[name]}, {preset} {getattr(expected, name)}"
        for name in ("version", "linear_attention", "hidden_sizes", "depths", "mlp_ratios", "sr_ratios")
        if detected[name] != getattr(expected, name)
    ]


def _preset_config(preset: str, detected: dict) -> PvtConfig:
    overrides = {
        key: detected[key]
        for key in ("num_labels", "neck_hidden_size", "decoder_hidden_size", "image_size", "qkv_bias")
        if key in detected
    }
    try:
        return PvtConfig.from_preset(preset, **overrides)
    except ValueError as error:  # e.g. a head of more classes than PvtConfig accepts
        raise ConversionError(f"The checkpoint's shapes do not describe a valid {preset}: {error}") from error


# A checkpoint that differs from a preset in at most this many tensors' shapes is taken for that preset with
# damaged or edited weights, and the tensors are named (rather than the architecture settings they would imply).
_FEW_WRONG_SHAPES = 5


def _wrong_shapes(state_dict: dict[str, torch.Tensor], task: str, preset: str, detected: dict) -> list[str] | None:
    """The checkpoint's tensors whose shapes differ from a `preset` model's (`name: checkpoint (..), preset (..)`),
    or None when the two do not even hold the same weights."""
    if detected["depths"] != PRESETS[preset]["depths"]:  # other layers: not the same weights
        return None
    try:
        config = _preset_config(preset, detected)
    except ConversionError:
        return None
    with torch.device("meta"):
        model = _model_class(task)(config)
    expected = {official_key(key, task): value.shape for key, value in model.state_dict().items()}
    if set(expected) != set(state_dict):
        return None
    return [
        f"{key}: checkpoint {tuple(value.shape)}, {preset} {tuple(expected[key])}"
        for key, value in state_dict.items()
        if value.shape != expected[key]
    ]


def _name_wrong_shapes(state_dict: dict[str, torch.Tensor], task: str, presets, detected: dict) -> str:
    """`: <tensors>` when the checkpoint is one of `presets` but for a few wrong-shaped tensors, else ''."""
    fits = {preset: _wrong_shapes(state_dict, task, preset, detected) for preset in presets}
    fits = {preset: wrong for preset, wrong in fits.items() if wrong and len(wrong) <= _FEW_WRONG_SHAPES}
    if not fits:
        return ""
    preset = min(fits, key=lambda name: len(fits[name]))
    wrong = fits[preset]
    return (
        f". Its other weights fit a {preset}, but {len(wrong)} {'tensor has' if len(wrong) == 1 else 'tensors have'} "
        "the wrong shape (damaged or edited?): " + "; ".join(wrong)
    )


def config_from_variant(variant: str, state_dict: dict[str, torch.Tensor], task: str) -> PvtConfig:
    """The preset's config, with the label count (and head sizes) the checkpoint has; refuses a checkpoint whose
    shapes do not fit the preset, naming the tensors when only a few differ."""
    preset = normalize_variant(variant)
    detected = architecture_from_state_dict(state_dict, task)
    mismatches = _variant_mismatches(preset, detected)
    if mismatches:
        raise ConversionError(
            f"--variant {variant}: the checkpoint is not a {preset}: "
            + "; ".join(mismatches)
            + _name_wrong_shapes(state_dict, task, [preset], detected)
        )
    return _preset_config(preset, detected)


def detect_variants(state_dict: dict[str, torch.Tensor], task: str) -> list[str]:
    """The presets whose architecture fits the checkpoint's shapes."""
    detected = architecture_from_state_dict(
        state_dict, task
    )  # a checkpoint that fits none for a reason of its own says so here
    return [preset for preset in PRESETS if not _variant_mismatches(preset, detected)]


# ----------------------------------------------------------------------------------------------------------------
# Weights


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], model: torch.nn.Module, task: str
) -> dict[str, torch.Tensor]:
    """Our state dict for `model` from an official one. Raises, naming the keys as the checkpoint names them, unless
    every official weight is used, every model weight is filled with a tensor of the right shape, and every value is
    finite."""
    expected = model.state_dict()
    converted, unused, sources = {}, [], {}
    for key, value in state_dict.items():
        new_key = rename_official_key(key, task)
        if new_key is None or new_key not in expected:
            unused.append(key)
        else:
            converted[new_key], sources[new_key] = value, key
    missing = [f"{official_key(key, task) or '?'} (pvt-hf: {key})" for key in sorted(set(expected) - set(converted))]
    wrong_shape = [
        f"{sources[key]}: checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)}"
        for key, value in converted.items()
        if value.shape != expected[key].shape
    ]
    wrong_dtype = [
        f"{sources[key]}: checkpoint {str(value.dtype).removeprefix('torch.')}, expected floating point"
        for key, value in converted.items()
        if expected[key].is_floating_point() and not value.is_floating_point()
    ]
    problems = []
    if unused:
        problems.append(f"{len(unused)} checkpoint weights have no place in the model: {sorted(unused)}")
    if missing:
        problems.append(
            f"{len(missing)} weights the model needs are missing from the checkpoint: {', '.join(missing)}"
        )
    if wrong_shape:
        problems.append(f"{len(wrong_shape)} weights have the wrong shape: {wrong_shape}")
    if wrong_dtype:
        problems.append(
            f"{len(wrong_dtype)} weights are not floating-point tensors (float32, float16 or bfloat16): "
            + ", ".join(wrong_dtype)
        )
    if problems:
        raise ConversionError("The checkpoint does not match the model. " + " | ".join(problems))
    not_finite = [
        f"{sources[key]} ({int(value.isnan().sum())} NaN, {int(value.isinf().sum())} infinite)"
        for key, value in converted.items()
        if value.is_floating_point() and not bool(value.isfinite().all())
    ]
    if not_finite:
        raise ConversionError(f"The checkpoint holds NaN or infinite values, in {', '.join(not_finite)}: refused.")
    return {
        key: value.to(expected[key].dtype) if value.is_floating_point() else value for key, value in converted.items()
    }


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
    return convert_official_state_dict(
        state_dict, meta, variant=variant, official_args=official_args, task=task, source=str(checkpoint)
    )


def _model_class(task: str) -> type:
    from ..modeling_pvt import PvtBackbone, PvtForImageClassification
    from ..modeling_pvt_segmentation import PvtForSemanticSegmentation

    return {"semantic-segmentation": PvtForSemanticSegmentation, "backbone": PvtBackbone}.get(
        task, PvtForImageClassification
    )


def convert_official_state_dict(
    state_dict: dict[str, torch.Tensor],
    meta: dict | None = None,
    variant: str | None = None,
    official_args: dict | None = None,
    task: str | None = None,
    source: str | None = None,
):
    """Return `(model, report)`: the converted pvt-hf model (in eval mode, sharing the checkpoint's tensors) and a
    dict saying what was detected. The architecture comes from `official_args`, else `variant`, else the shapes.

    A detection checkpoint (task `backbone`) becomes a `PvtBackbone` returning all four stages; its neck and heads
    are left out, counted by prefix in `report["left_out"]` (see `left_out_summary`). `source`: the file's name, for
    messages."""
    detected_task = detect_task(state_dict)
    if task is not None and task != detected_task:
        hint = (
            " (a converted classifier or Semantic FPN folder serves as a backbone as it is: "
            "PvtBackbone.from_pretrained(folder) or pvt_hf.load_pretrained_backbone)"
            if task == "backbone"
            else ""
        )
        raise ConversionError(
            f"--task {task}, but {source or 'the checkpoint'} is {_describe_task(detected_task, state_dict)}{hint}."
        )
    task = detected_task
    report = {"task": task}
    if task == "backbone":
        _check_pvt_backbone(state_dict, source)
        state_dict, report["left_out"] = split_detection_state_dict(state_dict)
    if official_args is not None:
        config = config_from_official_args(official_args, state_dict, task)
        report["architecture"] = "from --official-args"
    else:
        if variant is None:
            candidates = detect_variants(state_dict, task)
            if len(candidates) != 1:
                wrong_shapes = (
                    ""
                    if candidates
                    else _name_wrong_shapes(state_dict, task, PRESETS, architecture_from_state_dict(state_dict, task))
                )
                raise ConversionError(
                    "Cannot tell the variant from the checkpoint's shapes "
                    + (f"(candidates: {', '.join(candidates)})" if candidates else "(no released variant fits)")
                    + (wrong_shapes or "; pass --variant NAME or --official-args JSON.")
                )
            variant = candidates[0]
            report["detected_variant"] = variant
        config = config_from_variant(variant, state_dict, task)
        report["architecture"] = normalize_variant(variant)
    if task == "backbone":
        config.out_features = list(config.stage_names)  # every stage, as the official detectors' FPN necks take them
    names = label_names_for(config, task, meta or {}) if task != "backbone" else None
    if names is not None:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: index for index, name in enumerate(names)}
    with torch.device("meta"):
        model = _model_class(task)(config)
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
    "detect_task",
    "detect_variants",
    "left_out_summary",
    "load_checkpoint",
    "load_official_checkpoint",
    "normalize_variant",
    "official_key",
    "validate_official_args",
    "rename_official_key",
    "split_detection_state_dict",
]
