#!/usr/bin/env python
"""A Gradio app (ready for a Hugging Face Space) that shows what a PVT model sees.

Upload an image: a classifier shows its top-k labels and a Grad-CAM of the top class, a semantic-segmentation model
the coloured mask with a legend of the classes present; every model shows the attention map of the chosen stage and
layer (the mean over queries, or the query under the pixel you click on the image). The model is a folder written by
`save_pretrained` / `pvt-hf convert`, or a Hub id; the default is the tiny digits classifier shipped inside pvt-hf
(trained from scratch on scikit-learn's 8x8 digits, not an official checkpoint), so the app runs offline.

    python examples/space/app.py [--model FOLDER_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]
"""

from __future__ import annotations

import argparse
import os
import threading

import gradio as gr

import pvt_hf  # noqa: F401 - registers PVT with transformers' Auto classes
from pvt_hf.tools.demo import DEMO_DIR
from pvt_hf.tools.evaluation import load_model, read_image
from pvt_hf.tools.visualization import (
    attention_picture,
    cam_picture,
    default_map_size,
    find_encoder,
    key_layout,
    segmentation_picture,
    whole_image_inputs,
)
from pvt_hf_cli._common import check_model_argument


TITLE = "PVT: what the model sees"
REDUCTIONS = {"conv": "strided reduction, sr {size}", "pool": "v2-linear pool", "none": "no reduction"}
_models: dict[str, tuple] = {}
_loading = threading.Lock()


def load(model_id: str) -> tuple:
    """(model, image processor, task) of `model_id`, loaded once; a readable gr.Error if it is not a PVT model."""
    model_id = (model_id or "").strip()
    if not model_id:
        raise gr.Error("Enter a model folder or a Hub model id.")
    with _loading:
        if model_id not in _models:
            try:
                check_model_argument(model_id, "model")
                _models[model_id] = load_model(model_id, argument="model", command="this app")
            except Exception as error:  # any loading failure becomes a message in the page
                raise gr.Error(f"Cannot load the model {model_id}: {' '.join(str(error).split())}") from error
    return _models[model_id]


def describe(model_id: str):
    """The model's summary line and the stage / layer controls that fit it."""
    model, processor, task = load(model_id)
    encoder = find_encoder(model)
    depths = [len(stage.layers) for stage in encoder.stages]
    config = model.config
    variant = "v1" if config.version == 1 else ("v2-linear" if config.linear_attention else "v2")
    summary = (
        f"**{os.path.basename(model_id.rstrip('/')) or model_id}**: PVT {variant} {task}, {config.num_labels} classes, "
        f"depths {depths}, spatial reduction {list(config.sr_ratios)}"
        + (
            f" (v2-linear: keys from a {config.linear_pool_size}x{config.linear_pool_size} pool)"
            if config.linear_attention
            else ""
        )
        + f". Maps are computed with the image's short side at {default_map_size(processor)} px by default."
    )
    is_classifier = task == "image-classification"
    return (
        summary,
        gr.update(maximum=len(depths)),
        gr.update(maximum=max(depths)),
        gr.update(value=default_map_size(processor)),
        gr.update(visible=is_classifier),
        gr.update(visible=is_classifier),
        gr.update(visible=not is_classifier),
        gr.update(visible=not is_classifier),
    )


def open_image(file_path):
    if file_path is None:
        raise gr.Error("Upload an image file (PNG, JPEG, WebP, BMP, TIFF, ...).")
    try:
        return read_image(file_path)
    except OSError as error:  # the decoder's own reason, with the upload's name instead of its temporary path
        name, cause = os.path.basename(str(file_path)), error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        reason = " ".join(str(cause).split()).replace(str(file_path), name)
        raise gr.Error(
            f"{name} is not an image this app can read ({reason}). Upload a PNG, JPEG, WebP, ... image."
        ) from error


def analyse(model_id, file_path, stage, layer, map_size, top_k, query):
    """Every output for the uploaded image: preview, labels, Grad-CAM, segmentation overlay and legend, attention."""
    model, processor, task = load(model_id)
    image = open_image(file_path)
    encoder = find_encoder(model)
    stage = int(min(max(stage, 1), len(encoder.stages)))
    depth = len(encoder.stages[stage - 1].layers)
    layer = int(min(max(layer, 1), depth))
    if query is not None and not (0 <= query[0] < image.height and 0 <= query[1] < image.width):
        query = None  # a pixel of a previous image
    labels = cam = overlay_picture = legend = None
    if task == "image-classification":
        import torch

        with torch.no_grad():
            logits = model(**processor(image, return_tensors="pt")).logits[0]
        probabilities = logits.softmax(-1)
        top = probabilities.topk(min(int(top_k), probabilities.numel()))
        labels = {model.config.id2label[int(i)]: float(p) for p, i in zip(top.values, top.indices)}
        cam = cam_picture(model, processor, image, map_size=int(map_size))
    else:
        overlay_picture, entries = segmentation_picture(model, processor, image)
        legend = "\n".join(f"- {entry.label}: {entry.fraction:.1%} of the labelled pixels" for entry in entries)
    attention = attention_picture(model, processor, image, stage, layer, query=query, map_size=int(map_size))
    input_size = tuple(whole_image_inputs(processor, image, int(map_size)).shape[-2:])
    layout = key_layout(model, stage, layer, *input_size)
    where = "the mean over all queries" if query is None else f"the query at pixel (y={query[0]}, x={query[1]})"
    caption = (
        f"Stage {stage}, layer {layer}: {where}. At {input_size[0]}x{input_size[1]} px the stage has "
        f"{layout.stage_grid[0]}x{layout.stage_grid[1]} tokens and {layout.key_grid[0]}x{layout.key_grid[1]} keys "
        f"({REDUCTIONS[layout.reduction].format(size=layout.size)})."
    )
    return image, labels, cam, overlay_picture, legend, attention, caption, query


def pick_query(evt: gr.SelectData):
    """A click on the preview: (y, x) of the clicked pixel (Gradio gives [x, y])."""
    x, y = evt.index
    return (int(y), int(x))


def build(default_model: str) -> gr.Blocks:
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nUpload an image. Classifiers show their top labels and a Grad-CAM of the top class; "
            "segmentation models the predicted mask with a legend. The attention map shows where the queries of "
            "the chosen stage and layer look, on PVT's spatially *reduced* keys; **click the image** to see one "
            "query's attention. The default model is the tiny digits classifier shipped with pvt-hf (trained from "
            "scratch on 8x8 digits, not an official PVT checkpoint)."
        )
        with gr.Row():
            model_box = gr.Textbox(value=default_model, label="Model folder or Hub id", scale=4, elem_id="model-box")
            load_button = gr.Button("Load model", scale=1, elem_id="load-model")
        summary = gr.Markdown(elem_id="model-summary")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Image file", type="filepath", elem_id="image-upload")
                preview = gr.Image(
                    label="Image (click a pixel to pick a query)", type="pil", interactive=False, elem_id="preview"
                )
                with gr.Row():
                    stage = gr.Slider(1, 4, value=1, step=1, label="Stage")
                    layer = gr.Slider(1, 8, value=1, step=1, label="Layer")
                with gr.Row():
                    map_size = gr.Slider(64, 768, value=224, step=16, label="Map input size (short side, px)")
                    top_k = gr.Slider(1, 10, value=5, step=1, label="Top-k labels")
                clear_query = gr.Button("Mean over all queries")
            with gr.Column():
                labels = gr.Label(label="Top-k labels", elem_id="labels")
                cam = gr.Image(label="Grad-CAM of the top class", type="pil", interactive=False, elem_id="cam")
                overlay = gr.Image(
                    label="Segmentation", type="pil", interactive=False, visible=False, elem_id="overlay"
                )
                legend = gr.Markdown(visible=False, elem_id="legend")
                attention = gr.Image(label="Attention map", type="pil", interactive=False, elem_id="attention")
                caption = gr.Markdown(elem_id="attention-caption")
        query = gr.State(None)

        describe_outputs = [summary, stage, layer, map_size, labels, cam, overlay, legend]
        analyse_inputs = [model_box, upload, stage, layer, map_size, top_k, query]
        analyse_outputs = [preview, labels, cam, overlay, legend, attention, caption, query]
        demo.load(describe, [model_box], describe_outputs)
        load_button.click(describe, [model_box], describe_outputs).success(
            analyse_on_upload, analyse_inputs, analyse_outputs
        )
        upload.upload(lambda: None, None, query).then(analyse, analyse_inputs, analyse_outputs)
        for control in (stage, layer, map_size, top_k):
            control.release(analyse_on_upload, analyse_inputs, analyse_outputs)
        preview.select(pick_query, None, query).then(analyse, analyse_inputs, analyse_outputs)
        clear_query.click(lambda: None, None, query).then(analyse_on_upload, analyse_inputs, analyse_outputs)
    return demo


def analyse_on_upload(model_id, file_path, *rest):
    """`analyse` once an image is there; nothing to do before."""
    if file_path is None:
        return (gr.update(),) * 8
    return analyse(model_id, file_path, *rest)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=str(DEMO_DIR), help="model folder or Hub id (default: the shipped digits model)"
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    args = parser.parse_args(argv)
    try:
        load(args.model)  # a wrong --model fails here, before the page is served
    except gr.Error as error:
        parser.error(error.message)
    build(args.model).queue().launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
