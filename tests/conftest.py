import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = FIXTURES / "reference"
CLASSIFICATION_CASES = ["pvt_v1_mini_cls", "pvt_v2_mini_cls", "pvt_v2_li_mini_cls"]
SEGMENTATION_CASES = ["pvt_v1_mini_seg", "pvt_v2_mini_seg", "pvt_v2_li_mini_seg"]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    assert got.shape == want.shape, f"shape {tuple(got.shape)} != {tuple(want.shape)}"
    return ((got.double() - want.double()).norm() / want.double().norm()).item()


def reference_case(name: str) -> tuple[dict, dict]:
    """The official-code description (json) and the input/output tensors of a reference case."""
    return json.loads((REFERENCE / f"{name}.json").read_text()), load_file(REFERENCE / f"{name}.io.safetensors")


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Reference checkpoints converted with the real CLI, once per session: name -> output folder."""
    from pvt_hf_cli import main

    root = tmp_path_factory.mktemp("converted")
    folders = {}

    def convert(name: str) -> str:
        if name not in folders:
            output = root / name
            code = main(
                [
                    "convert",
                    str(REFERENCE / f"{name}.pth"),
                    str(output),
                    "--official-args",
                    str(REFERENCE / f"{name}.json"),
                ]
            )
            assert code == 0
            folders[name] = str(output)
        return folders[name]

    return convert


CUDA_AVAILABLE = torch.cuda.is_available()
# The device-parametrised checks (tests/test_devices.py): `pytest -m cuda` selects the CUDA half, which skips (with this
# reason) where there is no CUDA device.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA_AVAILABLE, reason="no CUDA device")]
    ),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """A torch.device, "cpu" and "cuda". On CUDA, TF32 is off for the test (cuDNN's convolutions use it by default),
    so fp32 results are fp32's."""
    if request.param == "cuda":
        conv_tf32, matmul_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield torch.device("cuda")
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv_tf32, matmul_tf32
    else:
        yield torch.device("cpu")


def pytest_collection_modifyitems(config, items):
    """Two tiers beside the default set, each run only when an -m expression names it: `slow` (end-to-end runs:
    subprocesses, compiles, exports, the browser; CI runs them) and `long` (runs of minutes each: the learning runs
    recorded in benchmarks/RESULTS.md, the benchmark itself, the CPU half of the device tests' compile; not in CI)."""
    markexpr = config.getoption("markexpr") or ""
    for tier in ("slow", "long"):
        if tier in markexpr:
            continue
        skip = pytest.mark.skip(reason=f"{tier}: run with `-m {tier}`")
        for item in items:
            if tier in item.keywords:
                item.add_marker(skip)


# tiny models of each attention variant, shared by the test modules (`from conftest import VARIANTS, tiny_config`)
def tiny_config(version=2, **overrides):
    from pvt_hf import PvtConfig  # (imported here: HF_HUB_OFFLINE is set above before transformers is imported)

    settings = {
        "version": version,
        "hidden_sizes": [16, 32, 48, 64],
        "num_attention_heads": [1, 2, 3, 4],
        "depths": [1, 2, 1, 1],
        "mlp_ratios": [2, 2, 2, 2],
        "num_labels": 5,
        "neck_hidden_size": 16,
        "decoder_hidden_size": 8,
    }
    settings.update(overrides)
    return PvtConfig(**settings)


VARIANTS = {
    "v1": lambda **kw: tiny_config(1, **kw),
    "v2": lambda **kw: tiny_config(2, **kw),
    "v2-linear": lambda **kw: tiny_config(2, linear_attention=True, **kw),
}


# Python in a fresh process, and a Hub-style cache of a folder (remote code and offline Hub ids)
BLOCK_PVT_HF = "import sys; sys.modules['pvt_hf'] = None  # any `import pvt_hf` now fails\n"


def run_python(code: str, env: dict | None = None, cwd=None) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def make_hub_cache(cache, repo_id, folder, commit="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub downloads into: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def pvt_hf_script() -> str:
    """The installed `pvt-hf` console script of this interpreter's environment (beside `python` in a venv's bin/,
    which CI does not put on PATH), else the one on PATH: the command as a user runs it."""
    beside = Path(sys.executable).with_name("pvt-hf")
    script = str(beside) if beside.is_file() else shutil.which("pvt-hf")
    assert script, f"no installed pvt-hf console script for {sys.executable}: pip install -e ."
    return script


# a tiny RT-DETR head over a PVT backbone (composites, device tests, the detection example's --config_overrides)
RT_DETR_TINY = {
    "encoder_hidden_dim": 16,
    "encoder_ffn_dim": 32,
    "encoder_attention_heads": 2,
    "d_model": 16,
    "decoder_in_channels": [16, 16, 16],
    "decoder_ffn_dim": 32,
    "decoder_attention_heads": 2,
    "decoder_layers": 2,
    "num_queries": 10,
    "num_denoising": 6,
}
