"""The example scripts (examples/finetune_ade20k.py, examples/finetune_image_classification.py), the shapes dataset
generator and the packaged digits demo, on tiny data on the CPU, offline."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pvt_hf import PvtImageProcessor


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
ENV.pop("ACCELERATE_USE_CPU", None)
# The runs' models are tiny: one thread each is as fast on a quiet machine and much faster on a busy one (no threads
# spinning for cores that other processes hold).
ENV.setdefault("OMP_NUM_THREADS", "1")


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file is executed
    spec.loader.exec_module(module)
    return module


# A guard against hangs only: every run here takes seconds to a minute, the suite must not hinge on the machine's speed.
HANG_GUARD = 1200
# What DDP says when the model's parameters and gradients disagree (layout, unused parameters).
DDP_WARNINGS = ("Grad strides do not match bucket view strides", "find_unused_parameters=True")


def run(args, timeout=HANG_GUARD, expect_success=True, env=None):
    result = subprocess.run(
        args, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=timeout, cwd=EXAMPLES.parent
    )
    if expect_success and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result


def ade20k(*args):
    return [sys.executable, str(EXAMPLES / "finetune_ade20k.py"), *map(str, args)]


def torchrun_cpu(script, *args, processes=2):
    """`ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N script ...`: N gloo DDP processes on the CPU."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        str(EXAMPLES / script),
    ]
    return run([*command, *map(str, args)], env={"ACCELERATE_USE_CPU": "1"})


def truncated_copy(path, target):
    """A copy of an image file cut in the middle (what an interrupted download leaves)."""
    data = Path(path).read_bytes()
    Path(target).write_bytes(data[: len(data) // 2])
    return Path(target)


def classification(*args):
    return [sys.executable, str(EXAMPLES / "finetune_image_classification.py"), *map(str, args)]


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory):
    """A generated ADEChallengeData2016 folder: 8 training and 3 validation images of 64-96 px."""
    shapes = load_example("make_shapes_dataset")
    return shapes.make_dataset(
        tmp_path_factory.mktemp("ade") / "ADEChallengeData2016", num_train=8, num_val=3, min_size=64, max_size=96
    )


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three classes of small images (one colour each), four per class."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, colour in (("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir()
        for index in range(4):
            array = np.clip(np.array(colour)[None, None] + rng.normal(0, 30, (40 + 8 * index, 48, 3)), 0, 255)
            Image.fromarray(array.astype(np.uint8)).save(root / name / f"{index}.png")
    return root


# ------------------------------------------------------------------------------------------ shapes dataset
def test_shapes_dataset_layout(ade_dir):
    for split, count in (("training", 8), ("validation", 3)):
        images = sorted((ade_dir / "images" / split).glob("*.jpg"))
        annotations = sorted((ade_dir / "annotations" / split).glob("*.png"))
        assert len(images) == len(annotations) == count
        for image_path, annotation_path in zip(images, annotations):
            assert image_path.stem == annotation_path.stem
            image, annotation = Image.open(image_path), np.asarray(Image.open(annotation_path))
            assert image.mode == "RGB" and annotation.shape == (image.height, image.width)
            assert 64 <= min(image.size) and max(image.size) <= 96
            # 0 (ignored) is never drawn: the background (1) is a class like the shapes (2, 3, 4)
            assert set(np.unique(annotation)) <= {1, 2, 3, 4} and (annotation == 1).any() and (annotation > 1).any()
    assert json.loads((ade_dir / "id2label.json").read_text()) == {
        "0": "background",
        "1": "circle",
        "2": "rectangle",
        "3": "triangle",
    }


# ------------------------------------------------------------------------------------------ ADE20K example units
def test_training_pipeline_shapes_labels_and_determinism(ade_dir):
    module = load_example("finetune_ade20k")
    args = module.parse_args(
        [
            "--model_name_or_path",
            "pvt-v2-b0",
            "--data_dir",
            str(ade_dir),
            "--output_dir",
            "unused",
            "--crop_size",
            "48",
            "64",
            "--resize_scale",
            "128",
            "32",
        ]
    )
    train, validation = module.load_sources(args)
    dataset = module.TrainDataset(train, args)
    item = dataset[(0, 0)]
    assert item["pixel_values"].shape == (3, 48, 64) and item["pixel_values"].dtype == torch.float32
    assert item["labels"].shape == (48, 64)
    assert set(torch.unique(item["labels"]).tolist()) <= {0, 1, 2, 3, 255}  # reduce_zero_label: 1..4 -> 0..3, 0 -> 255
    # The scale (128, 32) x [0.5, 2] gives images smaller than the crop: padded with 255.
    assert any((dataset[(i, 0)]["labels"] == 255).all(dim=0).any() for i in range(len(dataset)))
    again = dataset[(0, 0)]
    assert torch.equal(item["pixel_values"], again["pixel_values"]) and torch.equal(item["labels"], again["labels"])
    assert not torch.equal(item["pixel_values"], dataset[(0, 1)]["pixel_values"])  # another epoch, another draw
    label = np.array([[0, 1, 2], [3, 255, 150]], np.uint8)
    assert module.reduce_zero_label(label).tolist() == [[255, 0, 1], [2, 255, 149]]
    # The evaluation is the image processor saved with the model (the official test transform at this run's sizes),
    # with the annotation at the original size.
    processor = module.eval_processor(args)
    assert isinstance(processor, PvtImageProcessor) and dict(processor.size) == {
        "shortest_edge": 512,
        "longest_edge": 2048,
    }
    sample = module.EvalDataset(validation, [0], processor)[0]
    image, annotation = validation.load(0)
    assert sample["labels"].shape == (1, image.height, image.width)
    assert torch.equal(sample["pixel_values"], processor(image, return_tensors="pt")["pixel_values"])
    assert sample["pixel_values"].shape[-1] % 32 == 0 and sample["pixel_values"].shape[-2] % 32 == 0


def test_ade20k_unreadable_image_files_are_named(tmp_path, ade_dir):
    """A truncated image or annotation file: the error names the file (PIL's own does not)."""
    module = load_example("finetune_ade20k")
    root = tmp_path / "ADEChallengeData2016"
    shutil.copytree(ade_dir, root)
    source = module.Ade20kSource(root, "training")
    image_path, annotation_path = source.pairs[0]
    truncated_copy(ade_dir / "images" / "training" / image_path.name, image_path)
    with pytest.raises(OSError, match=re.escape(str(image_path))):
        source.load(0)
    truncated_copy(ade_dir / "annotations" / "training" / source.pairs[1][1].name, source.pairs[1][1])
    with pytest.raises(OSError, match=re.escape(str(source.pairs[1][1]))):
        source.load(1)
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict(
        {"image": [str(image_path)], "annotation": [str(annotation_path)]},
        features=datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()}),
    )
    with pytest.raises(OSError, match=re.escape(str(image_path))):
        module.HubSource(dataset, "image", "annotation").load(0)


@pytest.mark.parametrize("argument", ["--model_name_or_path", "--backbone_name_or_path"])
def test_ade20k_missing_local_model_path_is_named(tmp_path, ade_dir, capsys, argument):
    """`./nope` is a local path that does not exist: not an invalid Hub repository id."""
    module = load_example("finetune_ade20k")
    with pytest.raises(SystemExit):
        module.parse_args([argument, "./nope", "--data_dir", str(ade_dir), "--output_dir", str(tmp_path / "O")])
    assert f"{argument} ./nope: no such local folder" in capsys.readouterr().err
    assert not (tmp_path / "O").exists()


def test_sampler_order_depends_only_on_seed_and_epoch():
    module = load_example("finetune_ade20k")
    sampler = module.EpochShuffleSampler(10, seed=3)
    first = list(sampler)
    assert sorted(index for index, _ in first) == list(range(10)) and {epoch for _, epoch in first} == {0}
    assert list(module.EpochShuffleSampler(10, seed=3)) == first
    sampler.epoch = 1
    assert [index for index, _ in sampler] != [index for index, _ in first]


def test_ade20k_evaluation_shares_pad_every_process_to_the_same_length():
    module = load_example("finetune_ade20k")
    shares = [module.process_share(7, rank, 3) for rank in range(3)]
    assert shares == [([0, 3, 6], 3), ([1, 4, 0], 2), ([2, 5, 0], 2)]
    assert sorted(i for indices, counted in shares for i in indices[:counted]) == list(range(7))
    assert module.process_share(1, 1, 2) == ([0], 0)  # a process without an image of its own still runs one pass
    assert module.process_share(4, 0, 1) == ([0, 1, 2, 3], 4)


def test_ade20k_evaluation_under_fsdp2_with_an_uneven_split(tmp_path):
    """Three images on two processes, the model sharded with fully_shard_pvt: every forward pass gathers parameters
    with both processes, so both must run as many (unpadded, the process with fewer images waits in the metric's
    reduction while the other waits in the all-gather: a hang, hence the short timeout). Same scores as unsharded."""
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    worker = Path(__file__).parent / "example_fsdp_worker.py"
    run([*command, worker, EXAMPLES / "finetune_ade20k.py", results], timeout=240, env={"ACCELERATE_USE_CPU": "1"})
    scores = json.loads(results.read_text())
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy", "per_category_iou"):
        np.testing.assert_allclose(scores["sharded"][key], scores["unsharded"][key], rtol=1e-6)


def test_ade20k_checkpoint_files_in_subfolders_are_listed_and_checked(tmp_path):
    """accelerate's save_state writes FSDP's sharded state as folders of files (`pytorch_model_fsdp_0/*.distcp`):
    the completion marker lists them, and a missing one makes the checkpoint incomplete."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    module = load_example("finetune_ade20k")
    accelerator = Accelerator(cpu=True)
    try:
        accelerator.prepare(torch.nn.Linear(2, 2))

        def sharded_folder(models, weights, output_dir):  # where accelerate's FSDP save puts the model's shards
            (Path(output_dir) / "pytorch_model_fsdp_0").mkdir()
            (Path(output_dir) / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"shard")

        accelerator.register_save_state_pre_hook(sharded_folder)
        path = module.save_checkpoint(accelerator, tmp_path, 2, {"epoch": 0}, total_limit=None)
        files = json.loads((path / module.CHECKPOINT_MARKER).read_text())["files"]
        assert files["pytorch_model_fsdp_0/__0_0.distcp"] == 5
        assert module.checkpoint_problems(path) == []
        (path / "pytorch_model_fsdp_0" / "__0_0.distcp").unlink()
        assert module.checkpoint_problems(path) == ["pytorch_model_fsdp_0/__0_0.distcp is missing"]
        assert module.find_checkpoint("latest", tmp_path) is None  # (logs through accelerate: inside its state)
    finally:
        AcceleratorState._reset_state(True)


# ------------------------------------------------------------------------------------------ ADE20K example runs
ACCEPTANCE = ["--per_device_train_batch_size", 2, "--crop_size", 64, "--checkpointing_steps", 2]


def check_finished_run(output_dir, step, num_processes=None):
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    import pvt_hf  # noqa: F401

    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["step"] == step
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert 0.0 <= results[key] <= 1.0, results
    if num_processes is not None:
        assert results["num_processes"] == num_processes
    model = AutoModelForSemanticSegmentation.from_pretrained(output_dir)
    assert type(model).__name__ == "PvtForSemanticSegmentation"
    assert model.config.id2label == SEGMENTATION_NAMES
    processor = AutoImageProcessor.from_pretrained(output_dir)
    pixel_values = processor(Image.new("RGB", (90, 70)), return_tensors="pt")["pixel_values"]
    assert model(pixel_values).logits.shape[1] == 4
    names = {path.name for path in output_dir.iterdir()}
    assert not any(".incomplete" in name for name in names), names
    return results, names


def test_ade20k_two_processes_checkpoint_resume(tmp_path, converted, ade_dir):
    """Two gloo DDP processes on the CPU (`ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2`): 2 steps with
    a checkpoint (both processes' RNG states), then resumed from `latest` to 4 steps; DDP has nothing to warn about."""
    folder, output = converted("pvt_v2_mini_seg"), tmp_path / "O"
    common = ["--model_name_or_path", folder, "--data_dir", ade_dir, "--output_dir", output, *ACCEPTANCE]
    result = torchrun_cpu("finetune_ade20k.py", *common, "--max_train_steps", 2)
    assert "MULTI_CPU" in result.stderr and not [w for w in DDP_WARNINGS if w in result.stderr], result.stderr[-3000:]
    assert (output / "step_2" / "training_state.json").is_file()
    assert {p.name for p in (output / "step_2").iterdir()} >= {
        "random_states_0.pkl",
        "random_states_1.pkl",
        "optimizer.bin",
    }
    results, _ = check_finished_run(output, 2, num_processes=2)
    assert results["total_train_batch_size"] == 4
    result = torchrun_cpu("finetune_ade20k.py", *common, "--max_train_steps", 4, "--resume_from_checkpoint", "latest")
    assert (
        f"{output / 'step_2'} is the newest complete checkpoint" in result.stderr and "Resumed from" in result.stderr
    )
    assert not [w for w in DDP_WARNINGS if w in result.stderr], result.stderr[-3000:]
    results, names = check_finished_run(output, 4, num_processes=2)
    assert {"step_2", "step_4", "config.json", "model.safetensors", "preprocessor_config.json"} <= names


@pytest.mark.slow
def test_ade20k_single_process_learns_shapes(tmp_path):
    """A single-process run from scratch on the generated shapes (hue cue) learns: the held-out mIoU after 150 steps
    is far above chance. The background is one of the 4 classes (about 77% of the pixels): painting everything
    background scores mIoU ~0.19 (aAcc ~0.77); a run measured 0.52 (aAcc 0.89)."""
    data = load_example("make_shapes_dataset").make_dataset(
        tmp_path / "ADEChallengeData2016", num_train=64, num_val=16, min_size=64, max_size=80, seed=1
    )
    output = tmp_path / "O"
    run(
        ade20k(
            *SHAPES_RECIPE[:4],
            "--data_dir",
            data,
            "--output_dir",
            output,
            "--crop_size",
            64,
            "--resize_scale",
            256,
            64,
            "--eval_short_side",
            64,
            "--per_device_train_batch_size",
            8,
            "--learning_rate",
            "1e-3",
            "--warmup_steps",
            20,
            "--max_train_steps",
            150,
            "--logging_steps",
            50,
            "--num_workers",
            0,
        )
    )
    results = json.loads((output / "all_results.json").read_text())
    assert results["step"] == 150 and results["num_processes"] == 1
    assert results["mean_iou"] >= 0.4 and results["overall_accuracy"] >= 0.85, results


@pytest.fixture(scope="module")
def ade_full_run(tmp_path_factory, converted, ade_dir):
    """A single-process run of 5 steps (no evaluation) with checkpoints at steps 2 and 4: (arguments, output dir)."""
    common = [
        "--model_name_or_path",
        converted("pvt_v2_mini_seg"),
        "--data_dir",
        ade_dir,
        "--per_device_train_batch_size",
        2,
        "--crop_size",
        64,
        "--resize_scale",
        128,
        64,
        "--num_workers",
        0,
        "--no-do_eval",
        "--max_train_steps",
        5,
    ]
    output = tmp_path_factory.mktemp("ade_full") / "O"
    run(ade20k(*common, "--output_dir", output, "--checkpointing_steps", 2))
    return common, output


def same_weights(first, second):
    first, second = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert first.keys() == second.keys()
    return all(torch.equal(first[key], second[key]) for key in first)


def test_ade20k_resume_is_exact(tmp_path, ade_full_run):
    """Resuming from a checkpoint ends with the same weights as the uninterrupted run (model, optimizer, scheduler,
    RNG and data position restored)."""
    common, full = ade_full_run
    manifest = json.loads((full / "step_2" / "training_state.json").read_text())
    assert manifest["step"] == 2 and manifest["num_processes"] == 1
    assert manifest["files"] == {
        p.name: p.stat().st_size for p in (full / "step_2").iterdir() if p.name != "training_state.json"
    }
    assert not [p.name for p in full.iterdir() if p.name.startswith(".")]  # no staging folders left
    run(ade20k(*common, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint", full / "step_2"))
    assert same_weights(full, tmp_path / "resumed")
    # the run trained on the memory-lean path (the default), and reports the training loop's peak memory
    results = json.loads((full / "all_results.json").read_text())
    assert results["lean_training"] is True and json.loads((full / "config.json").read_text())["lean_training"] is True
    assert 0 < results["peak_memory_above_start_gb"] < results["peak_memory_gb"]


def test_ade20k_without_the_lean_path_trains_the_same(tmp_path, ade_full_run):
    """--no-lean_training runs the plain modules: the same weights after 5 steps up to fp32 rounding, logged peak
    memory."""
    common, full = ade_full_run
    result = run(ade20k(*common, "--output_dir", tmp_path / "plain", "--no-lean_training", "--logging_steps", 5))
    assert re.search(
        r"step 5: loss [\d.]+, lr [\d.e+-]+, peak memory [\d.]+ GiB \([\d.]+ GiB above the start", result.stderr
    )
    assert json.loads((tmp_path / "plain" / "all_results.json").read_text())["lean_training"] is False
    lean, plain = load_file(full / "model.safetensors"), load_file(tmp_path / "plain" / "model.safetensors")
    worst = max(
        ((lean[k] - plain[k]).norm() / plain[k].norm().clamp_min(1e-12)).item()
        for k in plain
        if plain[k].is_floating_point()
    )
    assert worst <= 1e-4, worst


def test_ade20k_resume_skips_damaged_checkpoints(tmp_path, ade_full_run):
    """A checkpoint with a file missing (here the RNG states, which accelerate would skip with a warning, or the
    weights), or an unfinished one: `latest` resumes from the newest complete one and says so; naming a damaged one is
    an error that says what is missing. The resumed run still ends exactly where the uninterrupted one did."""
    module = load_example("finetune_ade20k")
    common, full = ade_full_run
    output = tmp_path / "O"
    shutil.copytree(full, output)
    (output / "step_4" / "random_states_0.pkl").unlink()
    (output / "step_6").mkdir()  # an unfinished save: no completion marker
    shutil.copy(full / "step_4" / "model.safetensors", output / "step_6")
    damaged = tmp_path / "no_weights"
    shutil.copytree(full / "step_4", damaged)
    (damaged / "model.safetensors").unlink()
    for path, missing in (
        (output / "step_4", "random_states_0.pkl is missing"),
        (damaged, "model.safetensors is missing"),
        (output / "step_6", "training_state.json is missing"),
    ):
        with pytest.raises(FileNotFoundError, match=f"not a complete checkpoint: .*{re.escape(missing)}"):
            module.find_checkpoint(str(path), output)
    (output / "model.safetensors").unlink()
    result = run(
        ade20k(*common, "--output_dir", output, "--resume_from_checkpoint", "latest", "--checkpointing_steps", 2)
    )
    log = result.stderr
    assert f"skipping {output / 'step_6'}, it is incomplete: training_state.json is missing" in log
    assert f"skipping {output / 'step_4'}, it is incomplete: random_states_0.pkl is missing" in log
    assert f"{output / 'step_2'} is the newest complete checkpoint" in log and "Resumed from" in log
    assert same_weights(full, output)
    assert module.checkpoint_problems(output / "step_4") == []  # saved again, in place of the damaged one


def test_ade20k_resume_past_max_train_steps_is_an_error(tmp_path, ade_full_run):
    """Resuming a checkpoint of step 4 with --max_train_steps 2 would train nothing and save step 4's model."""
    common, full = ade_full_run
    output = tmp_path / "O"
    result = run(
        ade20k(*common, "--max_train_steps", 2, "--output_dir", output, "--resume_from_checkpoint", full / "step_4"),
        expect_success=False,
    )
    assert result.returncode != 0
    assert f"{full / 'step_4'} is at step 4, past --max_train_steps 2: there is nothing to train" in result.stderr
    assert not (output / "model.safetensors").exists()


def corrupt_training_state(checkpoint, **changes):
    state = json.loads((checkpoint / "training_state.json").read_text())
    (checkpoint / "training_state.json").write_text(json.dumps({**state, **changes}))


def test_ade20k_resume_validates_the_checkpoint(tmp_path, ade_full_run):
    """training_state.json is checked against the checkpoint before training: a step that is not a whole number, or
    one that the scheduler state contradicts (edited from 2 to 3), is an error; an unreadable random_states_0.pkl is
    an error unless --allow_inexact_resume, which resumes with a loud warning."""
    module = load_example("finetune_ade20k")
    common, full = ade_full_run
    for name, changes, message in (
        ("string", {"step": "2"}, "'step' is '2'; expected a whole number >= 0"),
        (
            "edited",
            {"step": 3},
            "says step 3 (1 processes), but the scheduler state (scheduler.bin) was saved after 2",
        ),
    ):
        checkpoint = tmp_path / name
        shutil.copytree(full / "step_2", checkpoint)
        corrupt_training_state(checkpoint, **changes)
        with pytest.raises(ValueError, match=re.escape(message)):
            module.read_training_state(checkpoint, allow_inexact=False, num_processes=1)
    damaged = tmp_path / "damaged"
    shutil.copytree(full / "step_2", damaged)
    size = (damaged / "random_states_0.pkl").stat().st_size
    (damaged / "random_states_0.pkl").write_bytes(b"\0" * size)  # the size the manifest lists, unreadable content
    assert module.checkpoint_problems(damaged) == []
    with pytest.raises(
        ValueError,
        match=f"{re.escape(str(damaged / 'random_states_0.pkl'))} cannot be read.*Pass --allow_inexact_resume",
    ):
        module.read_training_state(damaged, allow_inexact=False, num_processes=1)
    output = tmp_path / "O"
    result = run(
        ade20k(
            *common,
            "--max_train_steps",
            3,
            "--output_dir",
            output,
            "--resume_from_checkpoint",
            damaged,
            "--allow_inexact_resume",
        )
    )
    assert "INEXACT RESUME (--allow_inexact_resume)" in result.stderr and "Resumed from" in result.stderr
    assert json.loads((output / "all_results.json").read_text())["step"] == 3


@pytest.mark.parametrize(
    "script", ["finetune_ade20k.py", "finetune_image_classification.py", "finetune_object_detection.py"]
)
def test_examples_refuse_an_output_dir_over_the_input_model(tmp_path, converted, ade_dir, image_folder, script):
    """--output_dir equal to (here through a symlink), containing, or inside the input model is refused before any
    work, naming both arguments; the model folder is left as it was."""
    model = tmp_path / "models" / "model"
    shutil.copytree(converted("pvt_v2_mini_seg" if script == "finetune_ade20k.py" else "pvt_v2_mini_cls"), model)
    before = {path.name: path.read_bytes() for path in model.iterdir()}
    (tmp_path / "link").symlink_to(model)
    data = {
        "finetune_ade20k.py": ["--model_name_or_path", model, "--data_dir", ade_dir, "--max_train_steps", 2],
        "finetune_image_classification.py": [
            "--model_name_or_path",
            model,
            "--train_dir",
            image_folder,
            "--do_train",
            "--max_steps",
            2,
        ],
        "finetune_object_detection.py": [
            "--backbone_name_or_path",
            model,
            "--config_overrides",
            RT_DETR_TINY,
            "--dataset_name",
            ade_dir,
            "--do_train",
            "--max_steps",
            2,
        ],
    }[script]
    argument = data[0]
    # One relation per script keeps the test short; the three scripts cover the three.
    output, relation = {
        "finetune_ade20k.py": (tmp_path / "link", "is the input"),
        "finetune_image_classification.py": (tmp_path / "models", "contains the input"),
    }.get(script, (model / "out", "is inside the input"))
    result = run(
        [sys.executable, str(EXAMPLES / script), *map(str, data), "--output_dir", str(output)], expect_success=False
    )
    assert result.returncode != 0, result.stderr[-2000:]
    assert f"--output_dir {output} and {argument} {model}" in result.stderr and relation in result.stderr, (
        result.stderr[-2000:]
    )
    assert {path.name: path.read_bytes() for path in model.iterdir()} == before


def test_ade20k_data_errors_name_the_row_and_leave_no_output(tmp_path, ade_dir):
    """A missing local model (a typo that could be a Hub id) is said to be no local folder, at once; data errors
    name the split, row and column (a `datasets` folder with a path string or None for an image, a float annotation,
    no rows) or the file; a run that fails on its data leaves no empty --output_dir behind."""
    datasets = pytest.importorskip("datasets")
    output = tmp_path / "O"
    result = run(
        ade20k("--model_name_or_path", "fpn-b0-shape", "--data_dir", ade_dir, "--output_dir", output),
        expect_success=False,
    )
    assert result.returncode != 0 and "--model_name_or_path fpn-b0-shape: no such local folder" in result.stderr
    no_annotations = tmp_path / "ADE"
    shutil.copytree(ade_dir / "images", no_annotations / "images")
    result = run(
        ade20k(
            "--model_name_or_path",
            "pvt-v2-b0",
            "--data_dir",
            no_annotations,
            "--output_dir",
            output,
            "--max_train_steps",
            2,
        ),
        expect_success=False,
    )
    assert result.returncode != 0 and "annotations" in result.stderr and not output.exists(), result.stderr[-2000:]
    module = load_example("finetune_ade20k")
    image, annotation = (str(path) for path in module.Ade20kSource(ade_dir, "training").pairs[0])
    images = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    for rows, features, message in (
        ({"image": [image], "annotation": [annotation]}, None, "column 'image' holds '"),
        ({"image": [None], "annotation": [annotation]}, images, "column 'image' holds None, not an image"),
        (
            {"image": [image], "annotation": [[[0.5, 1.0], [1.0, 2.0]]]},
            datasets.Features({"image": datasets.Image(), "annotation": datasets.Array2D((2, 2), "float32")}),
            "column 'annotation' is not a map of class ids",
        ),
    ):
        dataset = datasets.Dataset.from_dict(rows, features=features)
        folder = tmp_path / f"data_{len(message)}"
        datasets.DatasetDict({"train": dataset, "validation": dataset}).save_to_disk(folder)
        args = module.parse_args(
            ["--model_name_or_path", "pvt-v2-b0", "--dataset_name", str(folder), "--output_dir", str(output)]
        )
        with pytest.raises(ValueError, match=re.escape(message)) as error:
            train, _ = module.load_sources(args)
            train.load(0)
        assert f"--dataset_name {folder}" in str(error.value) and "row 0" in str(error.value)
    with pytest.raises(ValueError, match="the split has no rows"):  # (datasets cannot load an empty split it saved)
        module.HubSource(
            datasets.Dataset.from_dict({"image": [], "annotation": []}, features=images),
            "image",
            "annotation",
            "the split",
        )


def test_ade20k_hub_dataset_backbone_and_options(tmp_path, converted, ade_dir):
    """--dataset_name (a local `datasets` folder), --backbone_name_or_path (ImageNet classifier weights into a new
    Semantic FPN model), --id2label, gradient checkpointing, gradient accumulation, periodic evaluation."""
    datasets = pytest.importorskip("datasets")
    shapes_source = load_example("finetune_ade20k").Ade20kSource
    splits = {}
    for split, name in (("training", "train"), ("validation", "validation")):
        pairs = shapes_source(ade_dir, split).pairs
        splits[name] = datasets.Dataset.from_dict(
            {"image": [str(i) for i, _ in pairs], "annotation": [str(a) for _, a in pairs]},
            features=datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()}),
        )
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "hub_dataset")
    classifier, output = converted("pvt_v2_mini_cls"), tmp_path / "O"
    run(
        ade20k(
            "--backbone_name_or_path",
            classifier,
            "--dataset_name",
            tmp_path / "hub_dataset",
            "--id2label",
            ade_dir / "id2label.json",
            "--config_overrides",
            '{"neck_hidden_size": 16, "decoder_hidden_size": 8}',
            "--output_dir",
            output,
            "--per_device_train_batch_size",
            2,
            "--gradient_accumulation_steps",
            2,
            "--crop_size",
            64,
            "--resize_scale",
            128,
            64,
            "--eval_short_side",
            64,
            "--max_train_steps",
            2,
            "--eval_steps",
            1,
            "--gradient_checkpointing",
            "--num_workers",
            0,
        )
    )
    results, _ = check_finished_run(output, 2)
    assert [entry["step"] for entry in results["eval_history"]] == [1] and results["total_train_batch_size"] == 4
    # The encoder started from the classifier's weights: the first patch embedding moved only by two AdamW steps.
    start = load_file(Path(classifier) / "model.safetensors")
    trained = load_file(output / "model.safetensors")
    key = next(k for k in start if k.startswith("pvt.encoder.") and k.endswith("weight") and start[k].ndim == 4)
    assert (trained[key] - start[key]).abs().max() < 5e-3


@pytest.mark.parametrize("option", ["--mixed_precision=bf16", pytest.param("--torch_compile", marks=pytest.mark.slow)])
def test_ade20k_bf16_and_torch_compile(tmp_path, converted, ade_dir, option):
    """bf16 autocast (CPU here) and --torch_compile (inductor; ~45 s of compilation on 2 cores, hence slow) train, save
    fp32 weights without wrapper prefixes, and reload."""
    output = tmp_path / "O"
    result = run(
        ade20k(
            "--model_name_or_path",
            converted("pvt_v2_mini_seg"),
            "--data_dir",
            ade_dir,
            "--output_dir",
            output,
            option,
            "--per_device_train_batch_size",
            2,
            "--crop_size",
            64,
            "--resize_scale",
            128,
            64,
            "--eval_short_side",
            64,
            "--max_train_steps",
            2,
            "--num_workers",
            0,
        )
    )
    # The loss shows from the first step whatever --logging_steps (default 50) and --max_train_steps are.
    assert re.search(r"step 1: loss [\d.]+", result.stderr) and re.search(r"step 2: loss [\d.]+", result.stderr)
    check_finished_run(output, 2)
    weights = load_file(output / "model.safetensors")
    assert weights.keys() == load_file(Path(converted("pvt_v2_mini_seg")) / "model.safetensors").keys()
    assert {tensor.dtype for tensor in weights.values() if tensor.is_floating_point()} == {torch.float32}


def test_ade20k_push_to_hub_fails_clearly_offline(tmp_path, ade_dir):
    result = run(
        ade20k(
            "--model_name_or_path", "pvt-v2-b0", "--data_dir", ade_dir, "--output_dir", tmp_path / "O", "--push_to_hub"
        ),
        expect_success=False,
    )
    assert result.returncode != 0 and "HF_HUB_OFFLINE" in result.stderr and not (tmp_path / "O").exists()


# ------------------------------------------------------------------------------------------ classification example
def test_image_classification_acceptance(tmp_path, converted, image_folder):
    from transformers import pipeline

    import pvt_hf  # noqa: F401

    output = tmp_path / "O"
    run(
        classification(
            "--model_name_or_path",
            converted("pvt_v2_mini_cls"),
            "--train_dir",
            image_folder,
            "--validation_dir",
            image_folder,
            "--output_dir",
            output,
            "--max_steps",
            3,
            "--per_device_train_batch_size",
            2,
            "--do_train",
            "--do_eval",
            "--report_to",
            "none",
        )
    )
    results = json.loads((output / "all_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    classifier = pipeline("image-classification", model=str(output))
    assert classifier.model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    answer = classifier(str(image_folder / "red" / "0.png"))
    assert {entry["label"] for entry in answer} == {"red", "green", "blue"}
    assert results["num_processes"] == 1 and not [p.name for p in output.iterdir() if p.name.startswith(".")]
    # The Trainer's checkpoint of step 3 resumed with --max_steps 2: nothing to train, and it says so.
    result = run(
        classification(
            "--model_name_or_path",
            converted("pvt_v2_mini_cls"),
            "--train_dir",
            image_folder,
            "--output_dir",
            output,
            "--max_steps",
            2,
            "--resume_from_checkpoint",
            "latest",
            "--do_train",
            "--report_to",
            "none",
        ),
        expect_success=False,
    )
    assert result.returncode != 0 and f"{output / 'checkpoint-3'} is at step 3, past --max_steps 2" in result.stderr


def test_image_classification_two_processes_checkpoint_resume(tmp_path, converted, image_folder):
    """The Trainer as two gloo DDP processes on the CPU (`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2`): checkpoint
    at step 2, resume `latest` to step 4, evaluate, reload with the Auto class; DDP has nothing to warn about."""
    from transformers import AutoModelForImageClassification

    import pvt_hf  # noqa: F401

    output = tmp_path / "O"
    common = [
        "--model_name_or_path",
        converted("pvt_v2_mini_cls"),
        "--train_dir",
        image_folder,
        "--validation_dir",
        image_folder,
        "--output_dir",
        output,
        "--per_device_train_batch_size",
        2,
        "--save_strategy",
        "steps",
        "--save_steps",
        2,
        "--do_train",
        "--do_eval",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        0,
    ]
    result = torchrun_cpu("finetune_image_classification.py", *common, "--max_steps", 2)
    assert not [w for w in DDP_WARNINGS if w in result.stderr], result.stderr[-3000:]
    assert (output / "checkpoint-2" / "trainer_state.json").is_file()
    assert json.loads((output / "all_results.json").read_text())["num_processes"] == 2
    result = torchrun_cpu(
        "finetune_image_classification.py",
        *common,
        "--max_steps",
        4,
        "--resume_from_checkpoint",
        "latest",
        "--log_level",
        "info",
    )
    assert f"--resume_from_checkpoint latest: {output / 'checkpoint-2'}" in result.stdout + result.stderr
    state = json.loads((output / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    results = json.loads((output / "all_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and results["num_processes"] == 2
    model = AutoModelForImageClassification.from_pretrained(output)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}


def test_image_classification_data_errors(tmp_path, image_folder):
    """Data a classifier cannot learn from, found before training: a single class, labels outside the classes, an
    unreadable image file; each error names the data."""
    datasets = pytest.importorskip("datasets")
    module = load_example("finetune_image_classification")

    def sources(**kwargs):
        return module.load_sources(module.DataArguments(**kwargs), seed=0)

    one_class = tmp_path / "one_class"
    shutil.copytree(image_folder / "red", one_class / "red")
    with pytest.raises(
        ValueError,
        match=f"--train_dir {re.escape(str(one_class))}: 1 class \\['red'\\]; a classifier needs at least 2",
    ):
        sources(train_dir=str(one_class))
    (one_class / "blue").mkdir()  # a second class without images
    with pytest.raises(
        FileNotFoundError, match=f"the class folder {re.escape(str(one_class / 'blue'))} holds no image files"
    ):
        sources(train_dir=str(one_class))

    files = [str(f) for f in sorted(image_folder.glob("*/*.png"))]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    for train_labels, validation_labels, message in (
        ([0, 1, 2] * 4, [0, 1, 5] * 4, "split 'validation': 4 labels outside 0..2 (the 3 classes), e.g. [5]"),
        ([0, 1, -1] * 4, [0, 1, 1] * 4, "split 'train': 4 labels outside 0..1 (the 2 classes), e.g. [-1]"),
        ([0] * 12, [0] * 12, "1 class ['0']; a classifier needs at least 2 classes"),
    ):
        path = tmp_path / f"data_{len(message)}"
        datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict({"image": files, "label": train_labels}, features=features),
                "validation": datasets.Dataset.from_dict(
                    {"image": files, "label": validation_labels}, features=features
                ),
            }
        ).save_to_disk(path)
        with pytest.raises(ValueError, match=re.escape(f"--dataset_name {path} (label column 'label')")) as error:
            sources(dataset_name=str(path))
        assert message in str(error.value)

    broken = tmp_path / "broken"
    shutil.copytree(image_folder, broken)
    truncated_copy(image_folder / "red" / "0.png", broken / "red" / "0.png")
    train, _, class_names = sources(train_dir=str(broken), train_val_split=0.0)
    index = [str(path) for path, _ in train.samples].index(str(broken / "red" / "0.png"))
    with pytest.raises(OSError, match=re.escape(str(broken / "red" / "0.png"))):
        train.load(index)


def test_image_classification_bad_labels_and_images_name_the_row(tmp_path, image_folder):
    """A `datasets` folder with float or string labels is refused before training, naming the column and the row (a
    float label was truncated to a class id without a word); a None image stops the run naming its row, and the
    failed run leaves no empty --output_dir behind."""
    datasets = pytest.importorskip("datasets")
    module = load_example("finetune_image_classification")
    files = [str(f) for f in sorted(image_folder.glob("*/*.png"))]
    for labels, kind in (([0.5] + [1.0] * 11, "double"), (["red"] * 12, "string")):
        path = tmp_path / f"data_{kind}"
        features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.Value(kind)})
        datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict({"img": files, "fine_label": labels}, features=features)}
        ).save_to_disk(path)
        with pytest.raises(
            ValueError,
            match=f"holds \\w+ values \\(row 0: {re.escape(repr(labels[0]))}\\); expected integer class ids",
        ) as error:
            module.load_sources(
                module.DataArguments(dataset_name=str(path), image_column_name="img", label_column_name="fine_label"),
                seed=0,
            )
        assert f"the 'fine_label' column of split 'train' of --dataset_name {path} holds" in str(error.value)
    images = datasets.Features({"img": datasets.Image(), "fine_label": datasets.Value("int64")})
    path = tmp_path / "none_image"
    rows = {"img": [None] + files[1:], "fine_label": [index % 3 for index in range(12)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=images)}).save_to_disk(path)
    output = tmp_path / "O"
    result = run(
        classification(
            "--model_name_or_path",
            "pvt-v2-b0",
            "--config_overrides",
            '{"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1]}',
            "--dataset_name",
            path,
            "--image_column_name",
            "img",
            "--label_column_name",
            "fine_label",
            "--image_size",
            32,
            "--train_val_split",
            0,
            "--per_device_train_batch_size",
            12,
            "--max_steps",
            1,
            "--do_train",
            "--report_to",
            "none",
            "--output_dir",
            output,
        ),
        expect_success=False,
    )
    assert result.returncode != 0 and "row 0 of split 'train'" in result.stderr and "'img'" in result.stderr, (
        result.stderr[-3000:]
    )
    assert not output.exists()


def test_image_classification_missing_local_model_path_is_named():
    module = load_example("finetune_image_classification")
    with pytest.raises(FileNotFoundError, match=re.escape("--model_name_or_path ./nope: no such local folder")):
        module.main(["--model_name_or_path", "./nope", "--train_dir", "unused", "--output_dir", "unused"])


@pytest.mark.parametrize("version", [1, 2])
def test_image_classification_final_save_under_fsdp_is_the_full_state_dict(version):
    """Trained with a sharded state dict type (the checkpoints), the final save_model gathers the full state dict
    (the Trainer writes a model folder only for FULL_STATE_DICT). FSDP itself runs on GPUs only: this checks the
    switch on accelerate's real plugin."""
    from types import SimpleNamespace

    from accelerate.utils import FullyShardedDataParallelPlugin

    module = load_example("finetune_image_classification")
    plugin = FullyShardedDataParallelPlugin(fsdp_version=version, state_dict_type="SHARDED_STATE_DICT")
    module.full_state_dict_on_save(
        SimpleNamespace(accelerator=SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin)))
    )
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert type(plugin.state_dict_config).__name__ == "FullStateDictConfig" and plugin.state_dict_config.rank0_only


def test_image_classification_official_recipe_from_scratch_on_a_datasets_folder(tmp_path, image_folder):
    datasets = pytest.importorskip("datasets")
    names = ["blue", "green", "red"]
    files = sorted(image_folder.glob("*/*.png"))
    dataset = datasets.Dataset.from_dict(
        {"img": [str(f) for f in files], "fine_label": [names.index(f.parent.name) for f in files]},
        features=datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=names)}),
    )
    datasets.DatasetDict({"train": dataset, "test": dataset}).save_to_disk(tmp_path / "data")
    output = tmp_path / "O"
    run(
        classification(
            "--model_name_or_path",
            "pvt-v2-b0",
            "--config_overrides",
            '{"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 1, 1, 1]}',
            "--dataset_name",
            tmp_path / "data",
            "--image_column_name",
            "img",
            "--label_column_name",
            "fine_label",
            "--augmentation",
            "official",
            "--image_size",
            32,
            "--output_dir",
            output,
            "--max_steps",
            2,
            "--per_device_train_batch_size",
            4,
            "--learning_rate",
            "1e-3",
            "--do_train",
            "--do_eval",
            "--report_to",
            "none",
        )
    )
    results = json.loads((output / "all_results.json").read_text())
    assert "eval_accuracy" in results and results["epoch"] > 0
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"} and config["hidden_sizes"] == [8, 16, 24, 32]
    assert json.loads((output / "preprocessor_config.json").read_text())["crop_size"] == {"height": 32, "width": 32}


def test_classification_augmentations():
    module = load_example("finetune_image_classification")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    augment = module.RandAugment("rand-m9-mstd0.5-inc1")
    assert (augment.num_ops, augment.magnitude, augment.magnitude_std) == (2, 9.0, 0.5)
    for _ in range(30):
        assert augment(image).size == image.size
    with pytest.raises(ValueError):
        module.RandAugment("auto-m9")
    assert module.random_resized_crop(image, 32, (0.08, 1.0)).size == (32, 32)
    # Evaluation is the image processor; training without augmentation is its resize and crop, normalised alike.
    processor = module.PvtImageProcessor(crop_size=32, crop_pct=0.875)
    source = type("Source", (), {"__len__": lambda self: 1, "load": lambda self, index: (image, 0)})()
    expected = processor(image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(module.ClassificationDataset(source, processor, None, train=False)[0]["pixel_values"], expected)
    plain = module.DataArguments(train_dir="unused", augmentation="none")
    assert torch.allclose(
        module.ClassificationDataset(source, processor, plain, train=True)[0]["pixel_values"], expected, atol=1e-5
    )
    erased = module.random_erasing(torch.zeros(3, 32, 32), prob=1.0)
    assert erased.shape == (3, 32, 32) and (erased != 0).any()
    labels = torch.tensor([0, 1, 2, 1])
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        pixels, targets = module.mixup_cutmix(torch.randn(4, 3, 16, 16), labels, 3, mixup, cutmix, 0.5, 0.1)
        assert pixels.shape == (4, 3, 16, 16) and targets.shape == (4, 3)
        assert torch.allclose(targets.sum(-1), torch.ones(4)) and (targets > 0).all()


# ------------------------------------------------------------------------------------------ packaged demo
def test_demo_model_is_small_and_documented():
    from pvt_hf.tools import demo

    files = {path.name: path.stat().st_size for path in demo.DEMO_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", demo.HELDOUT_FILE} <= set(files)
    assert sum(files.values()) <= 2 * 2**20
    images, labels = demo.load_heldout()
    assert images.shape == (360, 8, 8) and labels.shape == (360,) and set(labels.tolist()) == set(range(10))


def test_demo_runs_offline(tmp_path, capsys):
    """`pvt-hf demo` (the README's first command; `python -m pvt_hf_cli demo` is the same)."""
    from pvt_hf_cli import main

    assert main(["demo", "--output-dir", str(tmp_path / "demo"), "--json"]) == 0
    captured = capsys.readouterr()
    narration = captured.out + captured.err  # with --json the narration may go to stderr, the JSON to stdout
    assert "trained from scratch" in narration and "not an official PVT checkpoint" in narration
    results = json.loads(captured.out[captured.out.index("{\n") :])
    assert results["pipeline_accuracy"] >= 0.95 and results["model_accuracy"] >= 0.95
    assert results["pipeline_images_per_second"] > 0
    written = {path.name for path in (tmp_path / "demo").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_pvt.py"} <= written
    assert "not an official PVT checkpoint" in (tmp_path / "demo" / "README.md").read_text()


def test_demo_keeps_an_existing_output_dir_without_force(tmp_path, capsys):
    from pvt_hf_cli import main

    existing = tmp_path / "demo"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    assert main(["demo", "--output-dir", str(existing)]) == 1
    assert "--force" in capsys.readouterr().err
    assert [path.name for path in existing.iterdir()] == ["notes.txt"]
    assert main(["demo", "--output-dir", str(existing), "--force"]) == 0
    assert (existing / "model.safetensors").is_file() and not (existing / "notes.txt").exists()


# ------------------------------------------------------------------------------------------ learning runs (slow)
@pytest.mark.long
def test_digits_from_scratch_reaches_95_percent(tmp_path):
    """The recipe of the packaged demo model: a tiny PVT v2 trained from scratch on scikit-learn's digits."""
    pytest.importorskip("sklearn")
    from pvt_hf.tools.demo import prepare_data

    data = prepare_data(tmp_path / "digits")
    output = tmp_path / "O"
    run(
        classification(
            "--model_name_or_path",
            "pvt-v2-b0",
            "--config_overrides",
            '{"hidden_sizes": [16, 32, 48, 96], "depths": [1, 1, 2, 1], "num_attention_heads": [1, 2, 3, 6], "image_size": 32}',
            "--train_dir",
            data / "train",
            "--validation_dir",
            data / "test",
            "--image_size",
            32,
            "--crop_pct",
            1.0,
            "--hflip_prob",
            0,
            "--min_crop_scale",
            0.5,
            "--output_dir",
            output,
            "--do_train",
            "--do_eval",
            "--num_train_epochs",
            40,
            "--per_device_train_batch_size",
            64,
            "--learning_rate",
            "2e-3",
            "--weight_decay",
            0.05,
            "--warmup_steps",
            50,
            "--lr_scheduler_type",
            "cosine",
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--seed",
            0,
        ),
        timeout=1200,
    )
    assert json.loads((output / "all_results.json").read_text())["eval_accuracy"] >= 0.95


@pytest.mark.long
def test_shapes_segmentation_from_scratch_reaches_06_miou(tmp_path):
    """The recorded run (benchmarks/RESULTS.md): 0.699 mIoU over background, circle, rectangle, triangle."""
    data = load_example("make_shapes_dataset").make_dataset(
        tmp_path / "ADEChallengeData2016", num_train=400, num_val=100, seed=0
    )
    output = tmp_path / "O"
    run(ade20k(*SHAPES_RECIPE, "--data_dir", data, "--output_dir", output), timeout=3000)
    assert json.loads((output / "all_results.json").read_text())["mean_iou"] >= 0.6


SHAPES_RECIPE = [
    "--model_name_or_path",
    "pvt-v2-b0",
    "--config_overrides",
    '{"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 2, 1], "num_attention_heads": [1, 2, 4, 8], "neck_hidden_size": 64, "decoder_hidden_size": 64}',
    "--crop_size",
    128,
    "--resize_scale",
    512,
    128,
    "--eval_short_side",
    128,
    "--per_device_train_batch_size",
    8,
    "--learning_rate",
    "1e-3",
    "--warmup_steps",
    50,
    "--max_train_steps",
    1200,
    "--num_workers",
    1,
    "--seed",
    0,
]


# ------------------------------------------------------------------------------------------ object detection example
# A tiny RT-DETR / Deformable DETR head for the runs below (the backbone is the converted mini PVT v2 or a tiny preset).
RT_DETR_TINY = json.dumps(conftest.RT_DETR_TINY)  # --config_overrides
DEFORMABLE_DETR_TINY = '{"d_model": 32, "encoder_layers": 1, "decoder_layers": 2, "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "num_queries": 10}'
TINY_PVT = '{"hidden_sizes": [16, 32, 48, 64], "num_attention_heads": [1, 2, 3, 4], "depths": [1, 1, 1, 1], "mlp_ratios": [2, 2, 2, 2]}'
SHAPE_NAMES = {0: "circle", 1: "rectangle", 2: "triangle"}
SEGMENTATION_NAMES = {0: "background", 1: "circle", 2: "rectangle", 3: "triangle"}  # make_shapes_dataset's classes


def detection(*args):
    return [sys.executable, str(EXAMPLES / "finetune_object_detection.py"), *map(str, args)]


def coco_data(root):
    return [
        "--train_annotations",
        root / "train.json",
        "--train_images",
        root / "train",
        "--validation_annotations",
        root / "validation.json",
        "--validation_images",
        root / "validation",
    ]


@pytest.fixture(scope="module")
def detection_dir(tmp_path_factory):
    """A generated COCO-format shapes dataset: 8 training and 3 validation images of 64-96 px."""
    shapes = load_example("make_shapes_detection_dataset")
    return shapes.make_dataset(
        tmp_path_factory.mktemp("detection") / "shapes", num_train=8, num_val=3, min_size=64, max_size=96
    )


def test_shapes_detection_dataset_is_coco(detection_dir):
    from pycocotools.coco import COCO

    for split, count in (("train", 8), ("validation", 3)):
        with contextlib_quiet():
            coco = COCO(str(detection_dir / f"{split}.json"))
        assert len(coco.getImgIds()) == count and sorted(coco.getCatIds()) == [1, 2, 3]
        assert [c["name"] for c in coco.loadCats([1, 2, 3])] == ["circle", "rectangle", "triangle"]
        for image in coco.loadImgs(coco.getImgIds()):
            with Image.open(detection_dir / split / image["file_name"]) as file:
                assert file.size == (image["width"], image["height"]) and file.mode == "RGB"
            boxes = [a["bbox"] for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))]
            assert boxes  # at least one shape per image
            for x, y, w, h in boxes:
                assert 0 <= x and 0 <= y and w > 2 and h > 2 and x + w <= image["width"] and y + h <= image["height"]
            for i, (x, y, w, h) in enumerate(boxes):  # the shapes do not overlap
                for x2, y2, w2, h2 in boxes[i + 1 :]:
                    assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


class contextlib_quiet:
    """pycocotools prints while loading: keep the test output clean."""

    def __enter__(self):
        import contextlib
        import io

        self._redirect = contextlib.redirect_stdout(io.StringIO())
        return self._redirect.__enter__()

    def __exit__(self, *exc):
        return self._redirect.__exit__(*exc)


def test_detection_augmentations_keep_boxes_valid():
    module = load_example("finetune_object_detection")
    boxes = np.array([[10, 10, 20, 20], [50, 50, 10, 10], [0, 0, 20, 4], [0, 60, 40, 40]], np.float32)
    clipped, keep = module.crop_boxes(boxes, (15, 0, 60, 55), min_visibility=0.3)
    np.testing.assert_allclose(clipped[0], [0, 10, 15, 20])  # 75 % in view: kept
    np.testing.assert_allclose(clipped[1], [35, 50, 10, 5])  # 50 % in view: kept
    assert keep.tolist() == [True, True, False, False]  # 25 % in view; entirely outside
    sample = module.Sample(
        7, 100, 80, boxes[:2].copy(), np.array([0, 2]), boxes[:2, 2] * boxes[:2, 3], np.zeros(2, np.int64)
    )
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8))
    args = module.DataArguments(
        train_annotations=None,
        train_images=None,
        dataset_name="unused",
        hflip_prob=1.0,
        crop_prob=0.0,
        photometric_prob=0.0,
    )
    flipped_image, flipped = module.augment(image, sample, args)
    np.testing.assert_allclose(flipped.boxes, [[70, 10, 20, 20], [40, 50, 10, 10]])
    assert np.array_equal(np.asarray(flipped_image), np.asarray(image)[:, ::-1])
    args = module.DataArguments(
        train_annotations=None, train_images=None, dataset_name="unused", crop_prob=1.0, min_crop_scale=0.2
    )
    random_state = module.random.getstate()
    module.random.seed(0)
    try:
        for _ in range(50):
            out_image, out = module.augment(image, sample, args)
            assert out.boxes.shape[0] == out.classes.shape[0] >= 1  # a crop keeps at least one object
            assert (out.boxes[:, 2:] >= 1).all() and (out.boxes[:, :2] >= 0).all()
            assert (out.boxes[:, 0] + out.boxes[:, 2] <= out_image.width + 1e-4).all()
            assert (out.boxes[:, 1] + out.boxes[:, 3] <= out_image.height + 1e-4).all()
            assert (out.width, out.height) == out_image.size
    finally:
        module.random.setstate(random_state)


@pytest.mark.parametrize("architecture", ["rt-detr", "deformable-detr"])
def test_detection_collator_gives_normalised_boxes(architecture):
    """Without augmentation, the labels the model sees are the annotations as normalised (cx, cy, w, h)."""
    module = load_example("finetune_object_detection")
    processor = module.default_processor(module.ARCHITECTURES[architecture][0], 64)
    args = module.DataArguments(
        train_annotations=None, train_images=None, dataset_name="unused", scale_range=[1.0, 1.0]
    )
    samples = [
        module.Sample(
            0,
            100,
            80,
            np.array([[10, 20, 30, 40]], np.float32),
            np.array([2]),
            np.array([1200.0]),
            np.zeros(1, np.int64),
        ),
        module.Sample(
            1, 60, 60, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64)
        ),
    ]
    images = [Image.new("RGB", (100, 80)), Image.new("RGB", (60, 60))]
    batch = module.TrainCollator(processor, args)(list(zip(images, samples)))
    assert batch["pixel_values"].shape[0] == 2 and len(batch["labels"]) == 2
    torch.testing.assert_close(batch["labels"][0]["boxes"], torch.tensor([[25 / 100, 40 / 80, 30 / 100, 40 / 80]]))
    assert batch["labels"][0]["class_labels"].tolist() == [2] and batch["labels"][1]["boxes"].shape == (0, 4)
    side = batch["pixel_values"].shape[-2:]
    assert (tuple(side) == (64, 64)) if architecture == "rt-detr" else (min(side) == 64)


def test_coco_map_scores_perfect_partial_and_wrong_detections():
    module = load_example("finetune_object_detection")
    truth = [
        module.Sample(
            0,
            100,
            100,
            np.array([[10, 10, 30, 30], [50, 50, 40, 40]], np.float32),
            np.array([0, 1]),
            np.array([900.0, 1600.0]),
            np.zeros(2, np.int64),
        ),
        module.Sample(
            1,
            100,
            100,
            np.array([[20, 20, 20, 40]], np.float32),
            np.array([2]),
            np.array([800.0]),
            np.zeros(1, np.int64),
        ),
    ]

    def detections(shift=0.0, classes=None):
        out = []
        for sample in truth:
            xyxy = np.concatenate([sample.boxes[:, :2] + shift, sample.boxes[:, :2] + sample.boxes[:, 2:] + shift], 1)
            labels = sample.classes if classes is None else np.full(len(sample.classes), classes)
            out.append(
                {
                    "scores": torch.full((len(labels),), 0.9),
                    "labels": torch.from_numpy(labels),
                    "boxes": torch.from_numpy(xyxy),
                }
            )
        return out

    perfect = module.coco_map(truth, detections(), 3)
    assert perfect["map"] == pytest.approx(1.0) and perfect["map_50"] == pytest.approx(1.0)
    assert "map_large" not in perfect  # no object above 96^2 px: undefined, left out
    shifted = module.coco_map(truth, detections(shift=6.0), 3)  # IoU 0.48-0.73 per box
    assert 0 < shifted["map"] < shifted["map_50"] < 1.0 or 0 < shifted["map"] < 1.0
    wrong = module.coco_map(truth, detections(classes=1), 3)
    assert wrong["map_50"] < 0.5
    assert (
        module.coco_map(
            truth,
            [{"scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2,
            3,
        )["map"]
        == 0.0
    )


def test_detection_build_model_loads_the_pvt_backbone(converted):
    """--backbone_name_or_path FOLDER: the new detector's backbone computes exactly what the converted PVT computes."""
    from pvt_hf import PvtBackbone
    from pvt_hf.tools.composites import pvt_backbones

    module = load_example("finetune_object_detection")
    folder = converted("pvt_v2_mini_cls")
    for architecture in module.ARCHITECTURES:
        model_args = module.ModelArguments(
            architecture=architecture,
            backbone_name_or_path=folder,
            config_overrides=RT_DETR_TINY if architecture == "rt-detr" else DEFORMABLE_DETR_TINY,
        )
        data_args = module.DataArguments(
            train_annotations=None, train_images=None, dataset_name="unused", image_size=64
        )
        model, processor = module.build_model(model_args, data_args, list(SHAPE_NAMES.values()))
        (backbone,) = pvt_backbones(model.eval())
        reference = PvtBackbone.from_pretrained(folder, out_features=["stage2", "stage3", "stage4"]).eval()
        pixel_values = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            for mine, theirs in zip(
                backbone(pixel_values).feature_maps, reference(pixel_values).feature_maps, strict=True
            ):
                assert torch.equal(mine, theirs)
        assert model.config.id2label == SHAPE_NAMES and processor.size is not None


def check_detection_run(output_dir, step, num_processes):
    from skimage import data as skimage_data
    from transformers import pipeline

    import pvt_hf  # noqa: F401

    results = json.loads((output_dir / "all_results.json").read_text())
    assert results["num_processes"] == num_processes
    for key in ("eval_map", "eval_map_50", "eval_map_75", "eval_mar_100"):
        assert 0.0 <= results[key] <= 1.0, results
    assert json.loads((output_dir / "trainer_state.json").read_text())["global_step"] == step
    names = {path.name for path in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names and not any(
        ".incomplete" in n for n in names
    )
    detector = pipeline("object-detection", model=str(output_dir))
    image = Image.fromarray(skimage_data.coffee())
    found = detector(image, threshold=0.0)
    assert found and all(f["label"] in SHAPE_NAMES.values() and 0.0 <= f["score"] <= 1.0 for f in found)
    # Boxes as the model predicts them (post-processing does not clip them to the image).
    assert all(f["box"]["xmin"] <= f["box"]["xmax"] and f["box"]["ymin"] <= f["box"]["ymax"] for f in found)
    return results


def test_object_detection_single_process_resume_and_pipeline(tmp_path, converted, detection_dir):
    """RT-DETR on a converted PVT v2 backbone: 2 steps with a checkpoint, resumed from `latest` to 4 steps; COCO mAP
    in all_results.json; the output folder serves pipeline("object-detection")."""
    output = tmp_path / "O"
    common = [
        *coco_data(detection_dir),
        "--backbone_name_or_path",
        converted("pvt_v2_mini_cls"),
        "--config_overrides",
        RT_DETR_TINY,
        "--image_size",
        64,
        "--output_dir",
        output,
        "--do_train",
        "--do_eval",
        "--per_device_train_batch_size",
        2,
        "--save_strategy",
        "steps",
        "--save_steps",
        2,
        "--report_to",
        "none",
        "--use_cpu",
        "--seed",
        0,
    ]
    run(detection(*common, "--max_steps", 2))
    assert (output / "checkpoint-2" / "trainer_state.json").is_file()
    check_detection_run(output, 2, 1)
    result = run(detection(*common, "--max_steps", 4, "--resume_from_checkpoint", "latest", "--log_level", "info"))
    assert f"--resume_from_checkpoint latest: {output / 'checkpoint-2'}" in result.stdout + result.stderr
    check_detection_run(output, 4, 1)


def test_object_detection_two_processes(tmp_path, detection_dir):
    """Two gloo DDP processes on the CPU: every parameter gets a gradient (no unused-parameter search), the
    evaluation gathers both halves of the validation images."""
    output = tmp_path / "O"
    result = torchrun_cpu(
        "finetune_object_detection.py",
        *coco_data(detection_dir),
        "--backbone_config_overrides",
        TINY_PVT,
        "--config_overrides",
        RT_DETR_TINY,
        "--image_size",
        64,
        "--output_dir",
        output,
        "--do_train",
        "--do_eval",
        "--per_device_train_batch_size",
        2,
        "--max_steps",
        2,
        "--save_strategy",
        "no",
        "--report_to",
        "none",
    )
    assert not [w for w in DDP_WARNINGS if w in result.stderr], result.stderr[-3000:]
    results = check_detection_run(output, 2, 2)
    assert results["eval_samples"] == 3


def test_object_detection_deformable_detr_on_a_datasets_folder(tmp_path, detection_dir):
    """--architecture deformable-detr with --dataset_name (a local `datasets` folder with COCO-style objects)."""
    datasets = pytest.importorskip("datasets")
    splits = {}
    for split in ("train", "validation"):
        document = json.loads((detection_dir / f"{split}.json").read_text())
        rows = {"image": [], "objects": []}
        for image in document["images"]:
            annotations = [a for a in document["annotations"] if a["image_id"] == image["id"]]
            rows["image"].append(str(detection_dir / split / image["file_name"]))
            rows["objects"].append(
                {"bbox": [a["bbox"] for a in annotations], "category": [a["category_id"] - 1 for a in annotations]}
            )
        features = datasets.Features(
            {
                "image": datasets.Image(),
                "objects": {
                    "bbox": datasets.List(datasets.List(datasets.Value("float32"))),
                    "category": datasets.List(datasets.ClassLabel(names=list(SHAPE_NAMES.values()))),
                },
            }
        )
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "hub")
    output = tmp_path / "O"
    run(
        detection(
            "--architecture",
            "deformable-detr",
            "--dataset_name",
            tmp_path / "hub",
            "--backbone_name_or_path",
            "pvt-small",
            "--backbone_config_overrides",
            TINY_PVT,
            "--config_overrides",
            DEFORMABLE_DETR_TINY,
            "--image_size",
            96,
            "--scale_range",
            1,
            1.3,
            "--output_dir",
            output,
            "--do_train",
            "--do_eval",
            "--per_device_train_batch_size",
            2,
            "--max_steps",
            1,
            "--save_strategy",
            "no",
            "--report_to",
            "none",
            "--use_cpu",
        )
    )
    check_detection_run(output, 1, 1)
    config = json.loads((output / "config.json").read_text())
    assert config["model_type"] == "deformable_detr" and config["backbone_config"]["version"] == 1  # pvt-small: PVT v1


def test_object_detection_errors_name_the_argument(tmp_path, converted, detection_dir):
    module = load_example("finetune_object_detection")

    def failure(*args):
        argv = [
            *map(str, args),
            "--output_dir",
            str(tmp_path / "O"),
            "--do_train",
            "--max_steps",
            "1",
            "--report_to",
            "none",
            "--use_cpu",
        ]
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            module.main(argv)
        assert not (tmp_path / "O" / "model.safetensors").exists()
        return str(error.value)

    assert "--train_annotations missing.json: no such file" in failure(
        "--train_annotations", "missing.json", "--train_images", detection_dir / "train"
    )
    (tmp_path / "broken.json").write_text("{not json")
    assert f"--train_annotations {tmp_path / 'broken.json'}: not a readable JSON file" in failure(
        "--train_annotations", tmp_path / "broken.json", "--train_images", detection_dir / "train"
    )
    document = json.loads((detection_dir / "validation.json").read_text())
    document["categories"].append({"id": 9, "name": "star"})
    (tmp_path / "validation.json").write_text(json.dumps(document))
    message = failure(
        "--train_annotations",
        detection_dir / "train.json",
        "--train_images",
        detection_dir / "train",
        "--validation_annotations",
        tmp_path / "validation.json",
        "--validation_images",
        detection_dir / "validation",
    )
    assert "categories [9] are not among the training data's [1, 2, 3]" in message
    message = failure(*coco_data(detection_dir), "--model_name_or_path", converted("pvt_v2_mini_cls"))
    assert "not a detector: pass it as --backbone_name_or_path" in message
    assert "--backbone_name_or_path ./nowhere: no such local folder" in failure(
        *coco_data(detection_dir), "--backbone_name_or_path", "./nowhere"
    )
    message = failure(
        *coco_data(detection_dir),
        "--architecture",
        "deformable-detr",
        "--backbone_config_overrides",
        TINY_PVT,
        "--config_overrides",
        DEFORMABLE_DETR_TINY,
        "--image_size",
        64,
    )
    assert "Deformable DETR needs inputs of at least 65 px" in message


# ------------------------------------------------------------------------------------------ ADE20K example with UperNet
def test_ade20k_upernet_decode_head(tmp_path, converted, ade_dir):
    """--decode_head upernet: transformers' UperNet on the converted PVT v2 encoder (loaded exactly), trained with the
    same recipe (checkpointing the backbone: UperNet itself does not support it), saved for pipelines."""
    from transformers import UperNetForSemanticSegmentation, pipeline

    import pvt_hf  # noqa: F401
    from pvt_hf import PvtBackbone
    from pvt_hf.tools.composites import pvt_backbones

    classifier, output = converted("pvt_v2_mini_cls"), tmp_path / "O"
    run(
        ade20k(
            "--decode_head",
            "upernet",
            "--model_name_or_path",
            classifier,
            "--head_config_overrides",
            '{"hidden_size": 16, "auxiliary_channels": 8}',
            "--data_dir",
            ade_dir,
            "--output_dir",
            output,
            "--per_device_train_batch_size",
            2,
            "--crop_size",
            64,
            "--resize_scale",
            128,
            64,
            "--eval_short_side",
            64,
            "--max_train_steps",
            2,
            "--learning_rate",
            "1e-6",
            "--gradient_checkpointing",
            "--num_workers",
            0,
        )
    )
    results = json.loads((output / "all_results.json").read_text())
    assert results["step"] == 2 and 0.0 <= results["mean_iou"] <= 1.0
    model = UperNetForSemanticSegmentation.from_pretrained(output).eval()
    assert model.config.id2label == SEGMENTATION_NAMES and model.config.backbone_config.model_type == "pvt_hf"
    # Started from the classifier's encoder: two steps at lr 1e-6 leave it within 1e-5 of it.
    reference = PvtBackbone.from_pretrained(
        classifier, out_features=["stage1", "stage2", "stage3", "stage4"]
    ).state_dict()
    for key, value in pvt_backbones(model)[0].state_dict().items():
        assert (value - reference[key]).abs().max() < 1e-5, key
    segments = pipeline("image-segmentation", model=str(output))(Image.new("RGB", (90, 70), (200, 30, 30)))
    assert segments and all(s["label"] in SEGMENTATION_NAMES.values() and s["mask"].size == (90, 70) for s in segments)
    # A semantic-fpn run cannot continue an UperNet model: the error says so.
    result = run(
        ade20k(
            "--model_name_or_path",
            output,
            "--data_dir",
            ade_dir,
            "--output_dir",
            tmp_path / "P",
            "--max_train_steps",
            1,
        ),
        expect_success=False,
    )
    assert result.returncode != 0 and "is an UperNet model: pass --decode_head upernet" in result.stderr


@pytest.mark.long
def test_shapes_detection_from_scratch_learns(tmp_path):
    """The recorded detection learning run (benchmarks/RESULTS.md): RT-DETR on a tiny PVT v2 from scratch, on the
    generated COCO-format shapes. The untrained model's held-out mAP@50 is near 0; the trained one's far above it."""
    data = load_example("make_shapes_detection_dataset").make_dataset(
        tmp_path / "shapes", num_train=400, num_val=100, seed=0
    )
    untrained, trained = tmp_path / "untrained", tmp_path / "trained"
    run(detection(*DETECTION_RECIPE, *coco_data(data), "--output_dir", untrained, "--do_eval"), timeout=3000)
    run(
        detection(*DETECTION_RECIPE, *coco_data(data), "--output_dir", trained, "--do_train", "--do_eval"),
        timeout=3000,
    )
    before = json.loads((untrained / "all_results.json").read_text())
    after = json.loads((trained / "all_results.json").read_text())
    assert before["eval_map_50"] < 0.05, before
    assert after["eval_map_50"] >= DETECTION_RECIPE_MAP_50, after
    check_detection_run(trained, DETECTION_RECIPE[DETECTION_RECIPE.index("--max_steps") + 1], 1)


DETECTION_RECIPE = [
    "--architecture",
    "rt-detr",
    "--backbone_name_or_path",
    "pvt-v2-b0",
    "--backbone_config_overrides",
    '{"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 2, 1], "num_attention_heads": [1, 2, 4, 8]}',
    "--config_overrides",
    '{"encoder_hidden_dim": 64, "encoder_ffn_dim": 128, "encoder_attention_heads": 4, "d_model": 64, "decoder_in_channels": [64, 64, 64], "decoder_ffn_dim": 128, "decoder_attention_heads": 4, "decoder_layers": 3, "num_queries": 30, "num_denoising": 30}',
    "--image_size",
    96,
    "--per_device_train_batch_size",
    8,
    "--per_device_eval_batch_size",
    8,
    "--learning_rate",
    "1e-3",
    "--weight_decay",
    "1e-4",
    "--warmup_steps",
    25,
    "--lr_scheduler_type",
    "cosine",
    "--max_grad_norm",
    0.1,
    "--max_steps",
    250,
    "--logging_steps",
    50,
    "--save_strategy",
    "no",
    "--report_to",
    "none",
    "--use_cpu",
    "--dataloader_num_workers",
    1,
    "--seed",
    0,
]
DETECTION_RECIPE_MAP_50 = 0.1  # the recorded run: 0.174 (untrained: 0.0)
