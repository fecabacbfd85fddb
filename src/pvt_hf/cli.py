"""The `pvt-hf` command line."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
from pathlib import Path

logger = logging.getLogger("pvt_hf")


# Choices shown by --help, which must not import torch: the same as `conversion.TASKS` and `hub.DTYPES` (a test checks).
TASK_CHOICES = ("classification", "semantic-segmentation")
DTYPE_CHOICES = ("bf16", "bfloat16", "float16", "float32", "fp16", "fp32")
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every `finally` runs: staging folders are removed, child processes
    stopped (`subprocess.run` kills its child on any exception)."""


def _raise_terminated(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


def _local_path(value: str) -> Path:
    """`value` as a path, `~` expanded where it can be (`~user` of an unknown user stays as it is)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)


def _official_args(value: str) -> dict:
    """--official-args: a JSON object, or the path of a JSON file (its `official_args` entry, if it has one)."""
    from .conversion import ConversionError, validate_official_args

    text = value
    if not value.lstrip().startswith(("{", "[")):  # not inline JSON: a file
        try:
            if not _local_path(value).is_file():
                raise argparse.ArgumentTypeError(
                    f"no such file or directory: {value} (expected a JSON object, or the path of a JSON file)"
                )
            text = _local_path(value).read_text()
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise argparse.ArgumentTypeError(f"cannot read {value}: {error}") from error
    try:
        args = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:  # RecursionError: absurdly nested
        raise argparse.ArgumentTypeError(f"not valid JSON ({error})") from error
    if isinstance(args, dict) and "official_args" in args:
        args = args["official_args"]
    try:
        return validate_official_args(args)
    except ConversionError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--official-args: ")) from error


def _repo_id(value: str) -> str:
    """--push-to-hub: checked before any work, not after the conversion."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as error:
        raise argparse.ArgumentTypeError(f"not a valid Hub repository id: {value!r} ({error})") from error
    return value


def check_model_argument(value: str, argument: str) -> None:
    """A model argument that looks like a local path must exist (else the Hub client complains about repo ids)."""
    if _local_path(value).exists():
        return
    hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value) is not None and not value.startswith((".", "~"))
    if not hub_id:
        raise FileNotFoundError(f"{argument}: no such file or directory: {value}")


def repo_folder_name(checkpoint: Path) -> str:
    """A valid Hub repository name from a checkpoint file's stem: `pvt_v2_b2.pth` -> `pvt-v2-b2`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", checkpoint.stem.replace("_", "-"))
    return re.sub(r"[-.]{2,}", "-", name).strip("-.")[:96].strip("-.") or "pvt-model"


def add_convert_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an official PVT checkpoint into a verified, Hub-ready pvt-hf folder",
        usage="%(prog)s CHECKPOINT OUTPUT_DIR [options]\n       %(prog)s --all DIR OUTPUT_DIR [options]",
        description="Convert an official PVT checkpoint (whai362/PVT classifier or mmseg Semantic FPN; also timm "
        "pvt_v2 state dicts and transformers pvt/pvt_v2 folders) into a folder that AutoModel*.from_pretrained "
        "loads, also with trust_remote_code=True and without pvt-hf. The folder is written beside OUTPUT_DIR and "
        "moved into place when complete and verified; an existing OUTPUT_DIR is replaced only with --force, and "
        "never one that is or contains the input.",
    )
    parser.add_argument("paths", nargs="+", metavar="CHECKPOINT OUTPUT_DIR", help="checkpoint file (or transformers folder) and output folder; with --all only OUTPUT_DIR")
    parser.add_argument("--all", metavar="DIR", help=f"convert every {'/'.join(CHECKPOINT_SUFFIXES)} file in DIR into OUTPUT_DIR/<file name>/ (e.g. pvt_v2_b2.pth -> pvt-v2-b2)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--variant", metavar="NAME", help="released architecture, e.g. pvt-v2-b2, pvt_small, fpn_pvt_v2_b2_ade20k (detected from the shapes when omitted)")
    source.add_argument(
        "--official-args",
        metavar="JSON",
        type=_official_args,
        help="a JSON object (or the path of a JSON file) of the official constructor's keyword arguments: "
        "embed_dims, num_heads, mlp_ratios, depths, sr_ratios, linear, num_classes, patch_size, qkv_bias, img_size, "
        "and for segmentation neck_out_channels, head_channels",
    )
    parser.add_argument("--task", choices=TASK_CHOICES, help="checked against the checkpoint (detected when omitted)")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="dtype of the saved weights")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT_DIR if it exists")
    parser.add_argument("--no-verify", action="store_true", help="skip reloading the folder in a clean process")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", type=_repo_id, help="upload to this Hub repository (with --all: to NAMESPACE/<name>)")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    parser.add_argument("--revision", help="with --push-to-hub: branch to upload to")
    parser.add_argument("--commit-message", help="with --push-to-hub: commit message")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list the files, upload nothing")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_convert, usage_error=parser.error)  # usage_error: exit 2 with the usage


def convert_one(checkpoint: Path, output_dir: Path, args: argparse.Namespace, repo_id: str | None) -> dict:
    """Convert, check, write and optionally push one checkpoint; returns the row of the summary."""
    from .conversion import convert_checkpoint, load_checkpoint
    from .hub import compare_with_timm, push_folder, write_repo_folder
    from .io_utils import OutputExistsError, refuse_overwriting_input

    refuse_overwriting_input(output_dir, [checkpoint], "output folder")
    if output_dir.exists() and not args.force:
        raise OutputExistsError(f"{output_dir} already exists; pass --force to replace it.")
    model, report = convert_checkpoint(checkpoint, variant=args.variant, official_args=args.official_args, task=args.task)
    if "detected_variant" in report:
        logger.info("%s: detected variant %s", checkpoint.name, report["detected_variant"])
    variant = None if report["architecture"].startswith("from ") else report["architecture"]
    checks = {}
    if args.dtype in ("float32", "fp32") and not args.no_verify:
        timm_error = compare_with_timm(load_checkpoint(checkpoint)[0], model, variant)
        if timm_error is not None:
            logger.info("timm's %s on the same weights: logits relative error %.1e", variant, timm_error)
            if timm_error > 1e-4:
                raise RuntimeError(f"Verification failed: timm's logits differ by {timm_error:.2e}.")
            checks["timm_relative_error"] = timm_error
    results = write_repo_folder(
        model, output_dir, variant=variant, source=checkpoint.name, repo_id=repo_id, dtype=args.dtype,
        force=args.force, verify=not args.no_verify, image_processor=default_image_processor(report["task"]),
        checks=checks,
    )  # fmt: skip
    row = {"checkpoint": checkpoint.name, "output": str(output_dir), **report, **checks, **results}
    if "reload_relative_error" in results:
        logger.info("Reloaded %s in a clean process: logits relative error %.1e", output_dir, results["reload_relative_error"])
    logger.info(
        "Converted %s (%s, %s, %.2fM parameters) to %s",
        checkpoint, report["architecture"], report["task"], report["num_parameters"] / 1e6, output_dir,
    )  # fmt: skip
    if args.push_to_hub:
        files = push_folder(
            output_dir, repo_id, private=args.private, revision=args.revision, commit_message=args.commit_message,
            dry_run=args.dry_run,
        )  # fmt: skip
        verb = "Would upload" if args.dry_run else "Uploaded"
        logger.info("%s to %s: %s", verb, repo_id, ", ".join(files))
        row["pushed"] = not args.dry_run
    return row


def default_image_processor(task: str):
    """The official evaluation transform of the task, written as preprocessor_config.json."""
    try:
        from .image_processing_pvt import PvtImageProcessor
    except ImportError:
        return None
    if task == "semantic-segmentation":
        return PvtImageProcessor.for_semantic_segmentation()
    return PvtImageProcessor()


def run_convert(args: argparse.Namespace) -> int:
    if args.all:
        if len(args.paths) != 1:
            args.usage_error(f"with --all, give only OUTPUT_DIR after --all DIR, got {len(args.paths)} paths")
        return run_convert_all(Path(args.all), Path(args.paths[0]), args)
    if len(args.paths) != 2:
        args.usage_error(f"expected CHECKPOINT OUTPUT_DIR (or --all DIR OUTPUT_DIR), got {len(args.paths)} paths")
    checkpoint, output_dir = Path(args.paths[0]), Path(args.paths[1])
    convert_one(checkpoint, output_dir, args, repo_id=args.push_to_hub)
    return 0


def run_convert_all(folder: Path, output_root: Path, args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .io_utils import refuse_overwriting_input

    if not folder.is_dir():
        raise NotADirectoryError(f"--all {folder}: not a folder")
    refuse_overwriting_input(output_root, [folder], "output folder")
    checkpoints = sorted(path for path in folder.iterdir() if path.suffix in CHECKPOINT_SUFFIXES and path.is_file())
    if not checkpoints:
        raise FileNotFoundError(f"--all {folder}: no {'/'.join(CHECKPOINT_SUFFIXES)} files")
    rows, failures, taken = [], 0, {}
    with logging_redirect_tqdm(loggers=[logger]):
        for checkpoint in tqdm(checkpoints, desc="converting", unit="checkpoint", disable=None):
            name = repo_folder_name(checkpoint)
            try:
                if name in taken:
                    raise ValueError(f"its output name {name!r} is also that of {taken[name]}; rename one of them")
                taken[name] = checkpoint.name
                repo_id = f"{args.push_to_hub.rstrip('/')}/{name}" if args.push_to_hub else None
                rows.append(convert_one(checkpoint, output_root / name, args, repo_id=repo_id))
            except Exception as error:  # one bad file must not stop the others; each is reported
                if getattr(args, "verbose", False):
                    raise
                failures += 1
                rows.append({"checkpoint": checkpoint.name, "error": " ".join(str(error).split())})
                logger.error("%s: %s", checkpoint.name, rows[-1]["error"])
    print("| checkpoint | repo | task | parameters | reload error | status |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['checkpoint']} | – | – | – | – | failed: {row['error'][:120]} |")
        else:
            error = row.get("reload_relative_error")
            print(
                f"| {row['checkpoint']} | {Path(row['output']).name} | {row['task']} | {row['num_parameters'] / 1e6:.1f}M "
                f"| {'–' if error is None else f'{error:.1e}'} | ok |"
            )
    return 1 if failures else 0


def add_predict_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a PVT model",
        description="Classify images with a converted PVT model (local folder or Hub id). Unreadable images are "
        "reported and skipped; the others still get their answer (exit code 1 if any image failed).",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--top-k", type=int, default=5, help="labels per image (default 5)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow the model folder's own code")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    check_model_argument(args.model, "--model")
    from PIL import Image
    from transformers import pipeline

    classifier = pipeline(
        "image-classification", model=args.model, device=args.device, trust_remote_code=args.trust_remote_code
    )
    results, images, names = [], [], []
    for path in args.images:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
            names.append(path)
        except Exception as error:  # unreadable file: report it, answer the others
            results.append({"image": path, "error": f"cannot read image: {' '.join(str(error).split())}"})
    top_k = min(args.top_k, classifier.model.config.num_labels)
    predictions = classifier(images, top_k=top_k, batch_size=args.batch_size) if images else []
    results += [{"image": name, "predictions": prediction} for name, prediction in zip(names, predictions)]
    results.sort(key=lambda result: args.images.index(result["image"]))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for result in results:
            if "error" in result:
                print(f"{result['image']}: error: {result['error']}", file=sys.stderr)
                continue
            print(result["image"])
            for prediction in result["predictions"]:
                print(f"  {prediction['score']:.4f}  {prediction['label']}")
    return 1 if any("error" in result for result in results) else 0


def add_export_onnx_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a PVT model to ONNX (dynamic batch, height and width), verified with onnxruntime",
        usage="%(prog)s MODEL OUT.onnx [options]",
        description="Export a PVT model to one self-contained ONNX file whose input `pixel_values` has dynamic "
        "batch, height and width, then run it with onnxruntime at several sizes (square, non-square, odd) and "
        "compare with PyTorch. MODEL is a model folder, a Hub id or a preset name (e.g. pvt-v2-b2: random weights, "
        "for trying deployment). Needs onnx and onnxruntime: `pip install 'pvt-hf[onnx]'` (onnxscript too for the "
        "dynamo exporter).",
    )
    parser.add_argument("model", metavar="MODEL", help="model folder, Hub id or preset name")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--exporter", default="auto", choices=["auto", "dynamo", "torchscript"], help="torch exporter (default: dynamo when onnxscript is installed, else torchscript)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18 dynamo, 17 torchscript)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest relative error accepted (default 1e-4)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks")
    parser.set_defaults(handler=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    from .io_utils import OutputExistsError, refuse_overwriting_input

    output = Path(args.output)
    check_model_argument(args.model, "MODEL")
    if Path(args.model).exists():
        refuse_overwriting_input(output, [args.model], "output file")
    if output.is_dir():
        raise IsADirectoryError(f"{output} is a folder; give the path of the .onnx file to write.")
    if output.exists() and not args.force:
        raise OutputExistsError(f"{output} already exists; pass --force to replace it.")
    if not args.no_verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as error:
            raise ImportError("verifying needs onnxruntime: `pip install 'pvt-hf[onnx]'` (or pass --no-verify)") from error
    from .onnx_export import export_onnx

    result = export_onnx(
        args.model, output, exporter=args.exporter, opset_version=args.opset, verify=not args.no_verify,
        tolerance=args.tolerance,
    )  # fmt: skip
    size = output.stat().st_size / 2**20
    print(f"wrote {output} ({size:.1f} MiB, {result.exporter} exporter, opset {result.opset_version}, outputs: {', '.join(result.output_names)})")
    if result.errors:
        sizes = ", ".join(f"{b}x3x{h}x{w}" for b, h, w in result.errors)
        print(f"onnxruntime vs PyTorch at {sizes}: max relative error {result.max_relative_error:.2e}")
    return 0


def add_demo_parser(subparsers) -> None:
    from . import demo  # light: its heavy imports happen when it runs

    parser = subparsers.add_parser(
        "demo",
        help="offline demo on the shipped tiny digits model (trained from scratch; not an official checkpoint)",
        description="Offline demo of the main path on the tiny PVT v2 shipped with pvt-hf (trained from scratch on "
        "scikit-learn's 8x8 handwritten digits with examples/finetune_image_classification.py; not an official PVT "
        "checkpoint): write it as a Hub-ready folder, load it back with AutoModelForImageClassification and "
        "pipeline('image-classification'), classify the held-out digits, print the accuracy and images/s.",
    )
    demo.add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="full tracebacks")
    parser.set_defaults(handler=demo.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvt-hf",
        description="Pyramid Vision Transformer tools for transformers. (The speed benchmark is a script of the "
        "source checkout: python benchmarks/benchmark.py --help.)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_demo_parser(subparsers)
    add_convert_parser(subparsers)
    add_predict_parser(subparsers)
    add_export_onnx_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        return args.handler(args)
    except Terminated:
        print(f"pvt-hf {args.command}: terminated; partial output removed", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"pvt-hf {args.command}: interrupted; partial output removed", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line for users; the traceback on request
        if getattr(args, "verbose", False):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"pvt-hf {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
