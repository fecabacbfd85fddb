"""Side-by-side benchmark of pvt-hf against transformers' PVT / PVTv2 and timm's `pvt_v2_*`.

Every contender runs in this one process, with the rounds interleaved (the contenders' order rotating from round to
round), so that the noise of a shared machine hits them alike. Reported per scenario: median images/s, and "ours is
N x faster", the median over rounds of (contender's time / our time) in the same round. Absolute CPU times are noisy;
the ratios are what carries over.

Peak memory is the extra resident memory a call needs beyond the model (on CUDA: the allocator's peak above what was
allocated before the call), measured on untimed calls of their own: before each, glibc hands its free memory back to
the system (malloc_trim) and the kernel's high-water mark is reset (/proc/self/clear_refs), so that memory freed by
an earlier call or contender neither hides nor inflates the peak. Timed calls run with the allocator as users have
it (returning memory to the system before every call would add page faults that no user pays). A training
contender's memory is measured so in a fresh process of its own (`--train-memory`, see `measure_training`).

Contenders (those that cannot be built are reported as such):
  pvt_hf              this package, eager (sdpa attention, the fused oneDNN path on CPU)
  pvt_hf plain        the same model with `config.fused_cpu_kernels = False`: the plain modules
Training contenders: pvt_hf (the memory-lean training path, the default), pvt_hf lean off (`lean_training=False`:
the plain modules), each also with gradient checkpointing; timm and transformers as above; and our Semantic FPN model
(pvt_hf with the lean path on and off).
  pvt_hf compile      torch.compile of the same model
  pvt_hf onnxruntime  the model exported with `pvt_hf.tools.onnx_export.export_onnx`, run by onnxruntime (CPU)
  transformers        transformers.PvtV2ForImageClassification / PvtForImageClassification (v1 at 224 only:
                      transformers' PVT v1 cannot take other sizes)
  timm                timm.create_model("pvt_v2_*"), when timm is importable
  transformers compile / timm compile   with --compile-all

The models share weights where a conversion exists (ours is loaded from timm's weights, else from transformers'), and
the agreement of their logits is reported.

A script of the source checkout, not part of the installed package (its memory meter uses glibc and /proc, and it
compares against other libraries): `python benchmarks/benchmark.py --quick` (a few minutes on 2 cores), or
`python benchmarks/benchmark.py --models pvt-v2-b2 --sizes 224,1024`. It prints its results; `--write-results`
also writes them as a section of benchmarks/RESULTS.md (or of the file given).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from pvt_hf.configuration_pvt import PRESETS, PvtConfig


MODELS = {  # preset -> timm architecture (None: timm has no PVT v1)
    "pvt-v2-b0": "pvt_v2_b0",
    "pvt-v2-b2": "pvt_v2_b2",
    "pvt-v2-b2-linear": "pvt_v2_b2_li",
    "pvt-small": None,
}
DEFAULT_SIZES = [224, 512, 1024, 2048]
DEFAULT_BATCHES = {224: [8, 32], 512: [2]}  # other sizes: batch 1
DEFAULT_CONTENDERS = "plain,compile,onnxruntime,transformers,timm"
# --quick: the comparisons the goals are about, in a few minutes on 2 cores (each setting can still be given)
QUICK = {
    "models": "pvt-v2-b2,pvt-small",
    "sizes": [224],
    "batches": {},
    "contenders": "transformers,timm",
    "rounds": 3,
    "train": "224x8",
    "train_models": "pvt-v2-b2",
    "train_rounds": 2,
}
# --quick on CUDA (benchmarks/gpu_check.sh): batches that fill a GPU, sdpa and eager attention, the compiled model;
# a few minutes on one H100 (with --time-budget as the bound)
QUICK_CUDA = {
    "models": "pvt-v2-b2",
    "sizes": [224, 512],
    "batches": {224: [128], 512: [16]},
    "contenders": "eager,compile,transformers,timm",
    "rounds": 5,
    "train": "224x64",
    "train_models": "pvt-v2-b2",
    "train_rounds": 3,
}
OURS = "pvt_hf"
PLAIN = f"{OURS} plain"
RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
SECTION_BEGIN, SECTION_END = "<!-- benchmark:{} begin -->", "<!-- benchmark:{} end -->"


# ----------------------------------------------------------------------------------------------------------------
# Memory


def _trim_malloc() -> None:
    """glibc: give the free memory of every arena back to the system, so resident memory follows live tensors."""
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(field_name: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return None


class MemoryMeter:
    """Extra memory of one call: CUDA allocator peak, or the resident-set high-water mark (Linux)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.available = device.type == "cuda" or _status_kib("VmHWM") is not None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return
        gc.collect()
        _trim_malloc()
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.base = _status_kib("VmRSS") or 0

    def stop(self) -> float | None:
        """Extra MiB since `start`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        peak = _status_kib("VmHWM")
        return None if peak is None else max(peak - self.base, 0) / 1024


# ----------------------------------------------------------------------------------------------------------------
# Contenders


@dataclass
class Contender:
    name: str
    model: torch.nn.Module | None  # None for onnxruntime
    run: Callable[[torch.Tensor], torch.Tensor]  # pixel_values -> logits
    note: str = ""
    same_weights: bool = True  # as ours: their logits are compared


def _import_timm():
    try:
        import timm

        return timm
    except Exception:  # noqa: BLE001 - timm needs torchvision, which may be missing or broken
        return None


def transformers_model(preset: str):
    """transformers' own PVT (v1) / PVTv2 classifier with the preset's architecture."""
    import transformers

    settings = PRESETS[preset]
    common = {
        "hidden_sizes": settings["hidden_sizes"],
        "depths": settings["depths"],
        "num_attention_heads": settings["num_attention_heads"],
        "mlp_ratios": settings["mlp_ratios"],
        "sr_ratios": settings.get("sr_ratios", [8, 4, 2, 1]),
    }
    if settings["version"] == 1:
        config = transformers.PvtConfig(**common, patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], num_labels=1000)
        return transformers.PvtForImageClassification(config)
    config = transformers.PvtV2Config(
        **common, linear_attention=settings.get("linear_attention", False), num_labels=1000
    )
    return transformers.PvtV2ForImageClassification(config)


def ours_from(state_dict: dict, layout: str, preset: str):
    """Our classifier with the weights of a timm or transformers model (through the checkpoint converter)."""
    from pvt_hf.tools.conversion import _timm_to_official, _transformers_to_official, convert_official_state_dict

    official = _timm_to_official(state_dict) if layout == "timm" else _transformers_to_official(state_dict)
    official = {key: value.detach().clone() for key, value in official.items()}
    model, _ = convert_official_state_dict(official, variant=preset)
    return model


def build_contenders(preset: str, args, device: torch.device, dtype: torch.dtype) -> tuple[list[Contender], list[str]]:
    """Contenders for one preset, ours first; and notes on those that could not be built."""
    from pvt_hf.modeling_pvt import PvtForImageClassification

    torch.manual_seed(0)
    notes, others = [], []
    timm = _import_timm() if "timm" in args.contenders else None
    timm_name = MODELS.get(preset)
    timm_model = transformers_reference = None
    if timm is not None and timm_name is not None:
        timm_model = timm.create_model(timm_name, pretrained=False, num_classes=1000)
    elif "timm" in args.contenders:
        notes.append("timm: " + ("not importable" if timm is None else "has no PVT v1"))
    if "transformers" in args.contenders:
        transformers_reference = transformers_model(preset)

    source = None
    if timm_model is not None:
        ours, source = ours_from(timm_model.state_dict(), "timm", preset), "timm"
    elif transformers_reference is not None:
        ours, source = ours_from(transformers_reference.state_dict(), "transformers", preset), "transformers"
    else:
        ours = PvtForImageClassification(PvtConfig.from_preset(preset, num_labels=1000))
    ours.config._attn_implementation = args.attn_implementation
    ours = ours.to(device, dtype).eval()
    contenders = [Contender(OURS, ours, lambda x, m=ours: m(pixel_values=x).logits)]
    if "eager" in args.contenders and args.attn_implementation != "eager":
        eager = copy.deepcopy(ours)
        eager.config._attn_implementation = "eager"  # read at every forward
        contenders.append(
            Contender(f"{OURS} eager", eager, lambda x, m=eager: m(pixel_values=x).logits, "eager attention")
        )
    if "plain" in args.contenders:
        # The one switch between the fused oneDNN inference path and the plain modules (read at every forward).
        if hasattr(ours.config, "fused_cpu_kernels"):
            plain = copy.deepcopy(ours)
            plain.config.fused_cpu_kernels = False
            contenders.append(
                Contender(PLAIN, plain, lambda x, m=plain: m(pixel_values=x).logits, "fused_cpu_kernels=False")
            )
        else:
            notes.append("plain: this pvt-hf has no `fused_cpu_kernels` switch")

    def compiled(name, model, call, same_weights=True):
        compiled_model = torch.compile(model, dynamic=args.compile_dynamic, mode=args.compile_mode)
        return Contender(f"{name} compile", compiled_model, lambda x: call(compiled_model, x), "", same_weights)

    if "compile" in args.contenders:
        contenders.append(compiled(OURS, ours, lambda m, x: m(pixel_values=x).logits))
    if "onnxruntime" in args.contenders:
        if device.type != "cpu" or dtype != torch.float32:
            notes.append("onnxruntime: float32 CPU only")
        else:
            try:
                contenders.append(onnx_contender(ours, args))
            except Exception as error:  # noqa: BLE001 - reported, the run goes on
                notes.append(f"onnxruntime: {type(error).__name__}: {str(error)[:200]}")
    if transformers_reference is not None:
        model = transformers_reference.to(device, dtype).eval()
        note = "PVT v1: 224x224 only" if PRESETS[preset]["version"] == 1 else ""
        others.append(
            Contender(
                "transformers", model, lambda x, m=model: m(pixel_values=x).logits, note, source == "transformers"
            )
        )
        if args.compile_all:
            others.append(
                compiled("transformers", model, lambda m, x: m(pixel_values=x).logits, source == "transformers")
            )
    if timm_model is not None:
        model = timm_model.to(device, dtype).eval()
        others.append(Contender("timm", model, model, same_weights=source == "timm"))
        if args.compile_all:
            others.append(compiled("timm", model, lambda m, x: m(x), source == "timm"))
    return contenders + others, notes


def onnx_contender(model, args) -> Contender:
    import onnxruntime

    from pvt_hf.tools.onnx_export import export_onnx

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="pvt-onnx-") as folder:  # the session holds the model: the file can go
        path = export_onnx(model, Path(folder) / "model.onnx", verify=False).path
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"pixel_values": pixel_values.numpy()})[0])

    return Contender(f"{OURS} onnxruntime", None, run, f"onnxruntime {onnxruntime.__version__}")


# ----------------------------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Row:
    preset: str
    size: int
    batch: int
    contender: str
    times: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # contender time / our time, per round
    first_call: float | None = None
    error: str | None = None
    note: str = ""
    agreement: float | None = None  # relative difference of the logits from ours

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def images_per_second(self) -> float | None:
        return self.batch / self.median if self.times else None

    @property
    def peak_memory(self) -> float | None:
        values = [value for value in self.memory if value is not None]
        return max(values) if values else None

    @property
    def speedup(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    return ((got - want).norm() / want.norm().clamp_min(1e-30)).item()


def _short_error(error: BaseException) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message[:160]}"


def measure_inference(
    contenders: list[Contender], preset: str, size: int, batch: int, rounds: int, warmup: int, device, dtype, log
) -> list[Row]:
    meter = MemoryMeter(device)
    generator = torch.Generator().manual_seed(size * 1000 + batch)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).to(device, dtype)
    rows = {c.name: Row(preset, size, batch, c.name, note=c.note) for c in contenders}
    same_weights = {c.name for c in contenders if c.same_weights}
    outputs = {}

    def call(contender: Contender, timed: bool, measure_memory: bool) -> float | None:
        row = rows[contender.name]
        try:
            if measure_memory:
                meter.start()
            start = time.perf_counter()
            output = contender.run(pixel_values)
            _sync(device)
            elapsed = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - reported, the run goes on
            row.error = _short_error(error)
            log(f"    {contender.name}: {row.error}")
            return None
        if measure_memory:
            row.memory.append(meter.stop())
        if row.first_call is None:
            row.first_call = elapsed
        outputs.setdefault(contender.name, output.detach().float().cpu())
        if timed:
            row.times.append(elapsed)
        return elapsed

    with torch.inference_mode():
        for contender in contenders:
            # Untimed: compiling (its first call, whose memory is the compiler's, is not measured either) and
            # onnxruntime's first run (which sizes its memory arena: its peak).
            compiled = "compile" in contender.name
            calls = max(warmup, 1 + compiled if warmup else int(compiled or contender.model is None))
            for index in range(calls):
                if call(contender, timed=False, measure_memory=not (compiled and index == 0)) is None:
                    break
        for round_index in range(rounds):
            alive = [c for c in contenders if not rows[c.name].error]
            shift = round_index % max(len(alive), 1)
            times = {}
            for contender in alive[shift:] + alive[:shift]:
                # without warm-up calls (the largest sizes), the timed calls are the measured ones
                elapsed = call(contender, timed=True, measure_memory=not warmup)
                if elapsed is not None:
                    times[contender.name] = elapsed
            if OURS in times:
                for name, elapsed in times.items():
                    rows[name].ratios.append(elapsed / times[OURS])
            log(f"    round {round_index + 1}/{rounds}: " + ", ".join(f"{n} {t:.3f}s" for n, t in times.items()))
    if OURS in outputs:
        for name, output in outputs.items():
            if name != OURS and name in same_weights and output.shape == outputs[OURS].shape:
                rows[name].agreement = _relative_difference(output, outputs[OURS])
    return list(rows.values())


SEMANTIC_FPN = "Semantic FPN"  # the training rows of PvtForSemanticSegmentation carry "PRESET Semantic FPN"


def isolated_training_memory(preset: str, size: int, batch: int, segmentation: bool, name: str, args) -> float | None:
    """The training memory of one contender, measured by this script in a fresh process of its own."""
    request = {"preset": preset, "size": size, "batch": batch, "segmentation": segmentation, "name": name}
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--attn-implementation",
        args.attn_implementation,
        "--contenders",
        ",".join(sorted(args.contenders)),
        "--measure-training-memory",
        json.dumps(request),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    match = re.search(r"^TRAINING-MEMORY (\S+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"the memory process failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return None if match.group(1) == "none" else float(match.group(1))


def measure_training(
    preset: str,
    size: int,
    batch: int,
    rounds: int,
    args,
    device,
    dtype,
    log,
    segmentation: bool = False,
    only: str | None = None,
) -> list[Row]:
    """Forward + backward + AdamW step; memory: the step's peak above parameters, gradients and optimizer state.

    The memory is measured in a fresh process per contender (`--train-memory isolated`, the default): in this
    process, the heap the earlier contenders and scenarios left behind inflated some peaks (the lean path's at 512
    batch 2: 912 MiB here, 490 MiB in a process of its own, run after run). `only`: build and measure that
    contender alone (what the fresh process does).

    Ours runs with the memory-lean training path (the default) and with `lean_training=False` (the plain modules, as
    before it), each with and without gradient checkpointing. `segmentation`: our Semantic FPN model (150 labels, as
    ADE20K) instead of the classifier; timm and transformers have none."""
    from pvt_hf.modeling_pvt import PvtForImageClassification
    from pvt_hf.modeling_pvt_segmentation import PvtForSemanticSegmentation

    torch.manual_seed(0)
    num_labels = 150 if segmentation else 1000
    timm = _import_timm() if "timm" in args.contenders and not segmentation else None
    builders: dict[str, Callable] = {}
    timm_name = MODELS.get(preset)
    if timm is not None and timm_name is not None:

        def make_timm(checkpointing: bool):
            model = timm.create_model(timm_name, pretrained=False, num_classes=1000)
            model.set_grad_checkpointing(checkpointing)
            return model, lambda m, x, y: F.cross_entropy(m(x).float(), y)

        builders["timm"] = lambda: make_timm(False)
        builders["timm checkpointing"] = lambda: make_timm(True)

    def make_ours(checkpointing: bool, lean: bool):
        model_class = PvtForSemanticSegmentation if segmentation else PvtForImageClassification
        model = model_class(PvtConfig.from_preset(preset, num_labels=num_labels, lean_training=lean))
        model.config._attn_implementation = args.attn_implementation
        if checkpointing:
            model.gradient_checkpointing_enable()
        if segmentation:
            return model, lambda m, x, y: m(pixel_values=x, labels=y).loss
        return model, lambda m, x, y: F.cross_entropy(m(pixel_values=x).logits.float(), y)

    ours = {
        OURS: lambda: make_ours(False, True),
        f"{OURS} lean off": lambda: make_ours(False, False),
        f"{OURS} checkpointing": lambda: make_ours(True, True),
        f"{OURS} checkpointing lean off": lambda: make_ours(True, False),
    }
    if "compile" in args.contenders:

        def make_compiled():
            model, call = make_ours(False, True)
            compiled = {}  # compiled at the first step, once the model is on its device and in its dtype

            def compiled_call(module, pixel_values, labels):
                if "module" not in compiled:
                    compiled["module"] = torch.compile(module, dynamic=args.compile_dynamic, mode=args.compile_mode)
                return call(compiled["module"], pixel_values, labels)

            return model, compiled_call

        ours[f"{OURS} compile"] = make_compiled
    builders = {**ours, **builders}
    if "transformers" in args.contenders and not segmentation and (PRESETS[preset]["version"] == 2 or size == 224):
        builders["transformers"] = lambda: (
            transformers_model(preset),
            lambda m, x, y: F.cross_entropy(m(pixel_values=x).logits.float(), y),
        )
    if only is not None:
        builders = {only: builders[only]}

    meter = MemoryMeter(device)
    generator = torch.Generator().manual_seed(size + batch)
    pixel_values = torch.randn(batch, 3, size, size, generator=generator).to(device, dtype)
    label_shape = (batch, size, size) if segmentation else (batch,)
    labels = torch.randint(0, num_labels, label_shape, generator=generator).to(device)
    states, rows = {}, {}
    for name, build in builders.items():
        rows[name] = Row(f"{preset} {SEMANTIC_FPN}" if segmentation else preset, size, batch, name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model, call = build()
            model = model.to(device, dtype).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            states[name] = (model, call, optimizer)
        except Exception as error:  # noqa: BLE001
            rows[name].error = _short_error(error)

    def step(name: str) -> None:
        model, call, optimizer = states[name]
        optimizer.zero_grad(set_to_none=False)
        loss = call(model, pixel_values, labels)
        loss.backward()
        optimizer.step()

    for name in list(states):
        try:
            start = time.perf_counter()
            step(name)  # allocates gradients and AdamW state
            _sync(device)
            rows[name].first_call = time.perf_counter() - start
            if train_memory_mode(args) == "isolated" and only is None:
                rows[name].memory.append(isolated_training_memory(preset, size, batch, segmentation, name, args))
            else:
                meter.start()  # memory: a step of its own, untimed (see the module's docstring)
                step(name)
                rows[name].memory.append(meter.stop())
        except Exception as error:  # noqa: BLE001
            rows[name].error = _short_error(error)
            del states[name]
    for round_index in range(rounds):
        names = list(states)
        shift = round_index % max(len(names), 1)
        times = {}
        for name in names[shift:] + names[:shift]:
            _sync(device)
            start = time.perf_counter()
            step(name)
            _sync(device)
            times[name] = time.perf_counter() - start
            rows[name].times.append(times[name])
        for name, elapsed in times.items():
            rows[name].ratios.append(elapsed / times[OURS] if OURS in times else float("nan"))
        log(f"    train round {round_index + 1}/{rounds}: " + ", ".join(f"{n} {t:.3f}s" for n, t in times.items()))
    states.clear()
    gc.collect()
    return list(rows.values())


def check_recompilation(preset: str, sizes: list[int], device, dtype, args) -> str:
    """Compile once, run several sizes: how many graphs dynamo compiled (2 expected: static, then dynamic)."""
    import torch._dynamo

    from pvt_hf.modeling_pvt import PvtForImageClassification

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = PvtForImageClassification(PvtConfig.from_preset(preset, num_labels=1000)).to(device, dtype).eval()
    compiled = torch.compile(model, fullgraph=True, mode=args.compile_mode)
    frames = []
    with torch.inference_mode():
        for size in sizes:
            compiled(pixel_values=torch.randn(1, 3, size, size, device=device, dtype=dtype))
            frames.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    return f"{preset}, sizes {sizes}: graphs compiled after each size: {frames}"


# ----------------------------------------------------------------------------------------------------------------
# Report


def machine_description(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = _status_kib("MemTotal")
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = int(line.split()[1])
    parts = [f"{cpu}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"]
    if memory:
        parts.append(f"{memory / 2**20:.0f} GiB RAM")
    if device.type == "cuda":
        parts.insert(0, torch.cuda.get_device_name(device))
    return ", ".join(parts)


def versions() -> str:
    import transformers

    parts = [
        f"Python {platform.python_version()}",
        f"torch {torch.__version__}",
        f"transformers {transformers.__version__}",
    ]
    timm = _import_timm()
    parts.append(f"timm {timm.__version__}" if timm is not None else "timm not available")
    for name in ("onnx", "onnxruntime"):
        with contextlib.suppress(ImportError):
            parts.append(f"{name} {__import__(name).__version__}")
    commit = _commit()
    if commit:
        parts.append(f"pvt-hf at {commit}")
    return ", ".join(parts)


def _commit() -> str | None:
    """The checkout's commit, "+ changes" when the working tree differs from it."""
    with contextlib.suppress(Exception):

        def git(*command):
            return subprocess.run(
                ["git", *command], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
            ).stdout.strip()

        commit = git("rev-parse", "--short", "HEAD")
        if commit:
            return commit + (" + changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    return None


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{suffix}"


def inference_table(rows: list[Row]) -> list[str]:
    lines = [
        "| model | input | batch | contender | images/s | ms / batch | ours is N x faster | peak extra memory (MiB) | memory vs ours | logits vs ours | first call (s) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ours_memory = {}
    for row in rows:
        if row.contender == OURS:
            ours_memory[(row.preset, row.size, row.batch)] = row.peak_memory
    for row in rows:
        ours_peak = ours_memory.get((row.preset, row.size, row.batch))
        memory_ratio = row.peak_memory / ours_peak if row.peak_memory and ours_peak else None
        name = row.contender + (f" ({row.note})" if row.note else "")
        if row.error:
            lines.append(f"| {row.preset} | {row.size}x{row.size} | {row.batch} | {name} | {row.error} | | | | | | |")
            continue
        lines.append(
            f"| {row.preset} | {row.size}x{row.size} | {row.batch} | {name} | {_fmt(row.images_per_second)} | "
            f"{_fmt(row.median and row.median * 1000, 1)} | {'1 (ours)' if row.contender == OURS else _fmt(row.speedup)} | "
            f"{_fmt(row.peak_memory, 0)} | {_fmt(memory_ratio)} | "
            f"{'–' if row.agreement is None else f'{row.agreement:.1e}'} | {_fmt(row.first_call, 1)} |"
        )
    return lines


def training_table(rows: list[Row]) -> list[str]:
    lines = [
        "| model | input | batch | contender | step time (ms) | ours is N x faster | peak activation memory (MiB) | memory vs ours |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    ours_memory = {(r.preset, r.size, r.batch): r.peak_memory for r in rows if r.contender == OURS}
    for row in rows:
        if row.error:
            lines.append(
                f"| {row.preset} | {row.size}x{row.size} | {row.batch} | {row.contender} | {row.error} | | | |"
            )
            continue
        ours_peak = ours_memory.get((row.preset, row.size, row.batch))
        lines.append(
            f"| {row.preset} | {row.size}x{row.size} | {row.batch} | {row.contender} | "
            f"{_fmt(row.median and row.median * 1000, 0)} | {'1 (ours)' if row.contender == OURS else _fmt(row.speedup)} | "
            f"{_fmt(row.peak_memory, 0)} | {_fmt(row.peak_memory / ours_peak if row.peak_memory and ours_peak else None)} |"
        )
    return lines


def goal_lines(inference: list[Row], training: list[Row]) -> list[str]:
    """The issue's goals, checked against this run's rows where it measured them."""

    def find(rows, preset, size, batch, contender):
        return next(
            (
                r
                for r in rows
                if (r.preset, r.size, r.batch, r.contender) == (preset, size, batch, contender) and not r.error
            ),
            None,
        )

    lines = []

    def goal(text, value, target, higher_is_better=True):
        if value is None:
            return
        met = value >= target if higher_is_better else value <= target
        lines.append(
            f"- {'met' if met else 'NOT met'}: {text}: {value:.2f} (goal {'>=' if higher_is_better else '<='} {target})"
        )

    transformers_b2 = find(inference, "pvt-v2-b2", 224, 8, "transformers")
    timm_b2 = find(inference, "pvt-v2-b2", 224, 8, "timm")
    faster = [r.speedup for r in (transformers_b2, timm_b2) if r is not None and r.speedup is not None]
    goal(
        "pvt-v2-b2 224 batch 8, eager: ours vs the faster of transformers and timm",
        min(faster) if faster else None,
        1.3,
    )
    row = find(inference, "pvt-small", 224, 8, "transformers")
    goal("pvt-small 224 batch 8, eager: ours vs transformers' PvtModel", row and row.speedup, 1.3)
    row = find(inference, "pvt-v2-b2", 1024, 1, "timm")
    goal("pvt-v2-b2 one 1024px forward: ours vs timm speed", row and row.speedup, 1.2)
    ours = find(inference, "pvt-v2-b2", 1024, 1, OURS)
    if row and ours and row.peak_memory and ours.peak_memory:
        goal("pvt-v2-b2 1024px: our peak memory / timm's", ours.peak_memory / row.peak_memory, 1.0, False)
    row, ours = find(inference, "pvt-v2-b2", 2048, 1, "timm"), find(inference, "pvt-v2-b2", 2048, 1, OURS)
    if row and ours and row.peak_memory and ours.peak_memory:
        goal("pvt-v2-b2 2048px: our peak memory / timm's", ours.peak_memory / row.peak_memory, 1.0, False)
    compiled = find(inference, "pvt-v2-b2", 224, 8, f"{OURS} compile")
    goal(
        "pvt-v2-b2 224 batch 8: torch.compile vs our eager",
        compiled and compiled.speedup and 1 / compiled.speedup,
        1.2,
    )
    for size, batch in ((224, 8), (512, 2)):
        ours, timm_row = (
            find(training, "pvt-v2-b2", size, batch, OURS),
            find(training, "pvt-v2-b2", size, batch, "timm"),
        )
        scenario = f"pvt-v2-b2 training {size} batch {batch}"
        if ours and timm_row and ours.peak_memory and timm_row.peak_memory:
            goal(
                f"{scenario}: our peak activation memory / timm's", ours.peak_memory / timm_row.peak_memory, 0.5, False
            )
        goal(f"{scenario}: step time, ours vs timm (time ratio timm / ours)", timm_row and timm_row.speedup, 1.0)
        lean, plain = (
            find(training, "pvt-v2-b2", size, batch, f"{OURS} checkpointing{suffix}") for suffix in ("", " lean off")
        )
        if lean and plain and lean.peak_memory and plain.peak_memory:
            goal(
                f"{scenario}, gradient checkpointing: peak activation memory, lean / lean off",
                lean.peak_memory / plain.peak_memory,
                1.0,
                False,
            )
            goal(
                f"{scenario}, gradient checkpointing: step time, lean vs lean off (time ratio off / lean)",
                plain.speedup / lean.speedup,
                1.0,
            )
    return lines


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) this run's section of the results file, keeping the rest."""
    begin, end = SECTION_BEGIN.format(name), SECTION_END.format(name)
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else "# PVT benchmarks\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    path.write_text(new)


# ----------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/benchmark.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated presets (default: {','.join(MODELS)}; --quick: {QUICK['models']})",
    )
    parser.add_argument(
        "--sizes",
        default=None,
        help=f"comma-separated input sizes (default: {','.join(map(str, DEFAULT_SIZES))}; --quick: {','.join(map(str, QUICK['sizes']))})",
    )
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated batch sizes for every size (default: 224: 8,32; 512: 2; larger: 1; --quick: the first of these)",
    )
    parser.add_argument(
        "--large-size-models", default="pvt-v2-b2", help="presets run at sizes above 1024 (default: pvt-v2-b2)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"timed rounds per scenario (default: 7 at 224, 5 at 512, 3 at 1024, 1 above; --quick: {QUICK['rounds']})",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed calls per contender before the rounds (not above 1024)"
    )
    parser.add_argument(
        "--contenders",
        default=None,
        help=f"besides ours: any of plain, eager (ours with eager attention), compile, onnxruntime, transformers, timm (default: {DEFAULT_CONTENDERS}; --quick: {QUICK['contenders']}; --quick on CUDA: {QUICK_CUDA['contenders']})",
    )
    parser.add_argument("--compile-all", action="store_true", help="also torch.compile transformers and timm")
    parser.add_argument("--compile-sizes", default="224", help="sizes at which compiled contenders run (default: 224)")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (default: torch's)")
    parser.add_argument(
        "--compile-dynamic",
        default=None,
        type=lambda v: {"true": True, "false": False}[v.lower()],
        help="torch.compile dynamic= (default: automatic)",
    )
    parser.add_argument(
        "--onnx-max-size", type=int, default=1024, help="largest size run through onnxruntime (default: 1024)"
    )
    parser.add_argument(
        "--train",
        default=None,
        help=f"training scenarios SIZExBATCH (default: 224x8,512x2; --quick: {QUICK['train']}); 'none' to skip",
    )
    parser.add_argument(
        "--train-models",
        default=None,
        help=f"presets for the training scenarios (default: pvt-v2-b2,pvt-small; --quick: {QUICK['train_models']})",
    )
    parser.add_argument(
        "--train-segmentation",
        default=None,
        help="training scenarios SIZExBATCH of our Semantic FPN model, for the --train-models (default: 512x2; --quick: none); 'none' to skip",
    )
    parser.add_argument(
        "--train-rounds",
        type=int,
        default=None,
        help=f"timed training steps per contender (default: 5; --quick: {QUICK['train_rounds']})",
    )
    parser.add_argument(
        "--train-memory",
        choices=["isolated", "in-process"],
        default=None,
        help="measure each training contender's memory in a fresh process of its own (default on the CPU, where the heap earlier contenders left behind inflates peaks), or in this one (default on CUDA, whose allocator's peak is exact)",
    )
    parser.add_argument(
        "--measure-training-memory", default=None, help=argparse.SUPPRESS
    )  # the fresh process's request (JSON)
    parser.add_argument(
        "--recompile-check", action="store_true", help="count dynamo graphs over sizes 224, 256, 320, 384"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the goals' comparisons only (pvt-v2-b2 and pvt-small at 224, one training scenario): a few minutes on 2 cores; with --device cuda: pvt-v2-b2 at 224 batch 128 and 512 batch 16, sdpa and eager, compiled, training 224 batch 64",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no scenario after this many seconds (those skipped are listed in the results)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the scenarios and contenders this run would measure, and measure nothing",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="FILE",
        help="also write the rows as JSON (with the run's date, machine, versions and commit), after every scenario",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="DIR",
        help="PNG plots into DIR (images/s and peak memory vs resolution; training-step memory per contender), from this run's --json FILE or from --from-json",
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        metavar="FILE",
        help="plot these results files (--json of earlier runs) with --plot, and run nothing",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="ours (default: sdpa)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--write-results",
        nargs="?",
        const=str(RESULTS_FILE),
        default=None,
        metavar="FILE",
        help="also write the results as a section of FILE (default FILE: benchmarks/RESULTS.md), replacing that section only; without this option nothing is written",
    )
    parser.add_argument(
        "--section",
        default=None,
        help="name of this run's section in the results file (default: the device and dtype)",
    )
    parser.add_argument("--title", default=None, help="heading of this run's section")
    return parser


def _ints(text: str) -> list[int]:
    return [int(value) for value in text.split(",") if value.strip()]


def train_memory_mode(args) -> str:
    return args.train_memory or ("isolated" if torch.device(args.device).type == "cpu" else "in-process")


def quick_settings(args) -> dict:
    return QUICK_CUDA if torch.device(args.device).type == "cuda" else QUICK


@dataclass
class Plan:
    """What a run measures: inference scenarios (preset, size, batch) and training scenarios (preset, size, batch,
    segmentation), in order."""

    inference: list[tuple[str, int, int]]
    training: list[tuple[str, int, int, bool]]
    rounds: Callable[[int], int]
    train_rounds: int


def make_plan(args) -> Plan:
    quick = quick_settings(args) if args.quick else None
    models_text = args.models or (quick["models"] if quick else ",".join(MODELS))
    presets = [name.strip() for name in models_text.split(",") if name.strip()]
    unknown = [name for name in presets if name not in PRESETS]
    if unknown:
        raise SystemExit(f"unknown presets: {unknown}; expected some of {list(PRESETS)}")
    sizes = _ints(args.sizes) if args.sizes else (quick["sizes"] if quick else DEFAULT_SIZES)
    large_models = {name.strip() for name in args.large_size_models.split(",")}
    inference = []
    for preset in presets:
        for size in sizes:
            if size > 1024 and preset not in large_models:
                continue
            if args.batch_sizes:
                batches = _ints(args.batch_sizes)
            elif quick:
                batches = quick["batches"].get(size) or DEFAULT_BATCHES.get(size, [1])[:1]
            else:
                batches = DEFAULT_BATCHES.get(size, [1])
            inference += [(preset, size, batch) for batch in batches]

    train = args.train or (quick["train"] if quick else "224x8,512x2")
    train_models = args.train_models or (quick["train_models"] if quick else "pvt-v2-b2,pvt-small")
    train_segmentation = args.train_segmentation or ("none" if quick else "512x2")
    scenarios = [] if train == "none" else [(scenario, False) for scenario in train.split(",")]
    if scenarios and train_segmentation != "none":
        scenarios += [(scenario, True) for scenario in train_segmentation.split(",")]
    training = []
    for preset in [name.strip() for name in train_models.split(",") if name.strip()]:
        for scenario, segmentation in scenarios:
            size, batch = (int(value) for value in scenario.lower().split("x"))
            training.append((preset, size, batch, segmentation))

    def rounds(size: int) -> int:
        if args.rounds:
            return args.rounds
        if quick:
            return quick["rounds"]
        return {224: 7, 512: 5, 1024: 3}.get(size, 1)

    return Plan(inference, training, rounds, args.train_rounds or (quick["train_rounds"] if quick else 5))


def selected_contenders(contenders: list[Contender], size: int, args) -> list[Contender]:
    return [
        c
        for c in contenders
        if not ("compile" in c.name and size not in set(_ints(args.compile_sizes)))
        and not (c.name == f"{OURS} onnxruntime" and size > args.onnx_max_size)
        and not (c.note.startswith("PVT v1") and size != 224)
    ]


def run(args) -> str:
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    contenders_text = args.contenders or (quick_settings(args)["contenders"] if args.quick else DEFAULT_CONTENDERS)
    args.contenders = {name.strip() for name in contenders_text.split(",") if name.strip()}
    if args.measure_training_memory:
        request = json.loads(args.measure_training_memory)
        (row,) = measure_training(
            request["preset"],
            request["size"],
            request["batch"],
            0,
            args,
            device,
            dtype,
            lambda message: None,
            segmentation=request["segmentation"],
            only=request["name"],
        )
        if row.error:
            raise SystemExit(row.error)
        memory = row.memory[0] if row.memory else None
        return f"TRAINING-MEMORY {'none' if memory is None else f'{memory:.1f}'}"
    plan = make_plan(args)
    if args.dry_run:
        lines = [f"device {device}, dtype {args.dtype}, contenders: ours, {', '.join(sorted(args.contenders))}"]
        lines += [f"inference {p} {s}x{s} batch {b}, {plan.rounds(s)} rounds" for p, s, b in plan.inference]
        lines += [
            f"training {p}{f' {SEMANTIC_FPN}' if seg else ''} {s}x{s} batch {b}, {plan.train_rounds} rounds, "
            f"memory {train_memory_mode(args)}"
            for p, s, b, seg in plan.training
        ]
        return "\n".join(lines) + "\n"

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.monotonic()
    metadata = run_metadata(args, device)
    log(f"machine: {metadata['machine']}\nversions: {metadata['versions']}")
    inference_rows, training_rows, notes, skipped = [], [], [], []

    def out_of_time(scenario: str) -> bool:
        if args.time_budget is not None and time.monotonic() - started > args.time_budget:
            skipped.append(scenario)
            log(f"  skipped (past --time-budget {args.time_budget:g} s): {scenario}")
            return True
        return False

    def save_json() -> None:  # after every scenario: a run stopped from outside keeps what it measured
        if args.json:
            write_rows_json(Path(args.json), metadata, inference_rows, training_rows, notes + skipped_notes())

    def skipped_notes() -> list[str]:
        return [f"skipped (past --time-budget {args.time_budget:g} s): {', '.join(skipped)}"] if skipped else []

    for preset in dict.fromkeys(p for p, _, _ in plan.inference):
        scenarios = [(s, b) for p, s, b in plan.inference if p == preset]
        if out_of_time(f"{preset} inference ({len(scenarios)} scenarios)"):
            continue
        log(f"{preset}: building contenders")
        contenders, build_notes = build_contenders(preset, args, device, dtype)
        notes += [f"{preset}: {note}" for note in build_notes]
        for size, batch in scenarios:
            if out_of_time(f"{preset} {size}x{size} batch {batch}"):
                continue
            selected = selected_contenders(contenders, size, args)
            log(f"  {preset} {size}x{size} batch {batch}: {', '.join(c.name for c in selected)}")
            inference_rows += measure_inference(
                selected,
                preset,
                size,
                batch,
                plan.rounds(size),
                args.warmup if size <= 1024 else 0,
                device,
                dtype,
                log,
            )
            if any(c.note.startswith("PVT v1") for c in contenders) and size != 224:
                notes.append(f"{preset} {size}: transformers' PVT v1 skipped (it accepts 224x224 only)")
            save_json()
        del contenders
        gc.collect()

    for preset, size, batch, segmentation in plan.training:
        scenario = f"training {preset}{f' {SEMANTIC_FPN}' if segmentation else ''} {size}x{size} batch {batch}"
        if out_of_time(scenario):
            continue
        log(f"  {scenario}")
        training_rows += measure_training(
            preset, size, batch, plan.train_rounds, args, device, dtype, log, segmentation=segmentation
        )
        save_json()
    recompile = (
        check_recompilation("pvt-v2-b2", [224, 256, 320, 384], device, dtype, args) if args.recompile_check else None
    )
    notes += skipped_notes()
    save_json()

    title = args.title or f"{'GPU' if device.type == 'cuda' else 'CPU'} {args.dtype}{' (quick)' if args.quick else ''}"
    lines = [
        f"## {title}",
        "",
        f"- run: {metadata['date']}, commit {metadata['commit']}",
        f"- machine: {metadata['machine']}",
        f"- versions: {metadata['versions']}",
    ]
    lines.append(
        f"- command: `python benchmarks/benchmark.py {' '.join(sys.argv[1:])}`; rounds interleaved, medians; "
        "'ours is N x faster' = median over rounds of (contender time / our time) in the same round"
    )
    lines += [f"- note: {note}" for note in notes]
    if recompile:
        lines.append(f"- recompilation: {recompile}")
    if inference_rows:
        lines += ["", "### Inference", "", *inference_table(inference_rows)]
    if training_rows:
        lines += ["", "### Training step (forward + backward + AdamW)", "", *training_table(training_rows)]
    goals = goal_lines(inference_rows, training_rows)
    if goals:
        lines += ["", "### Goals (from this run)", "", *goals]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Results as JSON, and plots of them


def run_metadata(args, device: torch.device) -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": _commit() or "unknown",
        "machine": machine_description(device),
        "versions": versions(),
        "device": args.device,
        "dtype": args.dtype,
        "command": f"python benchmarks/benchmark.py {' '.join(sys.argv[1:])}",
    }


def _row_record(row: Row, kind: str) -> dict:
    record = {"kind": kind, **asdict(row)}
    record.update(
        median=row.median, images_per_second=row.images_per_second, peak_memory=row.peak_memory, speedup=row.speedup
    )
    return record


def write_rows_json(path: Path, metadata: dict, inference: list[Row], training: list[Row], notes: list[str]) -> None:
    """The run's rows (with the run's date, machine, versions and commit) as JSON, written whole or not at all."""
    rows = [_row_record(row, "inference") for row in inference] + [_row_record(row, "training") for row in training]
    text = json.dumps({"run": metadata, "notes": notes, "rows": rows}, indent=1, allow_nan=False, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.incomplete")
    temporary.write_text(text + "\n")
    os.replace(temporary, path)


def read_rows_json(paths: list[str]) -> list[dict]:
    """The rows of one or more results files, each with its run's metadata under "run"."""
    rows = []
    for name in paths:
        try:
            data = json.loads(Path(name).read_text())
            rows += [{**row, "run": data["run"]} for row in data["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(
                f"--from-json {name}: not a results file of this benchmark ({type(error).__name__}: {error})"
            )
    return rows


PLOTTED = (OURS, "timm", "transformers")


def plot_results(rows: list[dict], folder: Path) -> list[Path]:
    """PNG plots: per preset and device/dtype, images/s and peak memory against resolution for ours, timm and
    transformers (at each size the smallest batch that all of them ran); and the training step's peak memory per
    contender (the lean path, without it, with checkpointing, timm, transformers) per scenario."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    good = [row for row in rows if not row.get("error") and row.get("median")]
    setups = sorted({(row["run"]["device"], row["run"]["dtype"]) for row in good})
    for device, dtype in setups:
        same = [row for row in good if (row["run"]["device"], row["run"]["dtype"]) == (device, dtype)]
        inference = [row for row in same if row["kind"] == "inference"]
        for preset in sorted({row["preset"] for row in inference}):
            points = {}
            for row in (row for row in inference if row["preset"] == preset and row["contender"] in PLOTTED):
                key = (row["contender"], row["size"])
                if key not in points or row["batch"] < points[key]["batch"]:
                    points[key] = row
            sizes = sorted({size for _, size in points})
            if len(sizes) < 2:
                continue
            figure, (speed_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
            for contender in PLOTTED:
                line = [points[(contender, size)] for size in sizes if (contender, size) in points]
                if not line:
                    continue
                x = [row["size"] for row in line]
                speed_axis.plot(x, [row["images_per_second"] for row in line], marker="o", label=contender)
                memory = [(row["size"], row["peak_memory"]) for row in line if row.get("peak_memory")]
                if memory:
                    memory_axis.plot(*zip(*memory), marker="o", label=contender)
            for axis, label in ((speed_axis, "images / s"), (memory_axis, "peak extra memory (MiB)")):
                axis.set_xscale("log", base=2)
                axis.set_yscale("log")
                axis.set_xticks(
                    sizes, [f"{s}\nb{min(r['batch'] for r in points.values() if r['size'] == s)}" for s in sizes]
                )
                axis.xaxis.set_minor_locator(
                    matplotlib.ticker.NullLocator()
                )  # (the y axes keep theirs: labels within a decade)
                axis.set_xlabel("input size (px), batch")
                axis.set_ylabel(label)
                axis.grid(True, alpha=0.3)
                axis.legend()
            figure.suptitle(f"{preset} inference, {device} {dtype}")
            figure.tight_layout()
            written.append(_save(figure, folder / f"inference-{preset}-{device}-{dtype}.png", plt))
        training = [row for row in same if row["kind"] == "training" and row.get("peak_memory")]
        scenarios = sorted({(row["preset"], row["size"], row["batch"]) for row in training})
        if scenarios:
            figure, axes = plt.subplots(
                len(scenarios),
                1,
                figsize=(
                    8,
                    1.2
                    + 0.45
                    * max(
                        sum(1 for row in training if (row["preset"], row["size"], row["batch"]) == scenario)
                        for scenario in scenarios
                    )
                    * len(scenarios),
                ),
                squeeze=False,
            )
            for axis, scenario in zip(axes[:, 0], scenarios):
                bars = [row for row in training if (row["preset"], row["size"], row["batch"]) == scenario]
                axis.barh(
                    [row["contender"] for row in bars],
                    [row["peak_memory"] for row in bars],
                    color=["tab:blue" if row["contender"].startswith(OURS) else "tab:gray" for row in bars],
                )
                axis.invert_yaxis()
                axis.set_title(f"{scenario[0]} {scenario[1]}x{scenario[1]} batch {scenario[2]}", fontsize=10)
                axis.set_xlabel("peak activation memory of a training step (MiB)")
                axis.grid(True, axis="x", alpha=0.3)
            figure.suptitle(f"training step memory, {device} {dtype}")
            figure.tight_layout()
            written.append(_save(figure, folder / f"training-memory-{device}-{dtype}.png", plt))
    return written


def _save(figure, path: Path, plt) -> Path:
    temporary = path.with_name(f".{path.stem}.incomplete.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    os.replace(temporary, path)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print it, and write its section of the results file when asked (--write-results);
    or, with --from-json, only plot earlier results (--plot)."""
    args = build_parser().parse_args(argv)
    if args.from_json:
        if not args.plot:
            raise SystemExit("--from-json needs --plot DIR (it plots earlier results and runs nothing)")
        for path in plot_results(read_rows_json(args.from_json), Path(args.plot)):
            print(f"wrote {path}")
        return 0
    text = run(args)
    print(text)
    if args.dry_run or args.measure_training_memory:
        return 0
    if args.write_results:
        name = args.section or f"{args.device}-{args.dtype}{'-quick' if args.quick else ''}"
        write_section(Path(args.write_results), name, text)
        print(f"wrote section '{name}' of {args.write_results}")
    if args.json:
        print(f"wrote {args.json}")
    if args.plot:
        if not args.json:
            raise SystemExit("--plot DIR after a run needs --json FILE (the plots are made from it)")
        for path in plot_results(read_rows_json([args.json]), Path(args.plot)):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
