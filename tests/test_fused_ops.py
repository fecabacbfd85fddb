"""The fused CPU inference path (`pvt_hf.fused_ops`): the plain modules' outputs, chunked or not, where it applies and
where it must not, and custom ops that torch.compile can trace (fake kernels with the real kernels' shapes and
strides) in a namespace of their kernels' version."""

import importlib
import shutil
import sys

import pytest
import torch
import torch._dynamo
from conftest import VARIANTS
from torch.library import opcheck
from torch.utils._python_dispatch import TorchDispatchMode

from pvt_hf import PvtForImageClassification, fused_ops, layer_paths, modeling_pvt
from pvt_hf.layer_paths import tokens_to_map


pytestmark = pytest.mark.skipif(not layer_paths.ONEDNN_AVAILABLE, reason="this torch has no oneDNN kernels")


class OpLog(TorchDispatchMode):
    """The ops that run, by name."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


FUSED_GEMM = "mkldnn._linear_pointwise.binary"  # the residual adds run inside the GEMMs


def plain_logits(model, pixel_values):
    """The plain modules' path, switched off by the config."""
    model.config.fused_cpu_kernels = False
    try:
        with torch.inference_mode(), OpLog() as log:
            logits = model(pixel_values=pixel_values).logits
    finally:
        model.config.fused_cpu_kernels = True
    assert FUSED_GEMM not in log.names
    return logits


def ops_run(model, pixel_values):
    with torch.inference_mode(), OpLog() as log:
        model(pixel_values=pixel_values)
    return log.names


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
        assert FUSED_GEMM in log.names
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


def fused_layers(model, pixel_values, monkeypatch, context=torch.inference_mode):
    """The layers that ran on the fused kernels in one forward."""
    taken = []
    layer_forward = fused_ops.fused_layer_forward
    spy = lambda layer, *args: taken.append(layer) or layer_forward(layer, *args)  # noqa: E731
    monkeypatch.setattr(modeling_pvt, "fused_layer_forward", spy)
    with context():
        model(pixel_values=pixel_values)
    monkeypatch.setattr(modeling_pvt, "fused_layer_forward", layer_forward)
    return taken


def test_the_fused_path_applies_only_where_it_is_safe(monkeypatch):
    """Taken for fp32 CPU inference; the plain modules under autocast, with gradients, in training, in bf16, when
    switched off, and for a layer with an accelerate hook (`_hf_hook`), an instance-level `forward` or a PEFT-style
    wrapped linear."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    layers = [layer for stage in model.pvt.encoder.stages for layer in stage.layers]
    assert fused_layers(model, pixel_values, monkeypatch) == layers
    assert fused_layers(model, pixel_values, monkeypatch, lambda: torch.autocast("cpu", dtype=torch.bfloat16)) == []
    assert fused_layers(model, pixel_values, monkeypatch, torch.enable_grad) == []  # parameters want gradients
    model.config.fused_cpu_kernels = False
    assert fused_layers(model, pixel_values, monkeypatch) == []
    model.config.fused_cpu_kernels = True

    hooked = layers[1]
    hooked.attention.query._hf_hook = object()  # accelerate's `add_hook_to_module` leaves both on a module
    assert hooked not in fused_layers(model, pixel_values, monkeypatch)
    del hooked.attention.query._hf_hook
    conv = hooked.mlp.depthwise_conv
    conv.forward = lambda input: torch.nn.Conv2d.forward(conv, input)  # an instance-level wrapper (offloading's)
    assert fused_layers(model, pixel_values, monkeypatch) == [layer for layer in layers if layer is not hooked]
    del conv.forward
    conv.forward = conv.forward
    # the class's own forward, bound (what accelerate leaves when it removes its hook), still runs the fused kernels
    assert fused_layers(model, pixel_values, monkeypatch) == layers
    del conv.forward

    class WrappedLinear(torch.nn.Linear):  # as PEFT's and quantizers' layers are
        pass

    original = hooked.mlp.fc2
    hooked.mlp.fc2 = WrappedLinear(original.in_features, original.out_features)
    assert hooked not in fused_layers(model, pixel_values, monkeypatch)
    hooked.mlp.fc2 = original
    model.train()
    assert fused_layers(model, pixel_values, monkeypatch) == []
    model.eval().to(torch.bfloat16)
    assert fused_layers(model, pixel_values.to(torch.bfloat16), monkeypatch) == []


def test_a_failing_kernel_falls_back_to_the_plain_modules(monkeypatch):
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).eval()
    pixel_values = torch.randn(2, 3, 64, 64)
    expected = plain_logits(model, pixel_values)

    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("oneDNN is unhappy")

    monkeypatch.setitem(fused_ops._EAGER_KERNELS, "mlp", broken)
    with torch.inference_mode(), OpLog() as log:
        got = model(pixel_values=pixel_values).logits
    assert len(calls) == sum(model.config.depths)  # every layer tried the fused kernels, then ran its plain modules
    assert "aten.gelu.default" in log.names and "aten.linear.default" in log.names
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def remote_copy(tmp_path, package: str, edit: tuple[str, str, str] | None = None):
    """`fused_ops` imported from a copy of it and `layer_paths` in package `package` (as Hub remote code is), with
    `edit` = (file, old, new) applied to the copy."""
    folder = tmp_path / package
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module in (fused_ops, layer_paths):
        shutil.copy(module.__file__, folder)
    if edit is not None:
        file, old, new = edit
        source = (folder / file).read_text()
        assert old in source
        (folder / file).write_text(source.replace(old, new))
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(f"{package}.fused_ops")
    finally:
        sys.path.remove(str(tmp_path))


def test_op_namespace_follows_the_kernels(tmp_path):
    """A copy with the same kernels reuses the registered ops; a copy whose kernels differ (in `fused_ops` or in the
    `layer_paths` helpers they call) registers its own, so an older release's remote code never runs this one's
    kernels (nor the reverse)."""
    assert remote_copy(tmp_path, "pvt_remote_same").NAMESPACE == fused_ops.NAMESPACE
    edits = [
        ("fused_ops.py", "MLP_CHUNK_BYTES // (unit", "MLP_CHUNK_BYTES // (1 * unit"),
        ("layer_paths.py", "padding, stride, [1, 1], groups", "padding, stride, [1] * 2, groups"),
    ]
    for index, edit in enumerate(edits):
        changed = remote_copy(tmp_path, f"pvt_remote_changed_{index}", edit)
        assert changed.NAMESPACE != fused_ops.NAMESPACE
        assert hasattr(getattr(torch.ops, changed.NAMESPACE), "mlp")


def mlp_args(depthwise: bool, batch=2, height=5, width=7, channels=8, hidden=16):
    args = [torch.randn(batch, height * width, channels), torch.randn(batch, height * width, channels), height, width]
    args += [torch.randn(hidden, channels), torch.randn(hidden), "none" if depthwise else "gelu", "none"]
    args += (
        [torch.randn(hidden, 1, 3, 3), torch.randn(hidden), "gelu", "tanh"] if depthwise else [None, None, "none", ""]
    )
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
                tokens_to_map(torch.randn(2, 35, 8), 5, 7),
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
    opcheck(
        getattr(getattr(torch.ops, fused_ops.NAMESPACE), op).default,
        args(),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


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
    namespace = fused_ops.NAMESPACE
    assert {f"{namespace}.mlp", f"{namespace}.linear_add", f"{namespace}.convolution_pointwise"} <= graphs[0]
    model.train()
    compiled(pixel_values=torch.randn(2, 3, 64, 64))
    assert not any(target.startswith(namespace) for target in graphs[-1])
    torch._dynamo.reset()
