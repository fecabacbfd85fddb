"""The fused CPU inference path (`pvt_hf.fused_ops`): the plain modules' outputs, chunked or not, and custom ops that
torch.compile can trace (fake kernels with the real kernels' shapes and strides)."""

import pytest
import torch
import torch._dynamo
from torch.library import opcheck
from torch.utils._python_dispatch import TorchDispatchMode

from pvt_hf import PvtForImageClassification, fused_ops

from test_modeling import VARIANTS

pytestmark = pytest.mark.skipif(not fused_ops.AVAILABLE, reason="this torch has no oneDNN kernels")


class OpLog(TorchDispatchMode):
    """The ops that run, by name."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def plain_logits(model, pixel_values):
    """The plain modules' path: gradients requested, so the fused kernels are not taken."""
    with torch.enable_grad():
        return model(pixel_values=pixel_values).logits.detach()


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("chunk_bytes", [fused_ops.MLP_CHUNK_BYTES, 4096, 64 << 10])
def test_fused_path_matches_the_plain_modules(name, chunk_bytes, monkeypatch):
    """Unchunked, in bands of rows (4 KiB: a few rows of one image) and in groups of whole images (64 KiB)."""
    monkeypatch.setattr(fused_ops, "MLP_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS[name](hidden_act="gelu")).eval()
    for batch, height, width in [(3, 77, 131), (1, 64, 64), (5, 96, 32)]:
        pixel_values = torch.randn(batch, 3, height, width)
        expected = plain_logits(model, pixel_values)
        with torch.inference_mode(), OpLog() as log:
            got = model(pixel_values=pixel_values).logits
        assert "mkldnn._linear_pointwise.binary" in log.names  # the residual adds run inside the GEMMs
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_hooked_layers_run_their_own_forward():
    """A forward hook (PEFT, accelerate offload) on an MLP layer is honoured, not bypassed by the fused op."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).eval()
    calls = []
    model.pvt.encoder.stages[0].layers[0].mlp.fc2.register_forward_hook(lambda *args: calls.append(1))
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        got = model(pixel_values=pixel_values).logits
    assert calls == [1]
    torch.testing.assert_close(got, plain_logits(model, pixel_values), rtol=1e-5, atol=1e-5)


def mlp_args(depthwise: bool, batch=2, height=5, width=7, channels=8, hidden=16):
    args = [torch.randn(batch, height * width, channels), torch.randn(batch, height * width, channels), height, width]
    args += [torch.randn(hidden, channels), torch.randn(hidden), "none" if depthwise else "gelu", "none"]
    args += [torch.randn(hidden, 1, 3, 3), torch.randn(hidden), "gelu", "tanh"] if depthwise else [None, None, "none", ""]
    return args + [torch.randn(channels, hidden), torch.randn(channels)]


@pytest.mark.parametrize(
    "op, args",
    [
        ("linear_pointwise", lambda: [torch.randn(2, 9, 8), torch.randn(16, 8), torch.randn(16), "gelu", "tanh"]),
        ("linear_pointwise", lambda: [torch.randn(2, 9, 8), torch.randn(16, 8), None, "relu", ""]),
        ("linear_add", lambda: [torch.randn(2, 9, 8), torch.randn(2, 9, 16), torch.randn(16, 8), torch.randn(16)]),
        (
            "convolution_pointwise",
            lambda: [
                fused_ops.tokens_to_map(torch.randn(2, 35, 8), 5, 7),
                torch.randn(8, 8, 2, 2),
                torch.randn(8),
                [0, 0],
                [2, 2],
                1,
                "none",
                "",
            ],
        ),
        ("mlp", lambda: mlp_args(depthwise=True)),
        ("mlp", lambda: mlp_args(depthwise=False)),
    ],
)
def test_custom_ops_are_traceable(op, args):
    """torch.library's own checks: schema, fake kernel (shapes and strides) against the real one, dynamic shapes."""
    opcheck(getattr(torch.ops.pvt_hf, op).default, args(), test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


def test_compiled_inference_runs_the_fused_ops():
    """A compiled model in inference calls the same fused kernels as eager (no fallback to the plain modules, which
    made compiling 0.7x as fast as eager); a training-mode graph has none of them."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).eval()
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append({str(node.target) for node in graph_module.graph.nodes if node.op == "call_function"})
        return graph_module.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=recording_backend, fullgraph=True)
    with torch.inference_mode():
        compiled(pixel_values=torch.randn(2, 3, 64, 64))
    assert {"pvt_hf.mlp", "pvt_hf.linear_add", "pvt_hf.convolution_pointwise"} <= graphs[0]
    model.train()
    compiled(pixel_values=torch.randn(2, 3, 64, 64))
    assert not any(target.startswith("pvt_hf.") for target in graphs[-1])
    torch._dynamo.reset()
