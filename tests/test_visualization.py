"""pvt_hf.tools.visualization: attention maps on the reduced key grids (v1, v2, v2-linear, non-square sizes), Grad-CAM and
the overlays."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import pvt_hf_script
from PIL import Image

from pvt_hf import PvtConfig, PvtForImageClassification, PvtForSemanticSegmentation
from pvt_hf.modeling_pvt import PvtAttention, eager_attention_forward
from pvt_hf.tools.visualization import (
    IGNORE_INDEX,
    ade20k_palette,
    attention_maps,
    class_activation_map,
    distinct_colors,
    key_layout,
    legend_entries,
    overlay,
)


TINY = {
    "hidden_sizes": [8, 16, 24, 32],
    "depths": [1, 2, 1, 1],
    "num_attention_heads": [1, 2, 2, 4],
    "image_size": 64,
    "num_labels": 3,
}
VARIANTS = {"v1": {"version": 1}, "v2": {"version": 2}, "v2-linear": {"version": 2, "linear_attention": True}}
HEIGHT, WIDTH = 88, 152  # non-square; stage grids 22x38 (v2), sr 8 leaves 6 rows and 6 columns out


def tiny_model(variant, model_class=PvtForImageClassification):
    torch.manual_seed(0)
    return model_class(PvtConfig(**TINY, **VARIANTS[variant])).eval()


@pytest.fixture
def forged_attention(monkeypatch):
    """Replace the recorded attention weights of shape (queries, keys) `state["shape"]` by `forge(weights)`; the
    model still computes its outputs with the real weights."""
    state = {}

    def attention_function(self):
        def forward(module, query, key, value, mask, **kwargs):
            output, weights = eager_attention_forward(module, query, key, value, mask, **kwargs)
            # Only the layers of the shape under test (the others have other key counts).
            return output, state["forge"](weights) if weights.shape[-2:] == state["shape"] else weights

        return forward

    monkeypatch.setattr(PvtAttention, "attention_function", attention_function)
    return state


def weights_shape(layout, has_cls=False):
    """(queries, keys) of a layer's attention weights."""
    cls = int(has_cls)
    return (layout.stage_grid[0] * layout.stage_grid[1] + cls, layout.key_grid[0] * layout.key_grid[1] + cls)


def key_tokens(layout, axis, key):
    """The stage tokens [start, end) along `axis` that key `key` was made from, worked out here on its own: strided
    conv windows [k sr, (k + 1) sr); adaptive pool bins [floor(k L / 7), ceil((k + 1) L / 7)); sr 1 the token."""
    length = layout.stage_grid[axis]
    if layout.reduction == "conv":
        return key * layout.size, (key + 1) * layout.size
    if layout.reduction == "pool":
        return (key * length) // layout.size, -((-(key + 1) * length) // layout.size)
    return key, key + 1


def key_box(layout, key_row, key_column, height, width):
    """The image box (top, bottom, left, right) of the stage tokens a key was made from."""
    (top, bottom), (left, right) = key_tokens(layout, 0, key_row), key_tokens(layout, 1, key_column)
    scale_y, scale_x = height / layout.stage_grid[0], width / layout.stage_grid[1]
    return top * scale_y, bottom * scale_y, left * scale_x, right * scale_x


def assert_peak_in_box(heatmap, box, slack):
    """The map's maximum lies in `box`, and the map is 0 (or NaN: no key) farther than `slack` pixels outside it."""
    heatmap = heatmap.nan_to_num(0.0)
    top, bottom, left, right = (float(v) for v in box)
    y, x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
    assert top <= y + 0.5 <= bottom and left <= x + 0.5 <= right, ((y, x), box)
    outside = np.ones(heatmap.shape, bool)
    outside[max(0, int(top - slack)) : int(bottom + slack) + 1, max(0, int(left - slack)) : int(right + slack) + 1] = (
        False
    )
    assert np.abs(heatmap.numpy()[outside]).max(initial=0) < 1e-6 * float(heatmap.max())


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("stage", [1, 2, 4])
def test_known_peak_lands_on_its_key(variant, stage, forged_attention):
    """Every query gives all its weight to one key (row 1 / last column of the reduced grid, or the last key): the
    map peaks on the image region of the tokens that key was made from, and is 0 elsewhere."""
    model = tiny_model(variant)
    layout = key_layout(model, stage, -1, HEIGHT, WIDTH)
    key_rows, key_columns = layout.key_grid
    key_row, key_column = min(1, key_rows - 1), key_columns - 1
    has_cls = variant == "v1" and stage == 4

    def forge(weights):
        forged = torch.zeros_like(weights)
        forged[..., int(has_cls) + key_row * key_columns + key_column] = 1.0
        return forged

    forged_attention.update(forge=forge, shape=weights_shape(layout, has_cls))
    heatmap = attention_maps(model, torch.randn(1, 3, HEIGHT, WIDTH), stage, -1)[0]
    assert heatmap.shape == (HEIGHT, WIDTH)
    # The rows/columns a strided reduction leaves out are read by no key: NaN (here at stages 1 and 2: 22x38 and
    # 11x19 tokens, sr 8 and 4)
    uncovered = layout.reduction == "conv" and layout.stage_grid[0] % layout.size != 0
    assert torch.isnan(heatmap[-1, -1]).item() == uncovered and not torch.isnan(heatmap[0, 0])
    token_pixels = HEIGHT / layout.stage_grid[0]
    assert_peak_in_box(heatmap, key_box(layout, key_row, key_column, HEIGHT, WIDTH), slack=token_pixels)


def test_key_grids_are_the_reductions_real_output_sizes():
    """conv SRA: floor(grid / sr) (here not a multiple); v2-linear: the 7x7 pool; sr 1: the stage grid."""
    assert key_layout(tiny_model("v2"), 1, 1, HEIGHT, WIDTH).key_grid == (2, 4)  # 22x38 tokens, sr 8
    assert key_layout(tiny_model("v2"), 2, 2, HEIGHT, WIDTH).key_grid == (2, 4)  # 11x19, sr 4
    assert key_layout(tiny_model("v2"), 4, 1, HEIGHT, WIDTH).key_grid == (3, 5)  # sr 1: the 3x5 grid itself
    assert key_layout(tiny_model("v1"), 1, 1, HEIGHT, WIDTH).key_grid == (2, 4)  # 22x38 (no padding), sr 8
    assert key_layout(tiny_model("v2-linear"), 3, 1, HEIGHT, WIDTH).key_grid == (7, 7)
    # Each layout's key count is what the model really records (attention_maps checks the shapes it gets).
    for variant in VARIANTS:
        model = tiny_model(variant)
        outputs = model(torch.randn(1, 3, HEIGHT, WIDTH), output_attentions=True)
        for index, (stage, layer) in enumerate([(1, 1), (2, 1), (2, 2), (3, 1), (4, 1)]):
            layout = key_layout(model, stage, layer, HEIGHT, WIDTH)
            cls = int(variant == "v1" and stage == 4)
            assert outputs.attentions[index].shape[-1] == layout.key_grid[0] * layout.key_grid[1] + cls


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_query_pixel_selects_its_token(variant, forged_attention):
    """The query under pixel (y, x) looks at key A, every other query at key B: the map for (y, x) peaks on A, the
    mean over queries on B."""
    model = tiny_model(variant)
    stage = 2
    layout = key_layout(model, stage, 1, HEIGHT, WIDTH)
    query_pixel = (HEIGHT - 5, 3)  # bottom-left: stage token (rows - 1, 0)
    token = (layout.stage_grid[0] - 1) * layout.stage_grid[1] + 0
    key_a, key_b = 0, layout.key_grid[0] * layout.key_grid[1] - 1

    def forge(weights):
        forged = torch.zeros_like(weights)
        forged[..., key_b] = 1.0
        forged[..., token, :] = 0.0
        forged[..., token, key_a] = 1.0
        return forged

    forged_attention.update(forge=forge, shape=weights_shape(layout))
    pixel_values = torch.randn(1, 3, HEIGHT, WIDTH)
    slack = HEIGHT / layout.stage_grid[0]
    single = attention_maps(model, pixel_values, stage, 1, query=query_pixel)[0]
    assert_peak_in_box(single, key_box(layout, 0, 0, HEIGHT, WIDTH), slack)
    mean = attention_maps(model, pixel_values, stage, 1)[0].nan_to_num(0.0)
    y, x = np.unravel_index(int(mean.argmax()), mean.shape)
    top, bottom, left, right = (
        float(v) for v in key_box(layout, layout.key_grid[0] - 1, layout.key_grid[1] - 1, HEIGHT, WIDTH)
    )
    assert top <= y + 0.5 <= bottom and left <= x + 0.5 <= right


def test_v1_cls_query_and_heads(forged_attention):
    """v1 classifiers' last stage: the cls query and the per-head maps (head h looks at key h)."""
    model = tiny_model("v1")
    layout = key_layout(model, 4, 1, HEIGHT, WIDTH)

    def forge(weights):
        forged = torch.zeros_like(weights)
        for head in range(weights.shape[1]):
            forged[:, head, :, 1 + head] = 1.0  # patch key `head` (after the cls key)
        forged[:, :, 0, :] = 0.0
        forged[:, :, 0, 1 + 7] = 1.0  # the cls query looks at patch key 7
        return forged

    forged_attention.update(forge=forge, shape=weights_shape(layout, has_cls=True))
    pixel_values = torch.randn(1, 3, HEIGHT, WIDTH)
    per_head = attention_maps(model, pixel_values, 4, 1, heads="all")[0]
    assert per_head.shape == (4, HEIGHT, WIDTH)
    columns = layout.key_grid[1]
    for head in range(4):
        assert_peak_in_box(per_head[head], key_box(layout, head // columns, head % columns, HEIGHT, WIDTH), HEIGHT / 3)
    cls_map = attention_maps(model, pixel_values, 4, 1, query="cls")[0]
    assert_peak_in_box(cls_map, key_box(layout, 7 // columns, 7 % columns, HEIGHT, WIDTH), HEIGHT / 3)


def test_attention_arguments_are_checked():
    model = tiny_model("v2")
    pixel_values = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="stage: expected 1 to 4"):
        attention_maps(model, pixel_values, 5)
    with pytest.raises(ValueError, match="layer: stage 2 has 2 layer"):
        attention_maps(model, pixel_values, 2, 3)
    with pytest.raises(ValueError, match="query: pixel"):
        attention_maps(model, pixel_values, 1, query=(64, 0))
    with pytest.raises(ValueError, match="query: 'cls'"):
        attention_maps(model, pixel_values, 4, query="cls")


def test_attention_maps_of_segmentation_models_and_real_weights_sum():
    """A segmentation model's recorded weights; with the real (unforged) weights each query's map of the full-grid
    stage sums, over the tokens, to 1 per head."""
    model = tiny_model("v2", PvtForSemanticSegmentation)
    heatmap = attention_maps(model, torch.randn(2, 3, 64, 96), 3, 1, query=(5, 90))
    assert heatmap.shape == (2, 64, 96) and torch.isfinite(heatmap).all() and (heatmap >= 0).all()
    from pvt_hf.tools.visualization import keys_to_tokens

    layout = key_layout(model, 4, 1, 64, 96)
    weights = torch.softmax(torch.randn(2, layout.key_grid[0] * layout.key_grid[1]), -1)
    assert torch.allclose(keys_to_tokens(weights, layout).sum((-2, -1)), torch.ones(2, dtype=weights.dtype))


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_grad_cam(variant):
    """In [0, 1], peak 1, the image's size; for v2 it equals Grad-CAM computed by hand on the stage-4 map; for v1
    (cls-token classifier) it is not empty (the gradient reaches the patch tokens)."""
    model = tiny_model(variant)
    pixel_values = torch.randn(2, 3, 72, 104)
    cam = class_activation_map(model, pixel_values, target=[1, "LABEL_2"])
    assert cam.shape == (2, 72, 104) and cam.min() >= 0 and torch.allclose(cam.flatten(1).amax(1), torch.ones(2))
    if variant == "v2":
        outputs = model(pixel_values, output_hidden_states=True)
        stage4 = outputs.hidden_states[-1]
        logits = outputs.logits
        gradient = torch.autograd.grad(logits[0, 1] + logits[1, 2], stage4)[0]
        manual = torch.relu((gradient.mean((2, 3), keepdim=True) * stage4).sum(1)).detach()
        manual = torch.nn.functional.interpolate(
            manual[:, None], size=(72, 104), mode="bilinear", align_corners=False
        )[:, 0]
        manual = manual / manual.flatten(1).amax(1)[:, None, None]
        torch.testing.assert_close(cam, manual, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="target: 'cat'"):
        class_activation_map(model, pixel_values, target="cat")


# ------------------------------------------------------------------------------------------------ overlays
def test_segmentation_overlay_colours_and_legend():
    image = np.full((40, 60, 3), 200, np.uint8)
    mask = np.zeros((40, 60), np.int64)
    mask[:, 30:] = 7  # half
    mask[:10, :10] = 149  # the last ADE20K class
    mask[30:, :5] = IGNORE_INDEX
    labels = [f"class {i}" for i in range(150)]
    picture = overlay(image, mask, palette="ade20k", labels=labels, alpha=0.5)
    palette = ade20k_palette()
    blend = np.asarray(picture)[:40, :60].astype(int)
    expected = np.rint(200 * 0.5 + palette[[0, 7, 149]].astype(float) * 0.5).astype(int)
    assert (
        (blend[20, 10] == expected[0]).all()
        and (blend[20, 40] == expected[1]).all()
        and (blend[2, 2] == expected[2]).all()
    )
    assert (blend[35, 2] == 200).all()  # ignored: the image itself
    entries = legend_entries(mask, palette, labels)
    assert [entry.index for entry in entries] == [7, 0, 149]  # the classes present, largest first
    assert [entry.label for entry in entries] == ["class 7", "class 0", "class 149"]
    assert sum(entry.fraction for entry in entries) == pytest.approx(1.0)
    assert entries[0].fraction == pytest.approx(1200 / (2400 - 50))  # 10x5 pixels ignored
    # The legend panel shows the swatches of exactly these classes.
    panel = np.asarray(picture)[:, 60:].reshape(-1, 3)
    shown = {tuple(color) for color in panel.tolist()}
    assert {tuple(int(c) for c in palette[i]) for i in (0, 7, 149)} <= shown
    present = {tuple(int(c) for c in palette[i]) for i in (0, 7, 149)}
    other = {tuple(int(c) for c in color) for color in palette if len(set(color.tolist())) > 1} - present
    assert not (shown & other)  # (greys left out: the black text is anti-aliased into greys)
    assert picture.height == 40 or picture.height >= 3 * 22


def test_generated_palette_and_given_palette():
    colors = distinct_colors(40)
    assert len({tuple(c) for c in colors.tolist()}) == 40
    mask = np.array([[0, 1], [2, 2]])
    picture = overlay(Image.new("RGB", (2, 2), "black"), mask, palette=None, legend=False, alpha=1.0)
    assert np.array_equal(np.asarray(picture).reshape(-1, 3), colors[[0, 1, 2, 2]])
    given = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    picture = overlay(Image.new("RGB", (2, 2), "black"), mask, palette=given, legend=False, alpha=1.0)
    assert np.array_equal(np.asarray(picture).reshape(-1, 3), np.array(given)[[0, 1, 2, 2]])
    with pytest.raises(ValueError, match="palette: 2 colours for class indices up to 2"):
        overlay(Image.new("RGB", (2, 2)), mask, palette=given[:2])


def test_heatmap_overlay_keeps_the_image_size_and_resizes_the_map():
    image = Image.new("RGB", (50, 30), "gray")
    heatmap = torch.zeros(15, 25)
    heatmap[:, 20:] = 1.0  # right-hand side hot
    picture = overlay(image, heatmap, alpha=1.0)
    assert picture.size == (50, 30)
    array = np.asarray(picture).astype(int)
    assert array[15, 45].tolist() == [253, 231, 37] and array[15, 5].tolist() == [68, 1, 84]  # viridis ends
    heatmap[:, :5] = float("nan")  # read by no key: the image shows through
    array = np.asarray(overlay(image, heatmap, alpha=1.0)).astype(int)
    assert array[15, 2].tolist() == [128, 128, 128] and array[15, 45].tolist() == [253, 231, 37]


# ------------------------------------------------------------------------------------------------ pvt-hf predict
def pvt_hf(*argv, cwd=None):
    """The installed `pvt-hf` console script in a process of its own (offline), as users run it."""
    script = Path(pvt_hf_script())
    if not script.exists():
        pytest.skip("the pvt-hf console script is not installed beside this interpreter")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(script), *map(str, argv)], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two real photos (scikit-image) of other sizes than any model input: 150x100 and 90x120 (width x height)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).resize((150, 100)).save(folder / "astronaut.png")
    Image.fromarray(data.coffee()).resize((90, 120)).save(folder / "coffee.jpg")
    return folder / "astronaut.png", folder / "coffee.jpg"


def png_size(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        picture.load()
        return picture.size


def predict_in_process(capsys, *argv):
    """`pvt-hf predict ...` in this process (the refusals: cheaper than a process each): (exit code, stderr)."""
    from pvt_hf_cli import main

    code = main(["predict", *map(str, argv)])
    return code, " ".join(capsys.readouterr().err.split())


def test_predict_saves_attention_and_cam_of_a_classifier(tmp_path, photos, capsys):
    """The shipped digits classifier: --save-attention (a query pixel) and --save-cam write PNGs of the image's size
    (the installed console script); an existing picture is kept without --force, replaced with it; an overlay needs a
    segmentation model; a query outside the image is an error for that image."""
    from pvt_hf.tools.demo import DEMO_DIR

    photo = photos[0]
    attention, cam = tmp_path / "attention.png", tmp_path / "cam.png"
    argv = [
        "predict",
        photo,
        "--model",
        DEMO_DIR,
        "--save-attention",
        attention,
        "--stage",
        2,
        "--layer",
        1,
        "--query",
        50,
        120,
        "--save-cam",
        cam,
    ]
    result = pvt_hf(*argv)
    assert result.returncode == 0, result.stderr
    assert png_size(attention) == (150, 100) and png_size(cam) == (150, 100)
    assert f"attention written to {attention}" in result.stderr

    before = attention.read_bytes()
    code, error = predict_in_process(capsys, *argv[1:-2], "--stage", 1)
    assert code == 1 and "already exists" in error and "--force" in error and attention.read_bytes() == before
    code, error = predict_in_process(capsys, *argv[1:], "--stage", 1, "--force")
    assert code == 0, error
    assert attention.read_bytes() != before and png_size(attention) == (150, 100)
    code, error = predict_in_process(capsys, photo, "--model", DEMO_DIR, "--save-overlay", tmp_path / "overlay.png")
    assert code == 1 and "--save-overlay needs a semantic-segmentation model" in error
    assert not (tmp_path / "overlay.png").exists()
    code, error = predict_in_process(
        capsys, photo, "--model", DEMO_DIR, "--save-attention", tmp_path / "q.png", "--query", 100, 0
    )
    assert code == 1 and "--query 100 0 is outside the 100x150 image" in error and not (tmp_path / "q.png").exists()
    code, error = predict_in_process(capsys, photo, "--model", DEMO_DIR, "--save-attention", photo, "--force")
    assert code == 1 and "is the input" in error


def test_predict_saves_segmentation_overlays_for_several_images(tmp_path, photos, converted, capsys):
    """A Semantic FPN model (converted from the official reference checkpoint): with several images the PATH is a
    folder of IMAGE_STEM.png; each overlay is the image (its height; a legend panel on the right)."""
    folder = tmp_path / "overlays"
    result = pvt_hf(
        "predict",
        *photos,
        "--model",
        converted("pvt_v2_mini_seg"),
        "--save-overlay",
        folder,
        "--save-attention",
        tmp_path / "attention",
        "--stage",
        4,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    for photo in photos:
        width, height = png_size(folder / f"{photo.stem}.png")
        assert height == Image.open(photo).height and width > Image.open(photo).width
        assert png_size(tmp_path / "attention" / f"{photo.stem}.png") == Image.open(photo).size
    answers = json.loads(result.stdout)
    assert [Path(answer["pictures"]["overlay"]).name for answer in answers] == ["astronaut.png", "coffee.png"]
    code, error = predict_in_process(
        capsys, photos[0], "--model", converted("pvt_v2_mini_seg"), "--save-cam", tmp_path / "cam.png"
    )
    assert code == 1 and "--save-cam needs an image classifier" in error
