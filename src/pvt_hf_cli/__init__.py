# Copyright 2026 The pvt-hf authors. Licensed under the Apache License, Version 2.0 (see LICENSE).
"""The `pvt-hf` command line.

A package of its own beside `pvt_hf`: importing `pvt_hf` registers its classes with transformers' Auto classes (and
so imports transformers and torch), and a module inside it could not be imported without that. Here every command's
parser is plain argparse and its handler imports the library when it runs, so `pvt-hf --help` and `pvt-hf CMD --help`
cost only argparse. One module per command: `add_parser(subparsers)` with `set_defaults(handler=...)`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import convert, demo, evaluate, export_onnx, flops, predict
from ._common import Terminated, _raise_terminated, load_library


COMMANDS = (demo, convert, predict, export_onnx, evaluate, flops)


class _VersionAction(argparse.Action):
    """--version: the installed distribution's version (the package metadata, so nothing heavy is imported), else
    `pvt_hf.__version__` (a source tree on PYTHONPATH)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("pvt-hf")
        except PackageNotFoundError:
            from pvt_hf import __version__ as number
        print(f"pvt-hf {number}")
        parser.exit()


class _OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors on one line: a value may hold line or record separators (str.splitlines breaks at \x1c-\x1e too),
    which would split the message that names it. Subcommand parsers are of the same class."""

    def error(self, message: str):
        super().error(" ".join(message.split()))


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog="pvt-hf",
        description="Pyramid Vision Transformer tools for transformers. (The speed benchmark is a script of the "
        "source checkout: python benchmarks/benchmark.py --help.)",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version of pvt-hf and exit")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers can be set
    previous_handler = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        load_library()  # the Auto classes know pvt-hf's models before any command builds a model or a pipeline
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


__all__ = ["build_parser", "main"]
