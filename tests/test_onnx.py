"""ONNX export: dynamic batch/height/width, onnxruntime against PyTorch, the `pvt-hf export-onnx` command."""

import numpy as np
import pytest
import torch

from pvt_hf import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation, PvtModel
from pvt_hf.cli import main

from test_modeling import tiny_config

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from pvt_hf.onnx_export import _TensorOutputs, export_onnx  # noqa: E402

# (batch, height, width): square, non-square, not multiples of 32 (nor of 4), several batch sizes
SIZES = [(2, 224, 224), (1, 97, 131), (3, 160, 96), (1, 250, 70)]

MODELS = {
    "v2-classification": lambda: PvtForImageClassification(tiny_config(2)),
    "v2-linear-classification": lambda: PvtForImageClassification(tiny_config(2, linear_attention=True)),
    "v1-classification": lambda: PvtForImageClassification(tiny_config(1)),
    "v2-segmentation": lambda: PvtForSemanticSegmentation(tiny_config(2)),
    "v1-base-model": lambda: PvtModel(tiny_config(1)),
    "v2-backbone": lambda: PvtBackbone(tiny_config(2, out_features=["stage2", "stage4"])),
}


def relative_errors(model, path, sizes):
    """Independently of `verify_onnx`: onnxruntime's outputs against the PyTorch model's, per size."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [node.name for node in session.get_inputs()] == ["pixel_values"]
    wrapper = _TensorOutputs(model).eval()
    generator = torch.Generator().manual_seed(1)
    errors = {}
    for batch, height, width in sizes:
        pixel_values = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = [tensor.double().numpy() for tensor in wrapper(pixel_values)]
        got = session.run(None, {"pixel_values": pixel_values.numpy()})
        assert len(got) == len(expected)
        for g, want in zip(got, expected):
            assert g.shape == want.shape, (batch, height, width)
        errors[(batch, height, width)] = max(
            np.linalg.norm(g - want) / np.linalg.norm(want) for g, want in zip(got, expected)
        )
    return errors


@pytest.mark.parametrize("name", list(MODELS))
def test_export_matches_pytorch_at_any_size_and_batch(name, tmp_path):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    result = export_onnx(model, tmp_path / "model.onnx")
    assert result.path == tmp_path / "model.onnx" and result.path.is_file()
    assert result.max_relative_error is not None and result.max_relative_error <= 1e-4
    errors = relative_errors(model, result.path, SIZES)
    assert max(errors.values()) <= 1e-4, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no leftovers


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = PvtForImageClassification(tiny_config(2)).train()
    export_onnx(model, tmp_path / "model.onnx", verify=False)
    assert model.training


def test_failed_verification_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="disagrees with PyTorch"):
        export_onnx(PvtForImageClassification(tiny_config(2)), path, tolerance=-1.0)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_cli_exports_a_folder_and_refuses_to_overwrite(tmp_path, capsys):
    folder = tmp_path / "model"
    model = PvtForImageClassification(tiny_config(2)).eval()
    model.save_pretrained(folder)
    output = tmp_path / "out" / "model.onnx"

    assert main(["export-onnx", str(folder), str(output)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {output}" in printed and "max relative error" in printed
    assert max(relative_errors(model, output, SIZES[:2]).values()) <= 1e-4

    before = output.read_bytes()
    assert main(["export-onnx", str(folder), str(output)]) == 1
    error = capsys.readouterr().err
    assert "already exists" in error and "--force" in error and len(error.strip().splitlines()) == 1
    assert output.read_bytes() == before

    assert main(["export-onnx", str(folder), str(output), "--force", "--no-verify"]) == 0
    assert "max relative error" not in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["export-onnx", str(tmp_path / "no-such-model"), str(tmp_path / "m.onnx")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("pvt-hf export-onnx: error:") and len(error.splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()

    assert main(["export-onnx", "pvt-v2-b0", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
