"""Semantic-segmentation metrics: a streaming confusion-matrix mean IoU (mmseg / `evaluate` semantics).

* `MeanIoU`: accumulates a `(num_labels, num_labels)` int64 confusion matrix on the model's device, one
  `torch.bincount` per batch; mergeable, checkpointable (`state_dict`) and summable across processes (`sync`).
* `mean_iou(...)`: the same computation in one call, for a training loop or one-shot evaluation.
* `evaluate_module_path()`: the folder of an `evaluate` metric script with the same arithmetic, loadable offline:
  `evaluate.load(pvt_hf.tools.metrics.evaluate_module_path())` (a drop-in for `evaluate.load("mean_iou")`).

Example::

    metric = MeanIoU(num_labels=150, ignore_index=255, reduce_labels=True, device=model.device)
    for batch in loader:
        logits = model(batch["pixel_values"]).logits            # (B, 150, H/4, W/4)
        metric.update(logits, batch["labels"])                   # resized to the labels' (H, W), then argmax
    scores = metric.sync(accelerator).compute()                  # sum over processes (no-op if single)
    print(scores["mean_iou"], scores["per_category_iou"])

The arithmetic (confusion matrix, scores) lives in `evaluate_metrics/mean_iou/_mean_iou_core.py`, which the
`evaluate` script imports too, so there is a single implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .evaluate_metrics.mean_iou._mean_iou_core import (
    as_label_tensor,
    confusion_matrix,
    labels_from_logits,
    scores_from_confusion_matrix,
)


__all__ = ["MeanIoU", "confusion_matrix", "evaluate_module_path", "mean_iou", "scores_from_confusion_matrix"]

_EVALUATE_MODULE_DIR = Path(__file__).resolve().parent / "evaluate_metrics" / "mean_iou"


def evaluate_module_path() -> str:
    """Absolute path of the folder holding the `evaluate` metric script `mean_iou.py`.

    `evaluate.load(evaluate_module_path())` loads it without network (it is a local script: `HF_HUB_OFFLINE=1` is
    fine); its `compute(predictions=..., references=..., num_labels=..., ignore_index=255, nan_to_num=None,
    label_map=None, reduce_labels=False)` has the signature and output of the Hub's `mean_iou`."""
    return str(_EVALUATE_MODULE_DIR)


class MeanIoU:
    """Streaming mean Intersection-over-Union for semantic segmentation (mmseg / `evaluate` `mean_iou` semantics).

    Keeps one `(num_labels, num_labels)` int64 confusion matrix (rows: reference class, columns: predicted class)
    on `device`; `update` adds one batch with a single `torch.bincount`. `compute()` returns:

    * `per_category_iou` (float64 array, `num_labels`): intersection / union per class. NaN for a class absent from
      both the references and the predictions seen so far; 0 for a class predicted but never in the references.
    * `per_category_accuracy` (float64 array): intersection / reference pixels per class (recall); NaN for a class
      absent from the references.
    * `mean_iou`, `mean_accuracy` (float): the means over the classes that are not NaN (mmseg's `nanmean`).
    * `overall_accuracy` (float): correctly predicted / all non-ignored pixels.

    All pixels of all images are pooled (the "dataset-level" mIoU of mmseg and `evaluate`, not a mean of per-image
    IoUs). NaN everywhere while no pixel has been counted.

    Args:
        num_labels: number of classes; valid labels are `0 .. num_labels - 1`.
        ignore_index: reference value whose pixels are skipped (whatever is predicted there).
        device: where the matrix lives. `None`: the device of the first predictions given to `update` (so it
            follows the model). Inputs on another device are moved there.
        reduce_labels: ADE20K convention (as `evaluate`'s `mean_iou`, applied to the references only): reference
            0 becomes `ignore_index`, every other reference `k` becomes `k - 1`; pixels at `ignore_index` stay
            ignored. Predictions must already be in `0 .. num_labels - 1`.
        label_map: optional `{old: new}` remapping of the references, applied (all at once) before `reduce_labels`.

    A non-ignored pixel whose reference or prediction is outside `[0, num_labels)` raises `ValueError`.
    """

    def __init__(
        self,
        num_labels: int,
        ignore_index: int = 255,
        device: torch.device | str | None = None,
        reduce_labels: bool = False,
        label_map: Mapping[int, int] | None = None,
    ):
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer; got {num_labels!r}")
        self.num_labels = num_labels
        self.ignore_index = int(ignore_index)
        self.reduce_labels = bool(reduce_labels)
        self.label_map = {int(k): int(v) for k, v in label_map.items()} if label_map else None
        self._device_is_set = device is not None
        self._confusion = torch.zeros(
            (num_labels, num_labels), dtype=torch.int64, device=torch.device(device) if device is not None else None
        )

    # ----------------------------------------------------------------------------------------------- state
    @property
    def device(self) -> torch.device:
        return self._confusion.device

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """The accumulated int64 confusion matrix, `[reference, prediction]` (the live tensor, on `device`)."""
        return self._confusion

    def to(self, device: torch.device | str) -> MeanIoU:
        """Moves the matrix to `device` (and pins the metric there); returns self."""
        self._confusion = self._confusion.to(device)
        self._device_is_set = True
        return self

    def reset(self) -> MeanIoU:
        """Zeroes the matrix (keeps the device); returns self."""
        self._confusion.zero_()
        return self

    def _config(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "ignore_index": self.ignore_index,
            "reduce_labels": self.reduce_labels,
            "label_map": self.label_map,
        }

    def _empty_like(self) -> MeanIoU:
        other = MeanIoU(device=self.device, **self._config())
        other._device_is_set = self._device_is_set
        return other

    def state_dict(self) -> dict[str, Any]:
        """A checkpointable state: the matrix (a copy, on `device`) and the settings it was counted with.
        Loadable with `torch.load(..., weights_only=True)`; usable with `accelerator.register_for_checkpointing`."""
        return {"confusion_matrix": self._confusion.detach().clone(), **self._config()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> MeanIoU:
        """Restores the matrix from `state_dict` onto this metric's device. The settings stored with it must equal
        this metric's (counts made with another label convention would be mixed), else `ValueError`."""
        saved = {key: state_dict.get(key) for key in self._config()}
        if saved.get("label_map") is not None:
            saved["label_map"] = {int(k): int(v) for k, v in saved["label_map"].items()}
        if saved != self._config():
            raise ValueError(f"state_dict was saved with settings {saved}, this metric has {self._config()}")
        confusion = torch.as_tensor(state_dict["confusion_matrix"])
        if confusion.shape != self._confusion.shape:
            raise ValueError(
                f"confusion_matrix has shape {tuple(confusion.shape)}; expected {tuple(self._confusion.shape)}"
            )
        self._confusion = confusion.to(device=self.device, dtype=torch.int64).clone()
        return self

    # ----------------------------------------------------------------------------------------------- update
    def update(self, predictions, references) -> MeanIoU:
        """Adds a batch; returns self.

        `references`: integer label maps `(B, H, W)` (or `(H, W)`), as a tensor, numpy array or PIL image, or a
        list of such maps (their sizes may differ). `predictions`: the same shape of integer label maps, or logits
        `(B, num_labels, h, w)` (floating point, one more dimension than the references), which are resized
        bilinearly to the references' size and argmax-ed, as transformers' `post_process_semantic_segmentation`
        does. Lists are paired element-wise and counted in a single `bincount`."""
        if isinstance(references, (list, tuple)) and _is_list_of_maps(references):
            if not isinstance(predictions, (list, tuple)) or len(predictions) != len(references):
                raise ValueError("when references is a list of maps, predictions must be a list of the same length")
            pairs = [self._prepare(p, r) for p, r in zip(predictions, references)]
            if not pairs:
                return self
            predictions = torch.cat([p.reshape(-1) for p, _ in pairs])
            references = torch.cat([r.reshape(-1) for _, r in pairs])
        else:
            predictions, references = self._prepare(predictions, references)
        self._confusion += confusion_matrix(
            predictions, references, self.num_labels, self.ignore_index, self.reduce_labels, self.label_map
        )
        return self

    def _prepare(self, predictions, references) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._device_is_set:
            if isinstance(predictions, torch.Tensor):
                self._confusion = self._confusion.to(predictions.device)
            self._device_is_set = True
        predictions = as_label_tensor(predictions, self.device)
        references = as_label_tensor(references, self.device)
        if predictions.dtype.is_floating_point and predictions.ndim == references.ndim + 1:
            if predictions.ndim == 3:  # a single image's logits (C, h, w) with a (H, W) reference
                predictions, references = predictions[None], references[None]
            if predictions.shape[1] != self.num_labels:
                raise ValueError(
                    f"logits have {predictions.shape[1]} channels (dimension 1) but num_labels={self.num_labels}"
                )
            predictions = labels_from_logits(predictions, references.shape[-2:])
        return predictions, references

    # ----------------------------------------------------------------------------------------------- combine
    def merge(self, other: MeanIoU) -> MeanIoU:
        """Adds `other`'s counts into this metric (in place); returns self. The settings must match."""
        if not isinstance(other, MeanIoU):
            raise TypeError(f"can only merge another MeanIoU, not {type(other).__name__}")
        if other._config() != self._config():
            raise ValueError(f"cannot merge metrics with different settings: {self._config()} vs {other._config()}")
        self._confusion += other._confusion.to(self.device)
        return self

    def __iadd__(self, other: MeanIoU) -> MeanIoU:
        return self.merge(other)

    def __add__(self, other: MeanIoU) -> MeanIoU:
        if not isinstance(other, MeanIoU):
            return NotImplemented
        return self.copy().merge(other)

    def __radd__(self, other) -> MeanIoU:
        if isinstance(other, int) and other == 0:  # so that sum([metric_a, metric_b]) works
            return self.copy()
        return NotImplemented

    def copy(self) -> MeanIoU:
        other = self._empty_like()
        other._confusion = self._confusion.clone()
        return other

    def sync(self, accelerator=None, group=None) -> MeanIoU:
        """A new metric holding the sum of the matrices of all processes (this one is left unchanged, so calling
        `sync` twice never double-counts). A collective call: every process must make it.

        With an `accelerate.Accelerator`: `accelerator.reduce(..., "sum")` (on `accelerator.device`). Without:
        `torch.distributed.all_reduce` on `group` when torch.distributed is initialised (a CPU matrix is moved to
        the current CUDA device for an NCCL group), else just a copy (single process)."""
        confusion = self._confusion.clone()
        if accelerator is not None:
            if accelerator.num_processes > 1:
                confusion = accelerator.reduce(confusion.to(accelerator.device), reduction="sum").to(self.device)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_world_size(group) > 1:
                work = confusion
                if torch.distributed.get_backend(group) == "nccl" and work.device.type != "cuda":
                    work = work.to(torch.device("cuda", torch.cuda.current_device()))
                torch.distributed.all_reduce(work, op=torch.distributed.ReduceOp.SUM, group=group)
                confusion = work.to(self.device)
        synced = self._empty_like()
        synced._confusion = confusion
        return synced

    # ----------------------------------------------------------------------------------------------- results
    def compute(self, nan_to_num: float | None = None) -> dict[str, Any]:
        """The scores of the counts of this process (call `sync` first to include the other processes):
        `mean_iou`, `mean_accuracy`, `overall_accuracy` (floats), `per_category_iou`, `per_category_accuracy`
        (float64 numpy arrays); see the class docstring. `nan_to_num` replaces NaNs, as in `evaluate`."""
        return scores_from_confusion_matrix(self._confusion, nan_to_num=nan_to_num)

    def __repr__(self) -> str:
        return (
            f"MeanIoU(num_labels={self.num_labels}, ignore_index={self.ignore_index}, device={self.device}, "
            f"reduce_labels={self.reduce_labels}, pixels={int(self._confusion.sum())})"
        )


def _is_list_of_maps(value: list | tuple) -> bool:
    """True for a list of per-image maps (tensors / arrays / images), False for a nested-list single map."""
    return (
        len(value) == 0
        or not isinstance(value[0], (int, float, list, tuple))
        or (isinstance(value[0], (list, tuple)) and len(value[0]) > 0 and isinstance(value[0][0], (list, tuple)))
    )


def mean_iou(
    predictions,
    references,
    num_labels: int,
    ignore_index: int = 255,
    reduce_labels: bool = False,
    nan_to_num: float | None = None,
    label_map: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Mean IoU of `predictions` against `references` in one call (`MeanIoU(...).update(...).compute()`).

    Inputs as `MeanIoU.update`: `(B, H, W)` label maps (tensors or arrays), logits `(B, num_labels, h, w)`, or
    lists of per-image maps of any sizes. Returns the dict described in `MeanIoU` (`mean_iou`, `mean_accuracy`,
    `overall_accuracy`, `per_category_iou`, `per_category_accuracy`)."""
    metric = MeanIoU(num_labels, ignore_index=ignore_index, reduce_labels=reduce_labels, label_map=label_map)
    return metric.update(predictions, references).compute(nan_to_num=nan_to_num)
