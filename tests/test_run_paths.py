"""Every way transformers users run a model, for v1, v2 and v2-linear, classification, backbone and segmentation:
device maps, offloading (accelerate hooks, meta parameters), empty-weight init and dispatch, bf16/fp16 weights,
autocast inference and training, PEFT LoRA. Outputs within fp32 rounding, or bf16/fp16 rounding, of the fp32 model."""

import accelerate
import peft
import pytest
import torch
from conftest import VARIANTS, relative_error
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForSemanticSegmentation

from pvt_hf import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation


TASKS = {
    "classification": (PvtForImageClassification, AutoModelForImageClassification),
    "backbone": (PvtBackbone, PvtBackbone),
    "segmentation": (PvtForSemanticSegmentation, AutoModelForSemanticSegmentation),
}
BF16_TOLERANCE, FP16_TOLERANCE = 3e-2, 5e-3  # relative; random tiny models, errors of a few bf16/fp16 ulps
PIXEL_VALUES = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))


def main_output(outputs) -> torch.Tensor:
    if hasattr(outputs, "feature_maps"):
        return torch.cat([feature_map.flatten(1) for feature_map in outputs.feature_maps], dim=1)
    return outputs.logits


def run(model, pixel_values=PIXEL_VALUES) -> torch.Tensor:
    with torch.no_grad():
        return main_output(model(pixel_values.to(model.dtype))).float()


@pytest.fixture(params=[(variant, task) for variant in VARIANTS for task in TASKS], ids="-".join)
def saved(request, tmp_path):
    """(model class, Auto class, folder, fp32 reference output) of a tiny random model saved with save_pretrained."""
    variant, task = request.param
    model_class, auto_class = TASKS[task]
    torch.manual_seed(0)
    config = VARIANTS[variant](out_indices=[0, 1, 2, 3]) if task == "backbone" else VARIANTS[variant]()
    model = model_class(config).eval()
    model.save_pretrained(tmp_path / "model")
    return model_class, auto_class, tmp_path / "model", run(model)


def test_device_maps_and_offloading(saved, tmp_path):
    """device_map="auto"; a device map that offloads to disk; accelerate's disk_offload (also with gradients on) and
    cpu_offload. Offloaded parameters sit on `meta` behind accelerate hooks: the plain modules run them."""
    model_class, auto_class, folder, expected = saved
    model = auto_class.from_pretrained(folder, device_map="auto").eval()
    assert relative_error(run(model), expected) <= 1e-6

    offloaded = auto_class.from_pretrained(
        folder, device_map="auto", max_memory={"cpu": 20_000}, offload_folder=tmp_path / "offload"
    ).eval()
    assert any(parameter.device.type == "meta" for parameter in offloaded.parameters())
    assert relative_error(run(offloaded), expected) <= 1e-6

    on_disk = accelerate.disk_offload(model_class.from_pretrained(folder).eval(), tmp_path / "disk")
    assert relative_error(run(on_disk), expected) <= 1e-6
    with torch.enable_grad():
        assert relative_error(main_output(on_disk(PIXEL_VALUES)).detach(), expected) <= 1e-6

    in_cpu_memory = accelerate.cpu_offload(model_class.from_pretrained(folder).eval(), execution_device="cpu")
    assert relative_error(run(in_cpu_memory), expected) <= 1e-6


def test_empty_weights_then_load_checkpoint_and_dispatch(saved):
    model_class, _, folder, expected = saved
    with accelerate.init_empty_weights():
        empty = model_class(model_class.config_class.from_pretrained(folder))
    assert all(parameter.device.type == "meta" for parameter in empty.parameters())
    model = accelerate.load_checkpoint_and_dispatch(empty, str(folder), device_map="auto").eval()
    assert relative_error(run(model), expected) <= 1e-6


def test_bf16_and_auto_dtype(saved, tmp_path):
    """`dtype=torch.bfloat16`, and `dtype="auto"` for a folder saved in bf16 (as `pvt-hf convert --dtype bf16`)."""
    model_class, auto_class, folder, expected = saved
    model = auto_class.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16
    assert relative_error(run(model), expected) <= BF16_TOLERANCE
    model.save_pretrained(tmp_path / "bf16")
    reloaded = auto_class.from_pretrained(tmp_path / "bf16", dtype="auto").eval()
    assert reloaded.dtype == torch.bfloat16
    assert torch.equal(run(reloaded), run(model))


def test_half_precision(saved):
    model_class, _, folder, expected = saved
    model = model_class.from_pretrained(folder).half().eval()
    assert relative_error(run(model), expected) <= FP16_TOLERANCE


def test_autocast_inference_and_training_step(saved):
    model_class, _, folder, expected = saved
    model = model_class.from_pretrained(folder).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert relative_error(run(model), expected) <= BF16_TOLERANCE
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = main_output(model(PIXEL_VALUES))
    loss = output.float().square().mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    optimizer.step()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_peft_lora_trains_and_merges(variant):
    """LoRA on the attention and MLP linears: a few steps lower the loss; the merged model gives the unmerged
    model's outputs (the merged one runs the fused kernels again, the wrapped one the plain modules)."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS[variant]())
    lora = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["query", "key_value", "output", "fc1", "fc2"],
        modules_to_save=["classifier"],
    )
    wrapped = peft.get_peft_model(model, lora).train()
    trainable = [parameter for parameter in wrapped.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    pixel_values, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    losses = []
    for _ in range(4):
        loss = wrapped(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    wrapped.eval()
    unmerged = run(wrapped, pixel_values)
    merged = wrapped.merge_and_unload()
    assert relative_error(run(merged, pixel_values), unmerged) <= 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_frozen_model_with_input_require_grads_and_gradient_checkpointing(variant):
    """What PEFT and frozen-backbone training do: `enable_input_require_grads` hooks the input embeddings (which must
    return a tensor), so gradients reach the trainable adapters through checkpointed layers."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS[variant]())
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["query", "fc1"])).train()
    wrapped(pixel_values=torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 1])).loss.backward()
    # lora_B starts at zero (so lora_A gets no gradient yet): its gradients show that the adapters are reached
    lora_grads = [p.grad for name, p in wrapped.named_parameters() if "lora_B" in name]
    assert lora_grads and all(grad is not None and grad.abs().sum() > 0 for grad in lora_grads)


def test_auto_model_offloaded_base_model(tmp_path):
    """The bare encoder (AutoModel) offloaded, with the v1 cls token and final norm outside the stages."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v1"]()).eval()
    model.save_pretrained(tmp_path / "model")
    base = AutoModel.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        expected = base(PIXEL_VALUES).pooler_output
    offloaded = accelerate.disk_offload(AutoModel.from_pretrained(tmp_path / "model").eval(), tmp_path / "disk")
    with torch.no_grad():
        assert relative_error(offloaded(PIXEL_VALUES).pooler_output, expected) <= 1e-6
