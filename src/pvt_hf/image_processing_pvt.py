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

Self-contained (standard library, numpy, Pillow, torch and transformers only): the file is copied next to checkpoints
and loaded with ``AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)`` where ``pvt_hf`` is not installed.
"""

import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import convert_to_rgb
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    SizeDict,
    load_image,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import logging


logger = logging.get_logger(__name__)

IGNORE_INDEX = 255  # label of padding, and of ADE20K's "other" class after `do_reduce_labels`
# Largest image, in pixels, that an input may be resized, cropped or padded to: Pillow's decompression-bomb bound
# (`PIL.Image.MAX_IMAGE_PIXELS`, about 1 GiB of float32 RGB output) applied to what the processor makes, so that a tiny
# but extremely wide file (10000 x 1 pixels, short side resized to 256: 2,560,000 x 256) fails at once with a clear
# error instead of allocating gigabytes. Raise it (or set None, no bound) for larger outputs, as Pillow's.
MAX_OUTPUT_PIXELS = 89_478_485
RESAMPLE_BY_NAME = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


class PvtHfImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    resample (`int`, `PIL.Image.Resampling` or `str`, *optional*):
        Pillow filter for images, also by name (`"bicubic"`, `"bilinear"`, ...). Label maps use nearest neighbour.
    crop_pct (`float`, *optional*, defaults to `0.875`, or `None` when `size` is given):
        With center cropping, resize the short side to `int(min(crop_size) / crop_pct)` instead of using `size`.
    size_divisor (`int`, *optional*):
        Round the resized height and width up to a multiple of it (before cropping).
    do_reduce_labels (`bool`, *optional*):
        ADE20K convention: label 0 ("other") becomes 255 (ignored), every other label drops by 1.
    """

    resample: int | str | None
    crop_pct: float | None
    size_divisor: int | None
    do_reduce_labels: bool | None


class PvtHfImageProcessor(PilBackend):
    r"""
    Image processor of pvt-hf's PVT / PVTv2 classification and Semantic FPN segmentation models.

    The defaults are the official PVT ImageNet evaluation transform, with the same Pillow arithmetic::

        Compose([Resize(256, BICUBIC), CenterCrop(224), ToTensor(), Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    The short side becomes `int(224 / crop_pct)` = 256 (long side `int(256 * long / short)`, as torchvision), the
    center 224 x 224 is cut at torchvision's offsets `int(round((side - 224) / 2.0))` (zero padding when the image is
    smaller), then values are scaled to [0, 1] and normalized. `crop_size=384` resizes to `int(384 / 0.875)` = 438;
    `crop_pct=1.0` resizes straight to the crop size; an explicit `size` switches `crop_pct` off.
    [`~PvtHfImageProcessor.for_semantic_segmentation`] gives the official Semantic FPN ADE20K test transform.

    Inputs: PIL images (any mode; alpha composited on white, 16-bit and float modes scaled to 8 bits), numpy arrays or
    torch tensors shaped (H, W), (H, W, C) or (C, H, W) (uint8; uint16 as 16-bit; bool; other integers in [0, 255];
    floats as the [0, 1] encoding of 8-bit values, so `ToTensor()` output gives the result of its PIL image), 4-D
    batches, paths / URLs, or (nested) lists of these. Ambiguous 3-D shapes are (H, W, C) for arrays and (C, H, W) for
    tensors unless `input_data_format` says otherwise. With `do_convert_rgb=False`, 1- or 4-channel images (also image
    files; URLs come in RGB) keep their channels (each resized on its own) and take an `image_mean` / `image_std` of as
    many values (or one for all); arrays of other channel counts need `input_data_format`.

    Settings beyond transformers' `ImagesKwargs` are described in [`PvtHfImageProcessorKwargs`]; in addition:

    - `size`: `{"shortest_edge": s}` (torchvision `Resize(s)`; an int means this), `{"shortest_edge": s,
      "longest_edge": l}` (mmcv's keep-ratio rescale into `(l, s)`) or `{"height": h, "width": w}` (a pair);
    - `do_pad`: pad differently sized outputs (no center crop) at the bottom / right to the batch's largest, with 0
      (`labels` with 255), and return a `pixel_mask`; without it they come back as a list (or, when tensors are asked
      for, raise an error).

    Returns a [`BatchFeature`] with `pixel_values` (float32, `(batch, channels, height, width)`) and, given
    `segmentation_maps`, `labels` (int64, `(batch, height, width)`, nearest-neighbour resized like the images).
    """

    valid_kwargs = PvtHfImageProcessorKwargs
    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"shortest_edge": 256}
    default_to_square = False  # an int `size` is the short side, as in torchvision's `Resize(int)`
    resample = int(PIL.Image.Resampling.BICUBIC)
    do_center_crop = True
    crop_size = {"height": 224, "width": 224}
    crop_pct = 0.875
    size_divisor = None
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_convert_rgb = True
    do_reduce_labels = False
    do_pad = False

    def __init__(self, **kwargs: Unpack[PvtHfImageProcessorKwargs]) -> None:
        if "reduce_labels" in kwargs:  # the name older transformers processors use
            kwargs["do_reduce_labels"] = kwargs.pop("reduce_labels")
        if kwargs.pop("num_workers", None) is not None:
            logger.warning_once("`num_workers` is ignored: parallelize with `DataLoader(num_workers=...)` instead.")
        if kwargs.get("size") is not None and "crop_pct" not in kwargs:
            kwargs["crop_pct"] = None  # an explicit size switches the crop_pct rule off
        super().__init__(**kwargs)
        # checked now, not at the first image: a zero std would give non-finite pixel values
        _check_normalization(self.image_mean, self.image_std, 3 if self.do_convert_rgb else None)

    @classmethod
    def for_semantic_segmentation(cls, **kwargs) -> "PvtHfImageProcessor":
        """The official PVT Semantic FPN ADE20K test transform; keyword arguments override its settings.

        mmseg's `Resize(img_scale=(2048, 512), keep_ratio=True)` (scale `min(2048 / long, 512 / short)`, sides
        `int(side * scale + 0.5)`), both sides rounded up to a multiple of 32 (`AlignResize(size_divisor=32)`), no
        crop, ImageNet normalization, `do_reduce_labels=True`. The official code reaches the aligned size with two
        OpenCV resizes; here it is one anti-aliased Pillow bilinear resize.
        """
        settings = {
            "size": {"shortest_edge": 512, "longest_edge": 2048},
            "size_divisor": 32,
            "resample": "bilinear",
            "do_center_crop": False,
            "crop_pct": None,
            "do_reduce_labels": True,
            **kwargs,
        }
        return cls(**settings)

    @classmethod
    def from_dict(cls, image_processor_dict: dict, **kwargs):
        # `from_pretrained(path, size=320)`: the new size must win over the saved crop_pct.
        if kwargs.get("size") is not None and "crop_pct" not in kwargs:
            image_processor_dict = {**image_processor_dict, "crop_pct": None}
        return super().from_dict(image_processor_dict, **kwargs)

    def _standardize_kwargs(self, resample=None, crop_pct=None, do_center_crop=None, **kwargs) -> dict:
        kwargs = super()._standardize_kwargs(**kwargs)
        if isinstance(resample, str):
            if resample.lower() not in RESAMPLE_BY_NAME:
                raise ValueError(
                    f"`resample` must be a Pillow filter or one of {list(RESAMPLE_BY_NAME)}: {resample!r}"
                )
            resample = RESAMPLE_BY_NAME[resample.lower()]
        elif resample is not None:
            resample = int(resample)
        crop_size = kwargs["crop_size"]
        if do_center_crop and crop_pct and crop_size is not None:
            # timm / official PVT eval: the short side is resized to crop / crop_pct (224 / 0.875 = 256).
            kwargs["size"] = SizeDict(shortest_edge=int(min(crop_size.height, crop_size.width) / crop_pct))
        return {**kwargs, "resample": resample, "crop_pct": crop_pct, "do_center_crop": do_center_crop}

    def _validate_preprocess_kwargs(self, do_pad=None, **kwargs) -> None:
        # `do_pad` pads to the batch's largest image, so it needs no `pad_size` (which the generic check demands).
        super()._validate_preprocess_kwargs(**kwargs)

    def preprocess(self, images, segmentation_maps=None, **kwargs: Unpack[PvtHfImageProcessorKwargs]) -> BatchFeature:
        r"""
        Preprocess an image or a batch of images, and optionally their segmentation maps.

        segmentation_maps (`ImageInput`, *optional*):
            Label maps (PIL mode L / P / I / I;16, or 2-D integer arrays / tensors), one per image, of its size.

        Any constructor setting can be overridden for the call; `return_tensors` is `"pt"`, `"np"` or `None` (a
        list of numpy arrays), `device` moves `"pt"` tensors. Unknown keyword arguments are ignored with a warning.
        """
        unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__))
        if unknown:
            logger.warning(f"{type(self).__name__}: ignoring unknown keyword argument(s) {unknown}.")
            kwargs = {key: value for key, value in kwargs.items() if key not in unknown}
        if kwargs.get("size") is not None and "crop_pct" not in kwargs:
            kwargs["crop_pct"] = None
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _preprocess_image_like_inputs(
        self, images, segmentation_maps=None, *, do_convert_rgb, input_data_format, return_tensors, **kwargs
    ) -> BatchFeature:
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"`return_tensors` must be 'pt', 'np' or None, got {return_tensors!r}.")
        data_format = kwargs.pop("data_format", None)
        if data_format is not None and ChannelDimension(data_format) != ChannelDimension.FIRST:
            raise ValueError(f"`data_format` must be 'channels_first', got {data_format!r}.")
        named_images = _flatten(images, "images", image_ndim=3)
        images = [
            self.process_image(image, do_convert_rgb, input_data_format, name=name) for name, image in named_images
        ]
        kwargs["image_names"] = [_name_with_file(name, image) for name, image in named_images]
        if segmentation_maps is not None:
            named_maps = _flatten(segmentation_maps, "segmentation_maps", image_ndim=2, batch_size=len(images))
            if len(named_maps) != len(images):
                raise ValueError(
                    f"`segmentation_maps`: expected one label map per image ({len(images)}), got {len(named_maps)}."
                )
            segmentation_maps = [_label_map(label_map, name) for name, label_map in named_maps]
            for (name, _), label_map, image in zip(named_maps, segmentation_maps, images):
                if label_map.shape != _height_width(image):
                    raise ValueError(
                        f"`{name}` has size (H, W) = {label_map.shape} but its image has {_height_width(image)}; "
                        "a label map must match its image."
                    )
        batch = self._preprocess(images, segmentation_maps, return_tensors=return_tensors, **kwargs)
        device = kwargs.get("device")
        return batch.to(device) if device is not None and return_tensors == "pt" else batch

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, name="images"):
        """One input as what Pillow resizes: an 8-bit PIL image (RGB or L) or an 8-bit (H, W, C) array."""
        if isinstance(image, (str, os.PathLike)):
            image = _open_image(os.fspath(image), name, keep_mode=not do_convert_rgb)
        if isinstance(image, PIL.Image.Image):
            if 0 in image.size:
                raise ValueError(f"`{name}`: expected a non-empty image, got {_describe(image)}.")
            if image.mode in ("I", "F") or image.mode.startswith("I;16"):
                image = np.asarray(image)  # 32-bit / 16-bit / float: scaled to 8 bits below, like arrays
            elif do_convert_rgb:
                return image if image.mode == "RGB" else PIL.Image.fromarray(convert_to_rgb(image, return_numpy=True))
            else:
                if image.mode not in ("L", "LA", "RGB", "RGBA"):  # 1, P, CMYK, YCbCr, ...: the nearest of these
                    alpha = "A" in image.getbands() or "transparency" in image.info
                    image = image.convert("L" if image.mode == "1" else "RGBA" if alpha else "RGB")
                return image if image.mode in ("L", "RGB") else np.asarray(image)
        channels_first_if_ambiguous = torch.is_tensor(image)  # tensors are (C, H, W) by convention, arrays (H, W, C)
        if torch.is_tensor(image):
            image = image.detach().cpu()
            image = (image.float() if image.dtype in (torch.float16, torch.bfloat16) else image).numpy()
        elif not isinstance(image, np.ndarray):
            raise ValueError(
                f"`{name}`: expected a PIL image, a numpy array, a torch tensor or a path, got {_describe(image)}."
            )
        image = _to_uint8(_channels_last(image, input_data_format, channels_first_if_ambiguous, name), name)
        if do_convert_rgb and image.shape[-1] != 3:
            image = convert_to_rgb(image, return_numpy=True, input_data_format=ChannelDimension.LAST)
        return image

    def _preprocess(
        self,
        images: list,
        segmentation_maps: list | None,
        do_resize: bool,
        size: SizeDict,
        resample: int,
        do_center_crop: bool,
        crop_size: SizeDict,
        size_divisor: int | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_reduce_labels: bool,
        do_pad: bool,
        return_tensors: str | None,
        image_names: list[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        resized_sizes, crops, output_sizes = [], [], []
        for index, image in enumerate(images):
            height, width = _height_width(image)
            resized = _resized_size(height, width, size, size_divisor) if do_resize else (height, width)
            crop_h, crop_w = (crop_size.height, crop_size.width) if do_center_crop else resized
            name = image_names[index] if image_names else f"`images[{index}]`"
            if do_resize:
                _check_output_pixels(resized, f"{name}: resizing its {height}x{width} (HxW) pixels to")
            if do_center_crop:
                _check_output_pixels((crop_h, crop_w), f"{name}: `crop_size`")
            resized_sizes.append(resized)
            crops.append(tuple(zip(_center_crop_slices(resized[0], crop_h), _center_crop_slices(resized[1], crop_w))))
            output_sizes.append((_channel_count(image), crop_h, crop_w))
        same_shape = len(set(output_sizes)) == 1
        if not same_shape and not do_pad and return_tensors is not None:
            raise ValueError(
                f"The images come out in different sizes {sorted(set(output_sizes))} (no center crop), so they cannot "
                "be stacked into one tensor: pass `do_pad=True`, process them one at a time, or `return_tensors=None`."
            )
        stacked = same_shape or do_pad
        batch_shape = tuple(max(sizes) for sizes in zip(*output_sizes))
        if do_pad:
            _check_output_pixels(batch_shape[1:], "`do_pad`: padding the batch to its largest height and width,")
        if stacked:  # each image is written straight into the batch; `do_pad` padding stays 0 (labels: 255)
            pixel_values = (np.empty if same_shape else np.zeros)((len(images), *batch_shape), dtype=np.float32)
            outputs = [pixel_values[i, :c, :h, :w] for i, (c, h, w) in enumerate(output_sizes)]
        else:
            outputs = [np.empty(shape, dtype=np.float32) for shape in output_sizes]
        if segmentation_maps is not None:
            if stacked:
                labels = np.full((len(images), *batch_shape[1:]), IGNORE_INDEX, dtype=np.int64)
                label_outputs = [labels[i, :h, :w] for i, (_, h, w) in enumerate(output_sizes)]
            else:
                label_outputs = [np.full((h, w), IGNORE_INDEX, dtype=np.int64) for _, h, w in output_sizes]

        affine = {}  # per channel count: out = value * scale + shift, the fused rescale + normalize
        for i, (image, resized, (kept, placed)) in enumerate(zip(images, resized_sizes, crops)):
            channels, height, width = output_sizes[i]
            if channels not in affine:
                affine[channels] = _rescale_normalize_affine(
                    channels, do_rescale, rescale_factor, do_normalize, image_mean, image_std
                )
            scale, shift = affine[channels]
            window = outputs[i][(slice(None), *placed)]
            if window.shape[1:] != (height, width):  # torchvision's crop pads with black, before the normalization
                outputs[i][...] = shift
            np.multiply(
                _resize(image, resized, resample)[kept].transpose(2, 0, 1), scale, out=window, casting="unsafe"
            )
            window += shift
            if segmentation_maps is not None:
                label_map = _resize_label_map(segmentation_maps[i], resized)[kept]
                if do_reduce_labels:
                    label_map = np.where((label_map == 0) | (label_map == IGNORE_INDEX), IGNORE_INDEX, label_map - 1)
                label_outputs[i][placed] = label_map

        data = {"pixel_values": pixel_values if stacked else outputs}
        if segmentation_maps is not None:
            data["labels"] = labels if stacked else label_outputs
        if do_pad:
            pixel_mask = np.zeros((len(images), *batch_shape[1:]), dtype=np.int64)
            for mask, (_, h, w) in zip(pixel_mask, output_sizes):
                mask[:h, :w] = 1
            data["pixel_mask"] = pixel_mask
        if return_tensors is None and stacked:
            data = {key: list(value) for key, value in data.items()}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def post_process_semantic_segmentation(
        self, outputs, target_sizes=None, return_segmentation_scores: bool = False
    ) -> list:
        """Turn segmentation logits into one `(height, width)` map of class ids (int64 tensor) per image.

        Args:
            outputs: the model output (with `logits` of shape `(batch, num_labels, h, w)`), a dict with `"logits"`,
                or the logits themselves.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(batch, 2)`, *optional*):
                `(height, width)` of each original image; the logits are resized to it (bilinear,
                `align_corners=False`) before the arg-max. If unset, maps keep the logits' size.
            return_segmentation_scores (`bool`, *optional*, defaults to `False`):
                Return per image a [`SemanticSegmentationPostProcessorOutput`] with `segmentation` (the map) and
                `segmentation_scores` (the `(num_labels, height, width)` logits it is the arg-max of).
        """
        logits = outputs if torch.is_tensor(outputs) or isinstance(outputs, np.ndarray) else outputs["logits"]
        logits = torch.as_tensor(logits)
        if logits.ndim != 4:
            raise ValueError(f"`logits` must be (batch, num_labels, height, width), got shape {tuple(logits.shape)}.")
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(
                f"`target_sizes`: make sure that you pass in as many target sizes as the batch dimension of the "
                f"logits ({len(logits)}), got {len(target_sizes)}."
            )
        results = []
        for i, scores in enumerate(logits):
            if target_sizes is not None:
                target = tuple(int(v) for v in target_sizes[i])
                if scores.dtype in (torch.float16, torch.bfloat16) and scores.device.type == "cpu":
                    scores = scores.float()
                if tuple(scores.shape[-2:]) != target:
                    scores = F.interpolate(scores[None], size=target, mode="bilinear", align_corners=False)[0]
            segmentation = scores.argmax(dim=0)
            if return_segmentation_scores:
                segmentation = SemanticSegmentationPostProcessorOutput(
                    data={"segmentation": segmentation, "segmentation_scores": scores}
                )
            results.append(segmentation)
        return results


# The class's old name. Saved configs now name `PvtHfImageProcessor`: the old name is also transformers' own PVT
# processor (squash-resize, no crop), which transformers would load silently whenever pvt_hf is not imported.
PvtImageProcessor = PvtHfImageProcessor
PvtImageProcessorKwargs = PvtHfImageProcessorKwargs  # the names before the rename


def _describe(x) -> str:
    if isinstance(x, (np.ndarray, torch.Tensor)):
        return f"a {type(x).__module__.split('.')[0]} array of shape {tuple(x.shape)} and dtype {x.dtype}"
    if isinstance(x, PIL.Image.Image):
        return f"a PIL image of mode {x.mode!r} and size {x.size}"
    return f"an object of type {type(x).__name__}"


def _name_with_file(name: str, image) -> str:
    """How errors name an input: "`images[0]`", with its file where it came from one."""
    if isinstance(image, (str, os.PathLike)):
        return f"`{name}` ({os.fspath(image)})"
    filename = getattr(image, "filename", "") if isinstance(image, PIL.Image.Image) else ""
    return f"`{name}` ({filename})" if filename else f"`{name}`"


def _check_output_pixels(size: tuple[int, int], what: str) -> None:
    """Refuse, before allocating it, an output image larger than `MAX_OUTPUT_PIXELS`."""
    height, width = size
    if MAX_OUTPUT_PIXELS is not None and height * width > MAX_OUTPUT_PIXELS:
        raise ValueError(
            f"{what} {height}x{width} pixels would exceed the limit of {MAX_OUTPUT_PIXELS:,} pixels "
            "(`image_processing_pvt.MAX_OUTPUT_PIXELS`, Pillow's decompression-bomb bound): an image this elongated "
            "cannot be resized as the model's transform asks. Crop it first, or raise the limit."
        )


def _check_normalization(image_mean, image_std, channels: int | None) -> None:
    """`image_mean` finite and `image_std` positive and finite, with 1 value or one per channel (when known)."""
    for key, values in (("image_mean", image_mean), ("image_std", image_std)):
        try:
            array = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(
                f"`{key}` must be a number or a list of numbers, one per channel, got {values!r}."
            ) from None
        if key == "image_std" and not (np.isfinite(array) & (array > 0)).all():
            raise ValueError(
                f"`image_std` must hold positive, finite numbers (it divides the pixels), got {values!r}."
            )
        if not np.isfinite(array).all():
            raise ValueError(f"`{key}` must hold finite numbers, got {values!r}.")
        if array.size == 0 or (channels is not None and array.size not in (1, channels)):
            raise ValueError(
                f"`{key}` has {array.size} values but the images have {channels} channels: give one value per "
                "channel (or one for all)."
            )


def _flatten(inputs, name: str, image_ndim: int, batch_size: int | None = None) -> list[tuple[str, object]]:
    """(Nested) lists and batched arrays as a flat list of `(name, item)`, e.g. `("images[1]", array)`.

    An array with one dimension more than an item is a batch; for label maps only when its first dimension is the
    number of images and it is not `(H, W, 1)`.
    """
    if inputs is None:
        raise ValueError(f"`{name}`: expected an image or a list of images, got None.")
    flat = []

    def visit(x, label):
        if isinstance(x, (list, tuple)):
            if len(x) == 0:
                raise ValueError(f"`{label}`: expected at least one image, got an empty {type(x).__name__}.")
            if all(isinstance(v, (int, float, np.number)) for v in x):
                raise ValueError(f"`{label}`: expected images (PIL, numpy or torch), got a list of numbers.")
            for i, item in enumerate(x):
                visit(item, f"{label}[{i}]")
        elif (
            isinstance(x, (np.ndarray, torch.Tensor))
            and x.ndim == image_ndim + 1
            and (image_ndim == 3 or (x.shape[-1] != 1 and x.shape[0] == batch_size))
        ):
            if x.shape[0] == 0:
                raise ValueError(f"`{label}`: expected at least one image, got an empty batch {_describe(x)}.")
            flat.extend((f"{label}[{i}]", item) for i, item in enumerate(x))
        else:
            flat.append((label, x))

    visit(inputs, name)
    return flat


def _open_image(path: str, name: str, keep_mode: bool = False) -> PIL.Image.Image:
    """The decoded image (EXIF orientation applied), in RGB, or with `keep_mode` (`do_convert_rgb=False`) a local
    file in its own mode (grayscale, RGBA, ...) so that its channels are kept. URLs always come in RGB."""
    if path.startswith(("http://", "https://")):
        return load_image(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`{name}`: no such file: {path!r}")
    try:  # decoded now, so a broken file fails here
        if keep_mode:
            with PIL.Image.open(path) as image:
                return PIL.ImageOps.exif_transpose(image)  # a decoded copy, also without an orientation tag
        return load_image(path)
    except Exception as error:
        raise ValueError(f"`{name}`: cannot read image file {path!r}: {error}") from error


def _channels_last(array: np.ndarray, input_data_format, channels_first_if_ambiguous: bool, name: str) -> np.ndarray:
    if array.ndim == 2:
        return array[..., None]
    if array.ndim != 3:
        raise ValueError(
            f"`{name}`: expected a 2-D (H, W) or 3-D (H, W, C) / (C, H, W) image, got {_describe(array)}."
        )
    first, last = array.shape[0] in (1, 3, 4), array.shape[-1] in (1, 3, 4)
    if input_data_format is not None:
        first = ChannelDimension(input_data_format) == ChannelDimension.FIRST
    elif not (first or last):
        raise ValueError(
            f"`{name}`: expected an image with 1, 3 or 4 channels laid out as (H, W, C) or (C, H, W), got "
            f"{_describe(array)}."
        )
    elif first and last:
        first = channels_first_if_ambiguous
    array = np.moveaxis(array, 0, -1) if first else array
    if 0 in array.shape:
        raise ValueError(f"`{name}`: expected a non-empty image, got {_describe(array)}.")
    return array


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """The 8-bit values the official (8-bit, PIL) pipeline would see."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":  # the [0, 1] encoding of 8-bit values (e.g. torchvision's ToTensor output)
        array = np.nan_to_num(array.astype(np.float32))
        if array.max() > 1.0 + 1e-3 or array.min() < -1e-3:
            logger.warning_once(f"`{name}`: float images are expected in [0, 1]; values outside are clipped.")
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:  # 16-bit data, scaled to 8 bits with rounding
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise ValueError(f"`{name}`: expected an integer, boolean or float image, got {_describe(array)}.")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        raise ValueError(
            f"`{name}`: integer images must hold values in [0, 255] (or be uint16 for 16-bit data); got values in "
            f"[{low}, {high}] with dtype {array.dtype}."
        )
    return array.astype(np.uint8)


def _label_map(label_map, name: str) -> np.ndarray:
    """A label map as a 2-D int32 array of class ids."""
    if isinstance(label_map, (str, os.PathLike)):
        label_map = PIL.Image.open(label_map)
    if isinstance(label_map, PIL.Image.Image):
        if label_map.mode not in ("1", "L", "P", "I") and not label_map.mode.startswith("I;16"):
            raise ValueError(
                f"`{name}`: expected a single-channel label map (PIL mode L, P, I or I;16), got {_describe(label_map)}."
            )
        label_map = np.asarray(label_map)
    elif torch.is_tensor(label_map):
        label_map = label_map.detach().cpu().numpy()
    elif not isinstance(label_map, np.ndarray):
        raise ValueError(f"`{name}`: expected a PIL image, numpy or torch label map, got {_describe(label_map)}.")
    if label_map.ndim == 3 and 1 in (label_map.shape[0], label_map.shape[-1]):
        label_map = label_map[0] if label_map.shape[0] == 1 else label_map[..., 0]
    if label_map.ndim != 2 or 0 in label_map.shape:
        raise ValueError(f"`{name}`: expected a non-empty 2-D (H, W) label map, got {_describe(label_map)}.")
    if label_map.dtype.kind not in "biuf" or (
        label_map.dtype.kind == "f" and (label_map != np.round(label_map)).any()
    ):
        raise ValueError(f"`{name}`: expected integer class ids, got {_describe(label_map)}.")
    return label_map.astype(np.int32)


def _height_width(image) -> tuple[int, int]:
    return (image.height, image.width) if isinstance(image, PIL.Image.Image) else image.shape[:2]


def _channel_count(image) -> int:
    return len(image.getbands()) if isinstance(image, PIL.Image.Image) else image.shape[-1]


def _resized_size(height: int, width: int, size: SizeDict, size_divisor: int | None) -> tuple[int, int]:
    """Output (height, width) of the resize step.

    `{"shortest_edge": s}` is torchvision's `Resize(s)` (long side `int(s * long / short)`); with `"longest_edge"`
    it is mmcv's keep-ratio `imrescale` (scale `min(long_edge / long, short_edge / short)`, sides rounded half up);
    `size_divisor` then rounds both sides up, as the official segmentation `AlignResize`.
    """
    if size.height and size.width:
        new_height, new_width = size.height, size.width
    elif size.longest_edge:
        scale = min(size.longest_edge / max(height, width), size.shortest_edge / min(height, width))
        new_height, new_width = int(height * scale + 0.5), int(width * scale + 0.5)
    elif width <= height:
        new_height, new_width = int(size.shortest_edge * height / width), size.shortest_edge
    else:
        new_height, new_width = size.shortest_edge, int(size.shortest_edge * width / height)
    if size_divisor:
        new_height, new_width = (-(-side // size_divisor) * size_divisor for side in (new_height, new_width))
    return max(1, new_height), max(1, new_width)


def _center_crop_slices(length: int, crop: int) -> tuple[slice, slice]:
    """torchvision's `CenterCrop` along one axis: the pixels kept, and where they are placed in the output.

    A crop larger than the image pads it with `(crop - length) // 2` zeros before, as torchvision does.
    """
    if crop <= length:
        start = int(round((length - crop) / 2.0))
        return slice(start, start + crop), slice(0, crop)
    start = (crop - length) // 2
    return slice(0, length), slice(start, start + length)


def _resize(image, size: tuple[int, int], resample: int) -> np.ndarray:
    """Pillow resize on 8 bits to (height, width), as an (H, W, C) uint8 array; other than RGB channel by channel."""
    height, width = size
    if isinstance(image, np.ndarray):
        if image.shape[:2] == size:
            return image
        if image.shape[-1] != 3:  # e.g. RGBA: Pillow would premultiply the alpha
            channels = [PIL.Image.fromarray(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])]
            return np.stack([np.asarray(c.resize((width, height), resample)) for c in channels], axis=-1)
        image = PIL.Image.fromarray(image)
    if image.size != (width, height):
        image = image.resize((width, height), resample)
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


def _resize_label_map(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if label_map.shape == size:
        return label_map
    resized = PIL.Image.fromarray(label_map).resize(size[::-1], PIL.Image.NEAREST)  # mode "I": any int32 id
    return np.asarray(resized)


def _rescale_normalize_affine(channels, do_rescale, rescale_factor, do_normalize, image_mean, image_std):
    """Per-channel `(scale, shift)` with `value * scale + shift` = rescale then normalize, shaped `(C, 1, 1)`."""
    factor = rescale_factor if do_rescale else 1.0
    mean, std = np.zeros(channels), np.ones(channels)
    if do_normalize:
        _check_normalization(image_mean, image_std, channels)
        mean[:] = np.asarray(image_mean, dtype=np.float64).reshape(-1)
        std[:] = np.asarray(image_std, dtype=np.float64).reshape(-1)
    scale, shift = factor / std, -mean / std
    return scale.astype(np.float32)[:, None, None], shift.astype(np.float32)[:, None, None]


__all__ = ["PvtHfImageProcessor", "PvtImageProcessor"]
