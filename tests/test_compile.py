"""torch.compile: one graph (fullgraph=True, no graph breaks), eager's outputs, no recompilation across input sizes."""

import pytest
import torch
import torch._dynamo
from conftest import VARIANTS, tiny_config
from torch._dynamo.utils import counters

from pvt_hf import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def test_inductor_fullgraph_matches_eager():
    """The real compiler (inductor) on a tiny PVT v2: a single graph, the eager outputs (fused path) within 1e-5."""
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config(2)).eval()
    compiled = torch.compile(model, fullgraph=True)
    pixel_values = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        expected = model(pixel_values=pixel_values).logits
        got = compiled(pixel_values=pixel_values).logits
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-5


@pytest.mark.parametrize("name", list(VARIANTS))
def test_no_graph_breaks_and_no_recompilation_after_two_sizes(name):
    """Dynamo on every variant (the eager backend: graph capture and guards are what is tested, quickly). After two
    calls of different batch and size (the second makes the shapes dynamic), no other size recompiles. (Batch 1
    is dynamo's usual exception: dynamic graphs assume sizes >= 2, so batch 1 after batch 2 compiles once more.)"""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS[name]()).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.inference_mode():
        compiled(pixel_values=torch.randn(2, 3, 64, 64))
        compiled(pixel_values=torch.randn(3, 3, 96, 96))
        graphs = counters["stats"]["unique_graphs"]
        with torch._dynamo.config.patch(error_on_recompile=True):
            for batch, height, width in [(4, 224, 224), (2, 77, 131), (3, 160, 96), (2, 320, 256)]:
                pixel_values = torch.randn(batch, 3, height, width)
                got = compiled(pixel_values=pixel_values).logits
                expected = model(pixel_values=pixel_values).logits
                assert ((got - expected).norm() / expected.norm()).item() <= 1e-5
    assert counters["stats"]["unique_graphs"] == graphs <= 2
    assert not counters["graph_break"]


def test_training_step_compiles_without_graph_breaks():
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(tiny_config(2)).train()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    pixel_values = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 5, (2, 64, 96))
    compiled(pixel_values=pixel_values, labels=labels).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert not counters["graph_break"]


@pytest.mark.parametrize("model_class", [PvtBackbone, PvtForSemanticSegmentation], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_backbone_and_segmentation_compile_to_one_graph(model_class, name):
    """Their heads always record the stage maps (output-capturing hooks, installed at construction): no graph break."""
    torch.manual_seed(0)
    config = VARIANTS[name](out_indices=[0, 1, 2, 3]) if model_class is PvtBackbone else VARIANTS[name]()
    model = model_class(config).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        got, expected = compiled(pixel_values=pixel_values), model(pixel_values=pixel_values)
    for got_map, expected_map in zip(got.to_tuple()[0], expected.to_tuple()[0]):
        assert ((got_map - expected_map).norm() / expected_map.norm()).item() <= 1e-5
    assert not counters["graph_break"]
