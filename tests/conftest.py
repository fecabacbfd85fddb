import json
import os
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
            code = main(["convert", str(REFERENCE / f"{name}.pth"), str(output), "--official-args", str(REFERENCE / f"{name}.json")])
            assert code == 0
            folders[name] = str(output)
        return folders[name]

    return convert


def pytest_collection_modifyitems(config, items):
    """`slow` tests (the long learning runs) run only when asked for: `-m slow` (or any -m expression naming slow)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with `-m slow`")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
