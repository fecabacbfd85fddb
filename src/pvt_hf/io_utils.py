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
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    pass


class OutputIsInputError(ValueError):
    """An output that would replace (part of) an input."""


def refuse_overwriting_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Raise OutputIsInputError if writing `output` could destroy an input: if it is an input, contains one, or
    already exists inside an input folder (writing it would replace part of that input)."""
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
        if source in target.parents and target.exists():
            raise OutputIsInputError(
                f"the {what} {output} is inside the input {source} and exists; replacing it would change the input. "
                f"Choose another {what}."
            )


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
