"""`pvt_hf.count_flops` and `pvt-hf flops`: the papers' numbers, FlopCounterMode on the real forward pass, the CLI."""

import inspect
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import REFERENCE, tiny_config
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import pvt_hf
from pvt_hf import PRESETS, PvtBackbone, PvtConfig, PvtForImageClassification, PvtForSemanticSegmentation, PvtModel
from pvt_hf.tools.flops import HEAD_MATMUL_COMPONENTS, InputSizeError, count_flops
from pvt_hf_cli import main


MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())

# The papers' "GFLOPs" (= GMACs) at 224x224, ImageNet-1K classifiers: PVT v1 Table 2, PVT v2 Table 2 (B2-Li: Table 6).
PAPER_GFLOPS = {
    "pvt-tiny": 1.9,
    "pvt-small": 3.8,
    "pvt-medium": 6.7,
    "pvt-large": 9.8,
    "pvt-v2-b0": 0.6,
    "pvt-v2-b1": 2.1,
    "pvt-v2-b2": 4.0,
    "pvt-v2-b2-linear": 3.9,
    "pvt-v2-b3": 6.9,
    "pvt-v2-b4": 10.1,
    "pvt-v2-b5": 11.8,
}
# Semantic FPN on ADE20K at 512x512, PVT v2 Table 3.
PAPER_FPN_GFLOPS = {
    "pvt-tiny": 33.2,
    "pvt-small": 44.5,
    "pvt-medium": 61.0,
    "pvt-large": 79.6,
    "pvt-v2-b0": 25.0,
    "pvt-v2-b1": 34.2,
    "pvt-v2-b2": 45.8,
    "pvt-v2-b3": 62.4,
    "pvt-v2-b4": 81.3,
    "pvt-v2-b5": 91.1,
}


def manifest_parameters(name: str) -> int:
    """Parameters of a released checkpoint (its key shapes), BatchNorm statistics excluded."""
    shapes = MANIFESTS[name]
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(math.prod(shape) for key, shape in shapes.items() if not key.endswith(buffers))


def official_name(preset: str) -> str:
    return preset.replace("-", "_").replace("_linear", "_li")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_match_the_papers(preset):
    report = count_flops(preset, 224, 224)
    assert report.architecture == "PvtForImageClassification"
    assert report.total_gmacs == pytest.approx(PAPER_GFLOPS[preset], rel=0.05)
    # Exactly the released checkpoint's parameters (the 1000-class classifier), and the model's.
    assert report.total_parameters == manifest_parameters(official_name(preset))
    with torch.device("meta"):
        model = PvtForImageClassification(PvtConfig.from_preset(preset, num_labels=1000))
    assert report.total_parameters == sum(parameter.numel() for parameter in model.parameters())
    stages = model.pvt.encoder.stages
    assert [stage.parameters for stage in report.stages] == [sum(p.numel() for p in s.parameters()) for s in stages]


@pytest.mark.parametrize("preset", sorted(PAPER_FPN_GFLOPS))
def test_semantic_fpn_presets_match_the_paper(preset):
    config = PvtConfig.from_preset(preset, num_labels=150)
    report = count_flops(config, 512, 512, architecture="PvtForSemanticSegmentation")
    assert report.total_gmacs == pytest.approx(PAPER_FPN_GFLOPS[preset], rel=0.05)
    assert report.total_parameters == manifest_parameters(f"fpn_{official_name(preset)}_ade20k")


def test_the_attention_matmuls_use_the_reduced_key_length():
    stage1, _, _, stage4 = count_flops("pvt-v2-b2", 224, 224).stages
    # 56x56 queries, sr 8: 7x7 keys; 3 layers of 64 channels; Q.K^T and A.V each
    assert (stage1.grid, stage1.key_length) == ((56, 56), 49)
    assert stage1.macs["attention_scores"] == stage1.macs["attention_values"] == 3 * 3136 * 49 * 64
    assert stage1.macs["spatial_reduction"] == 3 * 49 * 64 * 64 * 8 * 8
    assert stage4.key_length == 49 and stage4.macs["spatial_reduction"] == 0
    linear = count_flops("pvt-v2-b2-linear", 448, 448).stages
    assert {stage.key_length for stage in linear} == {49}  # v2-linear pools to 7x7 at every size
    assert linear[0].macs["pooling"] == 3 * 112 * 112 * 64
    v1_last = count_flops("pvt-small", 224, 224).stages[-1]
    assert (v1_last.num_tokens, v1_last.key_length) == (50, 50)  # 7x7 + the cls token, no reduction


# ----------------------------------------------------------------------------------------------------------------
# The analytical count against the model's own forward pass


def counted_model(version: int, architecture: type, linear: bool = False) -> nn.Module:
    config = tiny_config(version, linear_attention=linear, fused_cpu_kernels=False)
    config._attn_implementation = "eager"  # explicit matmuls: FlopCounterMode's bmm
    model = architecture(config, add_pooling_layer=False) if architecture is PvtModel else architecture(config)
    return model.eval()


MODELS = [
    pytest.param(1, PvtForImageClassification, False, id="v1-classifier"),
    pytest.param(1, PvtModel, False, id="v1-model-no-cls"),
    pytest.param(1, PvtForSemanticSegmentation, False, id="v1-fpn"),
    pytest.param(2, PvtForImageClassification, False, id="v2-classifier"),
    pytest.param(2, PvtBackbone, False, id="v2-backbone"),
    pytest.param(2, PvtForSemanticSegmentation, False, id="v2-fpn"),
    pytest.param(2, PvtForImageClassification, True, id="v2-linear-classifier"),
]
# Not multiples of 32, non-square; 64x64 is v1's training grid (no position-embedding resizing).
SIZES = [(70, 45), (64, 64)]


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("version", "architecture", "linear"), MODELS)
def test_matmul_and_conv_macs_are_exactly_half_the_flop_counter_flops(version, architecture, linear, height, width):
    model = counted_model(version, architecture, linear)
    report = count_flops(model, height, width)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, height, width))
    flops = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    stage_prefix = next(name for name in flops if name.endswith("encoder.stages.0")).removesuffix("0")
    for index, stage in enumerate(report.stages):
        assert flops[f"{stage_prefix}{index}"] == 2 * stage.matmul_macs, stage.name
        assert stage.attention_matmul_macs > 0
    head = sum(macs for name, macs in report.head_macs.items() if name in HEAD_MATMUL_COMPONENTS)
    assert flops["Global"] == 2 * (sum(stage.matmul_macs for stage in report.stages) + head)
    assert report.total_parameters == sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("version", "architecture", "linear"), MODELS)
def test_norms_pooling_and_resizing_are_counted_as_fvcore_counts_them(
    version, architecture, linear, height, width, monkeypatch
):
    model = counted_model(version, architecture, linear)
    report = count_flops(model, height, width)
    counted = {"layer_norms": 0, "batch_norms": 0, "pooling": 0, "resizing": 0}

    def record(key, per_element, of_input):
        def hook(module, inputs, output):
            counted[key] += per_element * (inputs[0] if of_input else output).numel()

        return hook

    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.register_forward_hook(record("layer_norms", 5, of_input=True))
        elif isinstance(module, nn.BatchNorm2d):
            module.register_forward_hook(record("batch_norms", 2, of_input=True))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            module.register_forward_hook(record("pooling", 1, of_input=True))
    interpolate = F.interpolate

    def counting_interpolate(*args, **kwargs):  # nn.Upsample passes the mode by position
        output = interpolate(*args, **kwargs)
        mode = inspect.signature(interpolate).bind(*args, **kwargs).arguments.get("mode", "nearest")
        counted["resizing"] += (4 if mode == "bilinear" else 1) * output.numel()
        return output

    monkeypatch.setattr(F, "interpolate", counting_interpolate)
    with torch.no_grad():
        model(torch.randn(1, 3, height, width))

    def total(*names):
        return sum(stage.macs.get(name, 0) for stage in report.stages for name in names) + sum(
            report.head_macs.get(name, 0) for name in names
        )

    assert counted["layer_norms"] == total("layer_norms", "final_layer_norm") > 0
    assert counted["batch_norms"] == total("head_batch_norms")
    assert counted["pooling"] == total("pooling")
    assert counted["resizing"] == total("position_embedding", "neck_upsampling", "head_upsampling")
    if version == 1 and (height, width) != (64, 64):
        assert total("position_embedding") > 0


def test_sizes_the_model_refuses_are_refused():
    config = tiny_config(2)
    smallest = PvtModel(config).encoder.smallest_size()
    count_flops(config, smallest, smallest + 1)
    with pytest.raises(InputSizeError, match=f"at least {smallest} pixels"):
        count_flops(config, smallest - 1, 224)
    for bad in [(0, 224), (224, -1), (224.0, 224), (True, 224)]:
        with pytest.raises(InputSizeError, match="positive integers"):
            count_flops(config, *bad)
    with pytest.raises(TypeError, match="counts the pvt-hf models"):
        count_flops(nn.Linear(2, 2), 224, 224)
    with pytest.raises(TypeError, match="takes a PvtConfig"):
        count_flops({"version": 2}, 224, 224)
    with pytest.raises(ValueError, match="architecture must be one of"):
        count_flops(config, 224, 224, architecture="PvtForObjectDetection")


def test_count_flops_is_exported():
    assert pvt_hf.count_flops is count_flops and "count_flops" in pvt_hf.__all__


# ----------------------------------------------------------------------------------------------------------------
# pvt-hf flops


def test_cli_prints_the_stage_table(capsys):
    assert main(["flops", "pvt-v2-b2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    report = count_flops("pvt-v2-b2", 224, 224)
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.split() and line.split()[0].startswith(("stage", "head", "total"))
    }
    assert rows["stage1"][:4] == ["stage1", "56x56", "3136", "49"]
    assert rows["stage3"][1:4] == ["14x14", "196", "49"]
    assert float(rows["total"][1]) == pytest.approx(report.total_gmacs, abs=5e-4)
    assert float(rows["total"][2]) == pytest.approx(25.36, abs=5e-3)
    assert "25,362,856" in lines[-1]


def test_cli_json_at_another_size(capsys):
    assert main(["flops", "pvt-small", "--size", "300", "200", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == {"model": "pvt-small", **count_flops("pvt-small", 300, 200).to_dict()}
    assert (document["height"], document["width"]) == (300, 200)
    assert [stage["grid"] for stage in document["stages"]] == [[75, 50], [37, 25], [18, 12], [9, 6]]


def test_cli_counts_a_model_folder_as_its_architecture(tmp_path, capsys):
    folder = tmp_path / "fpn"
    model = PvtForSemanticSegmentation(tiny_config(2))
    model.save_pretrained(folder)
    capsys.readouterr()
    assert main(["flops", str(folder), "--size", "96", "128", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["architecture"] == "PvtForSemanticSegmentation"
    assert document["total_macs"] == count_flops(model, 96, 128).total_macs
    assert document["total_parameters"] == sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["pvt-v2-b2", "--size", "20", "20"],
            "--size 20 20: 20x20 is too small for this model: every side must be at least",
        ),
        (["./no-such-model"], "no such local folder (no such file or directory: ./no-such-model)"),
        (["no-such-model"], "no-such-model: not a preset (pvt-tiny"),
    ],
)
def test_cli_errors_are_one_line(arguments, message, capsys):
    assert main(["flops", *arguments]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("pvt-hf flops: error: ") and message in error


def test_cli_refuses_a_folder_of_another_model(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert main(["flops", str(tmp_path)]) == 1
    assert "its config.json has model_type 'vit'; pvt-hf flops counts pvt-hf models" in capsys.readouterr().err


@pytest.mark.parametrize("size", [["0", "224"], ["224", "-32"], ["224", "big"]])
def test_cli_size_must_be_positive_pixels(size, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["flops", "pvt-v2-b0", "--size", *size])
    assert exit_info.value.code == 2
    assert "argument --size: expected a positive number of pixels" in capsys.readouterr().err
