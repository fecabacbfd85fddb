# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""Writing outputs so that nothing is lost.

An output folder (`atomic_output_dir`) or file (`atomic_output_file`) is written into a staging folder or file beside
it and moved into place only when complete. While it is written, a lock file beside the target keeps a second pvt-hf
process from writing the same target; an existing target is replaced only with `force`, also when it appeared during
the run. A run that was killed leaves its staging folder or file behind (its name holds the pid); the next run for the
same target removes such leftovers once their process is gone. Outputs are never allowed to be, or contain, what the
user gave as input.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path


logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    pass


class OutputIsInputError(ValueError):
    """An output that would replace (part of) an input."""


def refuse_overwriting_input(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "output", inside: bool = False
) -> None:
    """Raise OutputIsInputError if writing `output` could destroy an input: if it is an input, contains one, or
    already exists inside an input folder (writing it would replace part of that input); with `inside`, also if it
    would be created inside an input folder (an output folder that a run keeps writing into)."""
    # Both as given and with links resolved: a link inside the output is lost with it, as is what a link points to.
    targets = {Path(os.path.abspath(output)), Path(output).resolve()}
    sources = {variant for source in inputs for variant in (Path(os.path.abspath(source)), Path(source).resolve())}
    for target, source in ((target, source) for target in targets for source in sources):
        if target == source:
            raise OutputIsInputError(f"the {what} {output} is the input {source}; choose another {what}.")
        if target in source.parents:
            raise OutputIsInputError(
                f"the {what} {output} contains the input {source}; replacing it would delete the input. Choose "
                f"another {what}."
            )
        if source in target.parents and (target.exists() or inside):
            raise OutputIsInputError(
                f"the {what} {output} is inside the input {source}"
                + (" and exists; replacing it" if target.exists() else "; writing it")
                + f" would change the input. Choose another {what}."
            )


def check_output_location(output: str | os.PathLike, described: str) -> None:
    """Fail before any work if `output` cannot be written: the folder that will hold it (or, where that is still to be
    made, its nearest existing ancestor) must be a folder where a file can be created -- tried with a probe file,
    which permissions, read-only mounts and ACLs all answer truly -- and `output` must not be a dangling link.
    `described` names the output as the user gave it (`"OUTPUT_DIR out/"`), for the messages."""
    output = Path(output).absolute()
    if output.is_symlink() and not output.exists():
        raise FileNotFoundError(
            f"{described} is a symbolic link to {os.readlink(output)}, which does not exist; remove the link or give "
            "another path"
        )
    folder = output.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(
            f"{described}: {folder} is not a folder (it is a file), so nothing can be written there"
        )
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{output.name}.probe-", dir=folder)
    except OSError as error:
        raise PermissionError(
            f"{described}: cannot create files in {folder} ({error.strerror}); give a writable location"
        ) from None
    os.close(handle)
    os.unlink(probe)


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a possible pid
        return False
    return True


def staging_pattern(path: Path) -> re.Pattern:
    """Names of the staging (and retired) folders and files of `path`: `.NAME.incomplete-PID-HEX`,
    `.NAME.replaced-PID-HEX`."""
    return re.compile(rf"\.{re.escape(path.name)}\.(?:incomplete|replaced)-(\d+)-[0-9a-f]+")


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def apply_umask(path: Path) -> None:
    """Give `path` (and, for a folder, everything in it) the permissions `mkdir` and `open` would: staging files made
    by `mkstemp` or by writers such as safetensors are 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def _remove(path: Path) -> None:
    """Remove a staging folder or file (a link itself, never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_staging(path: Path) -> None:
    """Remove the staging folders and files of `path` left by killed runs: only this target's, only of processes now
    gone."""
    pattern = staging_pattern(path)
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and int(match[1]) != os.getpid() and not _process_is_alive(int(match[1])):
            logger.info("Removing %s, left by an interrupted run", entry)
            _remove(entry)


@contextlib.contextmanager
def _target_lock(path: Path) -> Iterator[None]:
    """Hold `.NAME.lock` beside `path`; raise OutputExistsError if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the check before the final move still refuses to replace
        yield
        return
    lock_path = path.parent / f".{path.name}.lock"
    while True:
        handle = open(lock_path, "a+")  # noqa: SIM115 - held until the end of the context
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputExistsError(f"{path} is being written by another process (it holds {lock_path}).") from None
        # The previous holder removes the file when done: if it did after we opened it, lock the new one.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
        handle.close()
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        handle.close()


@contextlib.contextmanager
def _atomic_output(path: str | os.PathLike, force: bool, folder: bool) -> Iterator[Path]:
    """What `atomic_output_dir` and `atomic_output_file` share: the checks, the lock, the staging and the move."""
    path = Path(path).absolute()
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _target_lock(path):
        remove_stale_staging(path)
        staging = _sibling(path, "incomplete")
        if folder:
            staging.mkdir()
        try:
            yield staging
            if not folder and not staging.is_file():
                raise FileNotFoundError(f"nothing was written to the staging file {staging} of {path}.")
            apply_umask(staging)
            if path.exists():
                if not force:
                    raise OutputExistsError(
                        f"{path} appeared while this run was writing it (another process?); it was left as it is. "
                        "Pass --force to replace it."
                    )
                if folder:  # a folder cannot be renamed over another: retire the old one first
                    retired = _sibling(path, "replaced")
                    path.rename(retired)
                    staging.rename(path)
                    shutil.rmtree(retired, ignore_errors=True)
                else:
                    os.replace(staging, path)
            else:
                staging.rename(path)
        finally:
            if staging.exists() or staging.is_symlink():
                _remove(staging)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a new staging folder beside `path`; on success it becomes `path` (replacing an existing `path` only with
    `force`, also one that appeared meanwhile), on failure or interruption it is removed and `path` stays as it
    was. The result has the permissions `mkdir` would give it (from the umask)."""
    with _atomic_output(path, force, folder=True) as staging:
        yield staging


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield the path of a staging file beside `path` (not created: write it there); on success it becomes `path`
    (replacing an existing file only with `force`, also one that appeared meanwhile), on failure or interruption it
    is removed and `path` stays as it was. The same lock and leftover cleanup as `atomic_output_dir`; the result has
    the permissions `open` would give it (from the umask)."""
    with _atomic_output(path, force, folder=False) as staging:
        yield staging


def refuse_output_over_arguments(
    output: str | os.PathLike, output_argument: str, inputs: Mapping[str, str | os.PathLike | None]
) -> None:
    """`refuse_overwriting_input` for a run's output folder given on the command line (refused also inside an input
    folder: the run keeps writing into it), the error naming both arguments. `inputs` maps argument names to values;
    values that are no existing local path (Hub ids, presets, unset) are skipped."""
    for argument, value in inputs.items():
        if value is None or not Path(value).expanduser().exists():
            continue
        try:
            refuse_overwriting_input(output, [Path(value).expanduser()], output_argument, inside=True)
        except OutputIsInputError as error:
            raise OutputIsInputError(f"{output_argument} {output} and {argument} {value}: {error}") from None


@contextlib.contextmanager
def remove_if_left_empty(folder: str | os.PathLike) -> Iterator[None]:
    """On failure, remove `folder` if it did not exist before the block and is still empty: a run that fails before
    writing anything leaves no empty output folder behind (what a failed run did write, e.g. checkpoints, stays)."""
    existed = os.path.lexists(folder)
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):  # not empty, already gone, or removed by another process
                os.rmdir(folder)
        raise


def check_model_argument(
    value: str | None,
    argument: str,
    accepts: str = "a model folder (config.json) or a Hub id",
    presets: tuple[str, ...] = (),
) -> None:
    """A model argument (of the CLI or an example script) must be a local model folder, one of `presets`, or a Hub
    model id that exists (in the Hub cache, or asked once, without retries; offline, HF_HUB_OFFLINE=1: the cache
    only). A value that can only be a path (`./x`, `/x`, `~/x`, `a/b/c`) and a missing local folder are said to be
    one before any Hub request, so that a typo fails at once instead of after the Hub client's retries. Raises
    `FileNotFoundError` naming `argument`, the value and what the argument `accepts`. No value: nothing to check."""
    if not value:
        return
    path = Path(value)
    with contextlib.suppress(RuntimeError):  # `~user` of an unknown user stays as it is
        path = path.expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{argument} {value}: the folder has no config.json; {argument} takes {accepts} (a folder written by "
                "save_pretrained or `pvt-hf convert`)"
            )
        return
    if path.exists() or path.is_symlink():
        kind = "a dangling symbolic link" if not path.exists() else "a file"
        raise FileNotFoundError(f"{argument} {value} is {kind}; {argument} takes {accepts}")
    if value in presets:
        return
    not_a_preset = f"not a preset ({', '.join(presets)}), " if presets else ""
    missing = f"{argument} {value}: {not_a_preset}no such local folder (no such file or directory: {value})"
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value) is None or value.startswith((".", "~")) or ".." in value:
        raise FileNotFoundError(f"{missing}, and not a Hub repository id; {argument} takes {accepts}")
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(value, "config.json"), str):  # downloaded before: works offline too
        return
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(f"{missing}, and not a Hub model in the local cache (offline: HF_HUB_OFFLINE is set)")
    try:
        HfApi().model_info(value, timeout=10)
    except GatedRepoError:  # exists; the download says what access it needs
        return
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{missing}, and not found on the Hub either") from None
    except Exception as error:  # unreachable Hub (connection refused, DNS, proxy, timeout): say so at once
        reason = " ".join(str(error).split()) or type(error).__name__
        raise FileNotFoundError(f"{missing}, and the Hub could not be reached to look it up ({reason})") from None


def trainer_checkpoint(value: str | None, output_dir: str | os.PathLike, max_steps: int) -> str | None:
    """A `Trainer` script's `--resume_from_checkpoint`: `latest` is the newest OUTPUT_DIR/checkpoint-N (transformers'
    `get_last_checkpoint`; None, a fresh start, when there is none), else the named folder. It must be complete (the
    Trainer writes trainer_state.json last) and not past `max_steps` (nothing would be trained); at it, a warning."""
    if not value:
        return None
    if value == "latest":
        from transformers.trainer_utils import get_last_checkpoint

        value = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        logger.info("--resume_from_checkpoint latest: %s", value or "no checkpoint yet, starting from scratch")
        if value is None:
            return None
    state = Path(value, "trainer_state.json")
    if not state.is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: not a complete Trainer checkpoint (no trainer_state.json: its save did "
            "not finish); name an earlier checkpoint, or remove this one"
        )
    step = json.loads(state.read_text())["global_step"]
    if max_steps > 0 and step > max_steps:
        raise ValueError(
            f"--resume_from_checkpoint {value}: {value} is at step {step}, past --max_steps {max_steps}: there is nothing "
            "to train (raise --max_steps to continue the run, or resume from an earlier checkpoint)"
        )
    if max_steps > 0 and step == max_steps:
        logger.warning("--resume_from_checkpoint: %s is already at --max_steps %d: nothing is trained", value, step)
    return str(value)
