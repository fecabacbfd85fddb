"""The checks that must hold on every device, run on "cpu" and "cuda" (the `device` fixture of conftest.py):
`python -m pytest -m cuda tests/test_devices.py` runs the CUDA half (benchmarks/gpu_check.sh does), which skips with
a reason where there is no CUDA device. The CPU half is small, the rest of the suite covers the CPU in depth; the point
is the same code on CUDA: the official outputs in fp32 and within bf16 rounding, the lean training path's gradients
(dropout and drop path replayed from CUDA's random state), the banded segmentation loss, the ways users run a model
(autocast, bf16 weights, device_map="auto", torch.compile), and a 3-step run of each example script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    CLASSIFICATION_CASES,
    CUDA_AVAILABLE,
    DEVICES,
    RT_DETR_TINY,
    SEGMENTATION_CASES,
    reference_case,
    relative_error,
)
from PIL import Image
from transformers import AutoModelForImageClassification, AutoModelForSemanticSegmentation

from pvt_hf import PvtConfig, PvtForSemanticSegmentation, lean_training


CASES = CLASSIFICATION_CASES + SEGMENTATION_CASES
BF16_TOLERANCE = 3e-2  # relative: a few bf16 ulps (8 significant bits) through the network
# fp32 against the official CPU outputs: <= 1e-6 (classification) / 1e-5 (segmentation) on the CPU, as in
# test_parity.py; CUDA's kernels sum in other orders.
FP32_TOLERANCE = {"cpu": {"cls": 1e-6, "seg": 1e-5}, "cuda": {"cls": 1e-5, "seg": 1e-5}}
DROPOUT = {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.1, "drop_path_rate": 0.3}
TINY = {
    "hidden_sizes": [16, 32, 48, 64],
    "num_attention_heads": [1, 2, 3, 4],
    "depths": [1, 2, 1, 1],
    "mlp_ratios": [2, 2, 2, 2],
    "num_labels": 5,
    "neck_hidden_size": 16,
    "decoder_hidden_size": 8,
}
VARIANTS = {"v1": {"version": 1}, "v2": {"version": 2}, "v2-linear": {"version": 2, "linear_attention": True}}
# where other tests cover the CPU, the CPU half is slow
SLOW_ON_CPU = [pytest.param("cpu", id="cpu", marks=pytest.mark.slow), *DEVICES[1:]]
# compiling on the CPU takes minutes and tests/test_compile.py covers it there
LONG_ON_CPU = [pytest.param("cpu", id="cpu", marks=pytest.mark.long), *DEVICES[1:]]
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_model(variant: str, device: torch.device, **overrides) -> PvtForSemanticSegmentation:
    torch.manual_seed(0)
    return PvtForSemanticSegmentation(PvtConfig(**TINY, **VARIANTS[variant], **overrides)).to(device)


def load_reference(name: str, folder: str, device: torch.device, **options):
    auto_class = AutoModelForImageClassification if name in CLASSIFICATION_CASES else AutoModelForSemanticSegmentation
    return auto_class.from_pretrained(folder, **options).to(device).eval()


def case_tensors(name: str, device: torch.device):
    """(pixel values, official logits) of each case of a reference checkpoint."""
    spec, tensors = reference_case(name)
    for case in spec["cases"]:
        yield tensors[case["pixel_values"]].to(device), tensors[case["logits"]]


# ------------------------------------------------------------------------------------------------ official outputs


@pytest.mark.parametrize("device", SLOW_ON_CPU, indirect=True)
@pytest.mark.parametrize("name", CASES)
def test_official_outputs_fp32(name, device, converted):
    """sdpa attention and the plain modules (what runs on GPUs; on the CPU, where tests/test_parity.py covers both
    paths and attentions, the fused kernels are switched off)."""
    model = load_reference(name, converted(name), device, fused_cpu_kernels=False)
    tolerance = FP32_TOLERANCE[device.type]["cls" if name in CLASSIFICATION_CASES else "seg"]
    for pixel_values, want in case_tensors(name, device):
        with torch.no_grad():
            got = model(pixel_values).logits
        assert got.device.type == device.type
        assert relative_error(got.cpu(), want) <= tolerance, name


@pytest.mark.parametrize("name", CASES)
def test_official_outputs_bf16(name, device, converted):
    """bf16 weights (`dtype=torch.bfloat16`) and fp32 weights under bf16 autocast."""
    in_bf16 = load_reference(name, converted(name), device, dtype=torch.bfloat16)
    fp32 = load_reference(name, converted(name), device)
    assert in_bf16.dtype == torch.bfloat16
    for pixel_values, want in case_tensors(name, device):
        with torch.no_grad():
            weights_bf16 = in_bf16(pixel_values.bfloat16()).logits
            with torch.autocast(device.type, dtype=torch.bfloat16):
                autocast = fp32(pixel_values).logits
        assert weights_bf16.dtype == torch.bfloat16
        assert relative_error(weights_bf16.float().cpu(), want) <= BF16_TOLERANCE, name
        assert relative_error(autocast.float().cpu(), want) <= BF16_TOLERANCE, name


# ------------------------------------------------------------------------------------------------ lean training


def gradients(model, pixel_values, lean: bool, autocast: bool) -> dict[str, torch.Tensor]:
    """Loss, input gradient and parameter gradients of a loss over every logit, with the same random draws (dropout,
    drop path) for both paths."""
    module = getattr(model, "_orig_mod", model)  # (a torch.compile'd model: the parameters' names of the model)
    module.config.lean_training = lean
    module.zero_grad(set_to_none=True)
    pixel_values = pixel_values.detach().clone().requires_grad_(True)
    torch.manual_seed(123)  # seeds CUDA's generator too
    with torch.autocast(pixel_values.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(pixel_values=pixel_values).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1)).to(logits.device)
    loss = (logits.float() * weights).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return {"loss": loss.detach(), "pixel_values": pixel_values.grad, **grads}


def assert_same(got: dict, want: dict, tolerance: float) -> None:
    assert got.keys() == want.keys()
    worst = {name: relative_error(got[name].cpu(), want[name].cpu()) for name in want}
    assert max(worst.values()) <= tolerance, sorted(worst.items(), key=lambda item: -item[1])[:3]


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lean_training_gradients_equal_the_plain_modules(variant, autocast, device, monkeypatch):
    """The lean path (on by default) against `lean_training=False`, with dropout, attention dropout and drop path,
    the inner dropout's mask replayed in backward. fp32: <= 1e-5 relative; bf16 autocast: the same ops in the same
    dtypes, equal on the CPU, on CUDA within bf16 rounding (its kernels may split the recomputed GEMMs otherwise)."""
    calls = []
    original = lean_training.LeanConvFFN.apply
    monkeypatch.setattr(lean_training.LeanConvFFN, "apply", lambda *args: calls.append(1) or original(*args))
    model = tiny_model(variant, device, **DROPOUT).train()
    pixel_values = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)).to(device)
    plain = gradients(model, pixel_values, lean=False, autocast=autocast)
    assert not calls
    lean = gradients(model, pixel_values, lean=True, autocast=autocast)
    assert len(calls) == sum(model.config.depths)
    assert all(grad.dtype == torch.float32 for name, grad in lean.items())
    assert_same(lean, plain, 1e-2 if autocast and device.type == "cuda" else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_banded_segmentation_loss(dtype, device, monkeypatch):
    """The Semantic FPN loss upsampled and scored in bands of a few rows (ignored pixels included, a bilinear scale
    that is not an integer): the float32 loss and gradient of upsampling the whole map at once."""
    monkeypatch.setattr(lean_training, "LOSS_BAND_BYTES", 2 * 5 * 75 * 4 * 3)  # 3 rows per band
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 16, 24, generator=generator).to(device, dtype).requires_grad_(True)
    labels = torch.randint(0, 5, (2, 61, 75), generator=generator).to(device)
    labels[0, :10] = 255
    banded = lean_training.upsampled_cross_entropy(logits, labels, 255)
    (banded_grad,) = torch.autograd.grad(banded, logits)
    wide = logits.detach().float().requires_grad_(True)
    reference = F.cross_entropy(F.interpolate(wide, size=(61, 75), mode="bilinear"), labels, ignore_index=255)
    (reference_grad,) = torch.autograd.grad(reference, wide)
    assert banded.dtype == torch.float32 and banded_grad.dtype == dtype and banded_grad.device.type == device.type
    assert relative_error(banded.cpu(), reference.cpu()) <= 1e-6
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    assert relative_error(banded_grad.float().cpu(), reference_grad.to(dtype).float().cpu()) <= tolerance


# ------------------------------------------------------------------------------------------------ run paths


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny random PVT v2 Semantic FPN model saved with save_pretrained, and its fp32 CPU logits."""
    folder = tmp_path_factory.mktemp("saved") / "model"
    model = tiny_model("v2", torch.device("cpu")).eval()
    model.save_pretrained(folder)
    pixel_values = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return folder, pixel_values, model(pixel_values).logits


def test_run_paths(device, saved_model):
    """device_map="auto" (on CUDA: the GPU), bf16 weights, bf16 autocast inference and an autocast training step."""
    folder, pixel_values, expected = saved_model
    mapped = AutoModelForSemanticSegmentation.from_pretrained(folder, device_map="auto").eval()
    assert {parameter.device.type for parameter in mapped.parameters()} == {"cuda" if CUDA_AVAILABLE else "cpu"}
    with torch.no_grad():
        got = mapped(pixel_values.to(mapped.device)).logits
    assert relative_error(got.cpu(), expected) <= (1e-6 if got.device.type == "cpu" else 1e-5)

    in_bf16 = AutoModelForSemanticSegmentation.from_pretrained(folder, dtype=torch.bfloat16).to(device).eval()
    with torch.no_grad():
        got = in_bf16(pixel_values.to(device, torch.bfloat16)).logits
    assert relative_error(got.float().cpu(), expected) <= BF16_TOLERANCE

    model = AutoModelForSemanticSegmentation.from_pretrained(folder).to(device).eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        got = model(pixel_values.to(device)).logits
    assert relative_error(got.float().cpu(), expected) <= BF16_TOLERANCE
    model.train()
    labels = torch.randint(0, 5, (2, 64, 96), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = model(pixel_values=pixel_values.to(device), labels=labels).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("device", LONG_ON_CPU, indirect=True)
def test_torch_compile(device, saved_model):
    """torch.compile (inductor) of inference and of a lean training step: eager's logits and gradients. (The CPU
    half is `long`: inductor compiles for minutes on 2 cores; tests/test_compile.py covers the CPU.)"""
    torch._dynamo.reset()
    folder, pixel_values, expected = saved_model
    model = AutoModelForSemanticSegmentation.from_pretrained(folder).to(device).eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        assert relative_error(compiled(pixel_values.to(device)).logits.cpu(), expected) <= 1e-4
    model.train()  # (no dropout: inductor draws its own random numbers)
    eager = gradients(model, pixel_values.to(device), lean=True, autocast=False)
    got = gradients(compiled, pixel_values.to(device), lean=True, autocast=False)
    assert_same(got, eager, 1e-4)
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------------------ example scripts
# Each script as a user runs it, 3 optimizer steps on tiny generated data. On the CPU the scripts are covered in depth
# by tests/test_examples.py (hence slow here).


def run_script(script: str, *args, device: torch.device, tmp_path: Path) -> str:
    """`python examples/SCRIPT ARGS` in a fresh process, on `device` (the CPU: ACCELERATE_USE_CPU=1, which the
    Trainer honours as --use_cpu); its output."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    if device.type == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"
    command = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{output}"
    return result.stdout + result.stderr


def generated(script: str, folder: Path) -> Path:
    """A dataset written by one of the examples' generators (command line): 6 training, 2 validation images."""
    command = [
        sys.executable,
        str(EXAMPLES / script),
        str(folder),
        "--num_train",
        "6",
        "--num_val",
        "2",
        "--min_size",
        "64",
        "--max_size",
        "96",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return folder


def trained_steps(output: Path) -> int:
    return json.loads((output / "trainer_state.json").read_text())["global_step"]


@pytest.mark.parametrize("device", SLOW_ON_CPU, indirect=True)
def test_semantic_segmentation_example(device, tmp_path, converted):
    data = generated("make_shapes_dataset.py", tmp_path / "ADEChallengeData2016")
    output = tmp_path / "out"
    log = run_script(
        "finetune_ade20k.py",
        "--model_name_or_path",
        converted("pvt_v2_mini_seg"),
        "--data_dir",
        data,
        "--output_dir",
        output,
        "--per_device_train_batch_size",
        2,
        "--crop_size",
        64,
        "--max_train_steps",
        3,
        "--num_workers",
        0,
        device=device,
        tmp_path=tmp_path,
    )
    assert f"Device: {device.type}" in log  # accelerate's state, logged by the script
    assert (output / "model.safetensors").is_file() and (output / "all_results.json").is_file()


@pytest.mark.parametrize("device", SLOW_ON_CPU, indirect=True)
def test_image_classification_example(device, tmp_path, converted):
    data = tmp_path / "images"
    for index, (label, colour) in enumerate(((("red", (200, 30, 30)),) * 3) + ((("blue", (30, 30, 200)),) * 3)):
        (data / label).mkdir(parents=True, exist_ok=True)
        noise = torch.randint(-30, 30, (40, 48, 3), generator=torch.Generator().manual_seed(index))
        pixels = (torch.tensor(colour) + noise).clamp(0, 255).byte().numpy()
        Image.fromarray(pixels).save(data / label / f"{index}.png")
    output = tmp_path / "out"
    run_script(
        "finetune_image_classification.py",
        "--model_name_or_path",
        converted("pvt_v2_mini_cls"),
        "--train_dir",
        data,
        "--output_dir",
        output,
        "--do_train",
        "--max_steps",
        3,
        "--per_device_train_batch_size",
        2,
        "--report_to",
        "none",
        device=device,
        tmp_path=tmp_path,
    )
    assert trained_steps(output) == 3


@pytest.mark.parametrize("device", SLOW_ON_CPU, indirect=True)
def test_object_detection_example(device, tmp_path, converted):
    data = generated("make_shapes_detection_dataset.py", tmp_path / "shapes")
    output = tmp_path / "out"
    run_script(
        "finetune_object_detection.py",
        "--backbone_name_or_path",
        converted("pvt_v2_mini_cls"),
        "--config_overrides",
        json.dumps(RT_DETR_TINY),
        "--train_annotations",
        data / "train.json",
        "--train_images",
        data / "train",
        "--validation_annotations",
        data / "validation.json",
        "--validation_images",
        data / "validation",
        "--image_size",
        64,
        "--output_dir",
        output,
        "--do_train",
        "--max_steps",
        3,
        "--per_device_train_batch_size",
        2,
        "--save_strategy",
        "no",
        "--report_to",
        "none",
        device=device,
        tmp_path=tmp_path,
    )
    assert trained_steps(output) == 3
