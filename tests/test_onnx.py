"""ONNX export: dynamic batch/height/width, onnxruntime against PyTorch, the `pvt-hf export-onnx` command."""

import importlib.util
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import pvt_hf_script, tiny_config

from pvt_hf import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation, PvtModel
from pvt_hf_cli import main


onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from pvt_hf.tools.io_utils import OutputExistsError, atomic_output_file  # noqa: E402
from pvt_hf.tools.onnx_export import _TensorOutputs, export_onnx  # noqa: E402


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


def test_export_verifies_a_model_of_other_channels(tmp_path):
    model = PvtForImageClassification(tiny_config(2, num_channels=1)).eval()
    result = export_onnx(model, tmp_path / "gray.onnx", verify_sizes=((2, 64, 48),))
    assert list(result.errors) == [(2, 64, 48)] and result.max_relative_error <= 1e-4
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 1


def test_export_leaves_the_model_as_it_was(tmp_path):
    model = PvtForImageClassification(tiny_config(2)).train()
    export_onnx(model, tmp_path / "model.onnx", verify=False)
    assert model.training


def test_failed_verification_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):  # without force: refused before any work
        export_onnx(PvtForImageClassification(tiny_config(2)), path, verify=False)
    with pytest.raises(ValueError, match="disagrees with PyTorch"):
        # a tolerance no real export meets (onnxruntime's kernels are not PyTorch's)
        export_onnx(PvtForImageClassification(tiny_config(2)), path, tolerance=1e-300, force=True)
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


# ----------------------------------------------------------------------------------------------------------------
# Concurrent and interrupted runs: the lock and the staging cleanup of `io_utils`, as for `convert`


def _saved_tiny_model(tmp_path):
    folder = tmp_path / "model"
    PvtForImageClassification(tiny_config(2)).save_pretrained(folder)
    return folder


def test_cli_refuses_a_file_another_process_is_writing(tmp_path, capsys):
    folder, output = _saved_tiny_model(tmp_path), tmp_path / "out" / "model.onnx"
    capsys.readouterr()  # save_pretrained's progress bar
    with atomic_output_file(output) as staging:  # holds `.model.onnx.lock`, as a running export does
        staging.write_bytes(b"the other writer's file")
        assert main(["export-onnx", str(folder), str(output), "--no-verify"]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("pvt-hf export-onnx: error:") and len(error.splitlines()) == 1
        assert "being written by another process" in error and ".model.onnx.lock" in error
        assert sorted(p.name for p in output.parent.iterdir()) == sorted(
            [".model.onnx.lock", staging.name]
        )  # wrote nothing
        # --force does not override a lock: the other run's file is not replaced under it
        assert main(["export-onnx", str(folder), str(output), "--no-verify", "--force"]) == 1
        assert "being written by another process" in capsys.readouterr().err
    assert output.read_bytes() == b"the other writer's file"
    assert sorted(p.name for p in output.parent.iterdir()) == ["model.onnx"]


def test_cli_removes_what_a_killed_run_left_and_nothing_else(tmp_path, capsys):
    folder, output = _saved_tiny_model(tmp_path), tmp_path / "model.onnx"
    # The pid of a process that has exited, as a killed export's would be.
    dead_pid = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        ).stdout
    )
    stale = tmp_path / f".model.onnx.incomplete-{dead_pid}-ab12"
    stale.write_bytes(b"half an ONNX file")
    live_owner = tmp_path / f".model.onnx.incomplete-{os.getpid()}-cd34"  # a running process's: not ours to remove
    live_owner.write_bytes(b"in progress")
    other_target = tmp_path / f".other.onnx.incomplete-{dead_pid}-ef56"  # another target's: not ours to remove
    other_target.write_bytes(b"other")

    assert main(["export-onnx", str(folder), str(output), "--no-verify"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live_owner.name, other_target.name, "model", "model.onnx"]
    )
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [node.name for node in session.get_outputs()] == ["logits"]


def test_atomic_output_file_keeps_the_old_file_on_failure_and_uses_the_umask(tmp_path):
    path = tmp_path / "result.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="failed half-way"):
        with atomic_output_file(path, force=True) as staging:
            staging.write_bytes(b"partial")
            raise RuntimeError("failed half-way")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_output_file(path, force=True):
            pass
    assert path.read_bytes() == b"old"

    old_umask = os.umask(0o027)
    try:
        with atomic_output_file(path, force=True) as staging:
            staging.write_bytes(b"new")
            staging.chmod(0o600)  # as `mkstemp` and some writers leave it
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"new" and stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.bin"]


# ----------------------------------------------------------------------------------------------------------------
# Bad input, named before any work (issue 25)


def pvt_hf(*argv, timeout=300):
    """The installed console script, as a user runs it, in a fresh process."""
    return subprocess.run(
        [pvt_hf_script(), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.mark.parametrize("tolerance", ["-1", "0", "nan", "inf", "tiny"])
def test_cli_rejects_tolerances_that_accept_nothing_or_everything(tmp_path, tolerance):
    result = pvt_hf("export-onnx", "pvt-v2-b0", tmp_path / "m.onnx", "--tolerance", tolerance)
    assert result.returncode == 2 and "argument --tolerance: expected a positive" in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tolerance", [-1.0, 0.0, float("nan")])
def test_library_rejects_bad_tolerances_before_exporting(tmp_path, tolerance):
    with pytest.raises(ValueError, match=r"tolerance \(--tolerance\) must be a positive, finite"):
        export_onnx(PvtForImageClassification(tiny_config(2)), tmp_path / "m.onnx", tolerance=tolerance)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is not None, reason="onnxscript is installed")
def test_dynamo_exporter_without_onnxscript_says_what_to_install(tmp_path, capsys):
    folder = _saved_tiny_model(tmp_path)
    capsys.readouterr()
    assert main(["export-onnx", str(folder), str(tmp_path / "m.onnx"), "--exporter", "dynamo"]) == 1
    error = capsys.readouterr().err
    assert (
        "--exporter dynamo" in error and "needs the onnxscript package" in error and "pip install onnxscript" in error
    )
    assert not (tmp_path / "m.onnx").exists()


def test_cli_unwritable_output_fails_before_the_work_naming_it(tmp_path):
    """Not on the lock file's name, and not after loading the model: the user's OUT.onnx, at once."""
    (tmp_path / "a-file").write_text("x")
    output = tmp_path / "a-file" / "m.onnx"
    result = pvt_hf("export-onnx", "pvt-v2-b0", output, "--no-verify")
    assert result.returncode == 1, result.stderr
    assert f"OUT.onnx {output}: {tmp_path / 'a-file'} is not a folder" in result.stderr, result.stderr
    assert "random weights" not in result.stderr  # the model was not loaded
    if os.geteuid() != 0:  # root writes into read-only folders
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o555)
        result = pvt_hf("export-onnx", "pvt-v2-b0", readonly / "m.onnx", "--no-verify")
        assert f"OUT.onnx {readonly / 'm.onnx'}: cannot create files in {readonly}" in result.stderr, result.stderr
        assert ".lock" not in result.stderr and list(readonly.iterdir()) == []
