"""RGB checkpoints for images of other channel counts: `from_pretrained(path, num_channels=N)` adapts the first
patch embedding's weight as timm's `adapt_input_conv` does (`pvt_hf/input_channels.py`)."""

import json
import re

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import BLOCK_PVT_HF, VARIANTS, run_python
from safetensors.torch import load_file
from transformers import (
    AutoBackbone,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
    pipeline,
)
from transformers.models.auto import auto_factory

from pvt_hf import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation, PvtImageProcessor, PvtModel
from pvt_hf.input_channels import adapt_input_conv


KEY = "pvt.encoder.stages.0.patch_embeddings.projection.weight"
LOGGER = "pvt_hf.input_channels"


def rgb_classifier(folder, variant="v2", model_class=PvtForImageClassification):
    torch.manual_seed(0)
    model = model_class(VARIANTS[variant]()).eval()
    model.save_pretrained(folder)
    return model


def warning_text(num_channels: int, key: str = KEY) -> str:
    rule = "summed" if num_channels == 1 else f"repeated and scaled by 3/{num_channels}"
    return (
        f"Adapted the pretrained weight `{key}` from 3 to {num_channels} input channels (the RGB weights {rule}, as "
        f"timm's `adapt_input_conv`), for `num_channels={num_channels}`."
    )


def input_weight(model) -> torch.Tensor:
    return model.get_input_embeddings().projection.weight.detach()


def adaptation_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def logits(model, pixel_values):
    with torch.no_grad():
        return model(pixel_values).logits


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_channel_is_the_rgb_model_on_a_repeated_channel(tmp_path, caplog, variant):
    rgb = rgb_classifier(tmp_path, variant)
    gray = PvtForImageClassification.from_pretrained(tmp_path, num_channels=1)
    assert gray.config.num_channels == 1
    torch.testing.assert_close(input_weight(gray), input_weight(rgb).sum(dim=1, keepdim=True), rtol=0, atol=0)
    channel = torch.randn(2, 1, 64, 80, generator=torch.Generator().manual_seed(1))
    # summing the weights is exactly feeding the channel three times: equal up to fp32 summation order
    torch.testing.assert_close(logits(gray, channel), logits(rgb, channel.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-6)
    assert adaptation_warnings(caplog) == [warning_text(1)]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("num_channels", [2, 4, 6])
def test_more_channels_repeat_and_rescale_the_rgb_weights(tmp_path, caplog, variant, num_channels):
    rgb = rgb_classifier(tmp_path, variant)
    model = PvtForImageClassification.from_pretrained(tmp_path, num_channels=num_channels)
    assert model.config.num_channels == num_channels
    # channel c takes RGB channel c mod 3, all scaled by 3 / N
    want = torch.stack([input_weight(rgb)[:, c % 3] for c in range(num_channels)], dim=1) * (3 / num_channels)
    assert torch.equal(input_weight(model), want)
    assert adaptation_warnings(caplog) == [warning_text(num_channels)]
    if num_channels == 6:  # an RGB image given twice is the RGB model's input
        image = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
        twice = torch.cat([image, image], dim=1)
        torch.testing.assert_close(logits(model, twice), logits(rgb, image), rtol=1e-5, atol=1e-6)


def test_adapt_input_conv_rules_and_dtype():
    weight = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    assert adapt_input_conv(weight, 3) is weight
    five = adapt_input_conv(weight, 5)
    torch.testing.assert_close(five, torch.cat([weight, weight[:, :2]], dim=1) * 0.6, rtol=1e-6, atol=0)
    half = adapt_input_conv(weight.bfloat16(), 5)  # computed in fp32, returned in the weight's dtype
    assert half.dtype == torch.bfloat16 and torch.equal(
        half, adapt_input_conv(weight.bfloat16().float(), 5).bfloat16()
    )
    with pytest.raises(ValueError, match=r"`weight` must be an RGB convolution weight.*\(8, 4, 3, 3\)"):
        adapt_input_conv(torch.zeros(8, 4, 3, 3), 1)
    with pytest.raises(ValueError, match=r"`num_channels` must be a positive integer, got 0\."):
        adapt_input_conv(weight, 0)


def test_pytorch_bin_checkpoint_and_loading_dtype(tmp_path, caplog):
    """A `pytorch_model.bin` folder adapts too. With a `dtype`, transformers casts the checkpoint's weight before the
    adaptation, which sums those values in fp32 and rounds the sum once more."""
    rgb = rgb_classifier(tmp_path)
    torch.save(rgb.state_dict(), tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    summed = input_weight(rgb).sum(dim=1, keepdim=True)
    assert torch.equal(input_weight(PvtForImageClassification.from_pretrained(tmp_path, num_channels=1)), summed)
    half = PvtForImageClassification.from_pretrained(tmp_path, num_channels=1, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.equal(
        input_weight(half), input_weight(rgb).bfloat16().float().sum(1, keepdim=True).bfloat16()
    )
    assert adaptation_warnings(caplog) == [warning_text(1)] * 2


def test_saved_adapted_model_reloads_without_adaptation(tmp_path, caplog):
    rgb_classifier(tmp_path / "rgb")
    model = PvtForImageClassification.from_pretrained(tmp_path / "rgb", num_channels=4)
    model.save_pretrained(tmp_path / "rgba")
    assert json.loads((tmp_path / "rgba" / "config.json").read_text())["num_channels"] == 4
    assert load_file(tmp_path / "rgba" / "model.safetensors")[KEY].shape == (16, 4, 7, 7)
    assert (tmp_path / "rgba" / "input_channels.py").is_file()  # copied with the modeling code, for remote code
    caplog.clear()
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "rgba")
    assert reloaded.config.num_channels == 4 and adaptation_warnings(caplog) == []
    assert torch.equal(input_weight(reloaded), input_weight(model))
    pixel_values = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(logits(reloaded, pixel_values), logits(model, pixel_values), rtol=0, atol=0)


def test_three_channels_change_nothing(tmp_path, caplog):
    rgb = rgb_classifier(tmp_path)
    caplog.clear()
    for kwargs in ({}, {"num_channels": 3}):
        loaded = PvtForImageClassification.from_pretrained(tmp_path, **kwargs)
        assert torch.equal(input_weight(loaded), input_weight(rgb))
    assert adaptation_warnings(caplog) == []


def test_only_rgb_checkpoints_are_adapted(tmp_path, caplog):
    """A non-RGB checkpoint (here 1 channel) into another channel count stays transformers' size mismatch."""
    rgb_classifier(tmp_path / "rgb")
    PvtForImageClassification.from_pretrained(tmp_path / "rgb", num_channels=1).save_pretrained(tmp_path / "gray")
    caplog.clear()
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        PvtForImageClassification.from_pretrained(tmp_path / "gray", num_channels=4)
    assert adaptation_warnings(caplog) == []


@pytest.mark.parametrize("value", [0, -1, 2.5, "4", True, None])
def test_invalid_num_channels_get_a_clear_error(tmp_path, value):
    rgb_classifier(tmp_path)
    message = rf"`num_channels` must be a positive integer, got {re.escape(repr(value))}\."
    with pytest.raises(ValueError, match=message):
        PvtForImageClassification.from_pretrained(tmp_path, num_channels=value)
    with pytest.raises(ValueError, match=message):
        AutoModelForImageClassification.from_pretrained(tmp_path, num_channels=value)


def test_every_class_and_auto_class_adapts(tmp_path, caplog, monkeypatch):
    rgb = rgb_classifier(tmp_path / "cls")
    summed = input_weight(rgb).sum(dim=1, keepdim=True)
    loaded = [
        AutoModelForImageClassification.from_pretrained(tmp_path / "cls", num_channels=1),
        AutoModel.from_pretrained(tmp_path / "cls", num_channels=1),
        PvtBackbone.from_pretrained(tmp_path / "cls", num_channels=1),
    ]
    # transformers' `AutoBackbone.from_pretrained` first asks the Hub whether its argument is a repository (which fails
    # for local folders and offline); the Hub's answer for a published repository is stood in for here.
    monkeypatch.setattr(auto_factory, "hf_api", lambda: type("Hub", (), {"repo_exists": lambda self, repo_id: True})())
    loaded.append(AutoBackbone.from_pretrained(tmp_path / "cls", num_channels=1))
    assert [type(model) for model in loaded] == [PvtForImageClassification, PvtModel, PvtBackbone, PvtBackbone]
    for model in loaded:
        assert model.config.num_channels == 1 and torch.equal(input_weight(model), summed)
    rgb_classifier(tmp_path / "seg", model_class=PvtForSemanticSegmentation)
    segmentation = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "seg", num_channels=1)
    assert type(segmentation) is PvtForSemanticSegmentation
    assert torch.equal(
        input_weight(segmentation),
        input_weight(PvtForSemanticSegmentation.from_pretrained(tmp_path / "seg")).sum(1, keepdim=True),
    )
    unprefixed = KEY.removeprefix("pvt.")  # PvtModel's keys
    assert adaptation_warnings(caplog) == [
        warning_text(1),
        warning_text(1, unprefixed),
        warning_text(1, unprefixed),
        warning_text(1, unprefixed),
        warning_text(1),
    ]


def test_trust_remote_code_adapts_without_pvt_hf(tmp_path):
    """The folder's own copy of `input_channels.py` registers the adaptation where pvt_hf is not installed."""
    rgb = rgb_classifier(tmp_path / "cls")
    code = BLOCK_PVT_HF + (
        "import json, transformers\n"
        f"model = transformers.AutoModelForImageClassification.from_pretrained({str(tmp_path / 'cls')!r}, "
        "trust_remote_code=True, num_channels=1)\n"
        "weight = model.get_input_embeddings().projection.weight\n"
        "print(json.dumps({'module': type(model).__module__, 'weight': weight.tolist()}))"
    )
    result = run_python(code, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, cwd=tmp_path)
    assert result["module"].startswith("transformers_modules")
    assert torch.equal(torch.tensor(result["weight"]), input_weight(rgb).sum(dim=1, keepdim=True))


def test_grayscale_processor_and_pipeline(tmp_path):
    """The processor keeps one channel with `do_convert_rgb=False` and one mean / std value; the pipeline then runs
    the adapted model (pipelines turn PIL images into RGB: arrays pass as they are)."""
    rgb_classifier(tmp_path / "cls")
    gray = np.random.default_rng(5).integers(0, 256, (70, 90), dtype=np.uint8)
    processor = PvtImageProcessor(do_convert_rgb=False, image_mean=[0.449], image_std=[0.226], crop_size=64)
    pixel_values = processor(gray, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 1, 64, 64)
    assert torch.equal(processor(PIL.Image.fromarray(gray), return_tensors="pt")["pixel_values"], pixel_values)

    pipe = pipeline(
        "image-classification",
        model=str(tmp_path / "cls"),
        image_processor=processor,
        model_kwargs={"num_channels": 1},
    )
    assert pipe.model.config.num_channels == 1
    probabilities = logits(pipe.model, pixel_values).softmax(-1)[0]
    top = pipe(gray, top_k=2)
    assert [prediction["score"] for prediction in top] == pytest.approx(
        probabilities.topk(2).values.tolist(), rel=1e-6
    )
