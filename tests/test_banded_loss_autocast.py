"""The Semantic FPN's labelled loss under bf16 autocast, lean path (the banded loss, `lean_training`) and plain
modules: each against the float32 loss, and against each other. The banded loss upsamples and scores autocast's bf16
logits in float32; the plain loss upsamples them in bf16 (`F.interpolate` keeps its input's dtype under autocast)
and scores them in float32. So under autocast the two paths are not the same to 1e-5, as they are in float32; each
is as close to the float32 loss as bf16 allows. The bounds are the measured values (torch 2.13 CPU, in the
comments) with headroom."""

import pytest
import torch
import torch.nn.functional as F
from conftest import VARIANTS
from conftest import relative_error as relative

from pvt_hf import PvtForSemanticSegmentation, lean_training


def labelled_step(model, pixel_values, labels, lean: bool, autocast: bool) -> dict[str, torch.Tensor]:
    """The loss, its gradient with respect to the logits and every parameter's gradient (as one vector)."""
    model.config.lean_training = lean
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = model(pixel_values=pixel_values, labels=labels)
    outputs.logits.retain_grad()
    outputs.loss.backward()
    parameters = torch.cat([p.grad.flatten() for p in model.parameters()])
    return {"loss": outputs.loss.detach(), "logits": outputs.logits.grad.float(), "parameters": parameters}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_labelled_loss_under_bf16_autocast(name):
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS[name](num_labels=5, classifier_dropout_prob=0.0)).train()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 96, generator=generator)
    labels = torch.randint(0, 5, (2, 61, 75), generator=generator)  # a non-integer bilinear scale
    labels[0, :10] = 255
    fp32 = labelled_step(model, pixel_values, labels, lean=False, autocast=False)
    autocast = {lean: labelled_step(model, pixel_values, labels, lean=lean, autocast=True) for lean in (True, False)}
    for result in autocast.values():
        assert result["loss"].dtype == torch.float32 and result["parameters"].dtype == torch.float32
        # against float32 (both paths alike; measured: loss <= 7.4e-4, logit gradients <= 1.04e-2, parameter
        # gradients <= 0.113: a tiny random model, whose gradients are small differences of bf16 products)
        assert relative(result["loss"], fp32["loss"]) <= 2e-3
        assert relative(result["logits"], fp32["logits"]) <= 3e-2
        assert relative(result["parameters"], fp32["parameters"]) <= 0.25
    # lean against plain under autocast (measured: loss <= 1.7e-5, logit gradients <= 1.9e-3, parameter gradients
    # <= 9.2e-3): close, but not the float32 paths' 1e-5
    assert relative(autocast[True]["loss"], autocast[False]["loss"]) <= 1e-4
    assert 1e-4 < relative(autocast[True]["logits"], autocast[False]["logits"]) <= 1e-2
    assert relative(autocast[True]["parameters"], autocast[False]["parameters"]) <= 3e-2


def test_on_the_same_bf16_logits_the_banded_loss_is_the_float32_loss():
    """Given the same bf16 logits, the banded loss is the float32 loss of those logits (measured: 0), and its logit
    gradient is closer to the float32 one (measured 1.6e-3, bf16's rounding of the gradient) than the plain loss's
    (2.3e-3), which upsamples in bf16 (its loss 1.7e-5 to 6.2e-5 from the float32 loss)."""
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 5, 16, 24, generator=generator)).bfloat16().requires_grad_(True)
    labels = torch.randint(0, 5, (2, 61, 75), generator=generator)
    labels[0, :10] = 255
    wide = logits.detach().float().requires_grad_(True)
    fp32 = F.cross_entropy(F.interpolate(wide, size=(61, 75), mode="bilinear"), labels, ignore_index=255)
    (fp32_grad,) = torch.autograd.grad(fp32, wide)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        banded = lean_training.upsampled_cross_entropy(logits, labels, 255)
        plain = F.cross_entropy(F.interpolate(logits, size=(61, 75), mode="bilinear"), labels, ignore_index=255)
    (banded_grad,) = torch.autograd.grad(banded, logits)
    (plain_grad,) = torch.autograd.grad(plain, logits)
    assert relative(banded, fp32) <= 1e-6 < relative(plain, fp32) <= 2e-4
    assert relative(banded_grad, fp32_grad) <= 4e-3
    assert relative(banded_grad, fp32_grad) < relative(plain_grad, fp32_grad)
