"""The side-by-side benchmark (`benchmarks/benchmark.py`, a script of the checkout) runs end to end (tiny scenario),
writes its section of the results file only when asked, and leaves no temporary files."""

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmark", ROOT / "benchmarks" / "benchmark.py")
benchmark = importlib.util.module_from_spec(_spec)
sys.modules["benchmark"] = benchmark
_spec.loader.exec_module(benchmark)
OURS, PLAIN, Row, goal_lines, write_section = (
    benchmark.OURS,
    benchmark.PLAIN,
    benchmark.Row,
    benchmark.goal_lines,
    benchmark.write_section,
)
main = benchmark.main


@pytest.mark.long  # real benchmark runs
def test_quick_run_writes_its_section(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text("# PVT benchmarks\n\nKept prose.\n")
    argv = [
        "--quick",
        "--models",
        "pvt-v2-b0",
        "--sizes",
        "64,96",
        "--batch-sizes",
        "1",
        "--rounds",
        "2",
        "--contenders",
        "transformers,plain",
        "--train",
        "64x1",
        "--train-models",
        "pvt-v2-b0",
        "--train-rounds",
        "1",
        "--train-memory",
        "in-process",
        "--json",
        str(tmp_path / "rows.json"),
        "--section",
        "test",
        "--write-results",
        str(results),
    ]
    checkout_results = benchmark.RESULTS_FILE.read_bytes() if benchmark.RESULTS_FILE.exists() else None
    assert main(argv[:-2]) == 0  # without --write-results: printed only
    assert results.read_text() == "# PVT benchmarks\n\nKept prose.\n"
    assert (benchmark.RESULTS_FILE.read_bytes() if benchmark.RESULTS_FILE.exists() else None) == checkout_results
    assert main(argv) == 0
    text = results.read_text()
    assert text.startswith("# PVT benchmarks\n\nKept prose.\n")
    assert text.count("<!-- benchmark:test begin -->") == 1 and text.count("<!-- benchmark:test end -->") == 1
    assert "- machine: " in text and "- versions: " in text and "torch " in text
    table = [line for line in text.splitlines() if line.startswith("| pvt-v2-b0 | 64x64 | 1 |")]
    contenders = [line.split(" | ")[3] for line in table]
    # inference: ours, ours on the plain modules and transformers; training: ours, ours with checkpointing, transformers
    assert contenders.count(OURS) == 2 and contenders.count("transformers") == 2
    assert f"{OURS} checkpointing" in contenders and f"{PLAIN} (fused_cpu_kernels=False)" in contenders
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert float(cells[4]) > 0  # images/s, or step time in ms
    # ours carries transformers' weights: the logits of the two agree
    transformers_row = next(line for line in table if " transformers | " in line and "x faster" not in line)
    agreement = float(transformers_row.strip("|").split("|")[9])
    assert agreement < 1e-4

    plain_row = next(line for line in table if f" {PLAIN} " in line)
    assert float(plain_row.strip("|").split("|")[9]) < 1e-4  # the plain modules give the fused path's logits

    # a second run replaces its section, keeping the rest
    assert main(argv) == 0
    assert results.read_text().count("<!-- benchmark:test begin -->") == 1
    assert "Kept prose." in results.read_text()

    # the rows as JSON, with the run's date, machine, versions and commit; plots made from them
    data = json.loads((tmp_path / "rows.json").read_text())
    assert {"date", "machine", "versions", "commit", "device", "dtype"} <= set(data["run"])
    inference = [row for row in data["rows"] if row["kind"] == "inference"]
    assert {(row["size"], row["contender"]) for row in inference} == {
        (size, name) for size in (64, 96) for name in (OURS, PLAIN, "transformers")
    }
    assert all(row["images_per_second"] > 0 and row["peak_memory"] >= 0 for row in inference)
    assert main(["--from-json", str(tmp_path / "rows.json"), "--plot", str(tmp_path / "plots")]) == 0
    plots = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert plots == ["inference-pvt-v2-b0-cpu-float32.png", "training-memory-cpu-float32.png"]
    assert all((tmp_path / "plots" / name).read_bytes().startswith(b"\x89PNG") for name in plots)


def test_gpu_check_plan_on_a_cpu_machine(capsys):
    """What benchmarks/gpu_check.sh runs (--device cuda --dtype bfloat16 --quick), as a dry run: the plan, no model
    built, nothing touched on a device."""
    argv = ["--device", "cuda", "--dtype", "bfloat16", "--quick", "--time-budget", "140", "--dry-run"]
    assert main(argv) == 0
    plan = capsys.readouterr().out.splitlines()
    assert plan[:4] == [
        "device cuda, dtype bfloat16, contenders: ours, compile, eager, timm, transformers",
        "inference pvt-v2-b2 224x224 batch 128, 5 rounds",
        "inference pvt-v2-b2 512x512 batch 16, 5 rounds",
        "training pvt-v2-b2 224x224 batch 64, 3 rounds, memory in-process",
    ]
    assert "gpu_check.sh" not in benchmark.build_parser().format_help()  # (the script calls the benchmark, not back)
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert " ".join(argv[:-3]) in script and "pytest -m cuda -x" in script


def test_gpu_check_refuses_what_it_cannot_do(tmp_path):
    """The script's checks before any work: a results file that exists (without --force), a name not ending in .md,
    and (on a machine without CUDA) no GPU."""
    import subprocess

    import torch

    script = ROOT / "benchmarks" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable}  # this interpreter, not whichever `python` is first on PATH
    existing = tmp_path / "done.md"
    existing.write_text("kept")
    result = subprocess.run(["bash", str(script), str(existing)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "exists" in result.stderr and existing.read_text() == "kept"
    result = subprocess.run(
        ["bash", str(script), str(tmp_path / "out.txt")], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2 and "ending in .md" in result.stderr
    if not torch.cuda.is_available():
        result = subprocess.run(
            ["bash", str(script), str(tmp_path / "out.md")], capture_output=True, text=True, timeout=120, env=env
        )
        assert result.returncode == 2 and "no CUDA device" in result.stderr and not (tmp_path / "out.md").exists()


def test_time_budget_skips_and_says_so(tmp_path, capsys):
    """No scenario starts past --time-budget; the skipped ones are listed in the results and the JSON."""
    rows = tmp_path / "rows.json"
    argv = [
        "--models",
        "pvt-v2-b0",
        "--sizes",
        "64",
        "--train",
        "64x1",
        "--train-models",
        "pvt-v2-b0",
        "--contenders",
        "transformers",
        "--time-budget",
        "0",
        "--json",
        str(rows),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "skipped (past --time-budget 0 s): pvt-v2-b0 inference (1 scenarios), training pvt-v2-b0 64x64 batch 1" in out
    )
    data = json.loads(rows.read_text())
    assert data["rows"] == [] and "skipped" in data["notes"][-1] and data["run"]["device"] == "cpu"


def test_plots_need_results(tmp_path):
    with pytest.raises(SystemExit, match="--from-json needs --plot"):
        main(["--from-json", str(tmp_path / "rows.json")])
    (tmp_path / "rows.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a results file"):
        main(["--from-json", str(tmp_path / "rows.json"), "--plot", str(tmp_path / "plots")])


@pytest.mark.long  # real benchmark runs
def test_training_memory_in_a_fresh_process():
    """A training contender's memory comes from a process of its own: its peak above the model and optimizer state."""
    args = benchmark.build_parser().parse_args(["--contenders", "transformers"])
    args.contenders = {"transformers"}
    memory = benchmark.isolated_training_memory("pvt-v2-b0", 64, 2, True, f"{OURS} lean off", args)
    assert memory is not None and memory > 0
    with pytest.raises(RuntimeError, match="the memory process failed"):
        benchmark.isolated_training_memory("pvt-v2-b0", 64, 2, False, "no such contender", args)


def test_write_section_replaces_only_its_own(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_section(path, "a", "first a")
    write_section(path, "b", "first b")
    write_section(path, "a", "second a")
    text = path.read_text()
    assert "second a" in text and "first a" not in text and "first b" in text
    assert text.index("second a") < text.index("first b")


def _row(preset, size, batch, contender, seconds, ours_seconds, memory):
    return Row(preset, size, batch, contender, times=[seconds], memory=[memory], ratios=[seconds / ours_seconds])


def test_goal_lines_follow_the_measurements():
    ours = _row("pvt-v2-b2", 224, 8, OURS, 1.0, 1.0, 100)
    slower = [_row("pvt-v2-b2", 224, 8, name, 1.5, 1.0, 100) for name in ("transformers", "timm")]
    lines = goal_lines([ours, *slower], [])
    assert lines == [
        "- met: pvt-v2-b2 224 batch 8, eager: ours vs the faster of transformers and timm: 1.50 (goal >= 1.3)"
    ]
    slower[1] = _row("pvt-v2-b2", 224, 8, "timm", 1.2, 1.0, 100)
    assert goal_lines([ours, *slower], [])[0].startswith("- NOT met:")
    big = [_row("pvt-v2-b2", 2048, 1, OURS, 10, 10, 3000), _row("pvt-v2-b2", 2048, 1, "timm", 20, 10, 2000)]
    memory_line = next(line for line in goal_lines(big, []) if "2048px" in line)
    assert memory_line.startswith("- NOT met:") and "1.50" in memory_line


def test_unknown_preset_is_refused():
    with pytest.raises(SystemExit, match="unknown presets"):
        benchmark.run(benchmark.build_parser().parse_args(["--models", "pvt-v9"]))


def test_row_statistics():
    row = Row("pvt-v2-b0", 224, 8, OURS, times=[2.0, 1.0, 4.0], ratios=[1.0, 1.0, 1.0])
    assert row.median == 2.0 and math.isclose(row.images_per_second, 4.0) and row.speedup == 1.0


def test_onnx_contender_leaves_no_temporary_files(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import tempfile

    import torch
    from conftest import tiny_config

    from pvt_hf import PvtForImageClassification

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    model = PvtForImageClassification(tiny_config(2)).eval()
    contender = benchmark.onnx_contender(model, benchmark.build_parser().parse_args([]))
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(contender.run(pixel_values), model(pixel_values).logits, atol=1e-4)
    assert list(tmp_path.iterdir()) == []


def test_the_package_holds_no_benchmark_machinery():
    assert not (ROOT / "src" / "pvt_hf" / "benchmark.py").exists()
    for path in (ROOT / "src").rglob("*.py"):
        assert not re.search(r"ctypes|clear_refs|malloc_trim", path.read_text()), path


def test_quick_defaults_are_the_documented_ones():
    help_text = " ".join(benchmark.build_parser().format_help().split())
    assert "--sizes SIZES comma-separated input sizes (default: 224,512,1024,2048; --quick: 224)" in help_text
    args = benchmark.build_parser().parse_args(["--quick"])
    assert args.write_results is None
