# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Seeing what a PVT model sees: attention maps, Grad-CAM and coloured overlays (tooling; not part of the remote code).

PVT's spatial-reduction attention lets every query token read a *reduced* set of keys: a strided convolution's output
(`sr_ratio` > 1: the stage grid divided by sr, rounded down), v2-linear's `linear_pool_size` x `linear_pool_size`
average pool, or the full grid (sr 1; v1 adds its cls token in the last stage of classifiers). `attention_maps` puts
each key's weight back on the stage tokens it was made from, then on the image, so that a map shows where a query
looks. `class_activation_map` is Grad-CAM on the last stage, `overlay` draws a class-index mask (with a legend of the
classes present) or a heatmap over the image. Only numpy, Pillow and torch are needed.
"""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


DATA_DIR = Path(__file__).resolve().parents[1] / "data"
IGNORE_INDEX = 255  # unlabelled pixels of a mask: left uncoloured

# Anchors of the viridis colormap (0, 1/4, 1/2, 3/4, 1), linearly interpolated: perceptually ordered, readable in grey.
HEATMAP_ANCHORS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)


@cache
def ade20k_palette() -> np.ndarray:
    """The official ADE20K colours of the 150 classes (class index order after `reduce_zero_label`), (150, 3) uint8."""
    return np.array(json.loads((DATA_DIR / "ade20k-palette.json").read_text())["palette"], np.uint8)


@cache
def ade20k_labels() -> tuple[str, ...]:
    return tuple(json.loads((DATA_DIR / "ade20k-labels.json").read_text()))


def distinct_colors(count: int) -> np.ndarray:
    """`count` distinct, saturated colours (golden-ratio hue steps, alternating brightness), (count, 3) uint8."""
    colors = []
    for index in range(count):
        hue = (index * 0.6180339887) % 1.0
        saturation = 0.9 - 0.25 * ((index // 2) % 2)
        value = 1.0 - 0.3 * (index % 2)
        colors.append([round(channel * 255) for channel in colorsys.hsv_to_rgb(hue, saturation, value)])
    return np.array(colors, np.uint8).reshape(count, 3)


def resolve_palette(palette, num_classes: int) -> np.ndarray:
    """`palette` as a (num_classes, 3) uint8 array: "ade20k", a list of RGB triples, or None (generated colours)."""
    if palette is None:
        return distinct_colors(num_classes)
    if isinstance(palette, str):
        if palette.lower() != "ade20k":
            raise ValueError(f"palette: expected 'ade20k', a list of RGB triples or None, got {palette!r}")
        colors = ade20k_palette()
    else:
        colors = np.asarray(palette)
        if colors.ndim != 2 or colors.shape[1] != 3 or colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise ValueError(f"palette: expected a list of (R, G, B) triples of 0-255, got shape {colors.shape}")
        colors = colors.astype(np.uint8)
    if len(colors) < num_classes:
        raise ValueError(f"palette: {len(colors)} colours for class indices up to {num_classes - 1}")
    return colors


# ------------------------------------------------------------------------------------------------ the model's geometry
def find_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The PVT encoder (its `stages`) inside any PVT model: base, classifier, backbone, segmentation, remote code."""
    for module in model.modules():
        if hasattr(module, "stage_grid_sizes") and hasattr(module, "stages"):
            return module
    raise ValueError(f"model: no PVT encoder found in {type(model).__name__}")


def _layer_index(encoder: torch.nn.Module, stage: int, layer: int) -> tuple[int, int]:
    """(0-based stage, 0-based layer in it) for a 1-based `stage` and a 1-based (or negative, from the end) `layer`."""
    num_stages = len(encoder.stages)
    if not 1 <= stage <= num_stages:
        raise ValueError(f"stage: expected 1 to {num_stages}, got {stage}")
    depth = len(encoder.stages[stage - 1].layers)
    if not (1 <= layer <= depth or -depth <= layer <= -1):
        raise ValueError(
            f"layer: stage {stage} has {depth} layer(s); expected 1 to {depth} (or -1 for the last), got {layer}"
        )
    return stage - 1, layer - 1 if layer > 0 else depth + layer


def _coverage(length: int, module_kind: str, size: int) -> torch.Tensor:
    """(keys, length) 0/1 matrix along one axis: which stage tokens each reduced key was made from."""
    if module_kind == "pool":  # AdaptiveAvgPool2d: bin i averages [floor(i L / o), ceil((i + 1) L / o))
        index = torch.arange(size)
        start, end = (index * length) // size, ((index + 1) * length + size - 1) // size
    elif (
        module_kind == "conv"
    ):  # kernel = stride = sr, no padding: key i reads [i sr, (i + 1) sr), the rest is dropped
        start = torch.arange((length - size) // size + 1) * size
        end = start + size
    else:
        start = torch.arange(length)
        end = start + 1
    positions = torch.arange(length)
    return ((positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])).double()


@dataclass
class KeyLayout:
    """Where the keys of one attention layer come from. `reduction`: "conv" (strided, `size` = sr), "pool"
    (v2-linear, `size` = the pool's output size) or "none"; `key_grid`: the reduced (rows, columns)."""

    stage_grid: tuple[int, int]
    reduction: str
    size: int
    key_grid: tuple[int, int]

    def coverage(self) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            _coverage(self.stage_grid[0], self.reduction, self.size),
            _coverage(self.stage_grid[1], self.reduction, self.size),
        )


def key_layout(model: torch.nn.Module, stage: int, layer: int, height: int, width: int) -> KeyLayout:
    """The token grid and reduced key grid of `stage`'s `layer` (1-based) for a `height` x `width` input."""
    encoder = find_encoder(model)
    stage_index, layer_index = _layer_index(encoder, stage, layer)
    stage_grid = tuple(encoder.stage_grid_sizes(height, width)[stage_index])
    attention = encoder.stages[stage_index].layers[layer_index].attention
    if attention.pool is not None:
        output_size = attention.pool.output_size
        size = output_size if isinstance(output_size, int) else output_size[0]
        return KeyLayout(stage_grid, "pool", size, (size, size))
    if attention.spatial_reduction is not None:
        sr = attention.spatial_reduction.stride[0]
        key_grid = tuple((length - sr) // sr + 1 for length in stage_grid)
        return KeyLayout(stage_grid, "conv", sr, key_grid)
    return KeyLayout(stage_grid, "none", 1, stage_grid)


def keys_to_tokens(key_weights: torch.Tensor, layout: KeyLayout) -> torch.Tensor:
    """(..., key rows * key columns) weights -> (..., stage rows, stage columns): each token gets the weight of the key
    made from it (the mean of the keys, where v2-linear's pooling windows overlap; NaN for the last rows/columns a
    strided reduction leaves out: no key reads them)."""
    rows, columns = layout.coverage()
    keys = key_weights.double().reshape(*key_weights.shape[:-1], *layout.key_grid)
    summed = rows.transpose(0, 1) @ keys @ columns
    counts = rows.sum(0)[:, None] * columns.sum(0)[None, :]
    return torch.where(counts > 0, summed / counts.clamp(min=1), torch.full_like(summed, float("nan"))).to(
        key_weights.dtype
    )


def _to_image(token_maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, ..., h, w) stage-grid maps -> (B, ..., height, width), bilinear (token centres on pixel centres)."""
    leading = token_maps.shape[:-2]
    flat = token_maps.reshape(-1, 1, *token_maps.shape[-2:]).float()
    upsampled = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return upsampled.reshape(*leading, height, width)


def query_token(query: tuple[int, int], height: int, width: int, stage_grid: tuple[int, int]) -> int:
    """The stage token (row-major index) under image pixel `query` = (y, x)."""
    y, x = query
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"query: pixel (y={y}, x={x}) is outside the {height}x{width} input")
    row = min(int(y * stage_grid[0] / height), stage_grid[0] - 1)
    column = min(int(x * stage_grid[1] / width), stage_grid[1] - 1)
    return row * stage_grid[1] + column


# ------------------------------------------------------------------------------------------------ attention maps
def attention_maps(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    stage: int,
    layer: int = -1,
    query: tuple[int, int] | str | None = None,
    heads: str = "mean",
) -> torch.Tensor:
    """Where the queries of `stage`'s `layer` (1-based; negative: from the stage's end) look, as maps of the input's
    size: (B, height, width) with `heads="mean"` (the mean over heads), (B, num_heads, height, width) with `"all"`.

    `query`: an input pixel (y, x) (the query token under it), "cls" (v1 classifiers' cls token, last stage), or None
    (the mean over all patch queries). Keys are placed on the stage tokens they were reduced from (see
    `keys_to_tokens`); a cls key's weight is left out. Values are attention weights (per head, a query's weights sum
    to 1 over the keys). Pixels of tokens that no key was made from (a strided reduction drops the last rows/columns
    of a grid that is not a multiple of sr) are NaN."""
    if heads not in ("mean", "all"):
        raise ValueError(f"heads: expected 'mean' or 'all', got {heads!r}")
    height, width = pixel_values.shape[-2:]
    layout = key_layout(model, stage, layer, height, width)
    encoder = find_encoder(model)
    stage_index, layer_index = _layer_index(encoder, stage, layer)
    flat_index = sum(len(s.layers) for s in encoder.stages[:stage_index]) + layer_index
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, output_attentions=True)
    if getattr(outputs, "attentions", None) is None:
        raise ValueError(f"model: {type(model).__name__} returned no attention weights for output_attentions=True")
    weights = outputs.attentions[flat_index].float()  # (B, heads, queries, keys)
    num_tokens = layout.stage_grid[0] * layout.stage_grid[1]
    num_keys = layout.key_grid[0] * layout.key_grid[1]
    has_cls = weights.shape[-2] == num_tokens + 1
    if weights.shape[-2] != num_tokens + int(has_cls) or weights.shape[-1] != num_keys + int(has_cls):
        raise ValueError(
            f"attention of stage {stage} layer {layer} has shape {tuple(weights.shape)}; expected "
            f"{num_tokens} (+1 cls) queries on the {layout.stage_grid} grid and {num_keys} keys on {layout.key_grid}"
        )
    if has_cls:
        cls_weights, weights = weights[:, :, 0], weights[:, :, 1:, 1:]
    if query is None:
        selected = weights.mean(dim=2)
    elif isinstance(query, str):
        if query != "cls" or not has_cls:
            raise ValueError(
                f"query: 'cls' needs a layer with a cls token (v1 classifiers, last stage); got {query!r}"
            )
        selected = cls_weights[..., 1:]
    else:
        selected = weights[:, :, query_token(tuple(query), height, width, layout.stage_grid)]
    if heads == "mean":
        selected = selected.mean(dim=1)
    return _to_image(keys_to_tokens(selected, layout), height, width)


# ------------------------------------------------------------------------------------------------ Grad-CAM
def class_activation_map(
    model: torch.nn.Module, pixel_values: torch.Tensor, target: int | str | list | None = None
) -> torch.Tensor:
    """Grad-CAM for a PVT classifier on the last stage: ReLU of the stage-4 channels weighted by the mean gradient
    of the `target` class's logit, as (B, height, width) maps in [0, 1]. `target`: a class index or label (one, or one
    per image); None: each image's top class. v2 uses the stage-4 output map; v1, whose classifier reads the cls token,
    the patch tokens entering the last block (where they reach the cls token)."""
    encoder = find_encoder(model)
    last_stage, captured = encoder.stages[-1], {}

    def capture_layer_input(module, args):
        tokens, height, width = args[0], args[1], args[2]
        if tokens.shape[1] == height * width + 1:  # the cls token first
            captured["map"] = tokens
            captured["grid"] = (height, width)

    def capture_stage_output(module, args, output):
        captured.setdefault("map", output[0])

    hooks = [
        last_stage.layers[-1].register_forward_pre_hook(capture_layer_input),
        last_stage.register_forward_hook(capture_stage_output),
    ]
    try:
        with torch.enable_grad():
            logits = model(pixel_values=pixel_values.detach().requires_grad_(True)).logits
            targets = _class_targets(model, target, logits)
            score = logits.gather(1, targets[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, captured["map"])
    finally:
        for hook in hooks:
            hook.remove()
    features = captured["map"].detach()
    if "grid" in captured:  # (B, 1 + h*w, C) tokens -> (B, C, h, w) maps, the cls token left out
        rows, columns = captured["grid"]
        features, gradient = (
            t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, rows, columns) for t in (features, gradient)
        )
    channel_weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((channel_weights * features).sum(dim=1))
    cam = _to_image(cam, *pixel_values.shape[-2:])
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12)
    return (cam / peak[:, None, None]).clamp(0, 1)


def _class_targets(model: torch.nn.Module, target, logits: torch.Tensor) -> torch.Tensor:
    if target is None:
        return logits.argmax(dim=-1)
    targets = target if isinstance(target, (list, tuple)) else [target] * logits.shape[0]
    if len(targets) != logits.shape[0]:
        raise ValueError(f"target: {len(targets)} targets for {logits.shape[0]} images")
    label2id = getattr(model.config, "label2id", None) or {}
    indices = []
    for item in targets:
        index = label2id.get(item) if isinstance(item, str) else int(item)
        if index is None or not 0 <= index < logits.shape[-1]:
            raise ValueError(
                f"target: {item!r} is not a class of this model (indices 0-{logits.shape[-1] - 1}, or a label)"
            )
        indices.append(index)
    return torch.tensor(indices, device=logits.device)


# ------------------------------------------------------------------------------------------------ drawing
@dataclass
class LegendEntry:
    index: int
    label: str
    color: tuple[int, int, int]
    fraction: float  # of the labelled pixels


def legend_entries(mask: np.ndarray, colors: np.ndarray, labels=None) -> list[LegendEntry]:
    """The classes present in `mask` (ignore index left out), largest first."""
    values, counts = np.unique(mask[mask != IGNORE_INDEX], return_counts=True)
    total = max(int(counts.sum()), 1)
    entries = []
    for value, count in sorted(zip(values.tolist(), counts.tolist()), key=lambda pair: (-pair[1], pair[0])):
        label = _label_of(labels, value)
        entries.append(LegendEntry(value, label, tuple(int(c) for c in colors[value]), count / total))
    return entries


def _label_of(labels, index: int) -> str:
    if labels is None:
        return str(index)
    if isinstance(labels, dict):
        return str(labels.get(index, labels.get(str(index), index)))
    return str(labels[index]) if index < len(labels) else str(index)


def heatmap_colors(values: np.ndarray) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 colours, scaled so that the map's minimum and maximum span the colormap
    (NaN: the lowest colour)."""
    values = np.asarray(values, np.float64)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    scaled = np.where(finite, (values - low) / (high - low) if high > low else 0.0, 0.0)
    position = scaled * (len(HEATMAP_ANCHORS) - 1)
    lower = np.clip(np.floor(position).astype(int), 0, len(HEATMAP_ANCHORS) - 2)
    fraction = (position - lower)[..., None]
    colors = HEATMAP_ANCHORS[lower] * (1 - fraction) + HEATMAP_ANCHORS[lower + 1] * fraction
    return np.rint(colors).astype(np.uint8)


def _as_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"image: expected a PIL image or a uint8 (H, W[, 3]) array, got dtype {array.dtype}")
    return Image.fromarray(array).convert("RGB")


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"mask_or_heatmap: expected one (H, W) map, got shape {values.shape}")
    return values


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_legend(entries: list[LegendEntry], height: int) -> Image.Image:
    """A white panel listing `entries` (swatch, label, area), at least `height` pixels high."""
    font_size = 14
    font, line = _font(font_size), font_size + 8
    texts = [f"{entry.label}  {entry.fraction:.1%}" for entry in entries] or ["(no class)"]
    text_width = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)) for text in texts)
    panel = Image.new("RGB", (line + text_width + 16, max(height, line * len(texts) + 8)), "white")
    draw = ImageDraw.Draw(panel)
    for row, (text, entry) in enumerate(zip(texts, entries or [None])):
        top = 4 + row * line
        if entry is not None:
            draw.rectangle([4, top + 2, 4 + line - 8, top + line - 6], fill=entry.color, outline="black")
        draw.text((line + 4, top + 2), text, fill="black", font=font)
    return panel


def overlay(
    image,
    mask_or_heatmap,
    palette="ade20k",
    labels=None,
    alpha: float = 0.5,
    legend: bool = True,
    query: tuple[int, int] | None = None,
) -> Image.Image:
    """`image` with `mask_or_heatmap` drawn over it (resized to the image if needed).

    An integer (H, W) mask of class indices is coloured with `palette` ("ade20k": the official ADE20K colours; a list
    of RGB triples; None: generated distinct colours), pixels equal to 255 left as they are; with `legend`, a panel
    listing the classes present (`labels`: a list or id -> name dict; default: the indices) with their share of the
    labelled area is attached on the right. A float map is drawn as a heatmap (viridis, min to max; NaN pixels left as
    they are) at the image's size; `query` (y, x) marks a pixel on it."""
    picture = _as_image(image)
    values = _as_array(mask_or_heatmap)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    integer_mask = values.dtype == bool or np.issubdtype(values.dtype, np.integer)
    if values.shape != (picture.height, picture.width):
        resample = Image.NEAREST if integer_mask else Image.BILINEAR
        source = Image.fromarray(values.astype(np.int32 if integer_mask else np.float32))
        values = np.asarray(source.resize((picture.width, picture.height), resample))
    base = np.asarray(picture, np.float64)
    if integer_mask:
        values = values.astype(np.int64)
        if values.min(initial=0) < 0:
            raise ValueError("mask_or_heatmap: class indices must not be negative")
        present = values[values != IGNORE_INDEX]
        colors = resolve_palette(palette, int(present.max(initial=-1)) + 1)
        colored = np.where(
            (values != IGNORE_INDEX)[..., None], colors[np.where(values == IGNORE_INDEX, 0, values)], base
        )
        blended = Image.fromarray(np.rint(base * (1 - alpha) + colored * alpha).astype(np.uint8))
        if not legend:
            return blended
        panel = draw_legend(legend_entries(values, colors, labels), blended.height)
        canvas = Image.new("RGB", (blended.width + panel.width, max(blended.height, panel.height)), "white")
        canvas.paste(blended, (0, 0))
        canvas.paste(panel, (blended.width, 0))
        return canvas
    blended = np.rint(base * (1 - alpha) + heatmap_colors(values) * alpha)
    blended = Image.fromarray(np.where(np.isfinite(values)[..., None], blended, base).astype(np.uint8))  # NaN: as is
    if query is not None:
        y, x = query
        radius = max(2, min(blended.size) // 40)
        draw = ImageDraw.Draw(blended)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline="white", width=max(1, radius // 2))
        draw.point((x, y), fill="red")
    return blended


# ------------------------------------------------------------------------------------------------ pictures of a model
MIN_MAP_SIZE = 224


def default_map_size(image_processor) -> int:
    """The input size (short side) for attention maps and Grad-CAM: the processor's own, but at least 224, where
    every stage has several keys (at the shipped digits model's 32 px, sr 8 / 4 / 2 / 1 leave one key per stage)."""
    size = getattr(image_processor, "size", None) or {}
    shortest = size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
    return max(int(shortest or MIN_MAP_SIZE), MIN_MAP_SIZE)


def whole_image_inputs(image_processor, image: Image.Image, shortest_edge: int | None = None) -> torch.Tensor:
    """(1, C, h, w) pixel values of the whole `image` (no center crop), its short side resized to `shortest_edge`
    (default: the processor's own resize), so that input coordinates are the image's, scaled."""
    kwargs = {"do_center_crop": False, "do_pad": False}
    if shortest_edge is not None:
        kwargs["size"] = {"shortest_edge": int(shortest_edge)}
    return image_processor(image, return_tensors="pt", **kwargs)["pixel_values"]


def scale_point(point: tuple[int, int], source: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Pixel (y, x) of a `source` (height, width) image -> the same place in a `target`-sized one."""
    return (
        min(int(point[0] * target[0] / source[0]), target[0] - 1),
        min(int(point[1] * target[1] / source[1]), target[1] - 1),
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def segmentation_picture(model, image_processor, image: Image.Image, alpha: float = 0.5):
    """(overlay with legend, legend entries) of a semantic-segmentation model's prediction for `image`: the mask at
    the image's size, in ADE20K's colours for 150-class models, generated ones otherwise."""
    pixel_values = whole_image_inputs(image_processor, image).to(_model_device(model))
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values)
    mask = image_processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])[0]
    mask = mask.cpu().numpy()
    num_labels = model.config.num_labels
    colors = resolve_palette("ade20k" if num_labels == 150 else None, num_labels)
    labels = model.config.id2label
    return overlay(image, mask, colors, labels, alpha=alpha), legend_entries(mask, colors, labels)


def attention_picture(
    model,
    image_processor,
    image: Image.Image,
    stage: int,
    layer: int = -1,
    query: tuple[int, int] | None = None,
    map_size: int | None = None,
    alpha: float = 0.6,
) -> Image.Image:
    """The attention map of `stage`'s `layer` (see `attention_maps`, mean over heads) over `image`, at the image's
    size; `query` (y, x) is a pixel of `image` (None: the mean over queries). The model sees the whole image with
    its short side at `map_size` (default: `default_map_size`)."""
    pixel_values = whole_image_inputs(image_processor, image, map_size or default_map_size(image_processor))
    input_size = tuple(pixel_values.shape[-2:])
    input_query = None if query is None else scale_point(query, (image.height, image.width), input_size)
    heatmap = attention_maps(model, pixel_values.to(_model_device(model)), stage, layer, query=input_query)[0]
    return overlay(image, _resize_map(heatmap, image.height, image.width), alpha=alpha, query=query)


def cam_picture(model, image_processor, image: Image.Image, target=None, map_size: int | None = None, alpha=0.6):
    """Grad-CAM (see `class_activation_map`) of a classifier for `target` (default: its top class) over `image`."""
    pixel_values = whole_image_inputs(image_processor, image, map_size or default_map_size(image_processor))
    cam = class_activation_map(model, pixel_values.to(_model_device(model)), target)[0]
    return overlay(image, _resize_map(cam, image.height, image.width), alpha=alpha)


def _resize_map(values: torch.Tensor, height: int, width: int) -> np.ndarray:
    """One (h, w) float map -> (height, width) numpy, bilinear."""
    resized = F.interpolate(
        values[None, None].float().cpu(), size=(height, width), mode="bilinear", align_corners=False
    )
    return resized[0, 0].numpy()


__all__ = [
    "KeyLayout",
    "LegendEntry",
    "ade20k_palette",
    "attention_maps",
    "attention_picture",
    "cam_picture",
    "class_activation_map",
    "default_map_size",
    "distinct_colors",
    "heatmap_colors",
    "key_layout",
    "legend_entries",
    "overlay",
    "segmentation_picture",
    "whole_image_inputs",
]
