# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""What the commands share: argument types, path checks, the process-wide logger."""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path


logger = logging.getLogger("pvt_hf")


# Choices shown by --help, which must not import torch: the same as `conversion.TASKS` and `hub.DTYPES` (a test checks).
TASK_CHOICES = ("classification", "semantic-segmentation", "backbone")
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


def _shown(value: str) -> str:
    """A value as an error line shows it: as given, or quoted with escapes when it holds line breaks or other
    unprintable characters (which would break the one-line message)."""
    return value if value.isprintable() else repr(value)


def _official_args(value: str) -> dict:
    """--official-args: a JSON object, or the path of a JSON file (its `official_args` entry, if it has one)."""
    from pvt_hf.tools.conversion import ConversionError, validate_official_args

    text = value
    if not value.lstrip().startswith(("{", "[")):  # not inline JSON: a file
        try:
            if not _local_path(value).is_file():
                raise argparse.ArgumentTypeError(
                    f"no such file or directory: {_shown(value)} (expected a JSON object, or the path of a JSON file)"
                )
            text = _local_path(value).read_text()
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise argparse.ArgumentTypeError(f"cannot read {_shown(value)}: {error}") from error
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


def load_library() -> None:
    """Import `pvt_hf`, which registers its classes with transformers' Auto classes and pipelines: every command
    that loads a model needs that, also in a fresh process that never imported it (the console script)."""
    import pvt_hf  # noqa: F401


def check_model_argument(
    value: str, argument: str, accepts: str = "a model folder (config.json) or a Hub id", presets: tuple[str, ...] = ()
) -> None:
    """`pvt_hf.tools.io_utils.check_model_argument`, imported when a command runs (`pvt-hf --help` imports no torch)."""
    from pvt_hf.tools.io_utils import check_model_argument as check

    check(value, argument, accepts, presets)


def check_model_or_preset(value: str, argument: str = "MODEL") -> None:
    """`check_model_argument` for the commands that also take a preset name (export-onnx, flops)."""
    from pvt_hf import PRESETS

    accepts = f"a preset name ({', '.join(PRESETS)}), a model folder (config.json) or a Hub id"
    check_model_argument(value, argument, accepts, presets=tuple(PRESETS))


def repo_folder_name(checkpoint: Path) -> str:
    """A valid Hub repository name from a checkpoint file's stem: `pvt_v2_b2.pth` -> `pvt-v2-b2`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", checkpoint.stem.replace("_", "-"))
    return re.sub(r"[-.]{2,}", "-", name).strip("-.")[:96].strip("-.") or "pvt-model"
