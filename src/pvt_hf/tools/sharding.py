# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Sharding a PVT model with torch's FSDP2 (`torch.distributed.fsdp.fully_shard`): one documented way.

Each `PvtLayer` is its own unit (its parameters are gathered just before it runs and freed after), the rest of the
model (patch embeddings, stage norms, heads) belongs to the root unit. Under a low-precision `MixedPrecisionPolicy`
the heads' BatchNorms (the Semantic FPN head's, a composite's decode head's) are units of their own with float32
parameters: their running statistics are float32 buffers, which BatchNorm's kernel does not combine with bf16
weights ("expected scalar type BFloat16 but found Float"). They normalise in float32 (the input cast up) and their
output is cast back to the policy's dtype, so the next convolution sees the dtype it expects.

Inside each layer's forward the unit's parameters are ordinary `nn.Parameter`s, so the memory-lean training path
(`lean_training`) runs in every layer as without sharding.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..modeling_pvt import PvtLayer


def fully_shard_pvt(
    model: nn.Module, mesh=None, mp_policy=None, reshard_after_forward: bool | int = True
) -> nn.Module:
    """Shard `model` in place with FSDP2: every `PvtLayer`, under a bf16/fp16 `mp_policy` every BatchNorm with
    float32 parameters, then the root. Returns the model (now also an `FSDPModule`).

    `mesh`: a `DeviceMesh`, as `fully_shard` takes it (1-D: full sharding; 2-D: replicated shards), or None: all
    processes of the default process group, which must be initialised (as torchrun and accelerate do); `mp_policy`: a `torch.distributed.fsdp.MixedPrecisionPolicy` (None: the parameters'
    own dtype); `reshard_after_forward`: free the gathered parameters after each unit's forward (True, least memory)
    or keep them until backward (False, one all-gather less per unit), as `fully_shard`'s argument.

    Save and resume sharded training state with `torch.distributed.checkpoint`; the full state dict for a
    `save_pretrained` folder comes from `torch.distributed.checkpoint.state_dict.get_model_state_dict(model,
    options=StateDictOptions(full_state_dict=True, cpu_offload=True))` (docs/training.md, "Scaling out").
    """
    try:
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
    except ImportError as error:  # torch < 2.6 has it only under torch.distributed._composable
        raise ImportError(
            f"fully_shard_pvt needs torch >= 2.6 (torch.distributed.fsdp.fully_shard); this is torch {torch.__version__}."
        ) from error
    from torch.distributed.device_mesh import DeviceMesh

    if not isinstance(model, nn.Module):
        raise TypeError(
            f"fully_shard_pvt: `model` must be a torch.nn.Module holding PVT layers, got {type(model).__name__}."
        )
    layers = [module for module in model.modules() if isinstance(module, PvtLayer)]
    if not layers:
        raise ValueError(
            f"fully_shard_pvt: `model` ({type(model).__name__}) holds no PvtLayer; pass a pvt_hf model or a model with a "
            "PVT backbone."
        )
    if mesh is not None and not isinstance(mesh, DeviceMesh):
        raise TypeError(
            f"fully_shard_pvt: `mesh` must be a torch.distributed.DeviceMesh or None, got {type(mesh).__name__}."
        )
    if mp_policy is None:
        mp_policy = MixedPrecisionPolicy()
    elif not isinstance(mp_policy, MixedPrecisionPolicy):
        raise TypeError(
            "fully_shard_pvt: `mp_policy` must be a torch.distributed.fsdp.MixedPrecisionPolicy or None, got "
            f"{type(mp_policy).__name__}."
        )
    if not isinstance(reshard_after_forward, (bool, int)) or (
        not isinstance(reshard_after_forward, bool) and reshard_after_forward < 1
    ):
        raise ValueError(
            "fully_shard_pvt: `reshard_after_forward` must be True, False or a positive number of ranks to reshard "
            f"to, got {reshard_after_forward!r}."
        )
    if any(isinstance(module, FSDPModule) for module in model.modules()):
        raise ValueError("fully_shard_pvt: `model` is already sharded (it holds an FSDPModule); shard it once.")
    if mesh is None and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "fully_shard_pvt: no `mesh` and no default process group: start the processes with torchrun or "
            "`accelerate launch` and call torch.distributed.init_process_group() first, or pass a DeviceMesh."
        )

    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
    if mp_policy.param_dtype not in (None, torch.float32):
        norm_policy = MixedPrecisionPolicy(
            param_dtype=torch.float32, reduce_dtype=torch.float32, output_dtype=mp_policy.param_dtype
        )
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(True for _ in module.parameters()):
                fully_shard(module, mesh=mesh, mp_policy=norm_policy, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
    return model


__all__ = ["fully_shard_pvt"]
