"""Mean IoU (Intersection-over-Union) for semantic segmentation, as a local `evaluate` metric.

Load it offline (no Hub access needed) with either form `evaluate` accepts for local scripts::

    import evaluate, pvt_hf.tools.metrics
    metric = evaluate.load(pvt_hf.tools.metrics.evaluate_module_path())          # the folder holding this file
    metric = evaluate.load("/path/to/evaluate_metrics/mean_iou/mean_iou.py")  # or the script itself

It is a drop-in for the Hub's `evaluate.load("mean_iou")`: same inputs, same keyword arguments, same outputs.
`evaluate` copies this script, and the `_mean_iou_core.py` it imports relatively, into its module cache; that file
holds the arithmetic shared with `pvt_hf.tools.metrics` (torch + numpy, no `pvt_hf` import), so the folder is
self-contained.
"""

from typing import Optional

import datasets
import evaluate
import torch

from ._mean_iou_core import as_label_tensor, confusion_matrix, scores_from_confusion_matrix


_DESCRIPTION = """
IoU is the area of overlap between the predicted segmentation and the ground truth divided by the area of their
union. The mean IoU averages the per-class IoUs over the classes present (in the references or the predictions).
Pixels of all images are pooled into one confusion matrix (mmseg semantics), counted with torch.bincount.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`List[ndarray]`):
        Predicted segmentation maps, each of shape (height, width); sizes may differ between images.
    references (`List[ndarray]`):
        Ground-truth segmentation maps, each of the shape of its prediction.
    num_labels (`int`):
        Number of classes; valid labels are 0 .. num_labels - 1.
    ignore_index (`int`, defaults to 255):
        Reference value whose pixels are skipped. Any other pixel outside [0, num_labels) raises ValueError.
    nan_to_num (`float`, *optional*):
        If given, replaces the NaNs of every output.
    label_map (`dict`, *optional*):
        `{old: new}` remapping of the references; all mappings use the original labels.
    reduce_labels (`bool`, defaults to `False`):
        ADE20K convention, applied to the references after `label_map`: 0 becomes `ignore_index`, every other
        label k becomes k - 1.

Returns:
    `Dict[str, float | ndarray]`:
    - *mean_iou* (`float`): mean of the per-class IoUs that are not NaN.
    - *mean_accuracy* (`float`): mean of the per-class accuracies that are not NaN.
    - *overall_accuracy* (`float`): correctly predicted / all non-ignored pixels.
    - *per_category_iou* (`ndarray` of shape `(num_labels,)`): NaN for a class absent from references and predictions.
    - *per_category_accuracy* (`ndarray` of shape `(num_labels,)`): NaN for a class absent from the references.

Examples:

    >>> import numpy as np
    >>> metric = evaluate.load(pvt_hf.tools.metrics.evaluate_module_path())
    >>> predictions = [np.array([[1, 2], [3, 4], [5, 255]]), np.array([[2, 7], [9, 2], [3, 6]])]
    >>> references = [np.array([[0, 3], [5, 4], [6, 255]]), np.array([[1, 7], [9, 2], [3, 6]])]
    >>> results = metric.compute(predictions=predictions, references=references, num_labels=10, ignore_index=255)
"""

_CITATION = """\
@software{MMSegmentation_Contributors_OpenMMLab_Semantic_Segmentation_2020,
author = {{MMSegmentation Contributors}},
license = {Apache-2.0},
title = {{OpenMMLab Semantic Segmentation Toolbox and Benchmark}},
url = {https://github.com/open-mmlab/mmsegmentation},
year = {2020}
}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Images, as the Hub's mean_iou: label maps are stored losslessly (PNG) between add_batch and compute.
            features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
        )

    def _compute(
        self,
        predictions,
        references,
        num_labels: int,
        ignore_index: int = 255,
        nan_to_num: Optional[float] = None,
        label_map: Optional[dict[int, int]] = None,
        reduce_labels: bool = False,
    ):
        if len(predictions) != len(references):
            raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
        confusion = torch.zeros((num_labels, num_labels), dtype=torch.int64)
        if len(references):
            predictions = [as_label_tensor(p).reshape(-1) for p in predictions]
            references = [as_label_tensor(r) for r in references]
            for index, (prediction, reference) in enumerate(zip(predictions, references)):
                if prediction.numel() != reference.numel():
                    raise ValueError(
                        f"prediction {index} has {prediction.numel()} pixels, its reference {reference.numel()}"
                    )
            confusion = confusion_matrix(
                torch.cat(predictions),
                torch.cat([r.reshape(-1) for r in references]),
                num_labels,
                ignore_index=ignore_index,
                reduce_labels=reduce_labels,
                label_map=label_map,
            )
        return scores_from_confusion_matrix(confusion, nan_to_num=nan_to_num)
