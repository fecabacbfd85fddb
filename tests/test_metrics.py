"""Tests of pvt_hf.tools.metrics (streaming confusion-matrix mean IoU) and of its `evaluate` metric script.

Cross-checks: hand-computed cases, the published example of the Hub's `mean_iou`, an independent per-class numpy
implementation of the mmseg semantics, and torchmetrics. No timing is asserted here (see benchmarks/bench_metric.py).
"""

from __future__ import annotations

import io
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pvt_hf.tools.metrics import (
    MeanIoU,
    confusion_matrix,
    evaluate_module_path,
    mean_iou,
    scores_from_confusion_matrix,
)


SCORE_KEYS = ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou", "per_category_accuracy")

# The example of the Hub's `evaluate` mean_iou (its docstring), with the results it documents.
HUB_PREDICTIONS = [
    np.array([[1, 2], [3, 4], [5, 255]]),
    np.array([[2, 7], [9, 2], [3, 6]]),
    np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]]),
]
HUB_REFERENCES = [
    np.array([[0, 3], [5, 4], [6, 255]]),
    np.array([[1, 7], [9, 2], [3, 6]]),
    np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]]),
]
HUB_EXPECTED = {
    "mean_iou": 0.47750000000000004,
    "mean_accuracy": 0.5916666666666666,
    "overall_accuracy": 0.5263157894736842,
    "per_category_iou": [0.0, 0.0, 0.375, 0.4, 0.5, 0.0, 0.5, 1.0, 1.0, 1.0],
    "per_category_accuracy": [0.0, 0.0, 0.75, 0.66666667, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0],
}


def reference_scores(predictions, references, num_labels, ignore_index=255, reduce_labels=False, label_map=None):
    """Independent implementation of the mmseg semantics: boolean masks and a loop over classes, in numpy."""
    predictions = np.concatenate([np.asarray(p).reshape(-1) for p in predictions]).astype(np.int64)
    references = np.concatenate([np.asarray(r).reshape(-1) for r in references]).astype(np.int64)
    if label_map:
        original = references.copy()
        for old, new in label_map.items():
            references[original == old] = new
    if reduce_labels:
        references = np.where((references == 0) | (references == ignore_index), ignore_index, references - 1)
    keep = references != ignore_index
    predictions, references = predictions[keep], references[keep]
    iou, accuracy = np.full(num_labels, np.nan), np.full(num_labels, np.nan)
    for c in range(num_labels):
        intersection = np.sum((predictions == c) & (references == c))
        union = np.sum((predictions == c) | (references == c))
        label_area = np.sum(references == c)
        if union:
            iou[c] = intersection / union
        if label_area:
            accuracy[c] = intersection / label_area
    present_iou, present_acc = iou[~np.isnan(iou)], accuracy[~np.isnan(accuracy)]
    return {
        "mean_iou": present_iou.mean() if present_iou.size else np.nan,
        "mean_accuracy": present_acc.mean() if present_acc.size else np.nan,
        "overall_accuracy": np.mean(predictions == references) if references.size else np.nan,
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


def assert_scores_close(actual, expected, atol=1e-6):
    assert set(SCORE_KEYS) <= set(actual)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(
            np.asarray(actual[key], dtype=np.float64),
            np.asarray(expected[key], dtype=np.float64),
            atol=atol,
            rtol=0,
            equal_nan=True,
            err_msg=key,
        )


def random_batch(seed, batch=3, height=17, width=23, num_labels=7, ignore_index=255, absent=(5,)):
    """Random maps with ignored pixels; the classes in `absent` never occur in references nor predictions."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([c for c in range(num_labels) if c not in absent])
    references = allowed[torch.randint(len(allowed), (batch, height, width), generator=generator)]
    # Mostly right predictions, so that the IoUs are not all tiny.
    noise = allowed[torch.randint(len(allowed), (batch, height, width), generator=generator)]
    predictions = torch.where(torch.rand(batch, height, width, generator=generator) < 0.6, references, noise)
    references[torch.rand(batch, height, width, generator=generator) < 0.15] = ignore_index
    return predictions, references


# ------------------------------------------------------------------------------------------ semantics


def test_hand_computed_small_case():
    # 3 classes + ignore. Class 2 is predicted once but never a reference; class 1 is absent from the second map.
    predictions = torch.tensor([[[0, 0, 1], [1, 2, 0]], [[0, 0, 0], [9, 0, 0]]])
    references = torch.tensor([[[0, 1, 1], [1, 1, 255]], [[0, 0, 0], [255, 0, 0]]])
    confusion = confusion_matrix(predictions, references, num_labels=3)
    # rows = reference, columns = prediction; the 9 sits on an ignored pixel, so it is not an error.
    assert confusion.tolist() == [[6, 0, 0], [1, 2, 1], [0, 0, 0]]
    scores = mean_iou(predictions, references, num_labels=3)
    # class 0: I=6, R=6, P=7 -> IoU 6/7, acc 1; class 1: I=2, R=4, P=2 -> IoU 2/4, acc 2/4;
    # class 2: I=0, R=0, P=1 -> IoU 0/1 = 0, acc NaN (absent from the references).
    assert_scores_close(
        scores,
        {
            "per_category_iou": [6 / 7, 0.5, 0.0],
            "per_category_accuracy": [1.0, 0.5, np.nan],
            "mean_iou": (6 / 7 + 0.5 + 0.0) / 3,
            "mean_accuracy": 0.75,
            "overall_accuracy": 8 / 10,
        },
    )
    # A class absent from both references and predictions is NaN and left out of the means.
    scores = mean_iou(predictions, references, num_labels=4)
    assert math.isnan(scores["per_category_iou"][3]) and math.isnan(scores["per_category_accuracy"][3])
    assert scores["mean_iou"] == pytest.approx((6 / 7 + 0.5) / 3)


def test_matches_the_hub_mean_iou_example():
    assert_scores_close(mean_iou(HUB_PREDICTIONS, HUB_REFERENCES, num_labels=10, ignore_index=255), HUB_EXPECTED)


@pytest.mark.parametrize("reduce_labels", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_independent_numpy_implementation(seed, reduce_labels):
    predictions, references = random_batch(seed)
    if reduce_labels:  # references in 0..num_labels, 0 = "other"; predictions in the reduced space
        references = torch.where(references == 255, references, (references + seed) % 8)
    actual = mean_iou(predictions, references, num_labels=7, reduce_labels=reduce_labels)
    expected = reference_scores(predictions, references, num_labels=7, reduce_labels=reduce_labels)
    assert_scores_close(actual, expected)
    if not reduce_labels:
        assert math.isnan(actual["per_category_iou"][5])


def test_label_map_uses_the_original_labels():
    predictions, references = random_batch(3, num_labels=6, absent=())
    label_map = {1: 2, 2: 3, 4: 255}  # simultaneous: 1 -> 2 (not 3), 2 -> 3, 4 -> ignored
    actual = mean_iou(predictions, references, num_labels=6, label_map=label_map)
    assert_scores_close(actual, reference_scores(predictions, references, 6, label_map=label_map))


def test_reduce_labels_ade20k_convention():
    # ADE20K: 0 = "other" (ignored), 1..150 -> 0..149; 255 stays ignored.
    references = torch.tensor([[0, 1, 150, 255]])
    predictions = torch.tensor([[7, 0, 149, 3]])
    confusion = confusion_matrix(predictions, references, num_labels=150, reduce_labels=True)
    assert confusion.sum() == 2 and confusion[0, 0] == 1 and confusion[149, 149] == 1
    with pytest.raises(ValueError, match=r"references .*151"):  # reported as the caller's value
        confusion_matrix(predictions, torch.tensor([[0, 1, 151, 255]]), num_labels=150, reduce_labels=True)


def test_cross_check_with_torchmetrics():
    tm = pytest.importorskip("torchmetrics.classification")
    num_labels = 11
    metric = MeanIoU(num_labels)
    confusion_tm = tm.MulticlassConfusionMatrix(num_labels, ignore_index=255)
    jaccard_tm = tm.MulticlassJaccardIndex(num_labels, average="none", ignore_index=255)
    recall_tm = tm.MulticlassAccuracy(num_labels, average="none", ignore_index=255)
    overall_tm = tm.MulticlassAccuracy(num_labels, average="micro", ignore_index=255)
    for seed in range(4):  # classes 3 and 8 never appear; class 9 only in some batches
        predictions, references = random_batch(seed, num_labels=num_labels, absent=(3, 8) if seed % 2 else (3, 8, 9))
        metric.update(predictions, references)
        for tm_metric in (confusion_tm, jaccard_tm, recall_tm, overall_tm):
            tm_metric.update(predictions, references)
    assert torch.equal(metric.confusion_matrix, confusion_tm.compute().to(torch.int64))
    scores = metric.compute()
    present = ~np.isnan(scores["per_category_iou"])
    assert present.tolist() == [c not in (3, 8) for c in range(num_labels)]
    np.testing.assert_allclose(scores["per_category_iou"][present], jaccard_tm.compute().numpy()[present], atol=1e-6)
    assert scores["mean_iou"] == pytest.approx(float(jaccard_tm.compute()[present].mean()), abs=1e-6)
    np.testing.assert_allclose(
        scores["per_category_accuracy"][present], recall_tm.compute().numpy()[present], atol=1e-6
    )
    assert scores["overall_accuracy"] == pytest.approx(float(overall_tm.compute()), abs=1e-6)


def test_no_pixel_gives_nan_without_warnings():
    metric = MeanIoU(4)
    metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    with np.errstate(all="raise"):
        scores = metric.compute()
    assert all(np.isnan(scores[key]).all() for key in SCORE_KEYS)
    assert metric.compute(nan_to_num=0)["mean_iou"] == 0.0


def test_empty_batch_counts_nothing():
    metric = MeanIoU(3).update(torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.long))
    assert metric.confusion_matrix.sum() == 0
    assert mean_iou([], [], 3)["per_category_iou"].shape == (3,)


def test_nan_to_num():
    scores = mean_iou(HUB_PREDICTIONS, HUB_REFERENCES, num_labels=12, nan_to_num=-1)
    assert scores["per_category_iou"][10:].tolist() == [-1, -1]
    assert scores["mean_iou"] == pytest.approx(HUB_EXPECTED["mean_iou"])


# ------------------------------------------------------------------------------------------ inputs and errors


def test_out_of_range_values_raise():
    references = torch.tensor([[[0, 1], [2, 255]]])
    with pytest.raises(ValueError, match=r"references contain 1 pixel\(s\) with values \[7\]"):
        confusion_matrix(torch.zeros_like(references), torch.tensor([[[0, 1], [7, 255]]]), num_labels=3)
    with pytest.raises(ValueError, match=r"predictions contain 1 pixel\(s\) with values \[-1\]"):
        confusion_matrix(torch.tensor([[[0, -1], [2, 0]]]), references, num_labels=3)
    with pytest.raises(ValueError, match="predictions .*3"):
        MeanIoU(3).update(torch.tensor([[[0, 1], [3, 0]]]), references)
    # Any value is fine where the reference is ignored.
    assert confusion_matrix(torch.tensor([[[0, 1], [2, 1000]]]), references, 3).sum() == 3
    # A failing update leaves the metric unchanged.
    metric = MeanIoU(3).update(references.clamp(max=2), references)
    before = metric.confusion_matrix.clone()
    with pytest.raises(ValueError):
        metric.update(torch.full_like(references, 5), references)
    assert torch.equal(metric.confusion_matrix, before)


@pytest.mark.parametrize("with_ignored", [False, True])
def test_boundary_value_num_labels_raises(with_ignored):
    references = torch.tensor([[0, 1, 2, 3, 255 if with_ignored else 0]])
    with pytest.raises(ValueError, match=r"references contain 1 pixel\(s\) with values \[3\]"):
        confusion_matrix(torch.zeros_like(references), references, num_labels=3)
    with pytest.raises(ValueError, match=r"predictions contain 1 pixel\(s\) with values \[3\]"):
        in_range = references.clamp(max=2).masked_fill(references == 255, 255)
        confusion_matrix(torch.tensor([[0, 1, 2, 3, 0]]), in_range, num_labels=3)


def test_other_ignore_indices():
    predictions, references = random_batch(11, ignore_index=-1)
    expected = reference_scores(predictions, references, 7, ignore_index=-1)
    assert_scores_close(mean_iou(predictions, references, 7, ignore_index=-1), expected)
    # An ignore index inside the label range: that class is never counted.
    predictions, references = random_batch(12, ignore_index=2)
    scores = mean_iou(predictions, references, 7, ignore_index=2)
    assert_scores_close(scores, reference_scores(predictions, references, 7, 2))
    assert math.isnan(scores["per_category_accuracy"][2])


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_labels"):
        MeanIoU(0)
    with pytest.raises(ValueError, match="same shape"):
        mean_iou(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="integer"):
        mean_iou(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2), 3)
    with pytest.raises(TypeError, match="logits"):
        mean_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="channels"):
        mean_iou(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), 3)


def test_numpy_lists_and_various_dtypes():
    predictions, references = random_batch(4)
    expected = mean_iou(predictions, references, 7)
    # uint8 / int32 numpy arrays, read-only arrays, and a list of maps of different sizes.
    as_numpy = mean_iou(predictions.numpy().astype(np.uint8), references.numpy().astype(np.int32), 7)
    assert_scores_close(as_numpy, expected)
    readonly = references.numpy().copy()
    readonly.setflags(write=False)
    assert_scores_close(mean_iou(predictions.numpy(), readonly, 7), expected)
    listed = mean_iou(
        [predictions[0], predictions[1, :5].numpy(), predictions[2].tolist()],
        [references[0], references[1, :5].numpy(), references[2].tolist()],
        7,
    )
    sub_p = [predictions[0], predictions[1, :5], predictions[2]]
    sub_r = [references[0], references[1, :5], references[2]]
    assert_scores_close(listed, reference_scores(sub_p, sub_r, 7))


def test_logits_are_resized_to_the_references_and_argmaxed():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 7, 5, 6, generator=generator)
    _, references = random_batch(5, batch=2, height=20, width=24)
    labels = F.interpolate(logits, size=(20, 24), mode="bilinear", align_corners=False).argmax(1)
    expected = mean_iou(labels, references, 7)
    assert_scores_close(mean_iou(logits, references, 7), expected)
    # per-image logits (C, h, w) in a list
    assert_scores_close(mean_iou(list(logits), list(references), 7), expected)


# ------------------------------------------------------------------------------------------ streaming state


def test_streaming_merge_reset_and_sum():
    batches = [random_batch(seed) for seed in range(4)]
    whole = MeanIoU(7)
    for predictions, references in batches:
        whole.update(predictions, references)
    one_shot = mean_iou(torch.cat([p for p, _ in batches]), torch.cat([r for _, r in batches]), 7)
    assert_scores_close(whole.compute(), one_shot)

    parts = [MeanIoU(7).update(*batch) for batch in batches]
    assert torch.equal((parts[0] + parts[1] + parts[2] + parts[3]).confusion_matrix, whole.confusion_matrix)
    assert torch.equal(sum(parts).confusion_matrix, whole.confusion_matrix)
    merged = MeanIoU(7).merge(parts[0])
    merged += parts[1]
    merged.merge(parts[2]).merge(parts[3])
    assert torch.equal(merged.confusion_matrix, whole.confusion_matrix)
    assert parts[0].confusion_matrix.sum() < whole.confusion_matrix.sum()  # `+` left its operands alone
    with pytest.raises(ValueError, match="different settings"):
        merged.merge(MeanIoU(8))
    with pytest.raises(ValueError, match="different settings"):
        merged.merge(MeanIoU(7, reduce_labels=True))

    merged.reset()
    assert merged.confusion_matrix.sum() == 0 and merged.confusion_matrix.shape == (7, 7)


def test_state_dict_round_trip_through_torch_save():
    metric = MeanIoU(7, reduce_labels=True, label_map={3: 4})
    predictions, references = random_batch(6)
    metric.update(predictions, references)
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    restored = MeanIoU(7, reduce_labels=True, label_map={3: 4}).load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.confusion_matrix, metric.confusion_matrix)
    assert_scores_close(restored.compute(), metric.compute())
    # state_dict is a copy: updating the metric afterwards does not change it.
    state = metric.state_dict()
    metric.update(predictions, references)
    assert state["confusion_matrix"].sum() * 2 == metric.confusion_matrix.sum()
    with pytest.raises(ValueError, match="settings"):
        MeanIoU(7).load_state_dict(state)
    with pytest.raises(ValueError, match="settings"):
        MeanIoU(8, reduce_labels=True, label_map={3: 4}).load_state_dict(state)


def test_device_follows_the_first_predictions():
    metric = MeanIoU(7)
    assert metric.device.type == "cpu"
    predictions, references = random_batch(7)
    metric.update(predictions, references.numpy())
    assert metric.confusion_matrix.device == predictions.device
    assert metric.confusion_matrix.dtype == torch.int64
    assert "pixels=" in repr(metric)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulates_on_cuda():
    predictions, references = random_batch(8, batch=4, height=64, width=64)
    metric = MeanIoU(7)  # device=None: follows the predictions
    metric.update(predictions.cuda(), references.cuda())
    metric.update(predictions.cuda(), references)  # a CPU reference is moved to the matrix's device
    assert metric.confusion_matrix.is_cuda
    cpu = MeanIoU(7).update(predictions, references).update(predictions, references)
    assert torch.equal(metric.confusion_matrix.cpu(), cpu.confusion_matrix)
    assert_scores_close(metric.compute(), cpu.compute())
    pinned = MeanIoU(7, device="cuda").update(predictions, references)
    assert pinned.confusion_matrix.is_cuda
    logits = torch.randn(4, 7, 16, 16, device="cuda")
    metric.update(logits, references.cuda())
    with pytest.raises(ValueError):
        metric.update(torch.full_like(predictions, 9).cuda(), references.cuda())
    restored = MeanIoU(7, device="cuda").load_state_dict(cpu.state_dict())
    assert restored.confusion_matrix.is_cuda


# ------------------------------------------------------------------------------------------ processes


def test_sync_single_process_and_with_an_accelerator():
    predictions, references = random_batch(9)
    metric = MeanIoU(7).update(predictions, references)
    synced = metric.sync()
    assert synced is not metric and torch.equal(synced.confusion_matrix, metric.confusion_matrix)

    class FakeAccelerator:  # what `sync` uses of accelerate.Accelerator, with 2 processes holding the same counts
        num_processes = 2
        device = torch.device("cpu")

        def reduce(self, tensor, reduction):
            assert reduction == "sum" and tensor.dtype == torch.int64
            return tensor * 2

    synced = metric.sync(FakeAccelerator())
    assert torch.equal(synced.confusion_matrix, 2 * metric.confusion_matrix)
    assert synced.sync().confusion_matrix.sum() == 2 * metric.confusion_matrix.sum()  # sync never mutates

    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(cpu=True)
    assert torch.equal(metric.sync(accelerator).confusion_matrix, metric.confusion_matrix)


def _distributed_worker(rank: int, world_size: int, init_file: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        batches = [random_batch(seed) for seed in range(4)]
        metric = MeanIoU(7)
        for predictions, references in batches[rank::world_size]:
            metric.update(predictions, references)
        local = metric.confusion_matrix.clone()
        synced = metric.sync()
        expected = MeanIoU(7)
        for predictions, references in batches:
            expected.update(predictions, references)
        assert torch.equal(synced.confusion_matrix, expected.confusion_matrix), rank
        assert torch.equal(metric.confusion_matrix, local)  # the local metric is unchanged
        assert torch.equal(metric.sync().confusion_matrix, expected.confusion_matrix)  # calling again is safe
        assert_scores_close(synced.compute(), expected.compute())
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available() or not hasattr(os, "fork"), reason="needs gloo and fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_sync_sums_across_two_processes(tmp_path):
    import torch.multiprocessing as mp

    # fork: the workers reuse this process's imports (spawn would re-import transformers, ~5 s a process).
    context = mp.start_processes(
        _distributed_worker, args=(2, str(tmp_path / "store")), nprocs=2, join=False, start_method="fork"
    )
    deadline = time.monotonic() + 60
    while not context.join(timeout=1):  # raises ProcessRaisedException with the worker's traceback on failure
        if time.monotonic() > deadline:
            for process in context.processes:
                process.terminate()
            pytest.fail("distributed workers did not finish in 60 s")


# ------------------------------------------------------------------------------------------ evaluate script


@pytest.fixture(scope="module")
def evaluate_lib():
    evaluate = pytest.importorskip("evaluate")
    pytest.importorskip("datasets")
    return evaluate


def test_evaluate_module_path():
    path = Path(evaluate_module_path())
    assert path.is_absolute() and (path / "mean_iou.py").is_file() and (path / "_mean_iou_core.py").is_file()
    # The script must not need pvt_hf: evaluate copies it (and the sibling it imports relatively) into its cache.
    for name in ("mean_iou.py", "_mean_iou_core.py"):
        source = (path / name).read_text()
        assert "import pvt_hf" not in source and "from pvt_hf" not in source


@pytest.mark.filterwarnings("ignore:Downcasting array dtype")
@pytest.mark.parametrize("form", ["folder", "script"])
def test_evaluate_load_offline_matches_metrics(evaluate_lib, form, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(evaluate_lib.config, "HF_EVALUATE_OFFLINE", True)
    path = evaluate_module_path() if form == "folder" else os.path.join(evaluate_module_path(), "mean_iou.py")
    metric = evaluate_lib.load(path, keep_in_memory=True)

    results = metric.compute(predictions=HUB_PREDICTIONS, references=HUB_REFERENCES, num_labels=10, ignore_index=255)
    assert_scores_close(results, HUB_EXPECTED)

    predictions, references = random_batch(10, num_labels=9, absent=(2,))
    references = torch.where(references == 255, references, (references + 1) % 9)  # some 0s, for reduce_labels
    for kwargs in ({}, {"reduce_labels": True}, {"reduce_labels": True, "nan_to_num": 0}, {"label_map": {1: 3}}):
        for p, r in zip(predictions.numpy(), references.numpy()):
            metric.add(prediction=p, reference=r)
        results = metric.compute(num_labels=9, ignore_index=255, **kwargs)
        assert_scores_close(results, mean_iou(predictions, references, 9, **kwargs))
    with pytest.raises(ValueError, match="outside"):
        metric.compute(predictions=[np.full((2, 2), 12)], references=[np.zeros((2, 2), np.int64)], num_labels=9)


def test_scores_from_confusion_matrix_accepts_numpy():
    confusion = np.array([[3, 1], [0, 0]])
    scores = scores_from_confusion_matrix(confusion)
    assert scores["per_category_iou"][0] == 0.75 and scores["per_category_iou"][1] == 0.0
    assert math.isnan(scores["per_category_accuracy"][1]) and scores["overall_accuracy"] == 0.75
