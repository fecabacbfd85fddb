"""The command line loses nothing and explains every refusal: outputs never replace inputs, concurrent or interrupted
runs leave no partial or stale folders, and bad input gets one clear line naming the argument or file."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REFERENCE, pvt_hf_script
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data as photos

from pvt_hf.tools.conversion import ConversionError, convert_official_state_dict
from pvt_hf.tools.io_utils import OutputExistsError, atomic_output_dir
from pvt_hf_cli import main


CASE = "pvt_v2_mini_cls"
CHECKPOINT = REFERENCE / f"{CASE}.pth"
OFFICIAL_ARGS = json.loads((REFERENCE / f"{CASE}.json").read_text())["official_args"]
ROOT = Path(__file__).resolve().parents[1]


def convert_argv(checkpoint, output, *extra):
    return ["convert", str(checkpoint), str(output), "--official-args", json.dumps(OFFICIAL_ARGS), *extra]


def one_line_error(capsys, command="convert"):
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"pvt-hf {command}: error:") and len(error.splitlines()) == 1, error
    return error


def cli_process(*argv, **kwargs):
    """`pvt-hf ...` in a process of its own (offline), as users run it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "pvt_hf_cli", *argv], env=env, text=True, **kwargs)


def processes_mentioning(text: str) -> list[int]:
    """Pids of the live processes whose command line contains `text` (Linux)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


# ----------------------------------------------------------------------------------------------------------------
# Outputs never replace inputs


def test_force_refuses_an_output_that_contains_the_input(tmp_path, capsys):
    folder = tmp_path / "self"
    folder.mkdir()
    shutil.copy(CHECKPOINT, folder / "ck.pth")
    (folder / "notes.txt").write_text("mine")
    assert main(convert_argv(folder / "ck.pth", folder, "--force", "--no-verify")) == 1
    assert "contains the input" in one_line_error(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["ck.pth", "notes.txt"]
    # --all: the output root may not be (or contain) the folder of checkpoints
    assert main(["convert", "--all", str(folder), str(tmp_path), "--force", "--no-verify"]) == 1
    assert "contains the input" in one_line_error(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["ck.pth", "notes.txt"]


def test_force_refuses_a_transformers_folder_as_its_own_output(tmp_path, capsys):
    from transformers import PvtV2Config, PvtV2ForImageClassification

    folder = tmp_path / "theirs"
    config = PvtV2Config(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 40, 64], num_labels=2)
    PvtV2ForImageClassification(config).save_pretrained(folder)
    capsys.readouterr()
    before = sorted(p.name for p in folder.iterdir())
    assert main(["convert", str(folder), str(folder), "--force", "--no-verify"]) == 1
    assert "is the input" in one_line_error(capsys)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_export_onnx_never_replaces_a_file_of_its_input(tmp_path, capsys):
    from conftest import tiny_config

    from pvt_hf import PvtForImageClassification

    folder = tmp_path / "model"
    PvtForImageClassification(tiny_config(2)).save_pretrained(folder)
    weights = (folder / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["export-onnx", str(folder), str(folder / "model.safetensors"), "--force", "--no-verify"]) == 1
    assert "inside the input" in one_line_error(capsys, "export-onnx")
    assert (folder / "model.safetensors").read_bytes() == weights


def test_demo_refuses_an_output_dir_that_contains_the_shipped_model(tmp_path, monkeypatch, capsys):
    from pvt_hf.tools import demo

    shipped = tmp_path / "package" / "data" / "digits-demo"
    shutil.copytree(demo.DEMO_DIR, shipped)
    monkeypatch.setattr(demo, "DEMO_DIR", shipped)
    assert main(["demo", "--output-dir", str(tmp_path / "package"), "--force"]) == 1
    assert "contains the input" in one_line_error(capsys, "demo")
    assert (shipped / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------------------------
# Concurrent and interrupted runs


def test_an_output_that_appears_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="appeared while"):
        with atomic_output_dir(target) as staging:
            (staging / "mine.txt").write_text("second writer")
            target.mkdir()  # another writer finished first
            (target / "theirs.txt").write_text("first writer")
    assert sorted(p.name for p in target.iterdir()) == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_target_being_written_is_refused(tmp_path):
    target = tmp_path / "out"
    with atomic_output_dir(target) as staging:
        (staging / "a.txt").write_text("first")
        with pytest.raises(OutputExistsError, match="being written by another"):
            with atomic_output_dir(target, force=True):
                pass
    assert (target / "a.txt").read_text() == "first"


def test_two_converts_to_one_output_at_once(tmp_path):
    output = tmp_path / "out"
    runs = [
        cli_process(*convert_argv(CHECKPOINT, output), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    failure = next(err for code, err in results if code == 1)
    assert "already exists" in failure or "being written by another" in failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _verification_child(tmp_path) -> tuple[Path, int]:
    """The staging folder of the running convert and the pid of its verification process."""

    def find():
        staging = [p for p in tmp_path.iterdir() if p.name.startswith(".out.incomplete-")]
        children = processes_mentioning(str(staging[0])) if staging else []
        return (staging[0], children[0]) if children else None

    return _wait_for(find)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes through /proc")
def test_sigterm_cleans_up_and_stops_the_verification(tmp_path):
    run = cli_process(*convert_argv(CHECKPOINT, tmp_path / "out"), stderr=subprocess.PIPE)
    staging, child = _verification_child(tmp_path)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) != 0
    assert sorted(tmp_path.iterdir()) == []
    _wait_for(lambda: not processes_mentioning(str(staging)), timeout=30)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds processes through /proc")
def test_after_sigkill_the_child_stops_and_the_next_run_cleans_up(tmp_path, capsys):
    run = cli_process(*convert_argv(CHECKPOINT, tmp_path / "out"), stderr=subprocess.PIPE)
    staging, child = _verification_child(tmp_path)
    run.kill()
    run.wait(timeout=60)
    _wait_for(lambda: not processes_mentioning(str(staging)), timeout=30)  # the orphan stops by itself
    other_target = tmp_path / ".other.incomplete-999999999-ab12"  # another target's: not ours to remove
    other_target.mkdir()
    live_owner = tmp_path / f".out.incomplete-{os.getpid()}-ab12"  # a live process's: not ours to remove
    live_owner.mkdir()
    assert main(convert_argv(CHECKPOINT, tmp_path / "out", "--no-verify")) == 0
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([other_target.name, live_owner.name, "out"]), left


def test_output_folders_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        assert main(convert_argv(CHECKPOINT, tmp_path / "out", "--no-verify")) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# ----------------------------------------------------------------------------------------------------------------
# --all


def test_convert_all_with_official_args_names_outputs_after_the_files(tmp_path, capsys):
    source = tmp_path / "downloads"
    source.mkdir()
    shutil.copy(CHECKPOINT, source / "first_model.pth")
    shutil.copy(CHECKPOINT, source / "second model.pth")
    argv = [
        "convert",
        "--all",
        str(source),
        str(tmp_path / "hub"),
        "--official-args",
        json.dumps(OFFICIAL_ARGS),
        "--no-verify",
    ]
    assert main(argv + ["--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "hub").iterdir()) == ["first-model", "second-model"]
    out = capsys.readouterr().out
    assert "| first_model.pth | first-model |" in out and "| second model.pth | second-model |" in out


# ----------------------------------------------------------------------------------------------------------------
# Errors a user can act on


def test_long_inline_official_args(tmp_path, capsys):
    text = json.dumps(OFFICIAL_ARGS, indent=8)
    assert len(text) > 300
    assert main(["convert", str(CHECKPOINT), str(tmp_path / "out"), "--official-args", text, "--no-verify"]) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(CHECKPOINT), str(tmp_path / "o2"), "--official-args", str(tmp_path / "args.json")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--official-args" in error and "no such file" in error and str(tmp_path / "args.json") in error


def test_a_missing_key_is_named_as_the_file_names_it():
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    del checkpoint["block1.0.attn.q.weight"]
    with pytest.raises(ConversionError) as error:
        convert_official_state_dict(checkpoint, official_args=OFFICIAL_ARGS)
    assert "block1.0.attn.q.weight" in str(error.value)
    assert "pvt.encoder.stages.0.layers.0.attention.query.weight" in str(error.value)


@pytest.mark.parametrize("key", ["neck.lateral_convs.0.conv.weight", "decode_head.conv_seg.weight"])
def test_a_segmentation_checkpoint_without_its_head_says_so(key):
    checkpoint = torch.load(REFERENCE / "pvt_v2_mini_seg.pth", weights_only=True)["state_dict"]
    del checkpoint[key]
    with pytest.raises(ConversionError, match=key.replace(".", r"\.")):
        convert_official_state_dict(checkpoint)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_by_name(tmp_path, capsys, value):
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    checkpoint["block2.0.mlp.fc1.weight"][0, 0] = value
    torch.save(checkpoint, tmp_path / "bad.pth")
    assert main(convert_argv(tmp_path / "bad.pth", tmp_path / "out", "--no-verify")) == 1
    error = one_line_error(capsys)
    assert "block2.0.mlp.fc1.weight" in error and ("NaN" in error or "infinite" in error)
    assert not (tmp_path / "out").exists()


def test_random_bytes_are_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "random.pth"
    path.write_bytes(
        torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes()
    )
    assert main(["convert", str(path), str(tmp_path / "out"), "--variant", "pvt-v2-b0"]) == 1
    error = one_line_error(capsys)
    assert "not a readable PyTorch checkpoint" in error and str(path) in error
    assert "weights_only" not in error and "will likely succeed" not in error


@pytest.mark.parametrize("command", ["export-onnx", "predict"])
@pytest.mark.parametrize("name", ["./no-such-model", "models/run1/no-such-model", "no-such-model/"])
def test_a_missing_local_model_path_is_named(tmp_path, capsys, monkeypatch, command, name):
    monkeypatch.chdir(tmp_path)
    argv = ["export-onnx", name, "m.onnx"] if command == "export-onnx" else ["predict", "x.png", "--model", name]
    assert main(argv) == 1
    error = one_line_error(capsys, command)
    assert f"no such file or directory: {name}" in error, error


@pytest.mark.parametrize("command", ["predict", "evaluate", "export-onnx", "flops"])
def test_a_misspelt_local_folder_is_not_looked_up_on_the_hub_when_offline(tmp_path, capsys, monkeypatch, command):
    """`fpn-b0-shape` (a folder misspelt; also a valid Hub id): no such local folder, and offline -- said at once."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    monkeypatch.chdir(tmp_path)
    argv = (
        {
            "predict": ["predict", "x.png", "--model"],
            "evaluate": ["evaluate"],
            "export-onnx": ["export-onnx"],
            "flops": ["flops"],
        }[command]
        + ["fpn-b0-shape"]
        + {"evaluate": [str(tmp_path)], "export-onnx": ["m.onnx"]}.get(command, [])
    )
    assert main(argv) == 1
    error = one_line_error(capsys, command)
    assert (
        "fpn-b0-shape: " in error and "no such local folder" in error and "offline: HF_HUB_OFFLINE is set" in error
    ), error


def test_predict_never_gives_a_checkpoint_a_random_head(tmp_path, capsys):
    """A folder whose config names a classifier but whose weights have no head: refused, not run with a random head."""
    from conftest import tiny_config

    from pvt_hf import PvtImageProcessor, PvtModel

    PvtModel(tiny_config(2)).save_pretrained(tmp_path / "model")
    PvtImageProcessor().save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(
        json.dumps({**config, "architectures": ["PvtForImageClassification"]})
    )
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "red.png"), "--model", str(tmp_path / "model")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' progress bar
    assert f"--model {tmp_path / 'model'}: its weights lack" in error and "classifier.weight" in error, error


def test_predict_reads_16_bit_images_at_full_range(tmp_path, capsys):
    """A 16-bit PNG and its exact 8-bit equivalent get the same answer (`convert("RGB")` clipped the 16-bit one)."""
    from pvt_hf.tools.demo import DEMO_DIR

    gray = np.asarray(Image.fromarray(photos.camera()).resize((48, 48)))
    Image.fromarray(gray).save(tmp_path / "camera8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "camera16.png")
    answers = []
    for name in ("camera8.png", "camera16.png"):
        capsys.readouterr()
        assert main(["predict", str(tmp_path / name), "--model", str(DEMO_DIR), "--json", "--top-k", "10"]) == 0
        answers.append(json.loads(capsys.readouterr().out)[0]["predictions"])
    assert answers[0] == answers[1]


def test_predict_names_an_image_too_elongated_to_resize(tmp_path, capsys):
    """A 10000x1 PNG would be resized to 256x2560000 by the ImageNet transform: refused, naming the file."""
    from pvt_hf import PvtImageProcessor
    from pvt_hf.tools.demo import DEMO_DIR

    model = tmp_path / "model"
    shutil.copytree(DEMO_DIR, model)
    PvtImageProcessor().save_pretrained(model)  # short side 256
    Image.new("RGB", (10000, 1)).save(tmp_path / "wide.png")
    Image.fromarray(photos.camera()).save(tmp_path / "camera.png")
    argv = ["predict", str(tmp_path / "wide.png"), str(tmp_path / "camera.png"), "--model", str(model), "--json"]
    assert main(argv) == 1
    wide, camera = json.loads(capsys.readouterr().out)
    assert f"({tmp_path / 'wide.png'})" in wide["error"] and "exceed the limit" in wide["error"], wide
    assert len(camera["predictions"]) == 5  # the other image is still answered


def test_flops_says_what_model_accepts(tmp_path, capsys):
    (tmp_path / "x.onnx").write_bytes(b"onnx")
    assert main(["flops", str(tmp_path / "x.onnx")]) == 1
    error = one_line_error(capsys, "flops")
    assert (
        f"MODEL {tmp_path / 'x.onnx'} is a file; MODEL takes a preset name (pvt-tiny" in error
        and "or a Hub id" in error
    ), error
    (tmp_path / "empty").mkdir()
    assert main(["flops", str(tmp_path / "empty")]) == 1
    assert f"MODEL {tmp_path / 'empty'}: the folder has no config.json" in one_line_error(capsys, "flops")
    for config, said in (({"model_type": "vit"}, "model_type 'vit'"), ({}, "no model_type"), ("{", "cannot read")):
        (tmp_path / "other").mkdir(exist_ok=True)
        (tmp_path / "other" / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        assert main(["flops", str(tmp_path / "other")]) == 1
        error = one_line_error(capsys, "flops")
        assert said in error and f"MODEL {tmp_path / 'other'}" in error, error


def test_version_is_the_package_s(capsys):
    from pvt_hf import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"pvt-hf {__version__}"


# ----------------------------------------------------------------------------------------------------------------
# Random input: success, or a clean refusal -- never a traceback


_small_ints = st.lists(st.integers(-2, 80), min_size=0, max_size=5)
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=5), _small_ints
)
_keys = st.sampled_from(
    [
        "embed_dims",
        "num_heads",
        "mlp_ratios",
        "depths",
        "sr_ratios",
        "linear",
        "num_classes",
        "patch_size",
        "qkv_bias",
        "img_size",
        "layer_norm_eps",
        "in_chans",
        "num_stages",
        "bogus",
    ]
)


def _near_valid():
    """Official args that are the valid ones with a few entries replaced or removed."""
    return st.dictionaries(_keys, _values, max_size=4).map(lambda changes: {**OFFICIAL_ARGS, **changes}) | st.just(
        OFFICIAL_ARGS
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.one_of(_near_valid(), st.dictionaries(_keys, _values, max_size=6)))
def test_random_official_args_convert_or_raise_value_error(args):
    checkpoint = torch.load(CHECKPOINT, weights_only=True)
    try:
        convert_official_state_dict(checkpoint, official_args=args)
    except ValueError:
        pass


_texts = st.one_of(
    _near_valid().map(json.dumps),
    st.text(max_size=40),
    st.text(min_size=256, max_size=400),
    st.sampled_from(
        ["{", "[]", "null", "1", '{"official_args": 5}', '{"official_args": {"depths": "x"}}', "", "/", ".", "~"]
    ),
)


def refusal_or_success(capsys, argv: list[str], argument: str, value: str | None = None) -> int:
    """`pvt-hf ARGV` in this process: success (0), or a refusal that is one error line naming `argument` or the
    `value` given to it (1: the command's own check, 2: argparse's usage error), never a traceback."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse
        code = exit_info.code
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in err, err
    if code:
        last = err.strip().splitlines()[-1]
        assert last.startswith("pvt-hf convert: error:"), err
        named = (
            value is not None and value.strip() and value.lower().replace("_", "-") in last.lower().replace("_", "-")
        )
        assert argument.lstrip("-") in last or named, (argument, value, err)
    return code


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_texts)
@example(text=json.dumps(OFFICIAL_ARGS, indent=4))
@example(text="x" * 300)
def test_random_official_args_text_on_the_command_line(tmp_path_factory, capsys, text):
    output = tmp_path_factory.mktemp("out") / "repo"
    code = refusal_or_success(
        capsys, ["convert", str(CHECKPOINT), str(output), "--official-args", text, "--no-verify"], "--official-args"
    )
    assert (code == 0) == output.is_dir()  # a refusal writes nothing


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["--variant", "--task", "--dtype", "--push-to-hub"]),
    value=st.one_of(
        st.sampled_from(
            ["pvt_v2_b0", "PVT-v2-b2-li", "fpn_pvt_tiny_ade20k", "classification", "bf16", "", "-x", "a/b"]
        ),
        st.text(max_size=30),
    ),
)
@example(option="--push-to-hub", value="\x1e")  # a record separator: str.splitlines breaks the message there
def test_random_option_values_on_the_command_line(tmp_path_factory, capsys, option, value):
    output = tmp_path_factory.mktemp("out") / "repo"
    source = [] if option == "--variant" else ["--official-args", json.dumps(OFFICIAL_ARGS)]
    argv = ["convert", str(CHECKPOINT), str(output), f"{option}={value}", *source, "--no-verify", "--dry-run"]
    code = refusal_or_success(capsys, argv, option, value)
    assert code != 0 or option != "--variant"  # the mini checkpoint is no released variant


# ----------------------------------------------------------------------------------------------------------------
# Output and help


def test_help_imports_neither_torch_nor_transformers():
    # `import pvt_hf` registers the Auto classes (and imports transformers and torch); the console script's package,
    # pvt_hf_cli, must not import it before a command runs, so `pvt-hf --help` costs only argparse.
    script = (
        "import sys\n"
        "from pvt_hf_cli import main\n"
        "for argv in (['--help'], *([name, '--help'] for name in ('convert', 'predict', 'export-onnx', 'demo'))):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, argv\n"
        "heavy = sorted(name for name in ('pvt_hf', 'torch', 'transformers', 'numpy', 'PIL') if name in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr, result.stderr[-2000:]
    assert "convert" in result.stdout and "export-onnx" in result.stdout


def test_console_script_help_answers():
    script = Path(pvt_hf_script())
    if not script.exists():
        pytest.skip("the pvt-hf console script is not installed beside this interpreter")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: pvt-hf" in result.stdout, result.stderr


@pytest.mark.parametrize("paths", [["a.pth"], ["a.pth", "b", "c"], ["--all", "dir", "a", "b"]])
def test_wrong_number_of_paths_is_a_usage_error(capsys, paths):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", *paths])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "usage: pvt-hf convert CHECKPOINT OUTPUT_DIR" in error and "OUTPUT_DIR" in error.splitlines()[-1]


def test_help_choices_are_the_library_ones():
    from pvt_hf.tools.conversion import TASKS
    from pvt_hf.tools.hub import DTYPES
    from pvt_hf_cli import _common as cli

    assert cli.TASK_CHOICES == TASKS and sorted(cli.DTYPE_CHOICES) == sorted(DTYPES)


def test_convert_usage_names_one_checkpoint_and_one_output(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "[CHECKPOINT OUTPUT_DIR ...]" not in usage and "CHECKPOINT OUTPUT_DIR" in usage
    assert "--all DIR OUTPUT_DIR" in usage
    with pytest.raises(SystemExit):
        main(["export-onnx", "--help"])
    assert "pvt-hf[onnx]" in " ".join(capsys.readouterr().out.split())


def test_export_onnx_reports_its_errors_once(tmp_path, capsys, caplog):
    from conftest import tiny_config

    from pvt_hf import PvtForImageClassification

    caplog.set_level("INFO")
    PvtForImageClassification(tiny_config(2)).save_pretrained(tmp_path / "model")
    capsys.readouterr()
    old_umask = os.umask(0o022)
    try:
        assert (
            main(["export-onnx", str(tmp_path / "model"), str(tmp_path / "m.onnx"), "--exporter", "torchscript"]) == 0
        )
    finally:
        os.umask(old_umask)
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert everything.count("relative error") == 1, everything
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o644  # like any file the user writes


def test_demo_json_prints_only_json(capsys):
    assert main(["demo", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["model_accuracy"] > 0.9


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
