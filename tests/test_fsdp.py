"""FSDP2 (`pvt_hf.fully_shard_pvt`, torch's `fully_shard`) on the CPU with two gloo processes: the gradients of one
process for every model class, lean path on and off, resharding after forward or not, with gradient checkpointing;
the lean path in every layer; a bf16 policy for the segmentation model; sharded checkpoint save -> resume; the final
`save_pretrained` folder. The checks run in one launch of `tests/fsdp_worker.py`; each test asserts on one of its
measurements. Also: `fully_shard_pvt`'s argument errors, and the accelerate config files of the examples."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import tiny_config
from fsdp_worker import GRADIENT_CASES
from torch import nn

from pvt_hf import PvtForImageClassification, fully_shard_pvt


WORKER = Path(__file__).parent / "fsdp_worker.py"
CONFIGS = Path(__file__).parents[1] / "examples" / "accelerate_configs"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The worker's measurements (one torchrun launch of 2 gloo processes, ~40-60 s on 2 cores)."""
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("needs torch.distributed with gloo")
    work_dir = tmp_path_factory.mktemp("fsdp")
    results_path = work_dir / "results.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [*command, str(results_path), str(work_dir)], capture_output=True, text=True, env=env, timeout=900
    )
    assert completed.returncode == 0 and results_path.exists(), completed.stderr[-6000:]
    return json.loads(results_path.read_text())


def measured(results: dict, name: str) -> dict:
    result = results[name]
    assert "exception" not in result, result["exception"]
    return result


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_gradients_equal_one_process(results, case):
    """Every parameter's gradient, gathered from the shards, is the single process's (<= 1e-5 relative; the control,
    one rank's gradient without the reduction, is far off), and the lean path runs in every layer where it is on."""
    result = measured(results, f"gradients/{case}")
    assert result["sharded"] and result["parameters"] == result["trainable_parameters"]
    assert result["worst"] <= 1e-5, (result["worst"], result["worst_parameter"])
    assert result["control"] > 1e-2
    lean = GRADIENT_CASES[case][1]
    assert result["lean_layers"] == (result["layers"] if lean else 0)


def test_bf16_policy_for_the_segmentation_model(results):
    """Under a bf16 MixedPrecisionPolicy (fp32 master weights and reduction) the Semantic FPN model trains: torch's
    fully_shard alone fails in the head's BatchNorm, fully_shard_pvt keeps those in fp32. The lean path runs in
    every layer; gradients are fp32, and as far from the fp32 single process's as single-process bf16 autocast's are
    (both ~0.1 relative on this tiny random model, whose gradients are small differences)."""
    result = measured(results, "bf16")
    assert "expected scalar type" in result["plain_fully_shard_error"]
    assert result["lean_layers"] == result["layers"]
    assert result["finite"] and result["gradient_dtypes"] == ["torch.float32"]
    assert result["logits_dtype"] == "torch.bfloat16"
    assert result["loss_relative"] <= 1e-3, result  # measured 1.1e-4, as autocast's
    assert result["all_gradients"] <= 1.5 * result["autocast_all_gradients"], result


def test_bf16_policy_for_a_composite(results):
    """transformers' UperNet on a PVT backbone: its decode head's BatchNorms are kept in fp32 as well."""
    result = measured(results, "composite")
    assert result["finite"] and result["lean_layers"] == result["layers"] == 4


def test_sharded_checkpoint_resume(results):
    """torch.distributed.checkpoint of the sharded model and AdamW state after step 2, loaded into a differently
    initialised sharded model: steps 3 and 4 give the uninterrupted run's losses exactly."""
    result = measured(results, "checkpoint")
    assert result["resumed"] == result["uninterrupted"][2:]


def test_final_folder_loads_with_from_pretrained(results):
    """The full state dict (gathered to rank 0) written by save_pretrained loads with the Auto class and gives the
    sharded model's outputs."""
    result = measured(results, "checkpoint")
    assert result["loaded_class"] == "PvtForSemanticSegmentation"
    assert result["architectures"] == ["PvtForSemanticSegmentation"]
    assert result["logits_relative"] <= 1e-5


def test_sharding_twice_is_an_error(results):
    assert "already sharded" in measured(results, "errors")["twice"]


def test_bad_arguments():
    """Clear errors naming the argument, before anything is sharded (no process group needed)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    model = PvtForImageClassification(tiny_config(2))
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        fully_shard_pvt("pvt-v2-b0")
    with pytest.raises(ValueError, match="holds no PvtLayer"):
        fully_shard_pvt(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="`mesh` must be a torch.distributed.DeviceMesh"):
        fully_shard_pvt(model, mesh="cpu")
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="no `mesh` and no default process group"):
            fully_shard_pvt(model)
    with pytest.raises(TypeError, match="`mp_policy` must be a torch.distributed.fsdp.MixedPrecisionPolicy"):
        fully_shard_pvt(model, mesh=None, mp_policy=torch.bfloat16)
    for bad in ("yes", 0, 1.5):
        with pytest.raises(ValueError, match="`reshard_after_forward` must be True, False"):
            fully_shard_pvt(model, mp_policy=MixedPrecisionPolicy(), reshard_after_forward=bad)
    assert not any(type(module).__name__.startswith("FSDP") for module in model.modules())


def launch_environment(config_file: Path) -> dict[str, str]:
    """The environment `accelerate launch --config_file CONFIG script.py` gives the script's processes."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "script.py"])
    args, _, _ = _validate_launch_command(args)
    return prepare_multi_gpu_env(args)


def test_accelerate_fsdp2_config(monkeypatch):
    """examples/accelerate_configs/fsdp2.yaml: accelerate's loader reads it as FSDP2, and the plugin the launched
    processes build from it wraps each PvtLayer of a PVT model, resharding after forward, with sharded checkpoints."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from pvt_hf import PvtForSemanticSegmentation
    from pvt_hf.modeling_pvt import PvtLayer

    config = load_config_from_file(str(CONFIGS / "fsdp2.yaml"))
    assert config.distributed_type == DistributedType.FSDP and config.mixed_precision == "bf16"
    for name, value in launch_environment(CONFIGS / "fsdp2.yaml").items():
        monkeypatch.setenv(name, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    plugin.set_auto_wrap_policy(PvtForSemanticSegmentation(tiny_config(2)))
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {PvtLayer}


def test_accelerate_ddp_config():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(CONFIGS / "ddp.yaml"))
    assert config.distributed_type == DistributedType.MULTI_GPU and config.mixed_precision == "bf16"
    environment = launch_environment(CONFIGS / "ddp.yaml")
    assert environment["ACCELERATE_MIXED_PRECISION"] == "bf16" and "ACCELERATE_USE_FSDP" not in environment


def test_readme_memory_table_is_the_scripts():
    """docs/training.md "Scaling out": the memory table is `benchmarks/fsdp_memory_table.py`'s output, whose parameter counts
    are `count_flops`'s and whose sharded state shrinks with the ranks."""
    import importlib.util

    from pvt_hf import count_flops

    path = Path(__file__).parents[1] / "benchmarks" / "fsdp_memory_table.py"
    spec = importlib.util.spec_from_file_location("fsdp_memory_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    rows = table.memory_rows()
    assert table.markdown(rows) in (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    b2 = next(row for row in rows if row["preset"] == "pvt-v2-b2" and row["head"] == "classifier")
    assert b2["parameters"] == count_flops("pvt-v2-b2", 224, 224).total_parameters
    assert b2["ddp_mib"] == b2["parameters"] * 16 / 2**20
    fsdp = [b2["fsdp_mib"][ranks] for ranks in table.RANKS]
    assert fsdp == sorted(fsdp, reverse=True) and fsdp[-1] < b2["ddp_mib"] / 4
