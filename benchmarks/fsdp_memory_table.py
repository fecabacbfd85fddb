"""Memory per GPU of data-parallel PVT training: parameters + gradients + AdamW state per rank, under DDP and under
FSDP2 (`pvt_hf.fully_shard_pvt`) at 1/2/4/8 ranks, for pvt-v2-b0 ... b5 (ImageNet classifier, 1000 classes; Semantic
FPN, 150 classes). Counted from the models built on the meta device (no weights), not measured on a GPU.

    python benchmarks/fsdp_memory_table.py          # prints the "Scaling out" table of docs/training.md (markdown)

What is counted, per rank, in MiB:
- DDP: fp32 parameters, fp32 gradients and AdamW's two fp32 moments: 16 bytes per parameter on every rank, whatever
  the number of ranks (DDP's gradient buckets add up to another 4 bytes per parameter, not counted).
- FSDP2 with N ranks: the same 16 bytes per parameter, divided by N (sharded), plus what is gathered at a time under a
  bf16 `MixedPrecisionPolicy`: the root unit (patch embeddings, stage norms, head: kept gathered from its forward to
  its backward) and two `PvtLayer` units (the running one and the one prefetched), each as bf16 parameters and
  their bf16 gradients before the reduce-scatter (4 bytes per parameter). The gathered part does not shrink with N.
Activations come on top and do not shrink with sharding either (each rank runs its own images); the lean path's are
the CPU measurements (`benchmarks/RESULTS.md`, fp32).
"""

from __future__ import annotations

import argparse

import torch

from pvt_hf import PvtConfig, PvtForImageClassification, PvtForSemanticSegmentation
from pvt_hf.modeling_pvt import PvtLayer


PRESETS = ["pvt-v2-b0", "pvt-v2-b1", "pvt-v2-b2", "pvt-v2-b3", "pvt-v2-b4", "pvt-v2-b5"]
RANKS = [1, 2, 4, 8]
STATE_BYTES = 4 + 4 + 8  # fp32 parameter, fp32 gradient, AdamW's exp_avg and exp_avg_sq
GATHERED_BYTES = 2 + 2  # bf16 parameter and bf16 gradient of a gathered unit
MIB = 2**20


def parameter_counts(model: torch.nn.Module) -> tuple[int, int, int]:
    """(all parameters, the largest PvtLayer's, those outside the PvtLayers: the root unit's)."""
    total = sum(p.numel() for p in model.parameters())
    layers = [sum(p.numel() for p in m.parameters()) for m in model.modules() if isinstance(m, PvtLayer)]
    return total, max(layers), total - sum(layers)


def memory_rows() -> list[dict]:
    rows = []
    for preset in PRESETS:
        for head, model_class, num_labels in (
            ("classifier", PvtForImageClassification, 1000),
            ("Semantic FPN", PvtForSemanticSegmentation, 150),
        ):
            with torch.device("meta"):
                model = model_class(PvtConfig.from_preset(preset, num_labels=num_labels))
            total, largest_layer, root = parameter_counts(model)
            gathered = (root + 2 * largest_layer) * GATHERED_BYTES
            rows.append(
                {
                    "preset": preset,
                    "head": head,
                    "parameters": total,
                    "ddp_mib": total * STATE_BYTES / MIB,
                    "fsdp_mib": {ranks: (total * STATE_BYTES / ranks + gathered) / MIB for ranks in RANKS},
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    header = "| model | head | parameters | DDP, any N | " + " | ".join(
        f"FSDP2, {n} rank{'s' * (n > 1)}" for n in RANKS
    )
    lines = [header + " |", "|" + "---|" * (4 + len(RANKS))]
    for row in rows:
        fsdp = " | ".join(f"{row['fsdp_mib'][n]:.0f}" for n in RANKS)
        lines.append(
            f"| {row['preset']} | {row['head']} | {row['parameters'] / 1e6:.1f} M | {row['ddp_mib']:.0f} | {fsdp} |"
        )
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(markdown(memory_rows()))


if __name__ == "__main__":
    main()
