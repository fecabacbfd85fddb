# Copyright 2025 The pvt-hf authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Image processor for the Pyramid Vision Transformer (PVT v1 / v2) and its Semantic FPN heads.

This module is deliberately self-contained: it imports only the standard library, numpy, Pillow,
torch and transformers, so it can be copied next to a checkpoint on the Hub and loaded with
``AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`` in an environment where the
``pvt_hf`` package is not installed.  Do not add imports from other ``pvt_hf`` modules here.
"""

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.utils import logging

try:  # transformers >= 4.4x; kept optional so that the class still imports if it moves
    from transformers.processing_utils import ImagesKwargs as _ImagesKwargs
except Exception:  # pragma: no cover
    _ImagesKwargs = None


logger = logging.get_logger(__name__)

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

# Pillow resampling filters (values of ``PIL.Image.Resampling``).
_NEAREST, _LANCZOS, _BILINEAR, _BICUBIC, _BOX, _HAMMING = 0, 1, 2, 3, 4, 5
_RESAMPLE_BY_NAME = {
    "nearest": _NEAREST,
    "lanczos": _LANCZOS,
    "antialias": _LANCZOS,
    "bilinear": _BILINEAR,
    "linear": _BILINEAR,
    "bicubic": _BICUBIC,
    "cubic": _BICUBIC,
    "box": _BOX,
    "hamming": _HAMMING,
}
# Half-width of Pillow's filters (Resample.c), used to find the source rows a crop needs.
_FILTER_SUPPORT = {_NEAREST: 0.0, _BOX: 0.5, _BILINEAR: 1.0, _HAMMING: 1.0, _BICUBIC: 2.0, _LANCZOS: 3.0}
# Filters whose kernel is continuous: a last-bit difference in a tap position cannot change the output.
_CONTINUOUS_FILTERS = frozenset({_BILINEAR, _HAMMING, _BICUBIC, _LANCZOS})

_IGNORE_INDEX = 255

_AUTO = object()  # sentinel: "crop_pct not given"

_OPTION_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "crop_pct",
    "size_divisor",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_reduce_labels",
    "do_pad",
    "num_workers",
)
# Keyword arguments of transformers' ImagesKwargs that are accepted for compatibility and ignored
# (images are always converted to 3-channel RGB, output is always channels-first).
_IGNORED_KEYS = frozenset({"do_convert_rgb", "default_to_square", "disable_grouping", "image_seq_length", "pad_size"})


if _ImagesKwargs is not None:

    class PvtImageProcessorKwargs(_ImagesKwargs, total=False):
        """Extra keyword arguments of [`PvtImageProcessor`] (see its docstring)."""

        crop_pct: float | None
        size_divisor: int | None
        do_reduce_labels: bool | None
        num_workers: int | None

else:  # pragma: no cover
    PvtImageProcessorKwargs = None


# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def _default_num_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


_POOL_LOCK = threading.Lock()
_POOL: tuple | None = None  # (pid, max_workers, executor)


def _get_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide thread pool, re-created after a fork (a forked child has no pool threads)."""
    global _POOL
    with _POOL_LOCK:
        pid = os.getpid()
        if _POOL is None or _POOL[0] != pid or _POOL[1] < n:
            if _POOL is not None and _POOL[0] == pid:
                _POOL[2].shutdown(wait=False)
            _POOL = (pid, n, ThreadPoolExecutor(max_workers=n, thread_name_prefix="pvt-image-processor"))
        return _POOL[2]


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ValueError(f"`{name}` must contain positive integers, got {value!r}.")
    return int(value)


def _as_plain_dict(value) -> dict | None:
    if isinstance(value, dict):
        return dict(value)
    if hasattr(value, "keys") or hasattr(value, "__dataclass_fields__"):  # transformers' SizeDict
        try:
            return {k: v for k, v in dict(value).items() if v is not None}
        except Exception:  # pragma: no cover
            return None
    return None


def _normalize_size(size, name: str = "size") -> dict | None:
    """``size`` -> one of ``{"shortest_edge"}``, ``{"shortest_edge", "longest_edge"}``, ``{"height", "width"}``."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return {"shortest_edge": _positive_int(size, name)}
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return {"height": _positive_int(size[0], name), "width": _positive_int(size[1], name)}
    as_dict = _as_plain_dict(size)
    if as_dict is not None:
        keys = set(as_dict)
        if keys in ({"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"height", "width"}):
            return {k: _positive_int(v, name) for k, v in as_dict.items()}
    raise ValueError(
        f"`{name}` must be an int (shortest edge), a (height, width) pair, or a dict with keys "
        f"{{'shortest_edge'}}, {{'shortest_edge', 'longest_edge'}} or {{'height', 'width'}}; got {size!r}."
    )


def _normalize_crop_size(crop_size, name: str = "crop_size") -> dict | None:
    if crop_size is None:
        return None
    if isinstance(crop_size, (int, np.integer)) and not isinstance(crop_size, bool):
        n = _positive_int(crop_size, name)
        return {"height": n, "width": n}
    if isinstance(crop_size, (tuple, list)) and len(crop_size) == 2:
        return {"height": _positive_int(crop_size[0], name), "width": _positive_int(crop_size[1], name)}
    as_dict = _as_plain_dict(crop_size)
    if as_dict is not None:
        if set(as_dict) == {"height", "width"}:
            return {k: _positive_int(v, name) for k, v in as_dict.items()}
        if set(as_dict) == {"shortest_edge"}:
            n = _positive_int(as_dict["shortest_edge"], name)
            return {"height": n, "width": n}
    raise ValueError(
        f"`{name}` must be an int, a (height, width) pair or a dict {{'height': h, 'width': w}}; got {crop_size!r}."
    )


def _normalize_resample(resample) -> int:
    if isinstance(resample, str):
        key = resample.strip().lower()
        if key in _RESAMPLE_BY_NAME:
            return _RESAMPLE_BY_NAME[key]
    elif hasattr(resample, "value") and isinstance(resample.value, str):
        # torchvision.transforms.InterpolationMode
        key = resample.value.lower()
        if key in _RESAMPLE_BY_NAME:
            return _RESAMPLE_BY_NAME[key]
    elif isinstance(resample, (int, np.integer)) and not isinstance(resample, bool) and 0 <= int(resample) <= 5:
        return int(resample)
    raise ValueError(
        f"`resample` must be a PIL resampling filter (0-5, PIL.Image.Resampling) or one of "
        f"{sorted(_RESAMPLE_BY_NAME)}; got {resample!r}."
    )


def _normalize_triplet(value, name: str) -> tuple:
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return (float(value),) * 3
    values = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    if len(values) == 1:
        return values * 3
    if len(values) != 3:
        raise ValueError(f"`{name}` must be a float or a sequence of 3 floats (one per RGB channel), got {value!r}.")
    return values


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


def _resized_hw(h: int, w: int, size: dict, size_divisor: int | None) -> tuple[int, int]:
    """Output size of the resize step.

    * ``{"shortest_edge": s}``: torchvision's ``Resize(s)``: the short side becomes ``s`` and the long
      side ``int(s * long / short)``.
    * ``{"shortest_edge": s, "longest_edge": l}``: mmcv's ``imrescale(img, (l, s))`` (``keep_ratio=True``):
      ``scale = min(l / long, s / short)``, sides ``int(side * scale + 0.5)``.
    * ``{"height": h, "width": w}``: exactly that size.

    With ``size_divisor`` both sides are then rounded *up* to a multiple of it, as the official PVT
    segmentation ``AlignResize(size_divisor=32)`` does.
    """
    if "height" in size:
        rh, rw = size["height"], size["width"]
    elif "longest_edge" in size:
        scale = min(size["longest_edge"] / max(h, w), size["shortest_edge"] / min(h, w))
        rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
    else:
        s = size["shortest_edge"]
        if w <= h:
            rw, rh = s, int(s * h / w)
        else:
            rh, rw = s, int(s * w / h)
    rh, rw = max(1, rh), max(1, rw)
    if size_divisor:
        rh = -(-rh // size_divisor) * size_divisor
        rw = -(-rw // size_divisor) * size_divisor
    return rh, rw


def _crop_axis(r: int, c: int) -> tuple[int, int, int]:
    """torchvision ``CenterCrop`` along one axis of length ``r``.

    Returns ``(src_offset, count, dst_offset)``: output pixels ``[dst_offset, dst_offset + count)`` are
    resized pixels ``[src_offset, src_offset + count)``; the rest of the ``c`` outputs is zero padding
    (torchvision pads with ``(c - r) // 2`` before when the crop is larger than the image).
    """
    if c <= r:
        return int(round((r - c) / 2.0)), c, 0
    return 0, r, (c - r) // 2


class _Geometry:
    __slots__ = ("h", "w", "rh", "rw", "oy", "ox", "ny", "nx", "dy", "dx", "out_h", "out_w")

    def __init__(self, h, w, rh, rw, oy, ox, ny, nx, dy, dx, out_h, out_w):
        self.h, self.w, self.rh, self.rw = h, w, rh, rw
        self.oy, self.ox, self.ny, self.nx = oy, ox, ny, nx
        self.dy, self.dx, self.out_h, self.out_w = dy, dx, out_h, out_w

    @property
    def padded(self) -> bool:
        return (self.ny, self.nx) != (self.out_h, self.out_w)


def _geometry(h: int, w: int, opts: dict) -> _Geometry:
    if opts["do_resize"]:
        size = opts["size"]
        crop = opts["crop_size"]
        if opts["do_center_crop"] and opts["crop_pct"] is not None:
            # timm / official PVT eval: resize the short side to crop / crop_pct (e.g. 224 / 0.875 = 256).
            size = {"shortest_edge": int(min(crop["height"], crop["width"]) / opts["crop_pct"])}
        rh, rw = _resized_hw(h, w, size, opts["size_divisor"])
    else:
        rh, rw = h, w
    if opts["do_center_crop"]:
        ch, cw = opts["crop_size"]["height"], opts["crop_size"]["width"]
        oy, ny, dy = _crop_axis(rh, ch)
        ox, nx, dx = _crop_axis(rw, cw)
        return _Geometry(h, w, rh, rw, oy, ox, ny, nx, dy, dx, ch, cw)
    return _Geometry(h, w, rh, rw, 0, 0, rh, rw, 0, 0, rh, rw)


# --------------------------------------------------------------------------------------------------
# Exact "resize then crop" with Pillow, computing only the pixels that survive the crop
# --------------------------------------------------------------------------------------------------
#
# The output must equal ``img.resize((rw, rh), resample).crop(...)`` *bit for bit* (one 8-bit step is
# 0.017 after ImageNet normalisation, far above the 1e-3 budget).  Pillow's ``resize(size, box=...)``
# resamples a sub-rectangle, but it stores the box as float32 and may choose a different pass order
# (Pillow >= 13 runs the vertical pass first when the height shrinks much more than the width), so a
# naive box is *not* exact.  We therefore
#   1. use a box only along an axis where its edges are exactly representable in float32 and the
#      resulting Pillow arithmetic reproduces the full resize (scale L/r with a power-of-two denominator,
#      or - for continuous filters - a sub-range aligned to the odd part of r / gcd(L, r)); otherwise that
#      axis is resampled in full and cropped afterwards;
#   2. run the two separable passes as two single-axis Pillow calls in the order Pillow itself would use
#      for the full resize, and restrict the first (horizontal) pass to the source rows the kept output
#      rows read;
#   3. verify the whole scheme once per process against Pillow on small random probes; if anything differs
#      (a future Pillow changing its arithmetic), fall back to plain resize-then-crop.


def _f32_exact(x: Fraction) -> bool:
    return Fraction(float(np.float32(float(x)))) == x


def _axis_box(o: int, n: int, r: int, length: int, strict: bool) -> tuple[float, float, int, int]:
    """Box along one axis for output pixels ``[o, o + n)`` of a full ``length -> r`` resize.

    Returns ``(in0, in1, count, offset)``: resample source ``[in0, in1)`` to ``count`` pixels and keep
    ``[offset, offset + n)`` of them.  Falls back to the full axis when no exact box exists.
    """
    full = (0.0, float(length), r, o)
    if n >= r:
        return full
    ratio = Fraction(length, r)
    step = ratio.denominator
    while step % 2 == 0:
        step //= 2
    if step != 1 and strict:
        return full
    start = (o // step) * step
    end = min(-(-(o + n) // step) * step, r)
    if start == 0 and end == r:
        return full
    in0 = start * ratio
    in1 = Fraction(length) if end == r else end * ratio
    if not (_f32_exact(in0) and _f32_exact(in1)):
        return full
    if Fraction(float(np.float32(float(in1)) - np.float32(float(in0)))) != in1 - in0:
        return full
    return float(in0), float(in1), end - start, o - start


def _source_span(length: int, in0: float, in1: float, count: int, support: float) -> tuple[int, int]:
    """Source rows Pillow reads to produce ``count`` outputs from ``[in0, in1)`` (Resample.c bounds)."""
    scale = float(np.float32(in1) - np.float32(in0)) / count
    support = support * max(scale, 1.0)
    first = int(in0 + 0.5 * scale - support + 0.5)
    last = int(in0 + (count - 0.5) * scale + support + 0.5)
    first = max(0, min(first, int(math.floor(in0))))
    last = min(length, max(last, int(math.ceil(in1))))
    return first, last


def _pillow_horizontal_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """Pass order Pillow uses for ``resize((out_w, out_h))`` (see ``_PILLOW_ORDER_RULE``)."""
    if _PILLOW_ORDER_RULE == "v_first_when_height_shrinks_2x":
        dy = in_h - out_h
        return not (dy > 0 and dy > (in_w - out_w) * 2)
    return True


def _resize_crop_fast(img: PIL.Image.Image, geo: _Geometry, resample: int) -> PIL.Image.Image:
    w, h = img.size
    rw, rh = geo.rw, geo.rh
    strict = resample not in _CONTINUOUS_FILTERS
    x0, x1, cx, offx = _axis_box(geo.ox, geo.nx, rw, w, strict)
    y0, y1, cy, offy = _axis_box(geo.oy, geo.ny, rh, h, strict)
    need_x = not (cx == w and x0 == 0.0 and x1 == w)
    need_y = not (cy == h and y0 == 0.0 and y1 == h)
    out = img
    if resample == _NEAREST:
        # Pillow's nearest neighbour is a single affine lookup (no passes): one call with the box.
        if need_x or need_y:
            out = img.resize((cx, cy), resample, box=(x0, y0, x1, y1))
    elif _pillow_horizontal_first(w, h, rw, rh):
        if need_x:
            top, bottom = 0, h
            if need_y:
                top, bottom = _source_span(h, y0, y1, cy, _FILTER_SUPPORT[resample])
                if (top, bottom) != (0, h):
                    out = out.crop((0, top, w, bottom))
            rows = bottom - top
            out = out.resize((cx, rows), resample, box=(x0, 0.0, x1, float(rows)))
            y0, y1 = y0 - top, y1 - top
        if need_y:
            out = out.resize((cx, cy), resample, box=(0.0, y0, float(cx), y1))
    else:
        if need_y:
            out = out.resize((w, cy), resample, box=(0.0, y0, float(w), y1))
        if need_x:
            out = out.resize((cx, cy), resample, box=(x0, 0.0, x1, float(cy)))
    if (offx, offy, geo.nx, geo.ny) != (0, 0, cx, cy):
        out = out.crop((offx, offy, offx + geo.nx, offy + geo.ny))
    return out


def _resize_crop_reference(img: PIL.Image.Image, geo: _Geometry, resample: int) -> PIL.Image.Image:
    """Plain torchvision-style resize of the whole image, then crop."""
    out = img if (geo.rw, geo.rh) == img.size else img.resize((geo.rw, geo.rh), resample)
    if (geo.ox, geo.oy, geo.nx, geo.ny) != (0, 0, geo.rw, geo.rh):
        out = out.crop((geo.ox, geo.oy, geo.ox + geo.nx, geo.oy + geo.ny))
    return out


def _detect_pillow_order_rule() -> str:
    """Which pass order this Pillow uses for a two-axis resize, probed where the two orders differ.

    Pillow <= 12 always resamples horizontally first; Pillow 13 resamples vertically first when
    ``in_h - out_h > 0`` and ``in_h - out_h > 2 * (in_w - out_w)``.  Both sides of that boundary are probed.
    """
    rng = np.random.default_rng(12345)
    img = PIL.Image.fromarray(rng.integers(0, 256, (100, 50), dtype=np.uint8))  # w=50, h=100
    observed = []
    for size in ((80, 30), (40, 79), (40, 80)):  # width up / height down; dy = 2 dx + 1; dy = 2 dx
        ref = np.asarray(img.resize(size, _BICUBIC))
        h_first = np.asarray(img.resize((size[0], 100), _BICUBIC).resize(size, _BICUBIC))
        v_first = np.asarray(img.resize((50, size[1]), _BICUBIC).resize(size, _BICUBIC))
        if np.array_equal(ref, h_first) == np.array_equal(ref, v_first):
            return "unknown"
        observed.append("h" if np.array_equal(ref, h_first) else "v")
    if observed == ["v", "v", "h"]:
        return "v_first_when_height_shrinks_2x"
    if observed == ["h", "h", "h"]:
        return "horizontal_first"
    return "unknown"


_PILLOW_ORDER_RULE = "horizontal_first"
_FAST_PATH_OK: bool | None = None
_FAST_PATH_LOCK = threading.Lock()


def _fast_path_ok() -> bool:
    """Detect Pillow's pass order and check the cropped resampling against Pillow on a few probes."""
    global _FAST_PATH_OK, _PILLOW_ORDER_RULE
    if _FAST_PATH_OK is not None:
        return _FAST_PATH_OK
    with _FAST_PATH_LOCK:
        if _FAST_PATH_OK is not None:
            return _FAST_PATH_OK
        ok = False
        try:
            rule = _detect_pillow_order_rule()
            if rule != "unknown":
                _PILLOW_ORDER_RULE = rule
                rng = np.random.default_rng(2024)
                ok = True
                # (h, w, shortest_edge, crop): landscape / tall portrait (vertical pass first on Pillow >= 13),
                # dyadic and non-dyadic scales, up- and down-scaling.
                for h, w, s, c in (
                    (75, 110, 32, 28),
                    (150, 41, 32, 28),
                    (47, 90, 53, 48),
                    (33, 29, 64, 56),
                    (41, 41, 32, 30),
                ):
                    for mode in ("RGB", "L"):
                        shape = (h, w, 3) if mode == "RGB" else (h, w)
                        img = PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
                        opts = {
                            "do_resize": True,
                            "size": {"shortest_edge": s},
                            "size_divisor": None,
                            "do_center_crop": True,
                            "crop_size": {"height": c, "width": c},
                            "crop_pct": None,
                        }
                        geo = _geometry(h, w, opts)
                        for resample in (_BICUBIC, _BILINEAR, _LANCZOS, _NEAREST, _BOX):
                            fast = np.asarray(_resize_crop_fast(img, geo, resample))
                            ref = np.asarray(_resize_crop_reference(img, geo, resample))
                            if not np.array_equal(fast, ref):
                                ok = False
                                break
                        if not ok:
                            break
                    if not ok:
                        break
        except Exception:  # pragma: no cover - defensive: never fail preprocessing because of the probe
            ok = False
        if not ok:
            logger.info(
                "PvtImageProcessor: cropped resampling disabled for this Pillow version (exactness probe failed)."
            )
        _FAST_PATH_OK = ok
        return ok


def _resize_crop(img: PIL.Image.Image, geo: _Geometry, resample: int) -> PIL.Image.Image:
    if (geo.rw, geo.rh) == img.size:
        if (geo.ox, geo.oy, geo.nx, geo.ny) == (0, 0, geo.rw, geo.rh):
            return img
        return img.crop((geo.ox, geo.oy, geo.ox + geo.nx, geo.oy + geo.ny))
    if _fast_path_ok():
        return _resize_crop_fast(img, geo, resample)
    return _resize_crop_reference(img, geo, resample)


def _nearest_table(length: int, r: int) -> np.ndarray:
    """Source index of each of the ``r`` outputs of Pillow's NEAREST ``length -> r`` resize.

    Pillow (Geometry.c, ImagingScaleAffine) starts at ``scale / 2`` and accumulates ``scale`` in double
    precision; ``np.add.accumulate`` performs the same sequential additions.
    """
    scale = float(length) / r
    steps = np.full(r, scale, dtype=np.float64)
    steps[0] = scale * 0.5
    pos = np.add.accumulate(steps)
    return np.minimum(pos.astype(np.int64), length - 1)


# --------------------------------------------------------------------------------------------------
# Input decoding
# --------------------------------------------------------------------------------------------------


class _Source:
    """An input image (or label map) checked in the calling thread and decoded later in a worker."""

    __slots__ = ("name", "kind", "obj", "h", "w", "layout")

    def __init__(self, name, kind, obj, h, w, layout=None):
        self.name, self.kind, self.obj, self.h, self.w, self.layout = name, kind, obj, h, w, layout


def _describe_type(x) -> str:
    if isinstance(x, np.ndarray):
        return f"a numpy array of shape {tuple(x.shape)} and dtype {x.dtype}"
    if torch.is_tensor(x):
        return f"a torch tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, PIL.Image.Image):
        return f"a PIL image of mode {x.mode!r} and size {x.size}"
    return f"an object of type {type(x).__name__}"


def _parse_layout(input_data_format) -> str | None:
    if input_data_format is None:
        return None
    value = getattr(input_data_format, "value", input_data_format)
    value = str(value).lower()
    if value in ("channels_first", "first", "chw"):
        return "first"
    if value in ("channels_last", "last", "hwc"):
        return "last"
    if value in ("none", ""):
        return None
    raise ValueError(f"`input_data_format` must be 'channels_first' or 'channels_last', got {input_data_format!r}.")


def _flatten_inputs(inputs, name: str, expected_ndim: int, batch_size: int | None = None) -> list:
    """Flatten (nested) lists and batched arrays into a list of ``(label, item)`` pairs.

    An array / tensor with one dimension more than an item is a batch.  For label maps (``expected_ndim``
    2) a 3-D array is only taken as a batch when it is not ``(H, W, 1)`` and its first dimension matches
    the number of images (``batch_size``); otherwise it is one (invalid or squeezable) map.
    """
    if inputs is None:
        raise ValueError(f"`{name}`: expected an image or a list of images, got None.")
    out = []

    def visit(x, label):
        if isinstance(x, (list, tuple)):
            if len(x) == 0:
                raise ValueError(f"`{label}`: expected at least one image, got an empty {type(x).__name__}.")
            if all(isinstance(v, (int, float, bool, np.number)) for v in x):
                raise ValueError(
                    f"`{label}`: expected a PIL image, a numpy array or a torch tensor, got a list of numbers."
                )
            for i, v in enumerate(x):
                visit(v, f"{label}[{i}]")
        elif (
            (isinstance(x, np.ndarray) or torch.is_tensor(x))
            and x.ndim == expected_ndim + 1
            and not (
                expected_ndim == 2 and (x.shape[-1] == 1 or (batch_size is not None and x.shape[0] != batch_size))
            )
        ):
            if x.shape[0] == 0:
                raise ValueError(
                    f"`{label}`: expected at least one image, got an empty batch of shape {tuple(x.shape)}."
                )
            for i in range(x.shape[0]):
                out.append((f"{label}[{i}]", x[i]))
        else:
            out.append((label, x))

    visit(inputs, name)
    return out


def _check_image(label: str, x, layout: str | None) -> _Source:
    if isinstance(x, (str, os.PathLike)):
        from transformers.image_utils import load_image

        x = load_image(str(x))
    if isinstance(x, PIL.Image.Image):
        w, h = x.size
        if w == 0 or h == 0:
            raise ValueError(f"`{label}`: expected a non-empty image, got a PIL image of size {x.size}.")
        return _Source(label, "pil", x, h, w)
    if torch.is_tensor(x):
        if x.is_complex():
            raise ValueError(f"`{label}`: expected a real-valued image, got {_describe_type(x)}.")
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        is_tensor = True
        x = x.numpy()
    elif isinstance(x, np.ndarray):
        is_tensor = False
    else:
        raise ValueError(
            f"`{label}`: expected a PIL image, a numpy array, a torch tensor or a path, got {_describe_type(x)}."
        )
    if x.dtype.kind not in "biuf":
        raise ValueError(f"`{label}`: expected an integer, boolean or float image, got {_describe_type(x)}.")
    if x.ndim == 2:
        arr_layout = "gray"
        h, w = x.shape
    elif x.ndim == 3:
        first_ok, last_ok = x.shape[0] in (1, 3, 4), x.shape[-1] in (1, 3, 4)
        if layout is not None:
            arr_layout = layout
            if (layout == "first" and not first_ok) or (layout == "last" and not last_ok):
                raise ValueError(
                    f"`{label}`: expected 1, 3 or 4 channels in the channels_{layout} dimension, got "
                    f"{_describe_type(x)}."
                )
        elif first_ok and last_ok:
            # Ambiguous (e.g. a 3x3x3 array): tensors are channels-first by convention, arrays channels-last.
            arr_layout = "first" if is_tensor else "last"
        elif last_ok:
            arr_layout = "last"
        elif first_ok:
            arr_layout = "first"
        else:
            raise ValueError(
                f"`{label}`: expected an image with 1, 3 or 4 channels laid out as (H, W, C) or (C, H, W), "
                f"got {_describe_type(x)}."
            )
        h, w = (x.shape[1], x.shape[2]) if arr_layout == "first" else (x.shape[0], x.shape[1])
    else:
        raise ValueError(
            f"`{label}`: expected a 2-D (H, W) or 3-D (H, W, C) / (C, H, W) image, got {_describe_type(x)}."
        )
    if h == 0 or w == 0:
        raise ValueError(f"`{label}`: expected a non-empty image, got {_describe_type(x)}.")
    return _Source(label, "array", x, int(h), int(w), arr_layout)


def _check_label_map(label: str, x) -> _Source:
    if isinstance(x, (str, os.PathLike)):
        x = PIL.Image.open(str(x))
    if isinstance(x, PIL.Image.Image):
        if x.mode not in ("L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N", "1"):
            raise ValueError(
                f"`{label}`: expected a single-channel label map (PIL mode 'L', 'P', 'I' or 'I;16'), got "
                f"{_describe_type(x)}."
            )
        w, h = x.size
        arr = x
    elif torch.is_tensor(x) or isinstance(x, np.ndarray):
        arr = x.detach().cpu().numpy() if torch.is_tensor(x) else x
        if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
            arr = arr[0] if arr.shape[0] == 1 else arr[..., 0]
        if arr.ndim != 2:
            raise ValueError(f"`{label}`: expected a 2-D (H, W) label map, got {_describe_type(x)}.")
        if arr.dtype.kind not in "biu" and not (
            arr.dtype.kind == "f" and arr.size and np.array_equal(arr, np.round(arr))
        ):
            raise ValueError(f"`{label}`: expected integer class ids, got {_describe_type(x)}.")
        h, w = arr.shape
    else:
        raise ValueError(
            f"`{label}`: expected a PIL image, a numpy array or a torch tensor label map, got {_describe_type(x)}."
        )
    if h == 0 or w == 0:
        raise ValueError(f"`{label}`: expected a non-empty label map, got {_describe_type(x)}.")
    return _Source(label, "label", arr, int(h), int(w))


def _composite_on_white(rgba: PIL.Image.Image) -> PIL.Image.Image:
    background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PIL.Image.alpha_composite(background, rgba).convert("RGB")


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    a = np.clip(a.astype(np.int64), 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_u8(a: np.ndarray, name: str) -> np.ndarray:
    """Float images are taken to be in [0, 1]; quantise to 8 bits like the (8-bit) official pipeline."""
    a = a.astype(np.float32, copy=False)
    finite_max = float(np.nanmax(a)) if a.size else 0.0
    if finite_max > 1.0 + 1e-3:
        logger.warning_once(
            f"`{name}`: float images are expected in [0, 1] but the maximum is {finite_max:.3g}; values are "
            "clipped to [0, 1]. Pass uint8 arrays for 0-255 data."
        )
    return np.rint(np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0).astype(np.uint8)


def _decode_pil(src: _Source) -> PIL.Image.Image:
    """Decode a PIL input to an 8-bit image in mode "RGB" or "L"."""
    img = src.obj
    mode = img.mode
    try:
        if mode in ("RGB", "L"):
            return img
        if mode == "1":
            return img.convert("L")
        if mode == "P":
            if "transparency" in img.info:
                return _composite_on_white(img.convert("RGBA"))
            return img.convert("RGB")
        if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            return _composite_on_white(img.convert("RGBA"))
        if mode.startswith("I;16") or mode == "I":
            # 16-bit (PNG) greyscale: scale 0..65535 to the 8-bit range.
            return PIL.Image.fromarray(_u16_to_u8(np.asarray(img)))
        if mode == "F":
            return PIL.Image.fromarray(_float_to_u8(np.asarray(img), src.name))
        return img.convert("RGB")  # CMYK, YCbCr, HSV, RGBX, ...
    except ValueError as err:
        raise ValueError(f"`{src.name}`: cannot convert a PIL image of mode {mode!r} to RGB ({err}).") from err


def _decode_array(src: _Source) -> PIL.Image.Image:
    """Decode an array input to an 8-bit image in mode "RGB" or "L"."""
    a = src.obj
    if src.layout == "first":
        a = np.moveaxis(a, 0, -1)
    elif src.layout == "gray":
        a = a[..., None]
    kind = a.dtype.kind
    if kind == "f":
        a = _float_to_u8(a, src.name)
    elif kind == "b":
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = _u16_to_u8(a)
    elif a.dtype != np.uint8:
        lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"`{src.name}`: integer images must hold values in [0, 255] (or be uint16 for 16-bit data); got "
                f"values in [{lo}, {hi}] with dtype {a.dtype}."
            )
        a = a.astype(np.uint8)
    channels = a.shape[-1]
    if channels == 1:
        return PIL.Image.fromarray(np.ascontiguousarray(a[..., 0]))
    if channels == 3:
        return PIL.Image.fromarray(np.ascontiguousarray(a))
    return _composite_on_white(PIL.Image.fromarray(np.ascontiguousarray(a)))


# --------------------------------------------------------------------------------------------------
# The processor
# --------------------------------------------------------------------------------------------------


class PvtImageProcessor(BaseImageProcessor):
    r"""
    Image processor for PVT / PVTv2 image classification and Semantic FPN segmentation models.

    The defaults reproduce the official PVT ImageNet evaluation transform exactly (same Pillow
    arithmetic, to float32 rounding)::

        transforms.Compose([
            transforms.Resize(256, interpolation=InterpolationMode.BICUBIC),  # short side 256
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
        ])

    i.e. the short side is resized to ``int(crop / crop_pct)`` = 256 with PIL bicubic (long side
    ``int(256 * long / short)``, as torchvision computes it), the center ``224 x 224`` is cut with
    torchvision's offsets ``int(round((side - 224) / 2.0))`` (zero padding when the image is smaller than
    the crop), values are scaled to [0, 1] and normalised with the ImageNet mean and std.  Only the pixels
    that survive the crop are resampled (see the module comments for how this is kept bit-exact) and a
    batch is processed by a thread pool (Pillow releases the GIL).

    Other resolutions: ``PvtImageProcessor(crop_size=384)`` resizes the short side to
    ``int(384 / 0.875) = 438`` and crops 384; ``crop_pct=1.0`` resizes straight to the crop size.

    Semantic segmentation (ADE20K): :meth:`for_semantic_segmentation` returns the official PVT / Semantic
    FPN ADE20K *test* transform: resize keeping the aspect ratio with
    ``scale = min(2048 / long_side, 512 / short_side)`` (mmseg ``Resize(img_scale=(2048, 512),
    keep_ratio=True)``, sides ``int(side * scale + 0.5)``), then both sides rounded *up* to a multiple of 32
    (``AlignResize(size_divisor=32)``), no crop, ImageNet normalisation, and ``do_reduce_labels=True`` for
    the label maps.  It is the same as ``PvtImageProcessor(do_center_crop=False, size={"shortest_edge": 512,
    "longest_edge": 2048}, size_divisor=32, resample="bilinear", do_reduce_labels=True)``.  Note that the
    official pipeline resizes twice with OpenCV (rescale, then a second resize to the aligned size); here
    the aligned size is reached with a single anti-aliased PIL bilinear resize.

    Inputs (``images``): PIL images of any mode (RGB; L / 1 / I;16 / I greyscale - 16-bit data is scaled to
    the 8-bit range; P / RGBA / LA / PA are alpha-composited on white; CMYK / YCbCr converted), numpy arrays
    or torch tensors shaped (H, W), (H, W, C) or (C, H, W) with C in {1, 3, 4} (uint8; uint16 as 16-bit;
    bool; other integer types with values in [0, 255]; floats are taken to be in [0, 1] and quantised to
    8 bits like the official 8-bit pipeline, so ``ToTensor()`` output gives the same result as the PIL
    image it came from), 4-D batches, file paths / URLs, or (nested) lists mixing all of these and mixing
    sizes.  Ambiguous 3-D shapes are read as (H, W, C) for numpy arrays and (C, H, W) for tensors unless
    ``input_data_format`` says otherwise.  Anything else raises a ``ValueError`` naming the argument (and
    list index) and what was expected.

    Example::

        >>> processor = PvtImageProcessor()  # ImageNet eval: 256 bicubic, center 224, ImageNet mean/std
        >>> batch = processor([pil_image, numpy_hwc_array], return_tensors="pt")  # pixel_values: (2, 3, 224, 224)
        >>> seg = PvtImageProcessor.for_semantic_segmentation()  # ADE20K test transform
        >>> inputs = seg(image, segmentation_maps=label_map, return_tensors="pt")  # pixel_values + labels
        >>> maps = seg.post_process_semantic_segmentation(model(**inputs), target_sizes=[image.size[::-1]])

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize the image.
        size (`int`, `tuple` or `dict`, *optional*, defaults to `{"shortest_edge": 256}`):
            Resize target: ``{"shortest_edge": s}`` (torchvision ``Resize(s)``), ``{"shortest_edge": s,
            "longest_edge": l}`` (mmcv keep-ratio rescale into ``(l, s)``) or ``{"height": h, "width": w}``.
            An int means ``{"shortest_edge": int}``; a pair means (height, width).  Ignored while
            ``crop_pct`` is in effect (center cropping on and ``crop_pct`` not None).
        resample (`int`, `PIL.Image.Resampling` or `str`, *optional*, defaults to `PIL.Image.BICUBIC`):
            PIL resampling filter for images.  Label maps always use nearest neighbour.
        do_center_crop (`bool`, *optional*, defaults to `True`):
            Whether to take the torchvision ``CenterCrop`` after resizing.
        crop_size (`int`, `tuple` or `dict`, *optional*, defaults to `{"height": 224, "width": 224}`):
            Size of the center crop.
        crop_pct (`float`, *optional*, defaults to `0.875` unless `size` is given, else `None`):
            When set (and center cropping is on) the short side is resized to
            ``int(min(crop_size) / crop_pct)`` and ``size`` is not used.  Passing ``size`` without
            ``crop_pct`` (to the constructor, to ``from_pretrained`` or to a call) switches it off.
        size_divisor (`int`, *optional*):
            If set, the resized height and width are rounded up to a multiple of it (before cropping).
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply 8-bit values by ``rescale_factor``.  Float inputs are the [0, 1] encoding of
            the same image (they become ``round(255 * value)``), so a float image and its uint8 version
            give the same result whatever the flags.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Rescaling factor.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise with ``image_mean`` / ``image_std``.
        image_mean (`float` or `list[float]`, *optional*, defaults to the ImageNet mean):
        image_std (`float` or `list[float]`, *optional*, defaults to the ImageNet std):
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            ADE20K convention for ``segmentation_maps``: label 0 (background) becomes 255 (ignored) and every
            other label is decreased by 1 (255 stays 255).
        do_pad (`bool`, *optional*, defaults to `False`):
            When output sizes differ (no center crop), pad ``pixel_values`` with 0 (and ``labels`` with 255)
            at the bottom/right to the largest size in the batch and return a ``pixel_mask``.  Without it,
            differently sized outputs are returned as a list (or an error is raised if tensors are requested).
        num_workers (`int`, *optional*):
            Threads used for a batch (default: the number of usable CPU cores, at most 8; 1 = no threads).

    Call / `preprocess` returns a [`BatchFeature`] with ``pixel_values`` (float32, ``(batch, 3, H, W)``) and,
    when ``segmentation_maps`` are given, ``labels`` (int64, ``(batch, H, W)``, nearest-neighbour resized with
    the same geometry as the images, padding 255).
    """

    model_input_names = ["pixel_values"]
    if PvtImageProcessorKwargs is not None:
        valid_kwargs = PvtImageProcessorKwargs

    # Class-level defaults (also used by `to_dict` to decide which `None`s are worth saving).
    do_resize = True
    size = {"shortest_edge": 256}
    resample = _BICUBIC
    do_center_crop = True
    crop_size = {"height": 224, "width": 224}
    crop_pct = 0.875
    size_divisor = None
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    do_reduce_labels = False
    do_pad = False
    num_workers = None

    def __init__(
        self,
        do_resize: bool = True,
        size: int | tuple | dict | None = None,
        resample: int | str = _BICUBIC,
        do_center_crop: bool = True,
        crop_size: int | tuple | dict | None = None,
        crop_pct: float | None = _AUTO,
        size_divisor: int | None = None,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        do_reduce_labels: bool = False,
        do_pad: bool = False,
        num_workers: int | None = None,
        **kwargs,
    ) -> None:
        # Backward-compatible aliases used by other transformers processors.
        if "reduce_labels" in kwargs:
            do_reduce_labels = bool(kwargs.pop("reduce_labels"))
        for key in _IGNORED_KEYS:
            kwargs.pop(key, None)
        super().__init__(**kwargs)
        if crop_pct is _AUTO:
            crop_pct = None if size is not None else 0.875
        if crop_pct is not None and not (isinstance(crop_pct, (int, float)) and 0 < float(crop_pct)):
            raise ValueError(f"`crop_pct` must be a positive float or None, got {crop_pct!r}.")
        self.do_resize = bool(do_resize)
        self.size = _normalize_size(size if size is not None else {"shortest_edge": 256})
        self.resample = _normalize_resample(resample if resample is not None else _BICUBIC)
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = _normalize_crop_size(crop_size if crop_size is not None else {"height": 224, "width": 224})
        self.crop_pct = None if crop_pct is None else float(crop_pct)
        if self.crop_pct is not None and self.do_center_crop:
            # Keep `size` consistent with what crop_pct implies, so the saved config is self-explanatory.
            self.size = {"shortest_edge": int(min(self.crop_size.values()) / self.crop_pct)}
        self.size_divisor = None if size_divisor is None else _positive_int(size_divisor, "size_divisor")
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = list(
            _normalize_triplet(IMAGENET_DEFAULT_MEAN if image_mean is None else image_mean, "image_mean")
        )
        self.image_std = list(
            _normalize_triplet(IMAGENET_DEFAULT_STD if image_std is None else image_std, "image_std")
        )
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"`image_std` must not contain zeros, got {self.image_std}.")
        self.do_reduce_labels = bool(do_reduce_labels)
        self.do_pad = bool(do_pad)
        self.num_workers = None if num_workers is None else int(num_workers)

    # ------------------------------------------------------------------ presets / serialisation

    @classmethod
    def for_semantic_segmentation(cls, **kwargs) -> "PvtImageProcessor":
        """The official PVT Semantic FPN ADE20K test transform (see the class docstring); kwargs override."""
        defaults = dict(
            do_resize=True,
            size={"shortest_edge": 512, "longest_edge": 2048},
            size_divisor=32,
            resample=_BILINEAR,
            do_center_crop=False,
            crop_pct=None,
            do_reduce_labels=True,
        )
        defaults.update(kwargs)
        return cls(**defaults)

    @classmethod
    def from_dict(cls, image_processor_dict: dict[str, Any], **kwargs):
        # An explicit `size` override (e.g. from_pretrained(path, size=320)) must win over a saved crop_pct.
        if kwargs.get("size") is not None and "crop_pct" not in kwargs:
            image_processor_dict = {**image_processor_dict, "crop_pct": None}
        return super().from_dict(image_processor_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_valid_kwargs_names", None)
        output.pop("_valid_processor_keys", None)
        return output

    # ------------------------------------------------------------------ options

    def _resolve_options(self, kwargs: dict) -> dict:
        unknown = set(kwargs) - set(_OPTION_KEYS) - _IGNORED_KEYS
        if unknown:
            raise TypeError(f"PvtImageProcessor got unexpected keyword argument(s): {sorted(unknown)}.")
        given = {k: v for k, v in kwargs.items() if k in _OPTION_KEYS and v is not None}
        opts = {k: getattr(self, k) for k in _OPTION_KEYS}
        opts.update(given)
        if "size" in given and "crop_pct" not in given:
            opts["crop_pct"] = None
        opts["size"] = _normalize_size(opts["size"])
        opts["crop_size"] = _normalize_crop_size(opts["crop_size"])
        opts["resample"] = _normalize_resample(opts["resample"])
        opts["size_divisor"] = (
            None if opts["size_divisor"] is None else _positive_int(opts["size_divisor"], "size_divisor")
        )
        if opts["crop_pct"] is not None:
            opts["crop_pct"] = float(opts["crop_pct"])
            if opts["crop_pct"] <= 0:
                raise ValueError(f"`crop_pct` must be positive, got {opts['crop_pct']}.")
        if opts["do_resize"] and opts["size"] is None and not (opts["do_center_crop"] and opts["crop_pct"]):
            raise ValueError("`size` must be set when `do_resize=True`.")
        if opts["do_center_crop"] and opts["crop_size"] is None:
            raise ValueError("`crop_size` must be set when `do_center_crop=True`.")
        mean = np.asarray(_normalize_triplet(opts["image_mean"], "image_mean"), dtype=np.float64)
        std = np.asarray(_normalize_triplet(opts["image_std"], "image_std"), dtype=np.float64)
        # Per-channel affine map from the 8-bit value v to the output: out = v * scale + shift.
        factor = float(opts["rescale_factor"]) if opts["do_rescale"] else 1.0
        if opts["do_normalize"]:
            scale, shift = factor / std, -mean / std
        else:
            scale, shift = np.full(3, factor), np.zeros(3)
        opts["_scale"] = scale.astype(np.float32)
        opts["_shift"] = shift.astype(np.float32)
        return opts

    # ------------------------------------------------------------------ main entry points

    def __call__(self, images, segmentation_maps=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, segmentation_maps=segmentation_maps, **kwargs)

    def preprocess(
        self,
        images,
        segmentation_maps=None,
        return_tensors: str | None = None,
        data_format: str | None = "channels_first",
        input_data_format: str | None = None,
        device: str | torch.device | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess an image or a batch of images (and optionally their segmentation maps).

        Args:
            images: image(s); see the class docstring for the accepted types.
            segmentation_maps: optional label map(s) (PIL mode L / P / I / I;16, or 2-D integer arrays /
                tensors), one per image and of the same height and width.
            return_tensors: ``"pt"`` (torch), ``"np"`` (numpy) or ``None`` (lists of numpy arrays).
            data_format: only ``"channels_first"`` is supported.
            input_data_format: force ``"channels_first"`` or ``"channels_last"`` for 3-D array inputs.
            device: move the returned tensors to this device (``return_tensors="pt"`` only).
            **kwargs: any constructor option, overriding the instance's value for this call.
        """
        if data_format is not None and str(getattr(data_format, "value", data_format)).lower() not in (
            "channels_first",
            "first",
        ):
            raise ValueError(f"`data_format` must be 'channels_first', got {data_format!r}.")
        if isinstance(return_tensors, str):
            return_tensors = return_tensors.lower()
        return_tensors = getattr(return_tensors, "value", return_tensors)
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        opts = self._resolve_options(kwargs)
        layout = _parse_layout(input_data_format)

        sources = [_check_image(label, x, layout) for label, x in _flatten_inputs(images, "images", 3)]
        # A lazily opened PIL image used several times in the batch must not be decoded by two threads at once.
        seen = set()
        for src in sources:
            if src.kind == "pil":
                if id(src.obj) in seen:
                    src.obj.load()
                seen.add(id(src.obj))
        label_sources = None
        if segmentation_maps is not None:
            label_sources = [
                _check_label_map(lbl, x)
                for lbl, x in _flatten_inputs(segmentation_maps, "segmentation_maps", 2, batch_size=len(sources))
            ]
            if len(label_sources) != len(sources):
                raise ValueError(
                    f"`segmentation_maps`: expected one label map per image ({len(sources)}), "
                    f"got {len(label_sources)}."
                )
            for img_src, lab_src in zip(sources, label_sources):
                if (img_src.h, img_src.w) != (lab_src.h, lab_src.w):
                    raise ValueError(
                        f"`{lab_src.name}` has size (H, W) = {(lab_src.h, lab_src.w)} but `{img_src.name}` has "
                        f"{(img_src.h, img_src.w)}; a label map must match its image."
                    )

        geos = [_geometry(s.h, s.w, opts) for s in sources]
        shapes = {(g.out_h, g.out_w) for g in geos}
        uniform = len(shapes) == 1
        if not uniform and not opts["do_pad"] and return_tensors is not None:
            raise ValueError(
                f"The images resize to different sizes {sorted(shapes)} (no center crop), so they cannot be stacked "
                "into one tensor: pass `do_pad=True`, process them one at a time, or use `return_tensors=None`."
            )
        batch = len(sources)
        stacked = uniform or opts["do_pad"]
        pad_h = max(h for h, _ in shapes)
        pad_w = max(w for _, w in shapes)

        if stacked:  # write straight into the batch array (padding, if any, stays 0)
            pixel_batch = (np.empty if uniform else np.zeros)((batch, 3, pad_h, pad_w), dtype=np.float32)
            outputs = [pixel_batch[i, :, : g.out_h, : g.out_w] for i, g in enumerate(geos)]
        else:
            outputs = [np.empty((3, g.out_h, g.out_w), dtype=np.float32) for g in geos]

        label_outputs = None
        if label_sources is not None:
            if stacked:
                label_batch = np.full((batch, pad_h, pad_w), _IGNORE_INDEX, dtype=np.int64)
                label_outputs = [label_batch[i, : g.out_h, : g.out_w] for i, g in enumerate(geos)]
            else:
                label_outputs = [np.empty((g.out_h, g.out_w), dtype=np.int64) for g in geos]

        def work(i: int) -> None:
            self._process_image(sources[i], geos[i], opts, outputs[i])
            if label_outputs is not None:
                self._process_label_map(label_sources[i], geos[i], opts, label_outputs[i])

        n_workers = opts["num_workers"] if opts["num_workers"] is not None else _default_num_workers()
        n_workers = max(1, min(int(n_workers), batch))
        if n_workers == 1:
            for i in range(batch):
                work(i)
        else:
            _fast_path_ok()  # run the one-time probe before fanning out
            # Largest images first (longest-processing-time-first keeps the threads evenly loaded).
            order = sorted(range(batch), key=lambda i: -(sources[i].h * sources[i].w))
            for _ in _get_pool(n_workers).map(work, order):
                pass

        def pack(array: np.ndarray):
            if return_tensors == "pt":
                return torch.from_numpy(array)
            return array if return_tensors == "np" else list(array)

        data = {}
        if stacked:
            data["pixel_values"] = pack(pixel_batch)
            if label_outputs is not None:
                data["labels"] = pack(label_batch)
            if opts["do_pad"]:
                mask = np.zeros((batch, pad_h, pad_w), dtype=np.int64)
                for i, g in enumerate(geos):
                    mask[i, : g.out_h, : g.out_w] = 1
                data["pixel_mask"] = pack(mask)
        else:
            data["pixel_values"] = outputs
            if label_outputs is not None:
                data["labels"] = label_outputs
        if device is not None and return_tensors == "pt":
            data = {k: v.to(device) for k, v in data.items()}
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ per image work (runs in threads)

    def _process_image(self, src: _Source, geo: _Geometry, opts: dict, out: np.ndarray) -> None:
        image = _decode_pil(src) if src.kind == "pil" else _decode_array(src)
        if geo.padded:
            # torchvision pads with black (0) before normalising.
            out[...] = opts["_shift"][:, None, None]
        window = out[:, geo.dy : geo.dy + geo.ny, geo.dx : geo.dx + geo.nx]
        arr = np.asarray(_resize_crop(image, geo, opts["resample"]))
        if arr.ndim == 2:  # greyscale: identical to resampling its RGB conversion channel by channel
            for c in range(3):
                np.multiply(arr, opts["_scale"][c], out=window[c], casting="unsafe")
                window[c] += opts["_shift"][c]
        else:
            np.multiply(arr.transpose(2, 0, 1), opts["_scale"][:, None, None], out=window, casting="unsafe")
            window += opts["_shift"][:, None, None]

    def _process_label_map(self, src: _Source, geo: _Geometry, opts: dict, out: np.ndarray) -> None:
        lab = np.asarray(src.obj)
        if lab.ndim != 2:  # pragma: no cover - guarded by _check_label_map
            raise ValueError(f"`{src.name}`: expected a 2-D label map, got shape {lab.shape}.")
        if geo.padded:
            out[...] = _IGNORE_INDEX
        if (geo.rh, geo.rw) == (geo.h, geo.w):
            rows = np.arange(geo.oy, geo.oy + geo.ny)
            cols = np.arange(geo.ox, geo.ox + geo.nx)
        else:
            rows = _nearest_table(geo.h, geo.rh)[geo.oy : geo.oy + geo.ny]
            cols = _nearest_table(geo.w, geo.rw)[geo.ox : geo.ox + geo.nx]
        window = lab[np.ix_(rows, cols)].astype(np.int64, copy=False)
        if opts["do_reduce_labels"]:
            reduced = window - 1
            reduced[(window == 0) | (window == _IGNORE_INDEX)] = _IGNORE_INDEX
            window = reduced
        out[geo.dy : geo.dy + geo.ny, geo.dx : geo.dx + geo.nx] = window

    # ------------------------------------------------------------------ post-processing

    def post_process_semantic_segmentation(self, outputs, target_sizes=None) -> list[torch.Tensor]:
        """Turn segmentation logits into one ``(H, W)`` label map (int64 tensor) per image.

        Args:
            outputs: model output with a ``logits`` attribute / key of shape ``(batch, num_labels, h, w)``,
                or the logits themselves.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(batch, 2)`, *optional*):
                ``(height, width)`` of each original image.  The logits are resized to it (bilinear,
                ``align_corners=False``) before the arg-max.  If unset, the maps keep the logits' size.
        """
        if torch.is_tensor(outputs) or isinstance(outputs, np.ndarray):
            logits = outputs
        elif isinstance(outputs, dict) and "logits" in outputs:
            logits = outputs["logits"]
        elif hasattr(outputs, "logits"):
            logits = outputs.logits
        else:
            raise ValueError(
                f"`outputs`: expected a model output with `logits` or a logits tensor, got {type(outputs).__name__}."
            )
        logits = torch.as_tensor(logits)
        if logits.ndim != 4:
            raise ValueError(
                f"`outputs.logits` must have shape (batch, num_labels, height, width), got {tuple(logits.shape)}."
            )
        if target_sizes is None:
            return list(logits.argmax(dim=1))
        if torch.is_tensor(target_sizes):
            target_sizes = target_sizes.tolist()
        if len(target_sizes) != len(logits):
            raise ValueError(
                f"`target_sizes`: make sure that you pass in as many target sizes as the batch dimension of the "
                f"logits ({len(logits)}), got {len(target_sizes)}."
            )
        results = []
        for i, target in enumerate(target_sizes):
            height, width = (int(v) for v in target)
            item = logits[i : i + 1]
            if item.dtype in (torch.float16, torch.bfloat16) and item.device.type == "cpu":
                item = item.float()
            if tuple(item.shape[-2:]) != (height, width):
                item = torch.nn.functional.interpolate(
                    item, size=(height, width), mode="bilinear", align_corners=False
                )
            results.append(item[0].argmax(dim=0))
        return results


__all__ = ["PvtImageProcessor"]
