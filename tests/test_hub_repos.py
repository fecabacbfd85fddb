"""`pvt-hf convert` writes complete, verified Hub repositories for every released layout, and publishes them."""

import json
import shutil

import pytest
import torch
from conftest import REFERENCE
from safetensors.torch import load_file

from pvt_hf.tools.conversion import rename_official_key
from pvt_hf.tools.model_card import ADE20K_MIOU, IMAGENET_TOP1_AND_PARAMS
from pvt_hf_cli import main


MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())


def official_file(folder, name, seed=0):
    """A checkpoint file with the manifest's keys and shapes, random values (positive BN variances)."""
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, shape in MANIFESTS[name].items():
        if key.endswith("num_batches_tracked"):
            state_dict[key] = torch.tensor(40000)
        elif key.endswith("running_var"):
            state_dict[key] = torch.rand(*shape, generator=generator) + 0.5
        else:
            state_dict[key] = torch.randn(*shape, generator=generator) * 0.02
    checkpoint = (
        {"meta": {"mmseg_version": "0.13.0"}, "state_dict": state_dict} if name.startswith("fpn_") else state_dict
    )
    path = folder / f"{name}.pth"
    torch.save(checkpoint, path)
    return path, state_dict


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, emptied after the test: the released sizes take up to ~700 MB each (checkpoint and repo), and pytest
    keeps the temporary folders of the last runs."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("index, name", list(enumerate(MANIFESTS)))
def test_every_release_becomes_a_complete_repo(scratch, index, name):
    tmp_path = scratch
    path, state_dict = official_file(tmp_path, name)
    segmentation = name.startswith("fpn_")
    variant = name.removeprefix("fpn_").removesuffix("_ade20k").replace("_li", "-linear").replace("_", "-")
    argv = ["convert", str(path), str(tmp_path / "repo"), "--no-verify"]
    if index % 2:  # half name the variant, half have it detected
        argv += ["--variant", name]
    assert main(argv) == 0
    path.unlink()  # the checkpoint is no longer needed: keep the disk use to one copy of the weights
    repo = tmp_path / "repo"
    files = sorted(p.name for p in repo.iterdir())
    expected = {
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_pvt.py",
        "modeling_pvt.py",
        "fused_ops.py",
        "lean_training.py",
        "input_channels.py",
        "preprocessor_config.json",
        "image_processing_pvt.py",
    }
    assert expected <= set(files), files
    assert segmentation == ("modeling_pvt_segmentation.py" in files)
    config = json.loads((repo / "config.json").read_text())
    assert config["model_type"] == "pvt_hf" and len(config["id2label"]) == (150 if segmentation else 1000)
    processor = json.loads((repo / "preprocessor_config.json").read_text())
    # the official evaluation transform of the task: ImageNet center crop, or ADE20K whole-image test resize
    assert processor["do_center_crop"] is (not segmentation) and processor["do_reduce_labels"] is segmentation
    card = (repo / "README.md").read_text()
    figure = ADE20K_MIOU.get(variant, (None,))[0] if segmentation else IMAGENET_TOP1_AND_PARAMS[variant][0]
    if figure is None:  # the official READMEs give no Semantic FPN figure for PVT v2-b2-linear
        assert "report no figure" in card
    else:  # the authors' figure, marked as not verified here, with its source
        assert f"value: {figure}\n" in card and "verified: false" in card and "reported by the PVT authors" in card
    # what this conversion checked (nothing, with --no-verify), not a claim about the official code's outputs
    assert "No check was run" in card and "reproduces the official code" not in card
    assert "license: apache-2.0" in card and "trust_remote_code=True" in card
    assert f"pipeline_tag: {'image-segmentation' if segmentation else 'image-classification'}" in card
    weights = load_file(repo / "model.safetensors")
    task = "semantic-segmentation" if segmentation else "classification"
    assert len(weights) == len(state_dict)
    for key, value in state_dict.items():
        assert torch.equal(weights[rename_official_key(key, task)], value), key


@pytest.mark.parametrize("name", ["pvt_v1_mini_cls", "pvt_v2_li_mini_seg"])
def test_reference_checkpoints_verify_after_reload(tmp_path, name, caplog):
    caplog.set_level("INFO", logger="pvt_hf")
    argv = [
        "convert",
        str(REFERENCE / f"{name}.pth"),
        str(tmp_path / "repo"),
        "--official-args",
        str(REFERENCE / f"{name}.json"),
    ]
    assert main(argv) == 0
    assert "Reloaded" in caplog.text and "logits relative error 0.0e+00" in caplog.text
    card = (tmp_path / "repo" / "README.md").read_text()
    assert "reloaded in a clean process with the Auto classes" in card and "relative error 0.0e+00" in card


def test_half_precision_weights(tmp_path):
    name = "pvt_v2_mini_cls"
    argv = [
        "convert",
        str(REFERENCE / f"{name}.pth"),
        str(tmp_path / "repo"),
        "--official-args",
        str(REFERENCE / f"{name}.json"),
        "--dtype",
        "bf16",
    ]
    assert main(argv) == 0
    assert {value.dtype for value in load_file(tmp_path / "repo" / "model.safetensors").values()} == {torch.bfloat16}


def test_convert_all_with_summary(tmp_path, capsys, caplog):
    source = tmp_path / "downloads"
    source.mkdir()
    official_file(source, "pvt_v2_b0")
    official_file(source, "fpn_pvt_v2_b0_ade20k")
    (source / "broken.pth").write_bytes(b"not a checkpoint")
    assert main(["convert", "--all", str(source), str(tmp_path / "hub"), "--no-verify"]) == 1  # one file failed
    out = capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["fpn-pvt-v2-b0-ade20k", "pvt-v2-b0"]
    assert "| pvt_v2_b0.pth | pvt-v2-b0 | classification | 3.7M |" in out
    assert "| broken.pth | – | – | – | – | failed: " in out
    assert f"broken.pth: {source / 'broken.pth'} is not a readable PyTorch checkpoint" in caplog.text


def test_push_dry_run_and_offline_push(tmp_path, caplog, capsys, monkeypatch):
    caplog.set_level("INFO", logger="pvt_hf")
    name = "pvt_v2_mini_cls"
    base = [
        "convert",
        str(REFERENCE / f"{name}.pth"),
        "--official-args",
        str(REFERENCE / f"{name}.json"),
        "--no-verify",
    ]
    assert main([base[0], base[1], str(tmp_path / "a"), *base[2:], "--push-to-hub", "org/pvt-mini", "--dry-run"]) == 0
    written = sorted(path.name for path in (tmp_path / "a").iterdir())  # the dry run lists exactly the folder's files
    assert {"README.md", "config.json", "model.safetensors", "modeling_pvt.py", "preprocessor_config.json"} <= set(
        written
    )
    assert f"Would upload to org/pvt-mini: {', '.join(written)}" in caplog.text
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([base[0], base[1], str(tmp_path / "b"), *base[2:], "--push-to-hub", "org/pvt-mini"]) == 1
    error = capsys.readouterr().err
    assert "Cannot push to the Hub" in error and "was written and is complete" in error
    assert (tmp_path / "b" / "model.safetensors").is_file()


def test_transformers_native_folders_convert(tmp_path):
    from transformers import PvtV2Config, PvtV2ForImageClassification

    torch.manual_seed(0)
    theirs = PvtV2ForImageClassification(
        PvtV2Config(depths=[1, 2, 1, 1], num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    ).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    assert main(["convert", str(tmp_path / "theirs"), str(tmp_path / "ours")]) == 0
    from transformers import AutoModelForImageClassification

    ours = AutoModelForImageClassification.from_pretrained(tmp_path / "ours").eval()
    assert ours.config.id2label == {0: "a", 1: "b", 2: "c"}
    # transformers' PvtV2 uses LayerNorm eps 1e-6 where the official code uses 1e-5; with theirs, outputs agree
    for module in ours.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    pixel_values = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(pixel_values).logits, theirs(pixel_values).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", ["pvt_v2_tiny_timm", "pvt_v2_li_tiny_timm"])
def test_timm_state_dicts_convert(tmp_path, stem):
    """State dicts saved by timm's `pvt_v2_*` (fixture made with timm 1.0.31) convert and give timm's logits."""
    from conftest import FIXTURES, relative_error
    from transformers import AutoModelForImageClassification

    spec = json.loads((FIXTURES / "timm" / f"{stem}.json").read_text())
    argv = [
        "convert",
        str(FIXTURES / "timm" / f"{stem}.pth"),
        str(tmp_path / "repo"),
        "--official-args",
        json.dumps(spec["official_args"]),
    ]
    assert main(argv) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "repo").eval()
    tensors = load_file(FIXTURES / "timm" / f"{stem}.io.safetensors")
    for index in (0, 1):
        with torch.no_grad():
            logits = model(tensors[f"pixel_values_{index}"]).logits
        assert relative_error(logits, tensors[f"logits_{index}"]) <= 1e-6
