"""`examples/finetune_ade20k.py`'s evaluation under FSDP2, two gloo processes on the CPU (tests/test_examples.py):

    ACCELERATE_USE_CPU=1 OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 tests/example_fsdp_worker.py \\
        EXAMPLE.py RESULTS.json

Three validation images for two processes: the example's `evaluate` of the model sharded with `pvt_hf.fully_shard_pvt`
(each forward pass gathers parameters with both processes, so both must run as many) against the same model
unsharded. Rank 0 writes both scores to RESULTS.json.
"""

import copy
import importlib.util
import json
import sys
from argparse import Namespace

import numpy as np
import torch
from accelerate import Accelerator
from conftest import tiny_config  # (torchrun runs this file as a script: its folder is on sys.path)
from PIL import Image

from pvt_hf import PvtForSemanticSegmentation, fully_shard_pvt


class Images:
    """Three random 64 x 48 images with random labels (0-4, some 255), as the example's sources give them."""

    def __init__(self, count: int = 3):
        generator = np.random.default_rng(0)
        self.items = [
            (
                Image.fromarray(generator.integers(0, 256, (48, 64, 3), dtype=np.uint8)),
                np.where(generator.random((48, 64)) < 0.1, 255, generator.integers(0, 5, (48, 64))).astype(np.uint8),
            )
            for _ in range(count)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int):
        return self.items[index]


def main(example_path: str, results_path: str) -> None:
    spec = importlib.util.spec_from_file_location("finetune_ade20k", example_path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(tiny_config(2, classifier_dropout_prob=0.0)).eval()
    args = Namespace(eval_short_side=64, eval_long_side=128, size_divisor=32, reduce_labels=False)
    source = Images()
    unsharded = example.evaluate(copy.deepcopy(model), accelerator, source, args, num_labels=5, num_workers=0)
    sharded = example.evaluate(fully_shard_pvt(model), accelerator, source, args, num_labels=5, num_workers=0)
    if accelerator.is_main_process:
        scores = {
            name: {key: np.asarray(value).tolist() for key, value in result.items()}
            for name, result in (("unsharded", unsharded), ("sharded", sharded))
        }
        with open(results_path, "w") as file:
            json.dump(scores, file)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
