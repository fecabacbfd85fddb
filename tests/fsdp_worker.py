"""The FSDP2 checks of `tests/test_fsdp.py`, in one launch of two gloo processes on the CPU:

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 tests/fsdp_worker.py RESULTS.json WORK_DIR

Each check measures (the largest relative gradient error against one process, which layers ran the lean path, losses,
errors raised) and rank 0 writes the measurements to RESULTS.json; the test asserts on them, one test per check.
"""

import copy
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from conftest import tiny_config  # (torchrun runs this file as a script: its folder is on sys.path)
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from transformers import AutoModelForSemanticSegmentation, UperNetForSemanticSegmentation

from pvt_hf import (
    PvtBackbone,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    composite_config,
    fully_shard_pvt,
    lean_training,
)
from pvt_hf.modeling_pvt import PvtLayer


MODELS = {
    "classifier": lambda: PvtForImageClassification(tiny_config(2, classifier_dropout_prob=0.0)),
    "backbone": lambda: PvtBackbone(tiny_config(2, out_indices=[0, 1, 2, 3])),
    "segmentation": lambda: PvtForSemanticSegmentation(tiny_config(2, classifier_dropout_prob=0.0)),
}
BATCH, SIZE = 4, 64  # the global batch: two images per rank


def batch(step: int = 0) -> dict[str, torch.Tensor]:
    """The global batch of a step (the same on every rank)."""
    generator = torch.Generator().manual_seed(1000 + step)
    return {
        "pixel_values": torch.randn(BATCH, 3, SIZE, SIZE, generator=generator),
        "class_labels": torch.randint(0, 5, (BATCH,), generator=generator),
        "label_maps": torch.randint(0, 5, (BATCH, SIZE, SIZE), generator=generator),
        "map_weights": [
            torch.randn(BATCH, c, SIZE // s, SIZE // s, generator=generator)
            for c, s in ((16, 4), (32, 8), (48, 16), (64, 32))
        ],
    }


def loss_of(model, data: dict, part: slice) -> torch.Tensor:
    """A mean over the images of `part` (the mean of the ranks' losses is the global batch's)."""
    pixel_values = data["pixel_values"][part]
    if isinstance(model, PvtForImageClassification):
        return model(pixel_values, labels=data["class_labels"][part]).loss
    if isinstance(model, PvtForSemanticSegmentation):
        return model(pixel_values, labels=data["label_maps"][part]).loss
    maps = model(pixel_values).feature_maps
    return sum((feature_map * weights[part]).sum() for feature_map, weights in zip(maps, data["map_weights"])) / BATCH


def part_of(rank: int) -> slice:
    per_rank = BATCH // dist.get_world_size()
    return slice(rank * per_rank, (rank + 1) * per_rank)


def one_process_gradients(model, data) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """What the ranks' averaged gradients should be: one process accumulating each rank's part, averaged. Also the
    first part's gradients alone (a control: what a rank would have without the reduction) and the mean loss."""
    model.zero_grad(set_to_none=True)
    first, total_loss = None, 0.0
    for rank in range(dist.get_world_size()):
        loss = loss_of(model, data, part_of(rank))
        loss.backward()
        total_loss += loss.item() / dist.get_world_size()
        if first is None:
            first = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    averaged = {name: p.grad / dist.get_world_size() for name, p in model.named_parameters() if p.grad is not None}
    return averaged, first, total_loss


def full_gradients(model) -> dict[str, torch.Tensor]:
    """The sharded model's gradients, gathered (a collective: every rank calls it)."""
    return {name: p.grad.full_tensor() for name, p in model.named_parameters() if p.grad is not None}


def worst_relative(got: dict, want: dict) -> tuple[float, str]:
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    errors = {
        name: ((got[name].double() - want[name].double()).norm() / want[name].double().norm().clamp_min(1e-30)).item()
        for name in want
    }
    name = max(errors, key=errors.get)
    return errors[name], name


def all_gradients_relative(got: dict, want: dict) -> float:
    """The relative error of all gradients as one vector."""
    return worst_relative(
        {"all": torch.cat([got[name].flatten() for name in want])},
        {"all": torch.cat([want[name].flatten() for name in want])},
    )[0]


class LeanLayers:
    """The `PvtLayer`s whose MLP branch ran lean (`lean_training.lean_mlp_branch`) while active."""

    def __init__(self):
        self.layers = set()
        self.original = lean_training.lean_mlp_branch

    def __enter__(self):
        def counting(layer, *args, **kwargs):
            self.layers.add(id(layer))
            return self.original(layer, *args, **kwargs)

        lean_training.lean_mlp_branch = counting
        return self

    def __exit__(self, *exc):
        lean_training.lean_mlp_branch = self.original


def layer_count(model) -> int:
    return sum(isinstance(module, PvtLayer) for module in model.modules())


# (model, lean_training, reshard_after_forward, gradient checkpointing): every combination
GRADIENT_CASES = {
    f"{kind}-lean={lean}-reshard={reshard}-checkpointing={checkpointing}": (kind, lean, reshard, checkpointing)
    for kind in MODELS
    for lean in (True, False)
    for reshard in (True, False)
    for checkpointing in (False, True)
}


def gradients_case(kind: str, lean: bool, reshard: bool, checkpointing: bool) -> dict:
    torch.manual_seed(0)
    model = MODELS[kind]().train()
    model.config.lean_training = lean
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    reference = copy.deepcopy(model)
    data = batch()
    if dist.get_rank() == 0:
        want, first_part, _ = one_process_gradients(reference, data)
    fully_shard_pvt(model, reshard_after_forward=reshard)
    with LeanLayers() as lean_layers:
        loss_of(model, data, part_of(dist.get_rank())).backward()
    got = full_gradients(model)
    result = {
        "lean_layers": len(lean_layers.layers),
        "layers": layer_count(model),
        "sharded": isinstance(model, FSDPModule),
    }
    if dist.get_rank() == 0:
        result["worst"], result["worst_parameter"] = worst_relative(got, want)
        result["control"] = worst_relative(first_part, want)[0]
        result["parameters"] = len(got)
        result["trainable_parameters"] = sum(p.requires_grad for p in reference.parameters())
    return result


def bf16_case() -> dict:
    """The segmentation model under a bf16 policy (fp32 master weights, fp32 gradient reduction)."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    data = batch()
    torch.manual_seed(0)
    model = MODELS["segmentation"]().train()
    reference = copy.deepcopy(model)
    if dist.get_rank() == 0:
        want, _, reference_loss = one_process_gradients(reference, data)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16's own error on this model, for scale
            autocast, _, autocast_loss = one_process_gradients(reference, data)
    fully_shard_pvt(model, mp_policy=policy)
    with LeanLayers() as lean_layers:
        outputs = model(
            data["pixel_values"][part_of(dist.get_rank())], labels=data["label_maps"][part_of(dist.get_rank())]
        )
        outputs.loss.backward()
    got = full_gradients(model)
    result = {
        "lean_layers": len(lean_layers.layers),
        "layers": layer_count(model),
        "logits_dtype": str(outputs.logits.dtype),
        "gradient_dtypes": sorted({str(g.dtype) for g in got.values()}),
        "finite": all(torch.isfinite(g).all().item() for g in got.values()) and torch.isfinite(outputs.loss).item(),
    }
    losses = [torch.zeros(()) for _ in range(dist.get_world_size())]
    dist.all_gather(losses, outputs.loss.detach().float())
    if dist.get_rank() == 0:
        result["worst"], result["worst_parameter"] = worst_relative(got, want)
        result["all_gradients"] = all_gradients_relative(got, want)
        result["loss_relative"] = abs(sum(losses).item() / len(losses) - reference_loss) / reference_loss
        result["autocast_all_gradients"] = all_gradients_relative(autocast, want)
        result["autocast_loss_relative"] = abs(autocast_loss - reference_loss) / reference_loss
    # torch's fully_shard alone (layers + root, no float32 BatchNorm units) fails under the same policy
    torch.manual_seed(0)
    plain = MODELS["segmentation"]().train()
    for layer in (module for module in plain.modules() if isinstance(module, PvtLayer)):
        fully_shard(layer, mp_policy=policy)
    fully_shard(plain, mp_policy=policy)
    try:
        plain(data["pixel_values"][:2], labels=data["label_maps"][:2]).loss.backward()
        result["plain_fully_shard_error"] = None
    except RuntimeError as error:
        result["plain_fully_shard_error"] = str(error)[:200]
    return result


def composite_case() -> dict:
    """UperNet (transformers) on a PVT backbone under a bf16 policy: its decode head's BatchNorms too."""
    torch.manual_seed(0)
    backbone = {"depths": [1, 1, 1, 1], "hidden_sizes": [16, 32, 48, 64], "num_attention_heads": [1, 2, 3, 4]}
    config = composite_config(
        "upernet", "pvt-v2-b0", backbone_overrides=backbone, num_labels=5, hidden_size=16, auxiliary_in_channels=48
    )
    model = UperNetForSemanticSegmentation(config).train()
    fully_shard_pvt(model, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32))
    data = batch()
    with LeanLayers() as lean_layers:
        loss = model(
            data["pixel_values"][part_of(dist.get_rank())], labels=data["label_maps"][part_of(dist.get_rank())]
        ).loss
        loss.backward()
    gradients = full_gradients(model)
    return {
        "lean_layers": len(lean_layers.layers),
        "layers": layer_count(model),
        "finite": torch.isfinite(loss).item() and all(torch.isfinite(g).all().item() for g in gradients.values()),
        "parameters": len(gradients),
    }


def training_run(work_dir: Path, seed: int, steps: range, save_after: int | None = None, load: bool = False):
    """AdamW steps of the sharded segmentation model; saves the sharded model and optimizer state after step
    `save_after`, or loads them before the first step. Returns the model and each step's loss (rank 0's part)."""
    torch.manual_seed(seed)
    model = fully_shard_pvt(MODELS["segmentation"]().train())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    if load:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(work_dir / "checkpoint"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    losses = []
    for step in steps:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, batch(step), part_of(dist.get_rank()))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step == save_after:
            model_state, optimizer_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(work_dir / "checkpoint"))
    return model, losses


def checkpoint_case(work_dir: Path) -> dict:
    _, uninterrupted = training_run(work_dir, seed=0, steps=range(4), save_after=1)
    resumed_model, resumed = training_run(work_dir, seed=1, steps=range(2, 4), load=True)
    result = {"uninterrupted": uninterrupted, "resumed": resumed}
    # the final folder: the full state dict (gathered to rank 0 on the CPU), written by save_pretrained
    full_state = get_model_state_dict(resumed_model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    folder = work_dir / "final"
    if dist.get_rank() == 0:
        resumed_model.save_pretrained(folder, state_dict=full_state)
    dist.barrier()
    pixel_values = batch(99)["pixel_values"][:2]
    resumed_model.eval()
    with torch.no_grad():
        sharded_logits = resumed_model(pixel_values).logits
    if dist.get_rank() == 0:  # (BatchNorm's running statistics are each rank's own; the folder holds rank 0's)
        loaded = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
        with torch.no_grad():
            loaded_logits = loaded(pixel_values).logits
        result["loaded_class"] = type(loaded).__name__
        result["architectures"] = json.loads((folder / "config.json").read_text()).get("architectures")
        result["logits_relative"] = ((loaded_logits - sharded_logits).norm() / sharded_logits.norm()).item()
    return result


def errors_case() -> dict:
    torch.manual_seed(0)
    model = fully_shard_pvt(MODELS["classifier"]())
    try:
        fully_shard_pvt(model)
        return {"twice": None}
    except ValueError as error:
        return {"twice": str(error)}


def main() -> None:
    results_path, work_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    results, started = {}, time.perf_counter()
    checks = {f"gradients/{name}": (lambda case=case: gradients_case(*case)) for name, case in GRADIENT_CASES.items()}
    checks["bf16"] = bf16_case
    checks["composite"] = composite_case
    checks["checkpoint"] = lambda: checkpoint_case(work_dir)
    checks["errors"] = errors_case
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            results[name] = check()
        except Exception:  # recorded, so that the test names the failing check and the others still run
            results[name] = {"exception": traceback.format_exc()[-3000:]}
        results[name]["seconds"] = round(time.perf_counter() - start, 2)
    results["total_seconds"] = round(time.perf_counter() - started, 2)
    if dist.get_rank() == 0:
        results_path.write_text(json.dumps(results, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
