"""The memory-lean training path (`pvt_hf/lean_training.py`, on by default): the gradients and outputs of the plain
modules (`lean_training=False`) for every model class and variant, with dropout and drop path; what it saves; where it
falls back; and how it composes with gradient checkpointing, autocast, torch.compile and PEFT."""

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from conftest import VARIANTS
from torch._dynamo.utils import counters

from pvt_hf import (
    PvtBackbone,
    PvtConfig,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtModel,
    lean_training,
    modeling_pvt,
    modeling_pvt_segmentation,
)


MODEL_CLASSES = [PvtModel, PvtForImageClassification, PvtBackbone, PvtForSemanticSegmentation]
DROPOUT = {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.1, "drop_path_rate": 0.3}


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).norm() / want.double().norm().clamp_min(1e-30)).item()


def loss_of(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """A loss that reaches every output of the model (fixed random weights over its outputs)."""
    generator = torch.Generator().manual_seed(1)
    if isinstance(model, PvtBackbone):
        outputs = model(pixel_values=pixel_values).feature_maps
    elif isinstance(model, PvtModel):
        outputs = [model(pixel_values=pixel_values).last_hidden_state]
    else:
        outputs = [model(pixel_values=pixel_values).logits]
    return sum((output * torch.randn(output.shape, generator=generator)).sum() for output in outputs)


def gradients(
    model, pixel_values: torch.Tensor, lean: bool, seed: int = 123, input_grad: bool = True
) -> dict[str, torch.Tensor]:
    model.config.lean_training = lean
    model.zero_grad(set_to_none=True)
    pixel_values = pixel_values.detach().clone().requires_grad_(input_grad)
    torch.manual_seed(seed)  # the same dropout and drop-path draws for both paths
    loss = loss_of(model, pixel_values)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    if not input_grad:
        return {"loss": loss.detach(), **grads}
    return {"loss": loss.detach(), "pixel_values": pixel_values.grad, **grads}


def assert_same(got: dict, want: dict, tolerance: float = 1e-5) -> None:
    assert got.keys() == want.keys()
    worst = {name: relative(got[name], want[name]) for name in want}
    assert max(worst.values()) <= tolerance, sorted(worst.items(), key=lambda item: -item[1])[:3]


@pytest.fixture
def lean_calls(monkeypatch):
    """How many layers ran their MLP branch on the lean path."""
    calls = []
    original = lean_training.lean_mlp_branch

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(lean_training, "lean_mlp_branch", counting)
    return calls


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradients_equal_the_plain_modules(model_class, name, lean_calls):
    """Loss, input gradient and every parameter's gradient as with lean_training=False (<= 1e-5 relative), with
    dropout, attention dropout and drop path: the inner dropout's mask is replayed exactly in backward."""
    torch.manual_seed(0)
    config = VARIANTS[name](**DROPOUT, **({"out_indices": [0, 1, 2, 3]} if model_class is PvtBackbone else {}))
    model = model_class(config).train()
    pixel_values = torch.randn(2, 3, 64, 96)
    plain = gradients(model, pixel_values, lean=False)
    assert not lean_calls
    lean = gradients(model, pixel_values, lean=True)
    assert len(lean_calls) == sum(config.depths)
    assert_same(lean, plain)
    assert set(plain) - {"loss", "pixel_values"} == {n for n, p in model.named_parameters() if p.requires_grad}


def saved_bytes(model, pixel_values: torch.Tensor) -> int:
    """Bytes autograd keeps for backward (parameters excluded), counted once per storage."""
    storages = {}

    def pack(tensor):
        if not isinstance(tensor, torch.nn.Parameter):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = loss_of(model, pixel_values)
    del loss
    return sum(storages.values())


def test_the_mlp_branch_saves_most():
    """With PVT v2's MLP ratios (8 in the first stages) and narrow stages (fc1 recomputed) the lean path keeps under a
    third of what the plain modules keep for backward (0.28x here). (Counted with saved-tensor hooks, under which the first LayerNorm's output is saved as
    usual: this is the MLP branch's saving alone; the next test covers the LayerNorm's.)"""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"](mlp_ratios=[8, 8, 4, 4])).train()
    pixel_values = torch.randn(2, 3, 128, 128)
    model.config.lean_training = False
    plain = saved_bytes(model, pixel_values)
    model.config.lean_training = True
    assert saved_bytes(model, pixel_values) < 0.33 * plain


def lean_ffn_nodes(grad_fn) -> list:
    """The `LeanConvFFN` backward nodes of the graph below `grad_fn`."""
    found, stack, seen = [], [grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "LeanConvFFNBackward":
            found.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def test_fc1_is_recomputed_in_the_narrow_stages(monkeypatch):
    """Layers whose fc1 input is at most RECOMPUTE_FC1_MAX_IN_FEATURES wide keep no fc1 output (backward recomputes
    it); the wider ones keep it. Both give the plain path's gradients, side by side in one model."""
    monkeypatch.setattr(lean_training, "RECOMPUTE_FC1_MAX_IN_FEATURES", 32)
    torch.manual_seed(0)
    config = VARIANTS["v2"](**DROPOUT)  # widths 16, 32, 48, 64 with depths 1, 2, 1, 1
    model = PvtForSemanticSegmentation(config).train()
    pixel_values = torch.randn(2, 3, 64, 64)
    nodes = lean_ffn_nodes(loss_of(model, pixel_values).grad_fn)
    widths = sorted(node.saved_tensors[0].shape[-1] for node in nodes)
    recomputed = sorted(node.saved_tensors[0].shape[-1] for node in nodes if node.saved_tensors[1] is None)
    assert widths == [16, 32, 32, 48, 64] and recomputed == [16, 32, 32]
    assert_same(gradients(model, pixel_values, lean=True), gradients(model, pixel_values, lean=False))


def saved_storages(grad_fn) -> set[int]:
    """The storages of every tensor saved in the graph below `grad_fn` (unpacked: recomputed ones are new storages)."""
    found, stack, seen = set(), [grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attribute in dir(node):
            if attribute.startswith("_saved_"):
                values = getattr(node, attribute)
                for value in values if isinstance(values, (tuple, list)) else [values]:
                    if isinstance(value, torch.Tensor):
                        found.add(value.untyped_storage().data_ptr())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_first_layer_norms_output_is_recomputed(name):
    """Nothing in the graph keeps the attention's input (the first LayerNorm's output) on the lean path: what saved it
    recomputes it from the LayerNorm's input. The plain path keeps it."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS[name]()).train()
    outputs = []
    for layer in (layer for stage in model.pvt.encoder.stages for layer in stage.layers):
        layer.attention.register_forward_pre_hook(lambda module, args: outputs.append(args[0]))
    for lean, expected in ((False, True), (True, False)):
        model.config.lean_training = lean
        outputs.clear()
        loss = loss_of(model, torch.randn(1, 3, 64, 64))
        storages = saved_storages(loss.grad_fn)
        kept = [output.untyped_storage().data_ptr() in storages for output in outputs]
        assert kept == [expected] * len(outputs), (lean, kept)


def test_backward_in_chunks_of_the_batch(monkeypatch):
    """The CPU backward recomputes a few images at a time (CPU_CHUNK_BYTES): the same gradients."""
    monkeypatch.setattr(lean_training, "CPU_CHUNK_BYTES", 1)  # one image per chunk
    assert len(lean_training._backward_chunks(torch.Size([3, 4, 5]), torch.empty(0))) == 3
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS["v2"](**DROPOUT)).train()
    pixel_values = torch.randn(3, 3, 64, 64)
    assert_same(gradients(model, pixel_values, lean=True), gradients(model, pixel_values, lean=False))


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_gradient_checkpointing_composes(use_reentrant, lean_calls):
    """Checkpointed layers run the lean path when they are recomputed: the plain path's gradients without
    checkpointing."""
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"](**DROPOUT)).train()
    pixel_values = torch.randn(2, 3, 64, 64)
    plain = gradients(model, pixel_values, lean=False)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    lean_calls.clear()
    specs = []
    original = lean_training.LeanConvFFN.apply
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lean_training.LeanConvFFN, "apply", lambda *args: specs.append(args[1]) or original(*args))
        checkpointed = gradients(model, pixel_values, lean=True)
    assert lean_calls  # (reentrant: only the recomputation has gradients on)
    assert_same(checkpointed, plain)
    # checkpointed layers keep fc1's output (their backward follows the recomputation at once): no third fc1
    assert specs and not any(spec.recompute_fc1 for spec in specs)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_autocast_bfloat16_training_step(name, lean_calls):
    """Under CPU autocast the lean path runs the plain modules' ops in their dtypes (the LayerNorm as autocast leaves
    it, GEMMs and convs in bf16): the same loss and gradients, fp32 gradients for fp32 weights."""
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS[name]()).train()
    pixel_values = torch.randn(2, 3, 64, 64)
    results = {}
    for lean in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[lean] = gradients(model, pixel_values, lean=lean)
    assert lean_calls
    assert all(grad.dtype == torch.float32 for key, grad in results[True].items() if key != "loss")
    assert_same(results[True], results[False], tolerance=1e-5)


def test_bfloat16_weights(lean_calls):
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).train().to(torch.bfloat16)
    pixel_values = torch.randn(2, 3, 64, 64, dtype=torch.bfloat16)
    lean, plain = gradients(model, pixel_values, lean=True), gradients(model, pixel_values, lean=False)
    assert lean_calls and all(grad.dtype == torch.bfloat16 for key, grad in lean.items() if key != "loss")
    assert_same(lean, plain)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_compiled_training_step_has_no_graph_breaks(name):
    """AOTAutograd traces the lean function's backward too (aot_eager: forward and backward graphs, no graph break):
    eager's gradients."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS[name](drop_path_rate=0.2)).train()
    pixel_values = torch.randn(2, 3, 64, 64)
    eager = gradients(model, pixel_values, lean=False)
    model.config.lean_training = True
    compiled_model = torch.compile(model, backend="aot_eager", fullgraph=True)
    model.zero_grad(set_to_none=True)
    inputs = pixel_values.clone().requires_grad_(True)
    torch.manual_seed(123)
    loss = loss_of(compiled_model, inputs)
    loss.backward()
    assert not counters["graph_break"]
    compiled = {"loss": loss.detach(), "pixel_values": inputs.grad}
    compiled.update({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert_same(compiled, eager)
    torch._dynamo.reset()


def test_where_it_applies(lean_calls):
    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).train()
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(pixel_values=pixel_values)
    model.requires_grad_(False)
    model(pixel_values=pixel_values)  # nothing needs gradients
    assert not lean_calls
    model(pixel_values=pixel_values.requires_grad_(True))  # the input does
    assert len(lean_calls) == sum(model.config.depths)
    # a hooked module runs its own forward: the plain path for that layer
    lean_calls.clear()
    model.requires_grad_(True)
    handle = model.pvt.encoder.stages[1].layers[0].mlp.fc1.register_forward_hook(lambda *args: None)
    model(pixel_values=torch.randn(1, 3, 64, 64))
    assert len(lean_calls) == sum(model.config.depths) - 1
    handle.remove()


def test_peft_lora(lean_calls):
    """LoRA on the attention keeps the lean MLP branch (frozen weights, gradients to the tokens); LoRA on the MLP's
    linears makes those layers plain. Either way the gradients are the plain path's."""
    peft = pytest.importorskip("peft")
    for targets, expected_lean in ((["query", "key_value"], True), (["fc1", "fc2"], False)):
        torch.manual_seed(0)
        base = PvtForImageClassification(VARIANTS["v2"]())
        model = peft.get_peft_model(
            base, peft.LoraConfig(r=2, target_modules=targets, init_lora_weights=False)
        ).train()
        pixel_values = torch.randn(2, 3, 64, 64)
        plain = gradients(model, pixel_values, lean=False)
        lean_calls.clear()
        lean = gradients(model, pixel_values, lean=True)
        assert bool(lean_calls) is expected_lean
        assert {n for n in lean if "lora_" in n} and all(
            "lora_" in n for n in lean if n not in ("loss", "pixel_values")
        )
        assert_same(lean, plain)


def test_lora_on_the_attention_only_runs_every_layer_lean(lean_calls):
    """With LoRA on the attention only, the patch embedding and the input need no gradients: the first layer's input
    does not either, but its MLP's input (after the attention's adapters) does. Every layer's MLP branch is lean, with
    the plain path's gradients."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = PvtForImageClassification(VARIANTS["v2"]())
    lora = peft.LoraConfig(r=2, target_modules=["query", "key_value"], init_lora_weights=False)
    model = peft.get_peft_model(base, lora)
    model.train()
    assert not any(p.requires_grad for p in model.base_model.model.pvt.encoder.stages[0].patch_embeddings.parameters())
    assert_every_layer_lean(model, lean_calls)


def assert_every_layer_lean(model, lean_calls) -> None:
    """On an input that needs no gradient: every layer's MLP branch runs lean with `lean_training=True` (none with
    False), and the two give the same loss and gradients."""
    pixel_values = torch.randn(2, 3, 64, 64)
    lean_calls.clear()
    plain = gradients(model, pixel_values, lean=False, input_grad=False)
    assert not lean_calls
    lean = gradients(model, pixel_values, lean=True, input_grad=False)
    assert len(lean_calls) == sum(model.config.depths)
    assert_same(lean, plain)


@pytest.fixture
def single_process_group(tmp_path):
    """A gloo process group of one process (this one), for FSDP on the CPU."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::UserWarning")  # FSDP: NO_SHARD for one process; FSDP1 is deprecated
@pytest.mark.parametrize("use_orig_params", [True, False])
def test_fsdp1_runs_every_layer_lean(use_orig_params, single_process_group, lean_calls):
    """FSDP1 wrapping each `PvtLayer` presents the parameters during forward as plain tensor views
    (`use_orig_params=True`, accelerate's default) or as attributes outside `_parameters` (False): the lean path runs
    in every layer either way, with the plain path's gradients."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    torch.manual_seed(0)
    model = PvtForImageClassification(VARIANTS["v2"]()).train()
    sharded = FullyShardedDataParallel(
        model,
        use_orig_params=use_orig_params,
        auto_wrap_policy=ModuleWrapPolicy({modeling_pvt.PvtLayer}),
        device_id=torch.device("cpu"),
    )
    assert_every_layer_lean(sharded, lean_calls)


def test_the_switch_is_saved(tmp_path):
    config = PvtConfig.from_preset("pvt-v2-b0", lean_training=False)
    config.save_pretrained(tmp_path)
    assert PvtConfig.from_pretrained(tmp_path).lean_training is False
    assert PvtConfig.from_preset("pvt-v2-b0").lean_training is True


# ------------------------------------------------------------------------------------------- the segmentation loss


def labelled_gradients(model, pixel_values, labels, lean: bool) -> dict[str, torch.Tensor]:
    model.config.lean_training = lean
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)
    loss = model(pixel_values=pixel_values, labels=labels).loss
    loss.backward()
    return {"loss": loss.detach(), **{n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_segmentation_loss_equals_the_plain_loss(name, monkeypatch):
    """The Semantic FPN loss upsampled and scored in bands of output rows (here a few rows each, at a size whose
    bilinear scale is not an integer; ignored pixels included): the plain loss and gradients."""
    monkeypatch.setattr(lean_training, "LOSS_BAND_BYTES", 2 * 5 * 75 * 4 * 3)  # 3 rows per band
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS[name](num_labels=5, **DROPOUT)).train()
    pixel_values = torch.randn(2, 3, 64, 96)
    labels = torch.randint(0, 5, (2, 61, 75))
    labels[0, :10] = 255
    calls = []
    original = modeling_pvt_segmentation.upsampled_cross_entropy
    monkeypatch.setattr(
        modeling_pvt_segmentation, "upsampled_cross_entropy", lambda *args: calls.append(1) or original(*args)
    )
    plain = labelled_gradients(model, pixel_values, labels, lean=False)
    assert not calls
    lean = labelled_gradients(model, pixel_values, labels, lean=True)
    assert calls
    assert_same(lean, plain)


def test_the_segmentation_loss_keeps_no_label_sized_logits():
    """What the loss keeps for backward: the low-resolution logits and the labels, not the upsampled logits and their
    log-softmax (num_labels floats per labelled pixel)."""
    logits = torch.randn(2, 150, 32, 32, requires_grad=True)
    labels = torch.randint(0, 150, (2, 128, 128))
    saved = {}
    for lean in (False, True):
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: sizes.append(t.numel() * t.element_size()) or t, lambda t: t
        ):
            if lean:
                lean_training.upsampled_cross_entropy(logits, labels, 255)
            else:
                F.cross_entropy(F.interpolate(logits, size=(128, 128), mode="bilinear"), labels, ignore_index=255)
        saved[lean] = sum(sizes)
    upsampled_bytes = 2 * 150 * 128 * 128 * 4
    assert saved[False] >= upsampled_bytes
    assert saved[True] <= logits.numel() * 4 + labels.numel() * 8 < upsampled_bytes / 10


def test_the_segmentation_loss_where_it_applies():
    """Without gradients (evaluation) or with the switch off the plain loss runs; all pixels ignored gives NaN, as the
    plain loss does."""
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS["v2"](num_labels=5)).train()
    logits, labels = torch.randn(1, 5, 16, 16, requires_grad=True), torch.randint(0, 5, (1, 64, 64))
    assert lean_training.lean_loss_applies(model.config, logits, labels)
    with torch.no_grad():
        assert not lean_training.lean_loss_applies(model.config, logits, labels)
    assert not lean_training.lean_loss_applies(PvtConfig(lean_training=False), logits, labels)
    loss = model(pixel_values=torch.randn(1, 3, 64, 64), labels=torch.full_like(labels, 255)).loss
    assert torch.isnan(loss) and loss.requires_grad


def test_the_segmentation_loss_under_autocast():
    """bf16 logits (autocast's): the lean loss upsamples and scores them in float32, so it is the float32 loss of the
    same logits (the plain path upsamples in bf16 first), and a model's autocast training step gets float32 gradients."""
    logits = torch.randn(2, 5, 13, 17, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 5, (2, 50, 67))
    lean = lean_training.upsampled_cross_entropy(logits, labels, 255)
    (lean_grad,) = torch.autograd.grad(lean, logits)
    wide = logits.detach().float().requires_grad_(True)
    reference = F.cross_entropy(F.interpolate(wide, size=(50, 67), mode="bilinear"), labels, ignore_index=255)
    (reference_grad,) = torch.autograd.grad(reference, wide)
    assert lean.dtype == torch.float32 and relative(lean, reference) <= 1e-6
    assert lean_grad.dtype == torch.bfloat16 and relative(lean_grad, reference_grad.bfloat16()) <= 1e-2
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(VARIANTS["v2"](num_labels=5)).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = labelled_gradients(model, torch.randn(1, 3, 64, 64), torch.randint(0, 5, (1, 64, 64)), lean=True)
    assert grads["loss"].dtype == torch.float32 and torch.isfinite(grads["loss"])
    assert all(grad.dtype == torch.float32 and torch.isfinite(grad).all() for grad in grads.values())
