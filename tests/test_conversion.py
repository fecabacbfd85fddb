"""Every released checkpoint layout converts completely; the CLI refuses bad input cleanly."""

import json
import os
import pickle
import re
import subprocess
import sys

import pytest
import torch
from conftest import REFERENCE, pvt_hf_script
from safetensors.torch import load_file

from pvt_hf.tools.conversion import (
    ConversionError,
    convert_official_state_dict,
    load_official_checkpoint,
    rename_official_key,
)
from pvt_hf_cli import main


MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())


def random_checkpoint(shapes: dict, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.randint(0, 100, shape)
        if key.endswith("num_batches_tracked")
        else torch.randn(*shape, generator=generator)
        for key, shape in shapes.items()
    }


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_every_official_layout_converts_with_the_same_numbers(name):
    checkpoint = random_checkpoint(MANIFESTS[name])
    task = "semantic-segmentation" if name.startswith("fpn_") else "classification"
    for variant in (None, name):  # detected from the shapes, and named
        model, report = convert_official_state_dict(checkpoint, variant=variant)
        assert report["task"] == task
        if variant is None:
            assert report["detected_variant"] == name.removeprefix("fpn_").removesuffix("_ade20k").replace(
                "_li", "-linear"
            ).replace("_", "-")
    ours = model.state_dict()
    assert len(ours) == len(checkpoint)
    for key, value in checkpoint.items():
        assert torch.equal(ours[rename_official_key(key, task)], value), key
    expected_labels = 150 if task == "semantic-segmentation" else 1000
    assert model.config.num_labels == expected_labels
    assert model.config.id2label[0] == ("wall" if task == "semantic-segmentation" else "tench")


def test_missing_and_unexpected_keys_are_listed():
    checkpoint = random_checkpoint(MANIFESTS["pvt_v2_b0"])
    del checkpoint["block2.1.mlp.fc2.bias"]
    with pytest.raises(
        ConversionError,
        match=r"missing from the checkpoint: block2\.1\.mlp\.fc2\.bias \(pvt-hf: pvt\.encoder\.stages\.1\.layers\.1\.mlp\.fc2\.bias\)",
    ):
        convert_official_state_dict(checkpoint, variant="pvt-v2-b0")
    checkpoint = random_checkpoint(MANIFESTS["pvt_v2_b0"])
    checkpoint["block1.0.attn.extra.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match=r"no place in the model: \['block1.0.attn.extra.weight'\]"):
        convert_official_state_dict(checkpoint, variant="pvt-v2-b0")


def test_wrong_variant_names_the_difference():
    with pytest.raises(ConversionError, match="not a pvt-v2-b1: depths"):
        convert_official_state_dict(random_checkpoint(MANIFESTS["pvt_v2_b2"]), variant="pvt-v2-b1")


@pytest.mark.parametrize("wrapper", ["raw", "model", "state_dict", "module-prefix"])
def test_cli_accepts_wrapped_checkpoints(tmp_path, wrapper):
    checkpoint = random_checkpoint(MANIFESTS["pvt_v2_b0"])
    if wrapper == "module-prefix":
        checkpoint = {f"module.{key}": value for key, value in checkpoint.items()}
    elif wrapper != "raw":
        checkpoint = {wrapper: checkpoint, "epoch": 300}
    torch.save(checkpoint, tmp_path / "pvt_v2_b0.pth")
    assert main(["convert", str(tmp_path / "pvt_v2_b0.pth"), str(tmp_path / "out")]) == 0
    weights = load_file(tmp_path / "out" / "model.safetensors")
    assert len(weights) == len(MANIFESTS["pvt_v2_b0"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "pvt_hf" and config["id2label"]["0"] == "tench"


def snapshot(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_cli_refuses_bad_input_and_leaves_nothing_behind(tmp_path, capsys):
    source = REFERENCE / "pvt_v2_mini_cls.pth"
    official_args = str(REFERENCE / "pvt_v2_mini_cls.json")
    work = tmp_path / "work"
    work.mkdir()
    truncated = work / "truncated.pth"
    truncated.write_bytes(source.read_bytes()[:5000])
    incomplete = work / "incomplete.pth"
    checkpoint = torch.load(source, weights_only=True)
    del checkpoint["block1.0.attn.kv.bias"]
    torch.save(checkpoint, incomplete)
    existing = work / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    before = snapshot(work)

    cases = [
        (
            [str(truncated), str(work / "a"), "--official-args", official_args],
            f"{truncated} is not a readable PyTorch checkpoint",
        ),
        ([str(source), str(existing), "--official-args", official_args], "already exists; pass --force"),
        ([str(source), str(work / "b"), "--variant", "pvt-v2-b2"], "not a pvt-v2-b2"),
        ([str(source), str(work / "c")], "Cannot tell the variant"),
        (
            [str(source), str(work / "d"), "--official-args", official_args, "--task", "semantic-segmentation"],
            "classification checkpoint",
        ),
        ([str(work / "missing.pth"), str(work / "e"), "--variant", "pvt-v2-b0"], "Checkpoint not found"),
        (
            [str(incomplete), str(work / "f"), "--official-args", official_args],
            "missing from the checkpoint: block1.0.attn.kv.bias (pvt-hf: pvt.encoder.stages.0.layers.0.attention.key_value.bias)",
        ),
    ]
    for argv, message in cases:
        assert main(["convert", *argv]) == 1
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error and len(error.strip().splitlines()) == 1, error
        assert snapshot(work) == before

    # --force replaces the folder completely
    assert main(["convert", str(source), str(existing), "--official-args", official_args, "--force"]) == 0
    assert not (existing / "keep.txt").exists() and (existing / "model.safetensors").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["existing", "incomplete.pth", "truncated.pth"]


def test_console_script_runs(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pvt_hf_cli",
            "convert",
            str(REFERENCE / "pvt_v1_mini_cls.pth"),
            str(tmp_path / "o"),
            "--official-args",
            json.dumps(json.loads((REFERENCE / "pvt_v1_mini_cls.json").read_text())["official_args"]),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "Converted" in result.stderr and (tmp_path / "o" / "config.json").is_file()


# ------------------------------------------------------------------ unclear errors (issue 25): each names what is wrong


def test_one_wrong_shaped_tensor_is_named():
    """Not the architecture it would imply ("mlp_ratios: [8.015625, ...]"): the tensor, and what a preset has."""
    checkpoint = random_checkpoint(MANIFESTS["pvt_v2_b2"])
    checkpoint["block1.0.mlp.fc1.weight"] = torch.randn(513, 64)
    expected = (
        r"1 tensor has the wrong shape.*block1\.0\.mlp\.fc1\.weight: checkpoint \(513, 64\), pvt-v2-b2 \(512, 64\)"
    )
    for variant in (None, "pvt-v2-b2"):  # detected, and named
        with pytest.raises(ConversionError, match=expected):
            convert_official_state_dict(checkpoint, variant=variant)


def test_integer_weights_are_named_with_what_was_expected():
    checkpoint = random_checkpoint(MANIFESTS["pvt_v2_b0"])
    checkpoint["block2.1.attn.q.weight"] = checkpoint["block2.1.attn.q.weight"].long()
    with pytest.raises(
        ConversionError, match=r"not floating-point tensors.*block2\.1\.attn\.q\.weight: checkpoint int64"
    ):
        convert_official_state_dict(checkpoint, variant="pvt-v2-b0")


@pytest.mark.parametrize(
    "content, message",
    [
        ({"state_dict": {}}, "holds no weights: its `state_dict` entry is empty"),
        ({}, "holds no weights: it is an empty dict"),
        ({"state_dict": {"a": torch.zeros(1), "epoch": 3}}, "1 entries are no tensors ('epoch')"),
    ],
)
def test_checkpoints_without_weights_say_so(tmp_path, content, message):
    path = tmp_path / "empty.pth"
    torch.save(content, path)
    with pytest.raises(ConversionError, match=re.escape(message)):
        load_official_checkpoint(path)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this-must-not-run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_executing_pickles_are_refused_as_unsafe(tmp_path):
    """torch.save'd and plain pickles that would run code: refused, called unsafe (not 'corrupt'), nothing run."""
    saved, pickled = tmp_path / "torch_saved.pth", tmp_path / "pickled.pth"
    torch.save({"weights": _RunsCode()}, saved)
    pickled.write_bytes(pickle.dumps({"weights": _RunsCode()}))
    with pytest.raises(
        ConversionError, match=r"refused as unsafe: loading it would call posix\.system, running code"
    ) as error:
        load_official_checkpoint(saved)
    assert "weights_only=True" in str(error.value) and "corrupt" not in str(error.value)
    with pytest.raises(ConversionError, match=r"refused as unsafe: loading it would call posix\.system") as error:
        load_official_checkpoint(pickled)  # named from the pickle's opcodes, read without running them
    assert "weights_only=True" in str(error.value) and "corrupt" not in str(error.value)


def pvt_hf(*argv, timeout=300):
    """The installed console script, as a user runs it, in a fresh process."""
    return subprocess.run(
        [pvt_hf_script(), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_absurd_official_args_fail_at_once_naming_the_field(tmp_path):
    args = json.loads((REFERENCE / "pvt_v2_mini_cls.json").read_text())["official_args"]
    args["depths"] = [10**8, 2, 2, 2][: len(args["depths"])]
    result = pvt_hf(
        "convert", REFERENCE / "pvt_v2_mini_cls.pth", tmp_path / "out", "--official-args", json.dumps(args)
    )
    assert result.returncode == 2, result.stderr  # a usage error, before the checkpoint is read
    assert "depths must hold integers in [1, 1,024]" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_folder_fails_before_the_work_naming_it(tmp_path):
    """Checked before the checkpoint is even read (a broken one here): the error names OUTPUT_DIR as given."""
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    (tmp_path / "a-file").write_text("x")
    output = tmp_path / "a-file" / "out"
    result = pvt_hf("convert", broken, output, "--variant", "pvt-v2-b0")
    assert result.returncode == 1, result.stderr
    assert f"OUTPUT_DIR {output}: {tmp_path / 'a-file'} is not a folder" in result.stderr, result.stderr
    if os.geteuid() != 0:  # root writes into read-only folders
        readonly = tmp_path / "readonly"
        readonly.mkdir(mode=0o555)
        result = pvt_hf("convert", broken, readonly / "out", "--variant", "pvt-v2-b0")
        assert f"OUTPUT_DIR {readonly / 'out'}: cannot create files in {readonly}" in result.stderr, result.stderr
        assert ".lock" not in result.stderr and list(readonly.iterdir()) == []
