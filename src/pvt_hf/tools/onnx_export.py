# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""ONNX export of the PVT models, with dynamic batch, height and width, verified against PyTorch with onnxruntime.

    from pvt_hf.tools.onnx_export import export_onnx
    result = export_onnx("path/to/pvt-v2-b2", "pvt-v2-b2.onnx")   # or a model instance
    result.max_relative_error                                      # onnxruntime vs PyTorch, over several sizes

The graph takes `pixel_values` (batch, 3, height, width) of any size the model accepts and gives the model's tensors:
`logits` (classification, segmentation), `last_hidden_state` and `pooler_output` (PvtModel), `feature_map_<i>`
(PvtBackbone). The exported graph runs the plain PyTorch modules (not the oneDNN inference kernels), and PVT v1 always
resizes its position embeddings there (see `PvtStage.interpolate_pos_encoding`).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .io_utils import atomic_output_file, check_output_location, refuse_overwriting_input


logger = logging.getLogger(__name__)

# (batch, height, width) checked with onnxruntime: square, a non-square odd size, and another batch
DEFAULT_VERIFY_SIZES = ((2, 224, 224), (1, 97, 131), (3, 160, 96))
EXPORTERS = ("auto", "dynamo", "torchscript")


@dataclass
class OnnxExportResult:
    path: Path
    exporter: str
    opset_version: int
    output_names: list[str]
    errors: dict[tuple[int, int, int], float] = field(default_factory=dict)  # (batch, h, w) -> max relative error

    @property
    def max_relative_error(self) -> float | None:
        return max(self.errors.values()) if self.errors else None


class _TensorOutputs(nn.Module):
    """The model with positional tensor outputs, as exporters want them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.output_names = output_names(model)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(pixel_values=pixel_values, return_dict=True)
        if "feature_map_0" in self.output_names:
            return tuple(outputs.feature_maps)
        return tuple(getattr(outputs, name) for name in self.output_names)


def output_names(model: nn.Module) -> list[str]:
    name = type(model).__name__
    if name == "PvtBackbone":
        return [f"feature_map_{index}" for index in range(len(model.out_features))]
    if name == "PvtModel":
        return ["last_hidden_state"] + (["pooler_output"] if model.add_pooling_layer else [])
    return ["logits"]


def load_model(model_or_path) -> nn.Module:
    """A pvt-hf model instance, or one loaded from a folder / Hub id with the class its config names."""
    if isinstance(model_or_path, nn.Module):
        return model_or_path
    from transformers import AutoConfig

    import pvt_hf

    if isinstance(model_or_path, str) and model_or_path in pvt_hf.PRESETS and not Path(model_or_path).exists():
        logger.warning(
            "%s: a preset name, exported with random weights (give a folder or Hub id for trained ones)", model_or_path
        )
        return pvt_hf.PvtForImageClassification(pvt_hf.PvtConfig.from_preset(model_or_path, num_labels=1000))

    config = AutoConfig.from_pretrained(model_or_path)
    architecture = (getattr(config, "architectures", None) or ["PvtModel"])[0]
    model_class = getattr(pvt_hf, architecture, None)
    if model_class is None:
        raise ValueError(f"{model_or_path}: architecture {architecture!r} is not a pvt-hf model.")
    return model_class.from_pretrained(model_or_path)


def smallest_size(model: nn.Module) -> int:
    encoder = (
        model.base_model.encoder
        if hasattr(model, "base_model") and hasattr(model.base_model, "encoder")
        else model.encoder
    )
    return encoder.smallest_size()


def export_onnx(
    model_or_path,
    output_path: str | Path,
    *,
    exporter: str = "auto",
    opset_version: int | None = None,
    example_size: tuple[int, int] = (224, 224),
    verify: bool = True,
    verify_sizes: tuple[tuple[int, int, int], ...] = DEFAULT_VERIFY_SIZES,
    tolerance: float = 1e-4,
    force: bool = False,
) -> OnnxExportResult:
    """Export a pvt-hf model (an instance, a folder, a Hub id or a preset name) to `output_path` (one self-contained
    .onnx file).

    exporter: "dynamo" (torch.export + onnxscript, the current torch exporter), "torchscript" (the legacy tracer,
    needs no onnxscript), or "auto": dynamo when onnxscript is importable. opset_version: default 18 (dynamo) or 17
    (torchscript; LayerNormalization needs 17). verify: run the file with onnxruntime at `verify_sizes` (batch,
    height, width) and raise ValueError if the relative error (Frobenius norm) of any output exceeds `tolerance`.

    The file is written as `convert` writes its folders (`io_utils.atomic_output_file`): beside the target, moved into
    place only once complete and verified, under a lock that stops a second pvt-hf process from writing the same file
    (OutputExistsError), after removing what killed runs left there. An existing file is replaced only with `force`,
    and never a file of the model folder being exported (OutputIsInputError).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}.")
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if exporter == "auto":
        exporter = "dynamo" if has_onnxscript else "torchscript"
    elif exporter == "dynamo" and not has_onnxscript:
        raise ImportError(
            "the dynamo exporter (--exporter dynamo) needs the onnxscript package, which torch.onnx builds its graphs "
            "with: `pip install onnxscript`; or use the torchscript exporter, which needs only onnx."
        )
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < float("inf")):
        raise ValueError(f"tolerance (--tolerance) must be a positive, finite relative error, got {tolerance!r}.")
    final_path = Path(output_path)
    if isinstance(model_or_path, (str, os.PathLike)) and Path(model_or_path).exists():
        refuse_overwriting_input(final_path, [model_or_path], "output file")
    if final_path.is_dir():
        raise IsADirectoryError(f"{final_path} is a folder; give the path of the .onnx file to write.")
    check_output_location(final_path, f"the output file {final_path}")
    # Locked for the whole run, and checked before the model is loaded: a second writer fails at once.
    with atomic_output_file(final_path, force=force) as staging:
        model = load_model(model_or_path)
        parameter = next(model.parameters())
        if parameter.dtype != torch.float32 or parameter.device.type != "cpu" or model.training:
            model = copy.deepcopy(model).float().cpu()
        was_training = model.training
        model.eval()
        wrapper = _TensorOutputs(model).eval()
        try:
            result = _export(model, wrapper, wrapper.output_names, staging, exporter, opset_version, example_size)
            if verify:
                result.errors = verify_onnx(wrapper, staging, verify_sizes, smallest_size(model))
                # debug only: callers report `result.errors` (the CLI prints them once)
                logger.debug(
                    "onnxruntime vs PyTorch, max relative error per (batch, height, width): %s", result.errors
                )
                if result.max_relative_error > tolerance:
                    raise ValueError(
                        f"The ONNX model disagrees with PyTorch: relative errors {result.errors} exceed {tolerance}."
                    )
        finally:
            model.train(was_training)
    result.path = final_path
    return result


def _export(model, wrapper, names, output_path: Path, exporter: str, opset_version, example_size) -> OnnxExportResult:
    minimum = smallest_size(model)
    height, width = (max(size, minimum) for size in example_size)
    example = torch.randn(2, model.config.num_channels, height, width)

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer warnings
        if exporter == "dynamo":
            opset_version = opset_version or 18
            dims = {
                0: torch.export.Dim("batch", min=1, max=4096),
                2: torch.export.Dim("height", min=minimum, max=16384),
                3: torch.export.Dim("width", min=minimum, max=16384),
            }
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                input_names=["pixel_values"],
                output_names=names,
                dynamic_shapes={"pixel_values": dims},
                opset_version=opset_version,
                optimize=True,
            )
            program.save(str(output_path), external_data=False)
        else:
            opset_version = opset_version or 17
            dynamic_axes = {"pixel_values": {0: "batch", 2: "height", 3: "width"}}
            spatial = (
                [name for name in names if name != "pooler_output"]
                if type(model).__name__ != "PvtForImageClassification"
                else []
            )
            for name in names:
                dynamic_axes[name] = (
                    {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} if name in spatial else {0: "batch"}
                )
            torch.onnx.export(
                wrapper,
                (example,),
                str(output_path),
                dynamo=False,
                input_names=["pixel_values"],
                output_names=names,
                dynamic_axes=dynamic_axes,
                opset_version=opset_version,
                do_constant_folding=True,
            )
    return OnnxExportResult(output_path, exporter, opset_version, names)


def verify_onnx(
    model: nn.Module, path: str | Path, sizes=DEFAULT_VERIFY_SIZES, minimum: int = 1
) -> dict[tuple[int, int, int], float]:
    """onnxruntime vs PyTorch: the largest relative error (Frobenius norm) over the outputs, per (batch, h, w)."""
    import numpy as np
    import onnxruntime

    wrapper = model if isinstance(model, _TensorOutputs) else _TensorOutputs(model)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    num_channels = wrapper.model.config.num_channels
    errors = {}
    for batch, height, width in sizes:
        height, width = max(height, minimum), max(width, minimum)
        pixel_values = torch.randn(batch, num_channels, height, width, generator=generator)
        with torch.no_grad():
            expected = wrapper(pixel_values)
        got = session.run(None, {"pixel_values": pixel_values.numpy()})
        errors[(batch, height, width)] = max(
            float(
                np.linalg.norm(g.astype(np.float64) - w.double().numpy())
                / max(np.linalg.norm(w.double().numpy()), 1e-30)
            )
            for g, w in zip(got, expected)
        )
    return errors


__all__ = ["OnnxExportResult", "export_onnx", "verify_onnx"]
