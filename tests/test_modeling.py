"""Behaviour of the models on their real paths: shapes, sizes, errors, attention, training features, saving."""

import pytest
import torch
from conftest import VARIANTS, tiny_config
from transformers import AutoBackbone, AutoModel, AutoModelForImageClassification

from pvt_hf import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation, PvtModel


@pytest.fixture(params=list(VARIANTS))
def config(request):
    torch.manual_seed(0)
    return VARIANTS[request.param]()


@pytest.mark.parametrize("height, width", [(224, 224), (77, 131), (160, 96)])
def test_any_input_size_and_output_shapes(config, height, width):
    model = PvtModel(config).eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, 3, height, width), output_hidden_states=True)
    grids = model.encoder.stage_grid_sizes(height, width)
    assert [tuple(h.shape) for h in outputs.hidden_states] == [
        (2, size, *grid) for size, grid in zip(config.hidden_sizes, grids)
    ]
    assert outputs.last_hidden_state.shape == (2, 64, *grids[-1])
    assert outputs.pooler_output.shape == (2, 64)
    if config.version == 2:  # overlapping patches: every stage halves the grid, rounding up
        assert grids[-1] == (-(-height // 32), -(-width // 32))


def test_batch_items_are_independent(config):
    model = PvtForImageClassification(config).eval()
    pixel_values = torch.randn(3, 3, 97, 71)
    with torch.no_grad():
        batched = model(pixel_values).logits
        single = torch.cat([model(pixel_values[i : i + 1]).logits for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(3, 64, 64), "4-D tensor"),
        (torch.randn(1, 1, 64, 64), "must have 3 channels"),
        (torch.randn(1, 3, 0, 64), "too small"),
    ],
)
def test_bad_input_gets_a_clear_error(config, pixel_values, message):
    model = PvtForImageClassification(config).eval()
    with pytest.raises(ValueError, match=message):
        model(pixel_values)


def test_too_small_message_names_the_minimum():
    model = PvtModel(tiny_config(1)).eval()
    with pytest.raises(ValueError, match="at least 32 pixels"):
        model(torch.randn(1, 3, 31, 64))
    model(torch.randn(1, 3, 32, 64))  # the minimum works


def test_attentions_eager_and_sdpa_agree(config):
    config._attn_implementation = "sdpa"
    model = PvtForImageClassification(config).eval()
    pixel_values = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        sdpa = model(pixel_values).logits
        outputs = model(pixel_values, output_attentions=True)
        model.config._attn_implementation = "eager"
        eager = model(pixel_values).logits
    torch.testing.assert_close(sdpa, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.logits, eager, rtol=1e-5, atol=1e-5)
    assert len(outputs.attentions) == sum(config.depths)
    first = outputs.attentions[0]
    assert first.shape[:3] == (2, 1, 24 * 16)  # (batch, heads of stage 1, stage-1 tokens)
    torch.testing.assert_close(first.sum(-1), torch.ones_like(first.sum(-1)))


def test_labels_give_the_cross_entropy_loss(config):
    model = PvtForImageClassification(config).eval()
    pixel_values, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 4, 2])
    outputs = model(pixel_values, labels=labels)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(outputs.logits, labels))


def test_gradient_checkpointing_gives_the_same_gradients(config):
    model = PvtForImageClassification(config).train()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    model(pixel_values, labels=labels).loss.backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    model(pixel_values, labels=labels).loss.backward()
    for name, parameter in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(parameter.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_stochastic_depth_and_dropout_only_in_training():
    config = tiny_config(2, drop_path_rate=0.5, hidden_dropout_prob=0.1)
    model = PvtForImageClassification(config)
    rates = [layer.drop_path.drop_prob for stage in model.pvt.encoder.stages for layer in stage.layers]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5) and rates == sorted(rates)
    pixel_values = torch.randn(2, 3, 64, 64)
    model.train()
    torch.manual_seed(1)
    first = model(pixel_values).logits
    second = model(pixel_values).logits
    assert not torch.allclose(first, second)
    model.eval()
    torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits)


def test_v1_position_embeddings_follow_the_official_rule():
    model = PvtModel(tiny_config(1)).eval()
    stage = model.encoder.stages[0]
    positions = stage.position_embeddings
    assert stage.grid_size == 56
    # same grid: unchanged; same number of tokens on another grid (stage 1 only): unchanged, as the official code
    assert stage.interpolate_pos_encoding(positions, 56, 56) is positions
    assert stage.interpolate_pos_encoding(positions, 28, 112) is positions
    resized = stage.interpolate_pos_encoding(positions, 30, 46)
    assert resized.shape == (1, 30 * 46, 16)
    # the last stage keeps a row for the cls token
    assert model.encoder.stages[-1].position_embeddings.shape == (1, 7 * 7 + 1, 64)


def test_v1_backbone_has_no_cls_token_and_no_final_norm():
    config = tiny_config(1)
    assert PvtModel(config).cls_token is not None
    dense = PvtModel(config, add_pooling_layer=False)
    assert dense.cls_token is None and dense.layernorm is None
    assert not any("cls_token" in name for name, _ in PvtBackbone(config).named_parameters())


def test_backbone_out_features():
    config = tiny_config(2, out_features=["stage2", "stage4"])
    backbone = AutoBackbone.from_config(config).eval()
    assert isinstance(backbone, PvtBackbone)
    assert backbone.channels == [32, 64]
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in outputs.feature_maps] == [(1, 32, 8, 12), (1, 64, 2, 3)]
    assert outputs.hidden_states is None
    assert len(backbone(torch.randn(1, 3, 64, 96), output_hidden_states=True).hidden_states) == 4


def test_return_dict_false_gives_tuples(config):
    model = PvtForImageClassification(config).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 64), return_dict=False)
    assert isinstance(outputs, tuple) and outputs[0].shape == (1, 5)


def test_save_and_reload_through_auto_classes(config, tmp_path):
    model = PvtForImageClassification(config).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    base = AutoModel.from_pretrained(tmp_path).eval()
    pixel_values = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, model(pixel_values).logits)
        torch.testing.assert_close(base(pixel_values).pooler_output, model.pvt(pixel_values).pooler_output)


def test_segmentation_logits_loss_and_label_checks(config):
    model = PvtForSemanticSegmentation(config).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, config.num_labels, (2, 64, 96))
    labels[0, :5] = 255
    outputs = model(pixel_values, labels=labels)
    assert outputs.logits.shape == (2, config.num_labels, 16, 24)
    upsampled = torch.nn.functional.interpolate(outputs.logits, size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(upsampled, labels, ignore_index=255))
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 4\]"):
        model(pixel_values, labels=torch.full((2, 64, 96), 7))
    with pytest.raises(ValueError, match="batch_size 2"):
        model(pixel_values, labels=torch.zeros(64, 96, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        model(pixel_values, labels=torch.zeros(2, 64, 96))


def test_random_inputs_run_or_fail_clearly():
    """Random valid and invalid inputs and labels: outputs, or a ValueError naming `pixel_values` or `labels`."""
    import random

    rng = random.Random(0)
    models = {
        (version, head): head(VARIANTS[version]()).eval()
        for version in VARIANTS
        for head in (PvtForImageClassification, PvtForSemanticSegmentation)
    }
    for _ in range(40):
        (version, head), model = rng.choice(list(models.items()))
        shape = [
            rng.choice([0, 1, 2]),
            rng.choice([1, 3, 4]),
            rng.choice([0, 7, 31, 32, 65]),
            rng.choice([16, 40, 64]),
        ]
        if rng.random() < 0.15:
            shape = shape[1:]
        pixel_values = torch.randn(*shape).to(rng.choice([torch.float32, torch.float64, torch.bfloat16]))
        labels = None
        if rng.random() < 0.5 and len(shape) == 4:
            label_shape = (shape[0],) if head is PvtForImageClassification else (shape[0], shape[2], shape[3])
            labels = torch.randint(-2, 8, label_shape).to(rng.choice([torch.int64, torch.int32, torch.uint8]))
        try:
            with torch.no_grad():
                outputs = model(pixel_values, labels=labels)
        except ValueError as error:
            assert "`pixel_values`" in str(error) or "`labels`" in str(error), (shape, error)
            continue
        assert torch.isfinite(outputs.logits.float()).all()
