"""The backbones of the official PVT detection checkpoints (mmdet RetinaNet, Mask R-CNN, Cascade Mask R-CNN, Sparse
R-CNN: `backbone.` + neck + heads) convert to `PvtBackbone` folders that give the official backbone's feature maps."""

import json

import pytest
import torch
from conftest import REFERENCE, reference_case, relative_error
from transformers import AutoBackbone, AutoConfig, UperNetForSemanticSegmentation

from pvt_hf import PvtBackbone
from pvt_hf.tools.composites import composite_config, load_pretrained_backbone, pvt_backbones
from pvt_hf.tools.conversion import ConversionError, convert_official_state_dict, rename_official_key
from pvt_hf_cli import main


MANIFESTS = json.loads((REFERENCE / "official_manifests.json").read_text())
NECK_WIDTH = 32  # the official necks have 256 channels; the structure, not the width, is what matters here


def detector_parts(kind: str, in_channels: list[int], width: int = NECK_WIDTH, num_classes: int = 80) -> dict:
    """Shapes of the neck and head weights of an mmdet detector of `kind` on a backbone with `in_channels`."""
    shapes = {}
    for index, channels in enumerate(in_channels):
        shapes[f"neck.lateral_convs.{index}.conv.weight"] = (width, channels, 1, 1)
        shapes[f"neck.fpn_convs.{index}.conv.weight"] = (width, width, 3, 3)
    if kind == "retinanet":  # FPN with an extra level from the last backbone map (add_extra_convs="on_input")
        shapes["neck.fpn_convs.4.conv.weight"] = (width, in_channels[-1], 3, 3)
        for branch in ("cls_convs", "reg_convs"):
            for index in range(4):
                shapes[f"bbox_head.{branch}.{index}.conv.weight"] = (width, width, 3, 3)
        shapes["bbox_head.retina_cls.weight"] = (9 * num_classes, width, 3, 3)
        shapes["bbox_head.retina_reg.weight"] = (36, width, 3, 3)
    elif kind in ("mask_rcnn", "cascade_mask_rcnn"):
        shapes["rpn_head.rpn_conv.weight"] = (width, width, 3, 3)
        shapes["rpn_head.rpn_cls.weight"] = (3, width, 1, 1)
        shapes["rpn_head.rpn_reg.weight"] = (12, width, 1, 1)
        stages = [".0", ".1", ".2"] if kind == "cascade_mask_rcnn" else [""]
        for stage in stages:
            bbox, mask = f"roi_head.bbox_head{stage}", f"roi_head.mask_head{stage}"
            shapes[f"{bbox}.shared_fcs.0.weight"] = (64, width * 7 * 7)
            shapes[f"{bbox}.shared_fcs.1.weight"] = (64, 64)
            shapes[f"{bbox}.fc_cls.weight"] = (num_classes + 1, 64)
            shapes[f"{bbox}.fc_reg.weight"] = (4 if stage else 4 * num_classes, 64)
            for index in range(4):
                shapes[f"{mask}.convs.{index}.conv.weight"] = (width, width, 3, 3)
            shapes[f"{mask}.upsample.weight"] = (width, width, 2, 2)
            shapes[f"{mask}.conv_logits.weight"] = (num_classes, width, 1, 1)
    elif kind == "sparse_rcnn":
        shapes["init_proposal_features.weight"] = (100, width)
        shapes["init_proposal_bboxes.weight"] = (100, 4)
        for stage in range(2):
            shapes[f"roi_head.bbox_head.{stage}.attention.attn.in_proj_weight"] = (3 * width, width)
            shapes[f"roi_head.bbox_head.{stage}.fc_cls.weight"] = (num_classes, width)
    else:
        raise ValueError(kind)
    for name in list(shapes):  # every conv and linear layer has its bias (the proposal embeddings have none)
        if not name.startswith("init_proposal"):
            shapes[name.replace(".weight", ".bias").replace("in_proj_weight", "in_proj_bias")] = shapes[name][:1]
    return shapes


def random_tensors(shapes: dict, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(*shape, generator=generator) for name, shape in shapes.items()}


def expected_left_out(parts: dict) -> dict:
    counts = {}
    for name in parts:
        counts[name.split(".")[0]] = counts.get(name.split(".")[0], 0) + 1
    return counts


def summary(counts: dict) -> str:
    listed = ", ".join(f"{prefix}: {count}" for prefix, count in counts.items())
    return f"left out {sum(counts.values())} detection neck/head tensors ({listed})"


# The reference Semantic FPN cases hold the official segmentation backbone -- the same module the official detection
# code uses -- with its per-stage outputs: their `backbone.` weights plus a detector's neck and heads make a detection
# checkpoint whose right answer is known.
CASES = {  # name -> (reference case, detector)
    "v1": ("pvt_v1_mini_seg", "mask_rcnn"),
    "v2": ("pvt_v2_mini_seg", "retinanet"),
    "v2-linear": ("pvt_v2_li_mini_seg", "cascade_mask_rcnn"),
}


def mini_detection_checkpoint(folder, version: str):
    """(path, backbone weights, neck/head shapes) of a detection checkpoint as mmdet saves one."""
    case, detector = CASES[version]
    segmentation = torch.load(REFERENCE / f"{case}.pth", weights_only=True)["state_dict"]
    backbone = {key: value for key, value in segmentation.items() if key.startswith("backbone.")}
    channels = [backbone[f"backbone.patch_embed{stage}.proj.weight"].shape[0] for stage in range(1, 5)]
    parts = detector_parts(detector, channels)
    path = folder / f"{detector}_pvt_{version.replace('-', '_')}_mini_fpn_1x_coco.pth"
    meta = {"CLASSES": [f"class{index}" for index in range(80)], "epoch": 12}
    torch.save({"meta": meta, "state_dict": {**backbone, **random_tensors(parts, seed=1)}}, path)
    return path, backbone, parts


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The conversions of `convert_mini`, made once per module."""
    return {"root": tmp_path_factory.mktemp("detection"), "folders": {}}


def convert_mini(runs, version: str, caplog) -> dict:
    """A mini detection checkpoint converted with the CLI (verified), and the same backbone weights converted as an
    official classifier: the paths, the neck/head shapes and the conversion's log."""
    if version in runs["folders"]:
        return runs["folders"][version]
    root = runs["root"] / version
    root.mkdir()
    path, backbone, parts = mini_detection_checkpoint(root, version)
    args = str(REFERENCE / f"{CASES[version][0]}.json")
    caplog.set_level("INFO", logger="pvt_hf")
    assert main(["convert", str(path), str(root / "backbone"), "--official-args", args]) == 0
    log = caplog.text
    # The same weights as an official classifier (v1: with the cls token and final norm the classifier has).
    classifier = {key.removeprefix("backbone."): value for key, value in backbone.items()}
    width = classifier["patch_embed4.proj.weight"].shape[0]
    num_classes = json.loads((REFERENCE / f"{CASES[version][0]}.json").read_text())["official_args"]["num_classes"]
    classifier.update(random_tensors({"head.weight": (num_classes, width), "head.bias": (num_classes,)}, seed=2))
    if version == "v1":
        classifier.update(
            random_tensors({"cls_token": (1, 1, width), "norm.weight": (width,), "norm.bias": (width,)}, seed=3)
        )
    torch.save(classifier, root / "classifier.pth")
    assert (
        main(
            ["convert", str(root / "classifier.pth"), str(root / "classifier"), "--official-args", args, "--no-verify"]
        )
        == 0
    )
    runs["folders"][version] = result = {
        "checkpoint": path,
        "folder": root / "backbone",
        "classifier": root / "classifier",
        "parts": parts,
        "log": log,
    }
    return result


@pytest.mark.parametrize("version", list(CASES))
def test_detection_backbone_gives_the_official_feature_maps(runs, caplog, version):
    result = convert_mini(runs, version, caplog)
    folder = result["folder"]
    assert summary(expected_left_out(result["parts"])) in result["log"]
    assert f"Reloaded {folder} in a clean process: feature maps relative error" in result["log"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["PvtBackbone"] and config["model_type"] == "pvt_hf"
    assert config["out_features"] == ["stage1", "stage2", "stage3", "stage4"]
    assert config["version"] == (1 if version == "v1" else 2) and config["linear_attention"] == (
        version == "v2-linear"
    )
    assert "class0" not in json.dumps(config)  # the detector's COCO classes are not the backbone's
    # transformers' AutoBackbone.from_pretrained asks the Hub first (no local folders); its class for the folder:
    assert type(AutoBackbone.from_config(AutoConfig.from_pretrained(folder))) is PvtBackbone
    backbone = PvtBackbone.from_pretrained(folder).eval()
    from_classifier = PvtBackbone.from_pretrained(result["classifier"], out_features=backbone.out_features).eval()
    official_args, io = reference_case(CASES[version][0])
    for case in official_args["cases"]:
        with torch.no_grad():
            maps = backbone(io[case["pixel_values"]]).feature_maps
            classifier_maps = from_classifier(io[case["pixel_values"]]).feature_maps
        assert len(maps) == 4
        for got, from_cls, stage in zip(maps, classifier_maps, case["stages"]):
            assert torch.equal(got, from_cls), stage  # the same weights as a classifier: exactly the same maps
            assert relative_error(got, io[stage]) < 1e-6, stage  # the official backbone's outputs
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: image-feature-extraction" in card and result["checkpoint"].name in card
    assert "neck and heads are not included" in card and "feature maps (relative error" in card
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["size"] == {"shortest_edge": 800, "longest_edge": 1333} and not processor["do_center_crop"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_load_pretrained_backbone_from_a_detection_conversion(runs, caplog, version):
    folder = convert_mini(runs, version, caplog)["folder"]
    config = composite_config(
        "upernet", str(folder), hidden_size=16, auxiliary_channels=8, pool_scales=[1, 2], num_labels=3
    )
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(config).eval()
    (backbone,) = pvt_backbones(model)
    reference = PvtBackbone.from_pretrained(folder).eval()
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = reference(pixels).feature_maps
        assert not torch.equal(backbone(pixels).feature_maps[0], want[0])  # random until loaded
        load_pretrained_backbone(model, folder)
        got = backbone(pixels).feature_maps
        assert model(pixels).logits.shape == (1, 3, 96, 128)
    assert len(got) == 4 and all(torch.equal(mine, theirs) for mine, theirs in zip(got, want))


@pytest.mark.parametrize(
    "name, detector, variant",
    [
        ("fpn_pvt_v2_b0_ade20k", "mask_rcnn", "pvt-v2-b0"),
        ("fpn_pvt_tiny_ade20k", "retinanet", "pvt-tiny"),
        ("fpn_pvt_v2_b2_li_ade20k", "sparse_rcnn", "pvt-v2-b2-linear"),
    ],
)
def test_released_detection_layouts_detect_their_variant(name, detector, variant):
    """Full-size backbones with the released keys and shapes: the variant comes from the shapes, every backbone
    tensor is used as it is, and the rest is counted by prefix."""
    backbone = random_tensors(
        {key: shape for key, shape in MANIFESTS[name].items() if key.startswith("backbone.")}, seed=0
    )
    channels = [backbone[f"backbone.patch_embed{stage}.proj.weight"].shape[0] for stage in range(1, 5)]
    parts = random_tensors(detector_parts(detector, channels, width=256), seed=1)
    extra = {}
    if variant == "pvt-tiny":  # ImageNet leftovers a v1 detector's backbone may carry: unused by the official code
        extra = random_tensors(
            {"backbone.cls_token": (1, 1, 512), "backbone.norm.weight": (512,), "backbone.norm.bias": (512,)}, seed=2
        )
    model, report = convert_official_state_dict({**backbone, **parts, **extra}, meta={"CLASSES": ["person"] * 80})
    assert type(model).__name__ == "PvtBackbone"
    assert report["task"] == "backbone" and report["detected_variant"] == variant == report["architecture"]
    assert model.config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    expected = expected_left_out(parts)
    if extra:
        expected.update({"backbone.cls_token": 1, "backbone.norm": 2})
    assert report["left_out"] == expected
    ours = model.state_dict()
    assert len(ours) == len(backbone)
    for key, value in backbone.items():
        assert torch.equal(ours[rename_official_key(key, "backbone")], value), key


def test_a_missing_backbone_weight_is_named_as_the_file_names_it():
    shapes = {key: shape for key, shape in MANIFESTS["fpn_pvt_v2_b0_ade20k"].items() if key.startswith("backbone.")}
    del shapes["backbone.block2.1.attn.q.weight"]
    checkpoint = random_tensors({**shapes, **detector_parts("mask_rcnn", [32, 64, 160, 256])}, seed=0)
    with pytest.raises(
        ConversionError,
        match=r"missing from the checkpoint: backbone\.block2\.1\.attn\.q\.weight \(pvt-hf: encoder\.stages\.1\.layers\.1\.attention\.query\.weight\)",
    ):
        convert_official_state_dict(checkpoint, variant="pvt-v2-b0")


def test_convert_all_handles_detection_files(tmp_path, capsys, caplog):
    caplog.set_level("INFO", logger="pvt_hf")
    source = tmp_path / "downloads"
    source.mkdir()
    backbone_shapes = {
        key: shape for key, shape in MANIFESTS["fpn_pvt_v2_b0_ade20k"].items() if key.startswith("backbone.")
    }
    parts = detector_parts("mask_rcnn", [32, 64, 160, 256], width=256)
    torch.save(
        {"meta": {}, "state_dict": random_tensors({**backbone_shapes, **parts}, seed=0)},
        source / "mask_rcnn_pvt_v2_b0_fpn_1x_coco.pth",
    )
    torch.save(random_tensors(MANIFESTS["pvt_v2_b0"], seed=1), source / "pvt_v2_b0.pth")
    assert main(["convert", "--all", str(source), str(tmp_path / "hub"), "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert sorted(path.name for path in (tmp_path / "hub").iterdir()) == [
        "mask-rcnn-pvt-v2-b0-fpn-1x-coco",
        "pvt-v2-b0",
    ]
    assert "| mask_rcnn_pvt_v2_b0_fpn_1x_coco.pth | mask-rcnn-pvt-v2-b0-fpn-1x-coco | backbone | 3.4M |" in out
    assert "| pvt_v2_b0.pth | pvt-v2-b0 | classification | 3.7M |" in out
    assert (
        f"mask_rcnn_pvt_v2_b0_fpn_1x_coco.pth: detection checkpoint, backbone converted; {summary(expected_left_out(parts))}"
        in caplog.text
    )
    config = json.loads((tmp_path / "hub" / "mask-rcnn-pvt-v2-b0-fpn-1x-coco" / "config.json").read_text())
    assert config["architectures"] == ["PvtBackbone"] and config["hidden_sizes"] == [32, 64, 160, 256]


def test_a_detector_with_another_backbone_is_refused_by_name(tmp_path, capsys):
    resnet = {
        "backbone.conv1.weight": (64, 3, 7, 7),
        "backbone.bn1.weight": (64,),
        "backbone.layer1.0.conv1.weight": (64, 64, 1, 1),
        "backbone.layer4.2.conv3.weight": (2048, 512, 1, 1),
    }
    path = tmp_path / "mask_rcnn_r50_fpn_1x_coco.pth"
    torch.save(
        {
            "meta": {},
            "state_dict": random_tensors({**resnet, **detector_parts("mask_rcnn", [256, 512, 1024, 2048])}, seed=0),
        },
        path,
    )
    assert main(["convert", str(path), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("pvt-hf convert: error: ") and "\n" not in error
    assert f"{path} is a detection checkpoint whose backbone is not a PVT" in error
    assert "backbone.bn1.weight, backbone.conv1.weight, backbone.layer1.0.conv1.weight, ..." in error
    assert "expected the official PVT v1 / v2 keys, `backbone.patch_embed1.proj.weight`" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("task", ["classification", "semantic-segmentation"])
def test_another_task_on_a_detection_checkpoint_is_an_error(tmp_path, capsys, caplog, task):
    path, _, _ = mini_detection_checkpoint(tmp_path, "v2")
    args = str(REFERENCE / "pvt_v2_mini_seg.json")
    assert main(["convert", str(path), str(tmp_path / "out"), "--official-args", args, "--task", task]) == 1
    error = capsys.readouterr().err
    assert (
        f"--task {task}, but {path} is a detection checkpoint (`backbone.` weights with the detector's bbox_head, neck)"
        in error
    )
    assert "only its backbone converts, with --task backbone (the default for it)" in error
    assert not (tmp_path / "out").exists()
    # named explicitly, the task is the detected one
    caplog.set_level("INFO", logger="pvt_hf")
    assert (
        main(
            ["convert", str(path), str(tmp_path / "out"), "--official-args", args, "--task", "backbone", "--no-verify"]
        )
        == 0
    )
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_task_backbone_on_a_classifier_points_to_its_folder(tmp_path, capsys):
    source = REFERENCE / "pvt_v2_mini_cls.pth"
    argv = ["convert", str(source), str(tmp_path / "out"), "--official-args", str(REFERENCE / "pvt_v2_mini_cls.json")]
    assert main([*argv, "--task", "backbone"]) == 1
    error = capsys.readouterr().err
    assert f"--task backbone, but {source} is a classification checkpoint" in error
    assert "PvtBackbone.from_pretrained(folder)" in error
    assert not (tmp_path / "out").exists()
