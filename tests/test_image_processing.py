"""Tests of pvt_hf's PvtImageProcessor (src/pvt_hf/image_processing_pvt.py).

The reference for the default transform is the official PVT ImageNet eval transform computed with
torchvision (frozen in ``tests/fixtures/image_processing/oracle_imagenet_eval.npz`` by ``make_oracle.py``,
since torchvision is not installed here) and, for many more sizes and filters, the same transform written
with plain Pillow + numpy below (``reference_eval``), which the fixture ties to torchvision.
"""

import ast
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap

import numpy as np
import PIL
import PIL.Image
import pytest
import torch


SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
if SRC not in sys.path:  # the project may not be pip-installed when the tests run
    sys.path.insert(0, SRC)

import pvt_hf.image_processing_pvt as ipp  # noqa: E402
from pvt_hf.image_processing_pvt import PvtImageProcessor  # noqa: E402


skimage_data = pytest.importorskip("skimage.data")

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "image_processing")
ORACLE = os.path.join(FIXTURES, "oracle_imagenet_eval.npz")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TOL = 1e-3


# ------------------------------------------------------------------------------------------ helpers


def photo(name: str) -> PIL.Image.Image:
    return PIL.Image.fromarray(getattr(skimage_data, name)()).convert("RGB")


def normalize_u8(arr_hwc: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize in float32, as torchvision computes them."""
    x = arr_hwc.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    return (x - MEAN[:, None, None]) / STD[:, None, None]


def reference_eval(img: PIL.Image.Image, short: int = 256, crop: int = 224, resample: int = PIL.Image.BICUBIC):
    """torchvision Resize(short, resample) + CenterCrop(crop) + ToTensor + Normalize, in plain Pillow/numpy."""
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
        rw, rh = short, int(short * h / w)
    else:
        rh, rw = short, int(short * w / h)
    resized = img if (rw, rh) == (w, h) else img.resize((rw, rh), resample)
    if crop > rw or crop > rh:  # torchvision pads with zeros first
        left = (crop - rw) // 2 if crop > rw else 0
        top = (crop - rh) // 2 if crop > rh else 0
        right = (crop - rw + 1) // 2 if crop > rw else 0
        bottom = (crop - rh + 1) // 2 if crop > rh else 0
        canvas = PIL.Image.new("RGB", (rw + left + right, rh + top + bottom), (0, 0, 0))
        canvas.paste(resized, (left, top))
        resized, (rw, rh) = canvas, canvas.size
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    return normalize_u8(np.asarray(resized.crop((left, top, left + crop, top + crop))))


def max_abs(a, b) -> float:
    a = a.numpy() if torch.is_tensor(a) else np.asarray(a)
    b = b.numpy() if torch.is_tensor(b) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.fixture(scope="module")
def oracle():
    data = np.load(ORACLE)
    versions = json.loads(str(data["versions"]))
    return {k: data[k] for k in data.files if k != "versions"}, versions


@pytest.fixture(scope="module")
def processor():
    return PvtImageProcessor()


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ official transform (torchvision oracle)


def test_fixture_is_small_and_complete(oracle):
    arrays, versions = oracle
    assert os.path.getsize(ORACLE) < 3e6
    assert {"torch", "torchvision", "pillow"} <= set(versions)
    for name in PHOTOS:
        assert arrays[name].shape == (3, 224, 224) and arrays[name].dtype == np.float32
        assert arrays[f"{name}_u8"].shape == (224, 224, 3) and arrays[f"{name}_u8"].dtype == np.uint8
        # The stored float output is exactly ToTensor + Normalize of the stored 8-bit crop.
        assert max_abs(normalize_u8(arrays[f"{name}_u8"]), arrays[name]) <= 1e-6


@pytest.mark.parametrize("name", PHOTOS)
def test_single_image_matches_torchvision(processor, oracle, name):
    arrays, versions = oracle
    image = photo(name)
    out = processor(image, return_tensors="pt")["pixel_values"]
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    # Always: equal to the same transform written with this Pillow.
    assert max_abs(out[0], reference_eval(image)) <= 1e-5
    if versions["pillow"] == PIL.__version__:
        assert max_abs(out[0], arrays[name]) <= TOL
        # and the geometry is bit-exact: undoing the normalisation gives torchvision's 8-bit crop back.
        u8 = np.rint((out[0].numpy() * STD[:, None, None] + MEAN[:, None, None]) * 255).transpose(1, 2, 0)
        np.testing.assert_array_equal(u8.astype(np.uint8), arrays[f"{name}_u8"])
    else:  # another Pillow may round a few pixels differently; the Pillow reference above is the exact check
        diff = np.abs(out[0].numpy() - arrays[name])
        assert diff.mean() < 2e-3 and diff.max() < 0.1


@pytest.mark.parametrize("return_tensors", ["pt", "np", None])
def test_batch_matches_torchvision(processor, oracle, return_tensors):
    arrays, versions = oracle
    images = [photo(name) for name in PHOTOS] * 2  # 8 images of 4 different sizes
    out = processor(images, return_tensors=return_tensors)["pixel_values"]
    if return_tensors == "pt":
        assert isinstance(out, torch.Tensor) and out.shape == (8, 3, 224, 224) and out.dtype == torch.float32
    elif return_tensors == "np":
        assert isinstance(out, np.ndarray) and out.shape == (8, 3, 224, 224) and out.dtype == np.float32
    else:
        assert isinstance(out, list) and len(out) == 8 and out[0].shape == (3, 224, 224)
    for i, name in enumerate(PHOTOS * 2):
        expected = arrays[name] if versions["pillow"] == PIL.__version__ else reference_eval(photo(name))
        assert max_abs(out[i], expected) <= TOL


# ------------------------------------------------------------------ geometry: sizes, filters, crop_pct, padding

RANDOM_CASES = [
    # (h, w, processor kwargs, reference (short, crop, resample))
    (480, 640, {}, (256, 224, PIL.Image.BICUBIC)),
    (640, 480, {}, (256, 224, PIL.Image.BICUBIC)),
    (1000, 260, {}, (256, 224, PIL.Image.BICUBIC)),  # tall: Pillow >= 13 resamples vertically first
    (333, 333, {}, (256, 224, PIL.Image.BICUBIC)),
    (256, 300, {}, (256, 224, PIL.Image.BICUBIC)),  # short side already 256: crop only
    (97, 150, {}, (256, 224, PIL.Image.BICUBIC)),  # upscaling
    (451, 599, {"resample": PIL.Image.BILINEAR}, (256, 224, PIL.Image.BILINEAR)),
    (451, 599, {"resample": "lanczos"}, (256, 224, PIL.Image.LANCZOS)),
    (451, 599, {"resample": PIL.Image.NEAREST}, (256, 224, PIL.Image.NEAREST)),
    (451, 599, {"resample": PIL.Image.BOX}, (256, 224, PIL.Image.BOX)),
    (700, 525, {"crop_size": 384}, (438, 384, PIL.Image.BICUBIC)),  # int(384 / 0.875) = 438
    (700, 525, {"crop_size": 384, "crop_pct": 1.0}, (384, 384, PIL.Image.BICUBIC)),
    (500, 375, {"crop_pct": 0.95}, (235, 224, PIL.Image.BICUBIC)),  # int(224 / 0.95) = 235
    (500, 375, {"size": 300}, (300, 224, PIL.Image.BICUBIC)),  # explicit size disables crop_pct
    (500, 375, {"crop_pct": 1.25}, (179, 224, PIL.Image.BICUBIC)),  # resize below the crop: zero padding
    (120, 90, {"do_resize": False}, None),
]


@pytest.mark.parametrize("h,w,kwargs,ref", RANDOM_CASES)
def test_geometry_matches_reference(rng, h, w, kwargs, ref):
    shape = (h, w, 3)
    smooth = PIL.Image.fromarray(rng.integers(0, 256, (h // 6 + 2, w // 6 + 2, 3), dtype=np.uint8)).resize((w, h))
    noise = PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    proc = PvtImageProcessor(**kwargs)
    out = proc([smooth, noise], return_tensors="np")["pixel_values"]
    for image, got in zip((smooth, noise), out):
        if ref is None:  # no resize: a 224 center crop of a 120x90 image is all padding around it
            canvas = PIL.Image.new("RGB", (224, 224))
            canvas.paste(image, ((224 - w) // 2, (224 - h) // 2))
            expected = normalize_u8(np.asarray(canvas))
        else:
            expected = reference_eval(image, *ref)
        assert max_abs(got, expected) <= 1e-5


def test_crop_pct_size_precedence(tmp_path):
    default = PvtImageProcessor()
    assert default.size == {"shortest_edge": 256} and default.crop_pct == 0.875
    big = PvtImageProcessor(crop_size=384)
    assert big.size == {"shortest_edge": 438} and big.crop_size == {"height": 384, "width": 384}
    explicit = PvtImageProcessor(size=320)
    assert explicit.crop_pct is None and explicit.size == {"shortest_edge": 320}
    image = photo("coffee")  # 400x600
    # per-call overrides
    out = default(image, crop_size=384, return_tensors="np")["pixel_values"]
    assert max_abs(out[0], reference_eval(image, 438, 384)) <= 1e-5
    out = default(image, size=300, return_tensors="np")["pixel_values"]
    assert max_abs(out[0], reference_eval(image, 300, 224)) <= 1e-5
    # from_pretrained overrides: a new size wins over the saved crop_pct
    default.save_pretrained(tmp_path)
    loaded = PvtImageProcessor.from_pretrained(tmp_path, size=300)
    assert loaded.crop_pct is None and loaded.size == {"shortest_edge": 300}
    loaded = PvtImageProcessor.from_pretrained(tmp_path, crop_size=384)
    assert loaded.size == {"shortest_edge": 438}


def test_no_normalize_no_rescale():
    image = photo("chelsea")
    u8 = PvtImageProcessor(do_normalize=False, do_rescale=False)(image, return_tensors="np")["pixel_values"][0]
    expected = reference_eval(image) * STD[:, None, None] + MEAN[:, None, None]
    assert max_abs(u8 / 255.0, expected) <= 1e-5
    assert float(u8.max()) > 1.5 and np.allclose(u8, np.rint(u8))


# ------------------------------------------------------------------ input types


def test_pil_modes(processor, rng):
    rgb = photo("astronaut")
    expected = processor(rgb, return_tensors="np")["pixel_values"][0]

    gray = rgb.convert("L")
    out = processor(gray, return_tensors="np")["pixel_values"][0]
    assert max_abs(out, processor(gray.convert("RGB"), return_tensors="np")["pixel_values"][0]) <= 1e-6

    opaque = rgb.convert("RGBA")
    assert max_abs(processor(opaque, return_tensors="np")["pixel_values"][0], expected) <= 1e-6

    transparent = rgb.convert("RGBA")
    transparent.putalpha(0)
    white = processor(PIL.Image.new("RGB", rgb.size, (255, 255, 255)), return_tensors="np")["pixel_values"][0]
    assert max_abs(processor(transparent, return_tensors="np")["pixel_values"][0], white) <= 1e-6

    palette = rgb.convert("P")
    out = processor(palette, return_tensors="np")["pixel_values"][0]
    assert max_abs(out, processor(palette.convert("RGB"), return_tensors="np")["pixel_values"][0]) <= 1e-6

    sixteen = PIL.Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    assert (
        max_abs(
            processor(sixteen, return_tensors="np")["pixel_values"][0],
            processor(gray, return_tensors="np")["pixel_values"][0],
        )
        <= 1e-6
    )

    for mode in ("1", "LA", "CMYK", "YCbCr"):
        out = processor(rgb.convert(mode), return_tensors="np")["pixel_values"]
        assert out.shape == (1, 3, 224, 224) and np.isfinite(out).all()


def test_array_and_tensor_inputs(processor):
    rgb = photo("coffee")
    hwc = np.asarray(rgb)
    expected = processor(rgb, return_tensors="np")["pixel_values"][0]
    cases = {
        "numpy HWC uint8": hwc,
        "numpy CHW uint8": np.ascontiguousarray(hwc.transpose(2, 0, 1)),
        "torch CHW uint8": torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
        "torch HWC uint8": torch.from_numpy(hwc.copy()),
        "numpy HWC int64": hwc.astype(np.int64),
        "numpy HWC uint16": hwc.astype(np.uint16) * 257,
        "numpy HWC RGBA": np.concatenate([hwc, np.full(hwc.shape[:2] + (1,), 255, np.uint8)], axis=-1),
        # floats are the [0, 1] encoding of the same image (e.g. torchvision's ToTensor() output)
        "numpy HWC float32": hwc.astype(np.float32) / 255,
        "numpy CHW float64": hwc.transpose(2, 0, 1).astype(np.float64) / 255,
        "torch CHW float32": torch.from_numpy(hwc.transpose(2, 0, 1).astype(np.float32) / 255),
        "torch CHW float16": torch.from_numpy(hwc.transpose(2, 0, 1).astype(np.float32) / 255).half(),
    }
    for label, value in cases.items():
        out = processor(value, return_tensors="np")["pixel_values"][0]
        assert max_abs(out, expected) <= 1e-6, label
    # float values outside [0, 1] are clipped (with a warning)
    out = processor(hwc.astype(np.float32) / 127.5, return_tensors="np")["pixel_values"]
    assert out.shape == (1, 3, 224, 224) and np.isfinite(out).all()
    pil_float = PIL.Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255)
    assert pil_float.mode == "F"
    assert (
        max_abs(
            processor(pil_float, return_tensors="np")["pixel_values"][0],
            processor(rgb.convert("L"), return_tensors="np")["pixel_values"][0],
        )
        <= 1e-6
    )
    gray2d = np.asarray(rgb.convert("L"))
    out = processor(gray2d, return_tensors="np")["pixel_values"][0]
    assert max_abs(out, processor(rgb.convert("L"), return_tensors="np")["pixel_values"][0]) <= 1e-6
    mask = processor(gray2d > 128, return_tensors="np")["pixel_values"][0]
    assert (
        max_abs(mask, processor(((gray2d > 128) * 255).astype(np.uint8), return_tensors="np")["pixel_values"][0])
        <= 1e-6
    )
    # explicit layout for an ambiguous array: 4x4x3 numpy defaults to HWC, tensors to CHW
    tiny = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    a = processor(tiny, return_tensors="np")["pixel_values"]
    b = processor(
        np.ascontiguousarray(tiny.transpose(2, 0, 1)), input_data_format="channels_first", return_tensors="np"
    )["pixel_values"]
    np.testing.assert_array_equal(a, b)


def test_mixed_list_and_4d_batches(processor, rng):
    rgb = photo("rocket")
    hwc = np.asarray(rgb)
    items = [
        rgb,
        rgb.convert("L"),
        hwc.transpose(2, 0, 1).copy(),
        torch.from_numpy(np.asarray(photo("chelsea")).transpose(2, 0, 1).copy()),
        rng.integers(0, 256, (300, 200, 3), dtype=np.uint8),
        rng.random((180, 240), dtype=np.float32),
    ]
    out = processor(items, return_tensors="pt")["pixel_values"]
    assert out.shape == (len(items), 3, 224, 224)
    for i, item in enumerate(items):
        single = processor(item, return_tensors="pt")["pixel_values"][0]
        assert torch.equal(out[i], single)
    batch = np.stack([hwc[:400, :600]] * 3)  # (B, H, W, C)
    out = processor(batch, return_tensors="pt")["pixel_values"]
    assert out.shape == (3, 3, 224, 224) and torch.equal(out[0], out[2])
    nested = processor([[rgb], [rgb, rgb]], return_tensors="np")["pixel_values"]
    assert nested.shape == (3, 3, 224, 224)


def test_path_and_lazily_opened_inputs(processor, tmp_path):
    path = tmp_path / "img.png"
    photo("chelsea").save(path)
    expected = processor(photo("chelsea"), return_tensors="np")["pixel_values"][0]
    out = processor(str(path), return_tensors="np")["pixel_values"]
    assert max_abs(out[0], expected) <= 1e-6
    lazy = PIL.Image.open(path)  # not decoded yet; the same object three times in a batch
    out = processor([lazy, lazy, lazy], return_tensors="np")["pixel_values"]
    for item in out:
        assert max_abs(item, expected) <= 1e-6


@pytest.mark.parametrize(
    "bad,fragment",
    [
        (np.zeros((10,), np.uint8), "images"),
        (np.zeros((2, 3, 10, 10, 3), np.uint8), "images"),
        (np.zeros((32, 32, 2), np.uint8), "channels"),
        (np.zeros((0, 32, 3), np.uint8), "non-empty"),
        (torch.zeros(3, 0, 5), "non-empty"),
        (PIL.Image.new("RGB", (0, 4)), "non-empty"),
        ([], "at least one image"),
        (None, "images"),
        ({"a": 1}, "PIL image"),
        ([1, 2, 3], "list of numbers"),
        (np.full((8, 8, 3), 300, np.int32), "[0, 255]"),
        (np.zeros((8, 8, 3), np.complex64), "images"),
    ],
)
def test_bad_images_raise_value_error_naming_the_argument(processor, bad, fragment):
    with pytest.raises(ValueError) as info:
        processor(bad, return_tensors="pt")
    message = str(info.value)
    assert "images" in message and fragment in message


def test_error_names_the_offending_list_item(processor):
    with pytest.raises(ValueError, match=r"images\[1\].*channels"):
        processor([photo("chelsea"), np.zeros((16, 16, 2), np.uint8)], return_tensors="pt")
    with pytest.raises(ValueError, match="return_tensors"):
        processor(photo("chelsea"), return_tensors="tf")


def test_pickle_round_trip(processor):
    clone = pickle.loads(pickle.dumps(processor))
    image = photo("chelsea")
    np.testing.assert_array_equal(
        clone(image, return_tensors="np")["pixel_values"], processor(image, return_tensors="np")["pixel_values"]
    )


# ------------------------------------------------------------------ segmentation maps


def nearest_reference(label: np.ndarray, short=256, crop=224):
    h, w = label.shape
    if w <= h:
        rw, rh = short, int(short * h / w)
    else:
        rh, rw = short, int(short * w / h)
    resized = np.asarray(PIL.Image.fromarray(label).resize((rw, rh), PIL.Image.NEAREST))
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    return resized[top : top + crop, left : left + crop].astype(np.int64)


def test_segmentation_maps_nearest_and_reduce_labels(rng):
    images = [photo("coffee"), photo("rocket"), photo("chelsea")]
    labels = []
    for image in images:
        w, h = image.size
        coarse = rng.integers(0, 151, (h // 9 + 1, w // 9 + 1), dtype=np.uint8)
        labels.append(np.kron(coarse, np.ones((9, 9), np.uint8))[:h, :w])
    labels[1][:5, :5] = 255
    maps = [PIL.Image.fromarray(labels[0]), labels[1], torch.from_numpy(labels[2].astype(np.int64))]
    out = PvtImageProcessor()(images, segmentation_maps=maps, return_tensors="pt")
    assert out["labels"].dtype == torch.int64 and out["labels"].shape == (3, 224, 224)
    assert out["pixel_values"].shape == (3, 3, 224, 224)
    for i in range(3):
        np.testing.assert_array_equal(out["labels"][i].numpy(), nearest_reference(labels[i]))
    reduced = PvtImageProcessor(do_reduce_labels=True)(images, segmentation_maps=maps, return_tensors="np")["labels"]
    plain = out["labels"].numpy()
    expected = np.where((plain == 0) | (plain == 255), 255, plain - 1)
    np.testing.assert_array_equal(reduced, expected)
    assert set(np.unique(reduced)) <= set(range(150)) | {255}
    # call-time override and images unaffected by labels
    again = PvtImageProcessor()(images, segmentation_maps=maps, do_reduce_labels=True, return_tensors="np")
    np.testing.assert_array_equal(again["labels"], reduced)
    np.testing.assert_array_equal(again["pixel_values"], out["pixel_values"].numpy())


def test_label_values_above_255_and_palette_maps(rng):
    image = photo("chelsea")
    w, h = image.size
    big = rng.integers(0, 3000, (h, w)).astype(np.int32)
    out = PvtImageProcessor()(image, segmentation_maps=big, return_tensors="np")["labels"][0]
    np.testing.assert_array_equal(out, nearest_reference(big))  # PIL mode "I" nearest resize
    assert out.dtype == np.int64 and out.max() > 255
    palette = PIL.Image.fromarray((big % 40).astype(np.uint8), mode="L").convert("P")
    out_p = PvtImageProcessor()(image, segmentation_maps=palette, return_tensors="np")["labels"][0]
    np.testing.assert_array_equal(out_p, nearest_reference(np.asarray(palette)))
    sixteen = PIL.Image.fromarray(big.astype(np.uint16))
    out_16 = PvtImageProcessor()(image, segmentation_maps=sixteen, return_tensors="np")["labels"][0]
    np.testing.assert_array_equal(out_16, out)


def test_segmentation_map_errors():
    image = photo("chelsea")
    with pytest.raises(ValueError, match=r"segmentation_maps.*one label map per image"):
        PvtImageProcessor()([image, image], segmentation_maps=[np.zeros((300, 451), np.uint8)])
    with pytest.raises(ValueError, match=r"segmentation_maps.*must match"):
        PvtImageProcessor()(image, segmentation_maps=np.zeros((30, 45), np.uint8))
    with pytest.raises(ValueError, match=r"segmentation_maps.*2-D"):
        PvtImageProcessor()(image, segmentation_maps=np.zeros((300, 451, 3), np.uint8))
    with pytest.raises(ValueError, match=r"segmentation_maps.*label map"):
        PvtImageProcessor()(image, segmentation_maps=image)  # an RGB image is not a label map


def mmseg_align_size(h: int, w: int) -> tuple[int, int]:
    scale = min(2048 / max(h, w), 512 / min(h, w))
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    return -(-nh // 32) * 32, -(-nw // 32) * 32


def test_ade20k_test_transform_sizes(rng):
    seg = PvtImageProcessor.for_semantic_segmentation()
    assert seg.do_center_crop is False and seg.size_divisor == 32 and seg.do_reduce_labels is True
    assert seg.size == {"shortest_edge": 512, "longest_edge": 2048} and seg.resample == PIL.Image.BILINEAR
    flags = PvtImageProcessor(
        do_center_crop=False, size={"shortest_edge": 512, "longest_edge": 2048}, size_divisor=32, resample="bilinear"
    )
    for h, w in [(512, 683), (375, 500), (683, 512), (256, 256), (1200, 1600), (400, 4000), (333, 517)]:
        image = PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        label = rng.integers(0, 151, (h, w), dtype=np.uint8)
        out = seg(image, segmentation_maps=label, return_tensors="pt")
        eh, ew = mmseg_align_size(h, w)
        assert out["pixel_values"].shape == (1, 3, eh, ew)
        assert eh % 32 == 0 and ew % 32 == 0
        if max(h, w) / min(h, w) <= 4:
            assert 512 <= min(eh, ew) < 512 + 32
        assert out["labels"].shape == (1, eh, ew)
        # pixels: one PIL bilinear resize to the aligned size, then normalisation
        expected = normalize_u8(np.asarray(image.resize((ew, eh), PIL.Image.BILINEAR)))
        assert max_abs(out["pixel_values"][0], expected) <= 1e-5
        near = np.asarray(PIL.Image.fromarray(label).resize((ew, eh), PIL.Image.NEAREST)).astype(np.int64)
        np.testing.assert_array_equal(out["labels"][0].numpy(), np.where(near == 0, 255, near - 1))
        np.testing.assert_array_equal(flags(image, return_tensors="np")["pixel_values"], out["pixel_values"].numpy())


def test_segmentation_mode_batches_of_different_sizes(rng):
    seg = PvtImageProcessor.for_semantic_segmentation()
    images = [PIL.Image.fromarray(rng.integers(0, 256, s + (3,), dtype=np.uint8)) for s in [(512, 683), (375, 450)]]
    assert [mmseg_align_size(512, 683), mmseg_align_size(375, 450)] == [(512, 704), (512, 640)]
    with pytest.raises(ValueError, match="do_pad"):
        seg(images, return_tensors="pt")
    as_list = seg(images)["pixel_values"]
    assert [tuple(x.shape) for x in as_list] == [(3, 512, 704), (3, 512, 640)]
    labels = [rng.integers(0, 151, im.size[::-1], dtype=np.uint8) for im in images]
    padded = seg(images, segmentation_maps=labels, do_pad=True, return_tensors="pt")
    assert padded["pixel_values"].shape == (2, 3, 512, 704)
    assert padded["pixel_mask"].shape == (2, 512, 704) and padded["pixel_mask"][1, :, 640:].sum() == 0
    assert int(padded["pixel_mask"][1, :, :640].min()) == 1 and int(padded["pixel_mask"][0].min()) == 1
    assert padded["labels"].shape == (2, 512, 704) and bool((padded["labels"][1, :, 640:] == 255).all())
    assert torch.equal(padded["pixel_values"][1, :, :, :640], torch.from_numpy(as_list[1]))
    assert float(padded["pixel_values"][1, :, :, 640:].abs().max()) == 0.0
    batch_labels = np.stack(labels[:1] * 2)  # a (B, H, W) array of label maps is a batch
    out = seg([images[0]] * 2, segmentation_maps=batch_labels, return_tensors="pt")
    assert out["labels"].shape == (2, 512, 704)


# ------------------------------------------------------------------ post-processing


class _Output(dict):
    def __getattr__(self, key):
        return self[key]


def test_post_process_semantic_segmentation():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 32, 40)
    proc = PvtImageProcessor()
    maps = proc.post_process_semantic_segmentation(_Output(logits=logits))
    assert len(maps) == 2 and maps[0].shape == (32, 40) and maps[0].dtype == torch.int64
    assert torch.equal(maps[1], logits[1].argmax(0))
    sizes = [(100, 120), (64, 64)]
    maps = proc.post_process_semantic_segmentation(_Output(logits=logits), target_sizes=sizes)
    assert [tuple(m.shape) for m in maps] == sizes
    for m, (h, w), i in zip(maps, sizes, range(2)):
        up = torch.nn.functional.interpolate(logits[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
        assert torch.equal(m, up[0].argmax(0))
    maps_t = proc.post_process_semantic_segmentation({"logits": logits}, target_sizes=torch.tensor(sizes))
    assert all(torch.equal(a, b) for a, b in zip(maps, maps_t))
    assert torch.equal(proc.post_process_semantic_segmentation(logits)[0], logits[0].argmax(0))
    with pytest.raises(ValueError, match="target_sizes"):
        proc.post_process_semantic_segmentation(_Output(logits=logits), target_sizes=[(10, 10)])


# ------------------------------------------------------------------ save / load / Auto classes / remote code


def test_save_and_load_round_trip(tmp_path):
    proc = PvtImageProcessor(crop_size=288, resample="bilinear", image_mean=[0.5, 0.5, 0.5], do_reduce_labels=True)
    proc.save_pretrained(tmp_path)
    with open(tmp_path / "preprocessor_config.json", encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["image_processor_type"] == "PvtHfImageProcessor"
    assert saved["crop_size"] == {"height": 288, "width": 288} and saved["size"] == {"shortest_edge": 329}
    assert saved["crop_pct"] == 0.875 and saved["resample"] == 2 and saved["image_mean"] == [0.5, 0.5, 0.5]
    assert "num_workers" not in saved and "size_divisor" not in saved
    loaded = PvtImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == proc.to_dict()
    image = photo("rocket")
    np.testing.assert_array_equal(
        loaded(image, return_tensors="np")["pixel_values"], proc(image, return_tensors="np")["pixel_values"]
    )
    seg = PvtImageProcessor.for_semantic_segmentation()
    seg.save_pretrained(tmp_path / "seg")
    again = PvtImageProcessor.from_pretrained(tmp_path / "seg")
    assert again.to_dict() == seg.to_dict() and again.crop_pct is None and again.size_divisor == 32


def test_module_is_self_contained():
    """The file is copied to Hub repos: only stdlib / numpy / PIL / torch / transformers, no relative imports."""
    with open(ipp.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    allowed = {"os", "numpy", "PIL", "torch", "transformers"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import"
            assert node.module.split(".")[0] in allowed, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in allowed, alias.name


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["pvt_hf"] = None  # make sure the package cannot be imported
    try:
        import pvt_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("pvt_hf is importable")
    import numpy as np
    from transformers import AutoImageProcessor

    repo, inputs, expected = sys.argv[1:4]
    proc = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
    cls = type(proc)
    assert cls.__name__ == "PvtHfImageProcessor" and cls.__module__.startswith("transformers_modules"), cls.__module__
    assert proc.crop_size == {"height": 192, "width": 192}
    images = list(np.load(inputs)["images"])
    out = proc(images, return_tensors="pt")["pixel_values"].numpy()
    np.testing.assert_array_equal(out, np.load(expected))
    import torch
    seg = proc.post_process_semantic_segmentation({"logits": torch.zeros(1, 3, 8, 8)}, target_sizes=[(16, 20)])
    assert tuple(seg[0].shape) == (16, 20)
    print("REMOTE-OK")
    """
)


def test_trust_remote_code_load_in_fresh_python_without_pvt_hf(tmp_path):
    repo = tmp_path / "repo"
    proc = PvtImageProcessor(crop_size=192)
    previous = PvtImageProcessor._auto_class
    try:
        PvtImageProcessor.register_for_auto_class("AutoImageProcessor")
        proc.save_pretrained(repo)
    finally:
        PvtImageProcessor._auto_class = previous
    assert (repo / "image_processing_pvt.py").is_file()
    with open(repo / "preprocessor_config.json", encoding="utf-8") as handle:
        saved = json.load(handle)
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_pvt.PvtHfImageProcessor"}

    images = [np.asarray(photo("chelsea")), np.asarray(photo("astronaut"))[:300, :450]]
    np.savez(tmp_path / "inputs.npz", images=np.stack([im[:300, :450] for im in images]))
    expected = proc([im[:300, :450] for im in images], return_tensors="np")["pixel_values"]
    np.save(tmp_path / "expected.npy", expected)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(repo), str(tmp_path / "inputs.npz"), str(tmp_path / "expected.npy")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "REMOTE-OK" in result.stdout, result.stdout + result.stderr


AUTO_REGISTER_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from transformers import AutoConfig, AutoImageProcessor, PretrainedConfig
    from pvt_hf.image_processing_pvt import PvtImageProcessor

    class DummyPvtConfig(PretrainedConfig):
        model_type = "pvt_hf_image_processor_test"

    AutoConfig.register("pvt_hf_image_processor_test", DummyPvtConfig)
    classes = {"pil": PvtImageProcessor, "torchvision": PvtImageProcessor}
    AutoImageProcessor.register(DummyPvtConfig, image_processor_classes=classes)
    folder = sys.argv[1]
    DummyPvtConfig().save_pretrained(folder)
    PvtImageProcessor(crop_size=160).save_pretrained(folder)
    for kwargs in ({}, {"backend": "pil"}, {"backend": "torchvision"}):
        proc = AutoImageProcessor.from_pretrained(folder, **kwargs)
        assert type(proc) is PvtImageProcessor, type(proc)
        assert proc.crop_size == {"height": 160, "width": 160}
    image = np.zeros((200, 300, 3), np.uint8)
    assert tuple(proc(image, return_tensors="pt")["pixel_values"].shape) == (1, 3, 160, 160)
    print("AUTO-OK")
    """
)


def test_auto_image_processor_registration(tmp_path):
    """`AutoImageProcessor.register(Config, {...: PvtImageProcessor})` (what pvt_hf/__init__.py does) works."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run(
        [sys.executable, "-c", AUTO_REGISTER_SCRIPT, str(tmp_path / "repo"), os.path.abspath(SRC)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "AUTO-OK" in result.stdout, result.stdout + result.stderr


# ------------------------------------------------------------------ channels, attributes, post-processing scores


def test_four_channel_images_without_rgb_conversion(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (300, 451, 4), dtype=np.uint8)
    mean, std = [0.4, 0.5, 0.6, 0.5], [0.2, 0.25, 0.3, 0.5]
    proc = PvtImageProcessor(do_convert_rgb=False, image_mean=mean, image_std=std)
    assert proc.do_convert_rgb is False and proc.to_dict()["do_convert_rgb"] is False
    out = proc([rgba, rgba[:280]], return_tensors="pt")["pixel_values"]
    assert out.shape == (2, 4, 224, 224)
    for c in range(4):  # each channel gets the official transform on its own (no alpha premultiplication)
        alone = reference_eval(PIL.Image.fromarray(np.ascontiguousarray(rgba[..., c])))[0]
        u8 = np.rint((alone * STD[0] + MEAN[0]) * 255).astype(np.float32)
        assert max_abs(out[0, c], (u8 / 255 - np.float32(mean[c])) / np.float32(std[c])) <= 1e-5
    proc.save_pretrained(tmp_path)
    loaded = PvtImageProcessor.from_pretrained(tmp_path)
    assert loaded.do_convert_rgb is False and list(loaded.image_mean) == mean
    np.testing.assert_array_equal(loaded(rgba, return_tensors="np")["pixel_values"], out[:1].numpy())
    with pytest.raises(ValueError, match="image_mean.*3 values.*4 channels"):
        PvtImageProcessor(do_convert_rgb=False)(rgba, return_tensors="pt")
    # converting (the default) composites the alpha channel on white: 3 channels
    assert PvtImageProcessor()(rgba, return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)


def test_image_files_keep_their_channels_without_rgb_conversion(tmp_path):
    """A grayscale or RGBA file given by path is processed as the same image in memory: its channels are kept."""
    gray = skimage_data.camera()[:300, :451]
    rgba = np.random.default_rng(2).integers(0, 256, (240, 320, 4), dtype=np.uint8)
    PIL.Image.fromarray(gray).save(tmp_path / "gray.png")
    PIL.Image.fromarray(rgba).save(tmp_path / "rgba.png")
    one = PvtImageProcessor(do_convert_rgb=False, image_mean=[0.449], image_std=[0.226])
    from_file = one(str(tmp_path / "gray.png"), return_tensors="pt")["pixel_values"]
    assert from_file.shape == (1, 1, 224, 224)
    torch.testing.assert_close(from_file, one(gray, return_tensors="pt")["pixel_values"], rtol=0, atol=0)
    four = PvtImageProcessor(do_convert_rgb=False, image_mean=0.5, image_std=0.25)
    from_file = four(tmp_path / "rgba.png", return_tensors="pt")["pixel_values"]
    assert from_file.shape == (1, 4, 224, 224)
    torch.testing.assert_close(from_file, four(rgba, return_tensors="pt")["pixel_values"], rtol=0, atol=0)
    # converting (the default) still reads every file as RGB
    assert PvtImageProcessor()(str(tmp_path / "gray.png"), return_tensors="pt")["pixel_values"].shape[1] == 3


def test_explicit_none_settings_survive_save_and_load(tmp_path):
    proc = PvtImageProcessor(do_resize=None)
    assert proc.do_resize is None and proc.to_dict()["do_resize"] is None
    proc.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["do_resize"] is None
    assert PvtImageProcessor.from_pretrained(tmp_path).do_resize is None
    assert PvtImageProcessor().do_resize is True


def test_post_process_semantic_segmentation_scores_as_transformers():
    from transformers import SegformerImageProcessorPil

    torch.manual_seed(0)
    outputs = _Output(logits=torch.randn(2, 5, 32, 40))
    ours, theirs = PvtImageProcessor.for_semantic_segmentation(), SegformerImageProcessorPil()
    for target_sizes in (None, [(100, 120), (64, 64)]):
        got = ours.post_process_semantic_segmentation(outputs, target_sizes, return_segmentation_scores=True)
        want = theirs.post_process_semantic_segmentation(outputs, target_sizes, return_segmentation_scores=True)
        assert len(got) == len(want) == 2
        for g, w in zip(got, want):
            assert type(g) is type(w) and set(g.keys()) == set(w.keys()) == {"segmentation", "segmentation_scores"}
            assert torch.equal(g.segmentation, w.segmentation)
            assert torch.allclose(g.segmentation_scores, w["segmentation_scores"])
        plain = ours.post_process_semantic_segmentation(outputs, target_sizes)
        assert all(torch.equal(p, g.segmentation) for p, g in zip(plain, got))


def test_unknown_keyword_arguments_warn_and_are_ignored(processor, caplog):
    image = photo("chelsea")
    expected = processor(image, return_tensors="np")["pixel_values"]
    with caplog.at_level("WARNING"):
        out = processor(image, do_center_cropp=False, num_workers=4, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(out, expected)
    assert "do_center_cropp" in caplog.text and "num_workers" in caplog.text


# ------------------------------------------------------------------ the class name in saved configs

NO_PVT_HF_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["pvt_hf"] = None  # a clean python: `import pvt_hf` fails
    from transformers import AutoImageProcessor

    folder, trust = sys.argv[1], {"none": None, "true": True}[sys.argv[2]]
    try:
        proc = AutoImageProcessor.from_pretrained(folder, trust_remote_code=trust)
    except ValueError as error:
        print()  # after transformers' prompt
        print("REFUSED:", " ".join(str(error).split())[-300:])
    else:
        print("LOADED:", type(proc).__module__, type(proc).__name__, dict(proc.crop_size))
    """
)


def test_saved_folder_never_loads_transformers_own_pvt_processor(tmp_path):
    folder = tmp_path / "saved"
    previous = PvtImageProcessor._auto_class
    try:
        PvtImageProcessor.register_for_auto_class("AutoImageProcessor")
        PvtImageProcessor(crop_size=192).save_pretrained(folder)
    finally:
        PvtImageProcessor._auto_class = previous
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    answers = {}
    for trust in ("none", "true"):
        result = subprocess.run(
            [sys.executable, "-c", NO_PVT_HF_SCRIPT, str(folder), trust],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        answers[trust] = result.stdout.strip().splitlines()[-1]
    # without pvt_hf: refused (custom code) instead of transformers' same-named processor, which crops differently
    assert answers["none"].startswith("REFUSED:") and "trust_remote_code=True" in answers["none"], answers
    assert answers["true"].startswith("LOADED: transformers_modules") and "PvtHfImageProcessor" in answers["true"]
    assert "'height': 192" in answers["true"]
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "PvtHfImageProcessor"


def test_folders_saved_under_the_old_class_name_load_ours(tmp_path):
    from transformers import AutoImageProcessor

    PvtImageProcessor(crop_size=160).save_pretrained(tmp_path)
    config_file = tmp_path / "preprocessor_config.json"
    saved = json.loads(config_file.read_text())
    saved["image_processor_type"] = "PvtImageProcessor"  # what pvt-hf wrote before the rename
    saved["auto_map"] = {"AutoImageProcessor": "image_processing_pvt.PvtImageProcessor"}
    config_file.write_text(json.dumps(saved))
    for kwargs in ({}, {"backend": "pil"}, {"backend": "torchvision"}):
        proc = AutoImageProcessor.from_pretrained(tmp_path, **kwargs)
        assert type(proc) is ipp.PvtHfImageProcessor and proc.crop_size == {"height": 160, "width": 160}
    assert PvtImageProcessor is ipp.PvtHfImageProcessor  # the old name stays importable
    demo = os.path.join(SRC, "pvt_hf", "data", "digits-demo")
    with open(os.path.join(demo, "preprocessor_config.json"), encoding="utf-8") as handle:
        assert json.load(handle)["image_processor_type"] == "PvtHfImageProcessor"
    assert type(AutoImageProcessor.from_pretrained(demo)) is ipp.PvtHfImageProcessor


IMPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    import transformers.utils.logging as transformers_logging

    def refuse(*args, **kwargs):
        raise AssertionError("`import pvt_hf` changed transformers' logging verbosity")

    transformers_logging.set_verbosity = transformers_logging.set_verbosity_error = refuse
    import pvt_hf
    # registering needs none of transformers' own PVT image processors (importing them warns about torchvision)
    assert not [m for m in sys.modules if m.startswith("transformers.models.pvt.")], sorted(sys.modules)
    print("IMPORT-OK")
    """
)


def test_import_leaves_transformers_logging_alone(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "info"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "IMPORT-OK" in result.stdout, result.stderr[-3000:]
    assert "torchvision" not in result.stderr, result.stderr[-3000:]


# ------------------------------------------------------------------ unreadable paths


def test_unreadable_paths_name_the_file(processor, tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match=r"(?i)no such file.*missing\.jpg"):
        processor(str(missing), return_tensors="pt")
    photo("chelsea").save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.jpg"):
        processor(str(tmp_path / "truncated.jpg"), return_tensors="pt")
    with pytest.raises(ValueError, match=r"images\[1\].*truncated\.jpg"):
        processor([tmp_path / "whole.jpg", tmp_path / "truncated.jpg"], return_tensors="pt")


# ------------------------------------------------------------------ properties every transformers image processor has


def test_serialization_round_trips(tmp_path):
    from transformers import AutoImageProcessor

    processors = [
        PvtImageProcessor(),
        PvtImageProcessor(crop_size=288, resample="bilinear", do_convert_rgb=False, image_mean=0.5, image_std=0.25),
        PvtImageProcessor(size=(320, 480), do_center_crop=False, do_normalize=False),
        PvtImageProcessor.for_semantic_segmentation(),
    ]
    image = photo("coffee")
    for i, proc in enumerate(processors):
        expected = proc.to_dict()
        from_json = PvtImageProcessor.from_dict(json.loads(proc.to_json_string()))
        assert from_json.to_dict() == expected
        proc.to_json_file(tmp_path / f"{i}.json")
        assert PvtImageProcessor.from_json_file(tmp_path / f"{i}.json").to_dict() == expected
        proc.save_pretrained(tmp_path / str(i))
        for loader in (PvtImageProcessor, AutoImageProcessor):
            loaded = loader.from_pretrained(tmp_path / str(i))
            assert type(loaded) is ipp.PvtHfImageProcessor
            assert {k: v for k, v in loaded.to_dict().items() if k != "auto_map"} == expected
            np.testing.assert_array_equal(
                loaded(image, return_tensors="np")["pixel_values"], proc(image, return_tensors="np")["pixel_values"]
            )


def test_batched_equals_single_image(rng):
    images = [photo(n) for n in PHOTOS] + [PIL.Image.fromarray(rng.integers(0, 256, (130, 97, 3), dtype=np.uint8))]
    proc = PvtImageProcessor()
    batch = proc(images, return_tensors="pt")["pixel_values"]
    for image, row in zip(images, batch):
        assert torch.equal(proc(image, return_tensors="pt")["pixel_values"][0], row)
    seg = PvtImageProcessor.for_semantic_segmentation()
    labels = [rng.integers(0, 151, image.size[::-1], dtype=np.uint8) for image in images]
    outputs = seg(images, segmentation_maps=labels)  # different sizes: lists
    padded = seg(images, segmentation_maps=labels, do_pad=True, return_tensors="pt")
    for i, (image, label) in enumerate(zip(images, labels)):
        single = seg(image, segmentation_maps=label, return_tensors="np")
        np.testing.assert_array_equal(outputs["pixel_values"][i], single["pixel_values"][0])
        np.testing.assert_array_equal(outputs["labels"][i], single["labels"][0])
        h, w = single["labels"][0].shape
        np.testing.assert_array_equal(padded["pixel_values"][i, :, :h, :w].numpy(), single["pixel_values"][0])
        np.testing.assert_array_equal(padded["labels"][i, :h, :w].numpy(), single["labels"][0])


@pytest.mark.parametrize("make_processor", [PvtImageProcessor, PvtImageProcessor.for_semantic_segmentation])
def test_pil_numpy_and_torch_inputs_agree(make_processor):
    proc = make_processor()
    pils = [photo("rocket"), photo("chelsea")]
    arrays = [np.asarray(image) for image in pils]
    tensors = [torch.from_numpy(array.transpose(2, 0, 1).copy()) for array in arrays]
    expected = proc(pils)["pixel_values"]
    for inputs in (arrays, tensors, [pils[0], arrays[1]], [tensors[0], pils[1]]):
        for got, want in zip(proc(inputs)["pixel_values"], expected):
            np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------ resource bounds and normalization (issue 25)


def test_extremely_wide_images_are_refused_before_resizing(tmp_path):
    """A 10000x1 file (a hundred bytes) would be resized to 2,560,000 x 256: refused at once, naming the file and the
    limit, without allocating the output (the check runs before any buffer is made)."""
    wide = tmp_path / "wide.png"
    PIL.Image.new("RGB", (10000, 1)).save(wide)
    assert wide.stat().st_size < 1000
    proc = PvtImageProcessor()
    limit = f"{ipp.MAX_OUTPUT_PIXELS:,} pixels"
    for image in (str(wide), wide, PIL.Image.open(wide)):
        with pytest.raises(
            ValueError,
            match=rf"`images` \({re.escape(str(wide))}\): resizing its 1x10000 .* 256x2560000 pixels .*{limit}",
        ):
            proc(image, return_tensors="pt")
    with pytest.raises(ValueError, match=rf"`images\[1\]`: resizing its 1x100000 .*{limit}"):
        proc([PIL.Image.new("RGB", (40, 30)), PIL.Image.new("RGB", (100000, 1))], return_tensors="pt")
    segmentation = PvtImageProcessor.for_semantic_segmentation()  # keep-ratio resizing is bounded by its longest edge
    assert segmentation(PIL.Image.new("RGB", (100000, 1)), return_tensors="pt")["pixel_values"].shape[-1] == 2048


def test_padding_to_the_largest_image_is_bounded():
    proc = PvtImageProcessor(do_resize=False, do_center_crop=False, do_pad=True)
    tall, wide = np.zeros((20000, 1, 3), np.uint8), np.zeros((1, 20000, 3), np.uint8)
    with pytest.raises(ValueError, match=r"`do_pad`: padding the batch .* 20000x20000 pixels would exceed the limit"):
        proc([tall, wide], return_tensors="np")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"image_std": [0.0, 0.0, 0.0]}, "`image_std` must hold positive, finite numbers"),
        ({"image_std": [0.2, -0.2, 0.2]}, "`image_std` must hold positive, finite numbers"),
        ({"image_std": [0.2, float("nan"), 0.2]}, "`image_std` must hold positive, finite numbers"),
        ({"image_std": [0.2, 0.2]}, "`image_std` has 2 values but the images have 3 channels"),
        ({"image_mean": [0.5, float("inf"), 0.5]}, "`image_mean` must hold finite numbers"),
    ],
)
def test_normalization_settings_are_checked(settings, message):
    """At construction, and when given for one call: a zero std gave non-finite pixel values."""
    with pytest.raises(ValueError, match=re.escape(message)):
        PvtImageProcessor(**settings)
    with pytest.raises(ValueError, match=re.escape(message)):
        PvtImageProcessor()(np.zeros((40, 30, 3), np.uint8), return_tensors="np", **settings)
