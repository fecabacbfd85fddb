"""PVT v1 and v2 backbones inside transformers' dense-prediction models (pvt_hf.tools.composites), tiny configs, on the CPU:
UperNet and Mask2Former (segmentation), RT-DETR, Deformable DETR and DETR (detection). DPT (depth) cannot take a
hierarchical backbone: tested to fail clearly."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import RT_DETR_TINY
from PIL import Image
from skimage import data as skimage_data
from transformers import (
    AutoConfig,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
    AutoModelForUniversalSegmentation,
    DeformableDetrForObjectDetection,
    DeformableDetrImageProcessorPil,
    DetrForObjectDetection,
    DetrImageProcessorPil,
    DPTConfig,
    DPTForDepthEstimation,
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessorPil,
    RTDetrForObjectDetection,
    RTDetrImageProcessorPil,
    SegformerImageProcessorPil,
    UperNetForSemanticSegmentation,
    pipeline,
)

from pvt_hf import PvtBackbone, PvtConfig, PvtForImageClassification
from pvt_hf.tools.composites import (
    OUT_FEATURES,
    composite_config,
    load_pretrained_backbone,
    pvt_backbone_config,
    pvt_backbones,
)


TINY_BACKBONE = {
    "hidden_sizes": [16, 32, 48, 64],
    "num_attention_heads": [1, 2, 3, 4],
    "depths": [1, 1, 1, 1],
    "mlp_ratios": [2, 2, 2, 2],
}
ID2LABEL = {0: "circle", 1: "rectangle", 2: "triangle"}
SIZE = 96  # Deformable DETR's extra level (stride 64) needs 2x2 values per GroupNorm group: at least 65 px
DETECTION_HEAD = {
    "encoder_layers": 1,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "num_queries": 10,
}


@dataclass
class Composite:
    model_class: type
    auto_class: type
    kwargs: dict
    processor: object
    task: str
    labels: str  # "segmentation" | "masks" | "boxes"
    composite_checkpointing: bool  # supports_gradient_checkpointing of the composite itself


COMPOSITES = {
    "upernet": Composite(
        UperNetForSemanticSegmentation,
        AutoModelForSemanticSegmentation,
        {"hidden_size": 16, "auxiliary_channels": 8, "pool_scales": [1, 2]},
        lambda: SegformerImageProcessorPil(size={"height": SIZE, "width": SIZE}),
        "image-segmentation",
        "segmentation",
        False,
    ),
    "mask2former": Composite(
        Mask2FormerForUniversalSegmentation,
        AutoModelForUniversalSegmentation,
        {
            "feature_size": 32,
            "mask_feature_size": 32,
            "hidden_dim": 32,
            "encoder_feedforward_dim": 32,
            "encoder_layers": 1,
            "decoder_layers": 2,
            "num_attention_heads": 2,
            "dim_feedforward": 32,
            "num_queries": 6,
            "train_num_points": 256,
        },
        lambda: Mask2FormerImageProcessorPil(size={"shortest_edge": SIZE, "longest_edge": 2 * SIZE}),
        "image-segmentation",
        "masks",
        False,
    ),
    "rt_detr": Composite(
        RTDetrForObjectDetection,
        AutoModelForObjectDetection,
        RT_DETR_TINY,
        lambda: RTDetrImageProcessorPil(size={"height": SIZE, "width": SIZE}),
        "object-detection",
        "boxes",
        False,
    ),
    "deformable_detr": Composite(
        DeformableDetrForObjectDetection,
        AutoModelForObjectDetection,
        dict(d_model=32, **DETECTION_HEAD),
        lambda: DeformableDetrImageProcessorPil(size={"shortest_edge": SIZE, "longest_edge": 2 * SIZE}),
        "object-detection",
        "boxes",
        True,
    ),
    "detr": Composite(
        DetrForObjectDetection,
        AutoModelForObjectDetection,
        dict(d_model=16, **DETECTION_HEAD),
        lambda: DetrImageProcessorPil(size={"shortest_edge": SIZE, "longest_edge": 2 * SIZE}),
        "object-detection",
        "boxes",
        True,
    ),
}
CASES = [(name, version) for name in COMPOSITES for version in (1, 2)]
CASE_IDS = [f"{name}-v{version}" for name, version in CASES]


def build(name, version, backbone="pvt-v2-b0", seed=0, **backbone_overrides):
    torch.manual_seed(seed)
    spec = COMPOSITES[name]
    overrides = (
        {**TINY_BACKBONE, "version": version, **backbone_overrides} if backbone == "pvt-v2-b0" else backbone_overrides
    )
    config = composite_config(
        name,
        backbone,
        backbone_overrides=overrides,
        id2label=ID2LABEL,
        label2id={v: k for k, v in ID2LABEL.items()},
        **spec.kwargs,
    )
    return spec.model_class(config)


def pixels(batch=2, seed=1):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def make_labels(kind, batch=2, seed=2):
    """The label format of each composite, for images of two shapes each (boxes normalised cx, cy, w, h)."""
    rng = np.random.default_rng(seed)
    if kind == "segmentation":
        labels = torch.from_numpy(rng.integers(0, 3, (batch, SIZE, SIZE)))
        labels[:, :4] = 255  # ignored
        return {"labels": labels}
    boxes, classes, masks = [], [], []
    for _ in range(batch):
        centres, sizes = rng.uniform(0.3, 0.7, (2, 2)), rng.uniform(0.15, 0.4, (2, 2))
        boxes.append(torch.tensor(np.concatenate([centres, sizes], 1), dtype=torch.float32))
        classes.append(torch.from_numpy(rng.integers(0, 3, 2)))
        mask = torch.zeros(2, SIZE, SIZE)
        for index, ((cx, cy), (w, h)) in enumerate(zip(centres, sizes)):
            mask[
                index,
                int((cy - h / 2) * SIZE) : int((cy + h / 2) * SIZE),
                int((cx - w / 2) * SIZE) : int((cx + w / 2) * SIZE),
            ] = 1
        masks.append(mask)
    if kind == "masks":
        return {"mask_labels": masks, "class_labels": classes}
    return {"labels": [{"class_labels": c, "boxes": b} for c, b in zip(classes, boxes)]}


def seeded_loss(model, inputs, seed=3):
    """The training-mode loss with the composite's random draws (denoising queries, sampled points) fixed."""
    torch.manual_seed(seed)
    return model(**inputs).loss


def test_out_features_follow_each_composites_contract():
    for name, stages in OUT_FEATURES.items():
        config = composite_config(name, "pvt-v2-b0", backbone_overrides=TINY_BACKBONE)
        assert config.backbone_config.model_type == "pvt_hf" and config.backbone_config.out_features == stages
    rt_detr = composite_config("rt_detr", "pvt-v2-b2")
    assert rt_detr.encoder_in_channels == [128, 320, 512] and rt_detr.feat_strides == [8, 16, 32]
    assert composite_config("mask2former", "pvt-small").feature_strides == [4, 8, 16, 32]
    assert composite_config("deformable_detr", "pvt-v2-b0").num_feature_levels == 4
    assert pvt_backbone_config("pvt-v2-b1").out_features == ["stage1", "stage2", "stage3", "stage4"]


@pytest.mark.parametrize("name, version", CASES, ids=CASE_IDS)
def test_forward_loss_and_training_steps(name, version):
    spec = COMPOSITES[name]
    model = build(name, version).train()
    (backbone,) = pvt_backbones(model)
    assert backbone.config.version == version and backbone.channels == [
        TINY_BACKBONE["hidden_sizes"][int(s[-1]) - 1] for s in OUT_FEATURES[name]
    ]
    assert all(p.requires_grad for p in backbone.parameters())  # no composite freezes PVT layers
    inputs = {"pixel_values": pixels(), **make_labels(spec.labels)}
    loss = seeded_loss(model, inputs)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    stem = backbone.encoder.stages[0].patch_embeddings.projection.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # the loss reaches the first PVT layer
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    before = stem.detach().clone()
    for _ in range(8):
        optimizer.zero_grad()
        seeded_loss(model, inputs).backward()
        optimizer.step()
    assert not torch.equal(before, stem)
    assert seeded_loss(model, inputs).item() < loss.item()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every case saved (model + the composite's image processor) with its eval outputs on a fixed input."""
    root = tmp_path_factory.mktemp("composites")
    folders = {}
    for name, version in CASES:
        model = build(name, version).eval()
        folder = root / f"{name}-v{version}"
        model.save_pretrained(folder)
        COMPOSITES[name].processor().save_pretrained(folder)
        with torch.no_grad():
            outputs = model(pixel_values=pixels(1))
        first = (
            outputs.logits
            if hasattr(outputs, "logits") and outputs.logits is not None
            else outputs.class_queries_logits
        )
        torch.save({"output": first}, folder / "reference.pt")
        folders[name, version] = folder
    return folders


@pytest.mark.parametrize("name, version", CASES, ids=CASE_IDS)
def test_save_reload_identical_and_pipeline(saved, name, version):
    spec, folder = COMPOSITES[name], saved[name, version]
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone_config"]["model_type"] == "pvt_hf" and config["backbone_config"]["version"] == version
    model = build(name, version).eval()
    reloaded = spec.auto_class.from_pretrained(folder).eval()
    assert type(reloaded) is spec.model_class and isinstance(pvt_backbones(reloaded)[0], PvtBackbone)
    saved_weights, loaded_weights = model.state_dict(), reloaded.state_dict()
    assert saved_weights.keys() == loaded_weights.keys()
    assert all(torch.equal(saved_weights[key], loaded_weights[key]) for key in saved_weights)
    with torch.no_grad():
        expected, got = model(pixel_values=pixels(1)), reloaded(pixel_values=pixels(1))
        maps = pvt_backbones(model)[0](pixels(1)).feature_maps, pvt_backbones(reloaded)[0](pixels(1)).feature_maps
    assert all(torch.equal(a, b) for a, b in zip(*maps, strict=True))  # the PVT backbone: bit for bit
    # The heads: to fp32 rounding (loaded weights sit at other memory alignments, on which oneDNN picks other kernels).
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)

    image = Image.fromarray(skimage_data.astronaut())  # 512 x 512
    predictor = pipeline(spec.task, model=str(folder))
    # the saved processor's family; transformers picks its torchvision backend (no `Pil` suffix) where torchvision is
    # installed, its Pillow one otherwise
    family = type(spec.processor()).__name__.removesuffix("Pil")
    assert type(predictor.image_processor).__name__.removesuffix("Pil") == family
    if spec.task == "object-detection":
        results = predictor(image, threshold=0.0)
        assert (
            0 < len(results) <= spec.kwargs["num_queries"] * len(ID2LABEL)
        )  # (Deformable DETR: top-k over query x class)
        for result in results:
            box = result["box"]
            assert result["label"] in ID2LABEL.values() and 0 <= result["score"] <= 1
            assert box["xmin"] <= box["xmax"] and box["ymin"] <= box["ymax"]  # in pixels; not clipped to the image
    else:
        results = predictor(image, subtask="semantic")
        assert results and all(r["label"] in ID2LABEL.values() and r["mask"].size == image.size for r in results)
        # The masks partition the image: every pixel belongs to exactly one class.
        coverage = sum(np.asarray(r["mask"], np.int64) // 255 for r in results)
        assert (coverage == 1).all()


def test_saved_composites_reload_in_a_new_process(saved):
    """A composite whose backbone_config is a pvt-hf config reloads in a fresh interpreter after `import pvt_hf`
    (AutoConfig resolves the backbone's model_type "pvt_hf"), with the same outputs."""
    script = (
        "import sys, torch, pvt_hf\n"
        "from transformers import AutoModelForObjectDetection, AutoModelForSemanticSegmentation, AutoModelForUniversalSegmentation\n"
        "auto = {'upernet': AutoModelForSemanticSegmentation, 'mask2former': AutoModelForUniversalSegmentation}\n"
        "pixel_values = torch.randn(1, 3, %d, %d, generator=torch.Generator().manual_seed(1))\n"
        "for folder in sys.argv[1:]:\n"
        "    name = folder.rsplit('/', 1)[1].rsplit('-v', 1)[0]\n"
        "    model = auto.get(name, AutoModelForObjectDetection).from_pretrained(folder).eval()\n"
        "    with torch.no_grad():\n"
        "        outputs = model(pixel_values=pixel_values)\n"
        "    first = outputs.logits if getattr(outputs, 'logits', None) is not None else outputs.class_queries_logits\n"
        "    torch.testing.assert_close(first, torch.load(folder + '/reference.pt')['output'], rtol=1e-5, atol=1e-6)\n"
        "    print('ok', name, type(model).__name__)\n"
    ) % (SIZE, SIZE)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, saved.values())],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("ok ") == len(CASES)


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_gradient_checkpointing(name):
    """Composites that support it (Deformable DETR, DETR) checkpoint the PVT layers with the rest; the others refuse,
    and their PvtBackbone is checkpointed on its own. Gradients are the same either way."""
    spec = COMPOSITES[name]
    inputs = {"pixel_values": pixels(), **make_labels(spec.labels)}

    def gradients(model):
        model.train()
        seeded_loss(model, inputs).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    reference = gradients(build(name, 2))
    model = build(name, 2)
    (backbone,) = pvt_backbones(model)
    if spec.composite_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        with pytest.raises(ValueError, match="does not support"):
            model.activation_checkpointing_enable()
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layers = [layer for stage in backbone.encoder.stages for layer in stage.layers]
    assert all(layer.gradient_checkpointing for layer in layers)
    calls = []
    hook = layers[0].attention.query.register_forward_pre_hook(lambda *args: calls.append(1))
    checkpointed = gradients(model)
    hook.remove()
    assert (
        len(calls) == 2
    )  # the forward, then its recomputation in the backward pass (`forward` is checkpointed, not hooks)
    assert checkpointed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(checkpointed[key], reference[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def pretrained_folders(tmp_path_factory):
    """Converted-style PVT folders with non-default weights: a classifier (v1, v2) and a backbone (v2)."""
    root = tmp_path_factory.mktemp("pretrained")
    folders = {}
    for version in (1, 2):
        torch.manual_seed(10 + version)
        model = PvtForImageClassification(PvtConfig(version=version, num_labels=7, **TINY_BACKBONE))
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)  # LayerNorm weights etc. away from their init
        model.save_pretrained(root / f"classifier-v{version}")
        folders["classifier", version] = root / f"classifier-v{version}"
    torch.manual_seed(20)
    PvtBackbone(PvtConfig(version=2, **TINY_BACKBONE)).save_pretrained(root / "backbone-v2")
    folders["backbone", 2] = root / "backbone-v2"
    return folders


@pytest.mark.parametrize("name, version", CASES, ids=CASE_IDS)
def test_pretrained_backbone_weights_are_loaded(pretrained_folders, name, version):
    folder = pretrained_folders["classifier", version]
    model = build(name, version=version, backbone=str(folder)).eval()  # the architecture comes from the folder
    (backbone,) = pvt_backbones(model)
    reference = PvtBackbone.from_pretrained(folder, out_features=OUT_FEATURES[name]).eval()
    x = pixels(1)
    with torch.no_grad():
        want = reference(x).feature_maps
        assert not torch.equal(backbone(x).feature_maps[0], want[0])  # a new composite has random weights
        load_pretrained_backbone(model, folder)
        got = backbone(x).feature_maps
    assert len(got) == len(want) == len(OUT_FEATURES[name])
    for mine, theirs in zip(got, want):
        assert torch.equal(mine, theirs)
    # The loaded weights are the composite's from then on: saved and reloaded with it.
    assert set(backbone.state_dict()) == set(reference.state_dict())


def test_pretrained_backbone_from_a_backbone_folder_and_through_save(pretrained_folders, tmp_path):
    folder = pretrained_folders["backbone", 2]
    model = build("rt_detr", 2, backbone=str(folder))
    load_pretrained_backbone(model, str(folder))
    model.save_pretrained(tmp_path / "rt-detr")
    reloaded = RTDetrForObjectDetection.from_pretrained(tmp_path / "rt-detr")
    source = PvtBackbone.from_pretrained(folder).state_dict()
    for key, value in pvt_backbones(reloaded)[0].state_dict().items():
        assert torch.equal(value, source[key]), key


def test_pretrained_backbone_errors(pretrained_folders, tmp_path):
    folder = pretrained_folders["classifier", 2]
    wider = build("upernet", 2, hidden_sizes=[16, 32, 48, 96])
    with pytest.raises(
        ValueError, match=r"does not fit.*hidden_sizes: model \[16, 32, 48, 96\], checkpoint \[16, 32, 48, 64\]"
    ):
        load_pretrained_backbone(wider, folder)
    with pytest.raises(ValueError, match=r"does not fit.*version: model 1, checkpoint 2"):
        load_pretrained_backbone(build("detr", 1), folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_pretrained_backbone(build("detr", 2), str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="holds no PvtBackbone"):
        load_pretrained_backbone(PvtForImageClassification(PvtConfig(**TINY_BACKBONE)), folder)
    build("upernet", 2).save_pretrained(tmp_path / "upernet")
    with pytest.raises(ValueError, match="is a 'upernet' model, not a pvt-hf one"):
        load_pretrained_backbone(build("upernet", 2), str(tmp_path / "upernet"))
    with pytest.raises(ValueError, match="cannot take a PVT backbone"):
        composite_config("dpt", "pvt-v2-b0")


def test_backbone_config_from_a_checkpoint_keeps_only_the_architecture(pretrained_folders):
    config = pvt_backbone_config(str(pretrained_folders["classifier", 1]), out_features=["stage2", "stage4"])
    assert config.version == 1 and config.hidden_sizes == TINY_BACKBONE["hidden_sizes"] and config.num_labels == 2
    assert config.out_indices == [1, 3]
    assert AutoConfig.for_model("upernet", backbone_config=config).backbone_config is config


def test_dpt_cannot_take_a_hierarchical_backbone():
    """DPTForDepthEstimation builds with a PVT backbone but cannot run it: its neck reads `backbone_config.patch_size`
    and reassembles ViT token sequences (a cls token, one hidden size). If transformers lifts this, this test fails and
    DPT can join the supported composites."""
    backbone = pvt_backbone_config("pvt-v2-b0", **TINY_BACKBONE)
    model = DPTForDepthEstimation(
        DPTConfig(
            backbone_config=backbone,
            neck_hidden_sizes=[16, 32, 48, 64],
            fusion_hidden_size=16,
            reassemble_factors=[1, 1, 1, 1],
            readout_type="ignore",
        )
    )
    with pytest.raises(AttributeError, match="patch_size"):
        model(pixel_values=pixels(1))
