"""The arithmetic of the mean-IoU metric, in one place.

This file is shared by `pvt_hf.tools.metrics` (the streaming `MeanIoU` metric and the `mean_iou` function) and by the
`evaluate` metric script next to it (`mean_iou.py`), which imports it relatively. `evaluate.load` copies a local
metric script and the sibling files it imports relatively into its module cache, so this file must not import
`pvt_hf`: it depends on torch and numpy only.

Conventions (the ones of mmseg and of Hugging Face `evaluate`'s `mean_iou`):

* The confusion matrix is `(num_labels, num_labels)` int64, rows = reference (ground-truth) class, columns =
  predicted class: `confusion[r, p]` counts the pixels labelled `r` and predicted `p`.
* Pixels whose reference equals `ignore_index` are skipped, whatever their prediction. Every other pixel must have a
  reference and a prediction in `[0, num_labels)`, else `ValueError`.
* `label_map` (optional `{old: new}`) remaps reference values first, all entries applied to the original values at
  once; then `reduce_labels=True` maps the reference 0 to `ignore_index` and shifts every other class down by one
  (the ADE20K convention: 0 is "other", classes 1..150 become 0..149); pixels already at `ignore_index` stay
  ignored. Predictions are never remapped: they are expected in the reduced label space already.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F


__all__ = [
    "as_label_tensor",
    "confusion_matrix",
    "labels_from_logits",
    "scores_from_confusion_matrix",
]


def as_label_tensor(value, device: torch.device | str | None = None) -> torch.Tensor:
    """A torch tensor from a tensor, numpy array, PIL image or nested list (no copy when already a tensor).

    Unsigned numpy types torch handles poorly (uint16/32/64) are widened to int64 first."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        array = np.asarray(value)
        if array.dtype.kind == "u" and array.dtype != np.uint8:
            array = array.astype(np.int64)
        elif array.dtype.kind == "O":
            raise TypeError("label maps must be arrays of numbers; got an object array (ragged nested lists?)")
        tensor = torch.from_numpy(np.require(array, requirements=["C", "W"]))  # copies read-only arrays only
    if device is not None:
        tensor = tensor.to(device)  # blocking: a non-blocking device-to-host copy could be read before it lands
    return tensor


def labels_from_logits(logits: torch.Tensor, size: tuple[int, int], chunk_size: int = 4) -> torch.Tensor:
    """Label maps `(B, H, W)` from logits `(B, C, h, w)`: bilinear resize to `size` (align_corners=False, as
    transformers' `post_process_semantic_segmentation`) then argmax over the classes.

    Works `chunk_size` images at a time, so that 16 upsampled ADE maps (16 x 150 x 512 x 512 floats, 2.5 GB) are
    never materialised at once."""
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (batch, num_labels, height, width); got {tuple(logits.shape)}")
    size = tuple(int(s) for s in size)
    if tuple(logits.shape[-2:]) == size:
        return logits.argmax(dim=1)
    chunks = []
    for start in range(0, logits.shape[0], chunk_size):
        chunk = logits[start : start + chunk_size]
        chunks.append(F.interpolate(chunk, size=size, mode="bilinear", align_corners=False).argmax(dim=1))
    return torch.cat(chunks)


def _check_integer(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dtype == torch.bool:
        return tensor.to(torch.int64)
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
        raise TypeError(
            f"{name} must be integer label maps, got dtype {tensor.dtype}"
            + (" (to pass logits, give them as (batch, num_labels, height, width))" if name == "predictions" else "")
        )
    return tensor


def _apply_label_map(references: torch.Tensor, label_map: Mapping[int, int]) -> torch.Tensor:
    """All entries of `label_map` applied to the original values at once (a lookup, no loop over the entries)."""
    if not label_map:
        return references
    keys = torch.tensor(list(label_map.keys()), dtype=torch.int64, device=references.device)
    values = torch.tensor(list(label_map.values()), dtype=torch.int64, device=references.device)
    keys, order = torch.sort(keys)
    values = values[order]
    position = torch.searchsorted(keys, references).clamp_(max=keys.numel() - 1)
    found = keys[position] == references
    return torch.where(found, values[position], references)


def confusion_matrix(
    predictions: torch.Tensor,
    references: torch.Tensor,
    num_labels: int,
    ignore_index: int = 255,
    reduce_labels: bool = False,
    label_map: Mapping[int, int] | None = None,
) -> torch.Tensor:
    """The `(num_labels, num_labels)` int64 confusion matrix (rows: reference, columns: prediction) of one batch,
    on the device of `references`, with a single `torch.bincount`.

    `predictions` and `references` are integer tensors of the same shape (any shape, e.g. `(B, H, W)`). See the
    module docstring for `ignore_index`, `reduce_labels` and `label_map`. Raises `ValueError` for a non-ignored
    pixel whose reference or prediction lies outside `[0, num_labels)` (hence one or two host synchronisations)."""
    predictions = _check_integer("predictions", predictions)
    references = _check_integer("references", references)
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same shape; got {tuple(predictions.shape)} and "
            f"{tuple(references.shape)}"
        )
    predictions = predictions.to(references.device, torch.int64)
    references = references.to(torch.int64)
    if label_map:
        references = _apply_label_map(references, label_map)
    if reduce_labels:
        ignored = (references == 0) | (references == ignore_index)
        references = references - 1
    else:
        ignored = references == ignore_index

    n = num_labels
    if references.numel() == 0:
        return torch.zeros((n, n), dtype=torch.int64, device=references.device)
    # Ignored pixels go to an extra row n, whose counts are dropped: no boolean indexing, one bincount.
    rows = references.masked_fill(ignored, n)
    predicted_range, row_range = torch.aminmax(predictions), torch.aminmax(rows)
    low_prediction, high_prediction, low_row, high_row, num_ignored = torch.stack(
        [predicted_range.min, predicted_range.max, row_range.min, row_range.max, ignored.sum()]
    ).tolist()  # host synchronisation, before a bincount that out-of-range values would make huge
    if low_prediction < 0 or high_prediction >= n or low_row < 0 or high_row > n:
        # Rare path: find the offending pixels exactly. Out-of-range predictions on ignored pixels are allowed.
        _raise_out_of_range(predictions, references, ignored, num_labels, ignore_index, reduce_labels)
        predictions = predictions.masked_fill(ignored, 0)
    counts = torch.bincount(torch.add(predictions, rows, alpha=n).reshape(-1), minlength=n * (n + 1))
    # A non-ignored reference equal to n lands in the ignored row too: then that row holds more than the ignored.
    if high_row == n and counts[n * n :].sum().item() != num_ignored:
        _raise_out_of_range(predictions, references, ignored, num_labels, ignore_index, reduce_labels)
    return counts[: n * n].view(n, n)


def _raise_out_of_range(predictions, references, ignored, num_labels, ignore_index, reduce_labels) -> None:
    """Raises ValueError naming the non-ignored out-of-range values, if there are any."""
    kept = ~ignored
    problems = []
    for name, values in (("references", references), ("predictions", predictions)):
        bad = values[kept & ((values < 0) | (values >= num_labels))]
        if bad.numel():
            shown = bad.unique()[:10].tolist()
            if name == "references" and reduce_labels:
                shown = [value + 1 for value in shown]  # report the values as the caller passed them
            problems.append(f"{name} contain {bad.numel()} pixel(s) with values {shown}")
    if not problems:
        return
    hint = " (references are compared after reduce_labels: 0 -> ignore_index, k -> k - 1)" if reduce_labels else ""
    raise ValueError(
        f"{'; '.join(problems)} outside [0, {num_labels}) that are not ignored (ignore_index={ignore_index}){hint}."
    )


def scores_from_confusion_matrix(confusion, nan_to_num: float | None = None) -> dict:
    """mmseg / `evaluate` mean-IoU scores from a confusion matrix (rows: reference, columns: prediction).

    Per class c, with I = confusion[c, c], R = pixels of reference c, P = pixels predicted c:

    * `per_category_iou[c] = I / (R + P - I)`: NaN only when c is absent from both references and predictions;
      a class predicted but absent from the references has IoU 0.
    * `per_category_accuracy[c] = I / R` (the class's recall): NaN when c is absent from the references.
    * `mean_iou`, `mean_accuracy`: means over the classes that are not NaN (`np.nanmean`); NaN if all are.
    * `overall_accuracy = sum(I) / sum(R)`: the fraction of non-ignored pixels predicted right; NaN if none.

    `nan_to_num`, when given, replaces the NaNs of every entry (after the means), as `evaluate`'s `mean_iou` does.
    Scalars come back as Python floats, per-class values as float64 numpy arrays of length num_labels."""
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().to("cpu", torch.int64).numpy()
    confusion = np.asarray(confusion, dtype=np.int64)
    intersection = np.diagonal(confusion).astype(np.float64)
    area_reference = confusion.sum(axis=1).astype(np.float64)
    area_prediction = confusion.sum(axis=0).astype(np.float64)
    union = area_reference + area_prediction - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / union
        accuracy = intersection / area_reference
        overall = intersection.sum() / area_reference.sum() if area_reference.sum() else np.nan
    scores = {
        "mean_iou": _nanmean(iou),
        "mean_accuracy": _nanmean(accuracy),
        "overall_accuracy": float(overall),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }
    if nan_to_num is not None:
        scores = {
            key: float(np.nan_to_num(value, nan=nan_to_num))
            if isinstance(value, float)
            else np.nan_to_num(value, nan=nan_to_num)
            for key, value in scores.items()
        }
    return scores


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")
