"""Every released checkpoint layout converts completely; the CLI refuses bad input cleanly."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REFERENCE
from pvt_hf_cli import main
from pvt_hf.conversion import ConversionError, convert_official_state_dict, rename_official_key

MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())


def random_checkpoint(shapes: dict, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        key: torch.randint(0, 100, shape) if key.endswith("num_batches_tracked") else torch.randn(*shape, generator=generator)
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
            assert report["detected_variant"] == name.removeprefix("fpn_").removesuffix("_ade20k").replace("_li", "-linear").replace("_", "-")
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
    with pytest.raises(ConversionError, match=r"missing from the checkpoint: block2\.1\.mlp\.fc2\.bias \(pvt-hf: pvt\.encoder\.stages\.1\.layers\.1\.mlp\.fc2\.bias\)"):
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
        ([str(truncated), str(work / "a"), "--official-args", official_args], f"{truncated} is not a readable PyTorch checkpoint"),
        ([str(source), str(existing), "--official-args", official_args], "already exists; pass --force"),
        ([str(source), str(work / "b"), "--variant", "pvt-v2-b2"], "not a pvt-v2-b2"),
        ([str(source), str(work / "c")], "Cannot tell the variant"),
        ([str(source), str(work / "d"), "--official-args", official_args, "--task", "semantic-segmentation"], "classification checkpoint"),
        ([str(work / "missing.pth"), str(work / "e"), "--variant", "pvt-v2-b0"], "Checkpoint not found"),
        ([str(incomplete), str(work / "f"), "--official-args", official_args], "missing from the checkpoint: block1.0.attn.kv.bias (pvt-hf: pvt.encoder.stages.0.layers.0.attention.key_value.bias)"),
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
        [sys.executable, "-m", "pvt_hf_cli", "convert", str(REFERENCE / "pvt_v1_mini_cls.pth"), str(tmp_path / "o"),
         "--official-args", json.dumps(json.loads((REFERENCE / "pvt_v1_mini_cls.json").read_text())["official_args"])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Converted" in result.stderr and (tmp_path / "o" / "config.json").is_file()
