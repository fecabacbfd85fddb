"""Hub-ready folders from converted models: weights, config, processor, code, model card; verified, then
published."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from .io_utils import atomic_output_dir, check_output_location
from .model_card import model_card


logger = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

# Run in a fresh interpreter: load the folder through the Auto classes (a backbone: `PvtBackbone`, as transformers'
# `AutoBackbone.from_pretrained` does not take local folders) and compare with the in-memory outputs.
# It exits by itself when its parent dies (a killed convert must not leave it running).
_VERIFY_SCRIPT = """
import os, threading, time
parent = os.getppid()
def exit_with_parent():
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)
threading.Thread(target=exit_with_parent, daemon=True).start()
import json, sys, torch, pvt_hf, transformers
from safetensors.torch import load_file
folder, expected_path, auto_class = sys.argv[1:4]
expected = load_file(expected_path)
from pvt_hf.tools.hub import verification_output
model = (getattr(transformers, auto_class, None) or getattr(pvt_hf, auto_class)).from_pretrained(folder, dtype="auto").eval()
logits = verification_output(model, expected["pixel_values"])
want = expected["logits"]
print(json.dumps({"relative_error": ((logits - want).norm() / want.norm()).item(), "class": type(model).__name__}))
"""


def verification_input(model: torch.nn.Module) -> torch.Tensor:
    """Fixed, non-square input (not a multiple of 32), so that resizing paths are exercised."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, model.config.num_channels, 200, 264, generator=generator)


def verification_output(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """What the reload check compares, in fp32: the logits, or a backbone's feature maps (flattened, concatenated)."""
    with torch.no_grad():
        outputs = model(pixel_values.to(model.dtype))
    if getattr(outputs, "logits", None) is not None:
        return outputs.logits.float()
    return torch.cat([feature_map.flatten() for feature_map in outputs.feature_maps]).float()


def verify_folder(
    folder: Path, model: torch.nn.Module, tolerance: float = 1e-5, scratch_dir: Path | None = None
) -> float:
    """Reload `folder` in a clean process and return the relative error of its logits (a backbone's: its feature
    maps) against `model`'s; raise if it exceeds `tolerance`. The expected outputs are written to a temporary folder
    inside `scratch_dir` (default: the system's), removed afterwards."""
    auto_class = {"PvtForSemanticSegmentation": "AutoModelForSemanticSegmentation", "PvtBackbone": "PvtBackbone"}.get(
        type(model).__name__, "AutoModelForImageClassification"
    )
    pixel_values = verification_input(model)
    logits = verification_output(model, pixel_values)
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        expected_path = os.path.join(scratch, "expected.safetensors")
        save_file({"pixel_values": pixel_values, "logits": logits.contiguous()}, expected_path)
        result = subprocess.run(
            [sys.executable, "-c", _VERIFY_SCRIPT, str(folder), expected_path, auto_class],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    if result.returncode != 0:
        raise RuntimeError(f"Verification failed: the written folder does not load: {result.stderr.strip()[-2000:]}")
    error = json.loads(result.stdout.strip().splitlines()[-1])["relative_error"]
    if not error <= tolerance:
        raise RuntimeError(
            f"Verification failed: the reloaded model's logits differ by {error:.2e} (> {tolerance:.0e})."
        )
    return error


def compare_with_timm(official_state_dict: dict, model: torch.nn.Module, variant: str | None) -> float | None:
    """Relative logit error against timm's PVT v2 loaded from the same official weights, when timm is importable
    and the model is a released v2 classifier; else None."""
    if variant is None or not variant.startswith("pvt-v2") or type(model).__name__ != "PvtForImageClassification":
        return None
    try:
        import timm
        from timm.models.pvt_v2 import checkpoint_filter_fn
    except Exception:  # timm is optional (and needs a matching torchvision)
        return None
    name = variant.replace("-linear", "-li").replace("-", "_")
    reference = timm.create_model(name, pretrained=False, num_classes=model.config.num_labels).eval()
    reference.load_state_dict(checkpoint_filter_fn(official_state_dict, reference))
    pixel_values = verification_input(model)
    with torch.no_grad():
        want = reference(pixel_values)
        got = model(pixel_values.to(model.dtype)).logits.float()
    return ((got - want).norm() / want.norm()).item()


def write_repo_folder(
    model: torch.nn.Module,
    output_dir: str | Path,
    *,
    variant: str | None,
    source: str,
    repo_id: str | None = None,
    dtype: str = "float32",
    force: bool = False,
    verify: bool = True,
    image_processor=None,
    checks: dict | None = None,
) -> dict:
    """Write a Hub repository folder (config with id2label, model.safetensors, preprocessor_config.json, the
    modeling code with `auto_map`, README.md) through a staging folder, verify it, then move it into place (see
    `io_utils.atomic_output_dir`). `checks`: results of checks made before (e.g. `timm_relative_error`), stated in the
    model card with the reload check's. Returns what was measured."""
    if dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {sorted(DTYPES)}, got {dtype!r}.")
    task = {"PvtForSemanticSegmentation": "semantic-segmentation", "PvtBackbone": "backbone"}.get(
        type(model).__name__, "classification"
    )
    output_dir = Path(output_dir)
    check_output_location(output_dir, f"the output folder {output_dir}")  # before casting and saving
    repo_id = repo_id or output_dir.name
    model = model.to(DTYPES[dtype])
    results = {"dtype": str(DTYPES[dtype]).removeprefix("torch.")}
    with atomic_output_dir(output_dir, force=force) as staging:
        model.save_pretrained(staging)
        if image_processor is not None:
            image_processor.save_pretrained(staging)
        checks = dict(checks or {})
        if verify:
            tolerance = 1e-5 if DTYPES[dtype] == torch.float32 else 1e-2
            # scratch inside the staging folder: removed with it, also after an interrupted run
            checks["reload_relative_error"] = verify_folder(staging, model, tolerance, scratch_dir=staging)
            results["reload_relative_error"] = checks["reload_relative_error"]
        num_parameters = sum(parameter.numel() for parameter in model.parameters())
        (staging / "README.md").write_text(
            model_card(model.config, variant, task, repo_id, num_parameters, source, checks)
        )
    results["files"] = sorted(path.name for path in output_dir.iterdir())
    return results


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Create `repo_id` if needed and upload `folder`; with `dry_run`, only list what would be uploaded."""
    folder = Path(folder)
    files = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    if dry_run:
        return files
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} converted with pvt-hf",
        )
    except OfflineModeIsEnabled as error:
        raise ConnectionError(
            f"Cannot push to the Hub: offline mode is on (HF_HUB_OFFLINE=1). {folder} was written and is complete."
        ) from error
    except OSError as error:  # requests' and httpx's connection errors derive from OSError
        raise ConnectionError(
            f"Cannot reach the Hugging Face Hub to push {repo_id} ({type(error).__name__}). {folder} was written "
            "and is complete; push it later with --push-to-hub."
        ) from error
    return files
