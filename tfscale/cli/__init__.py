"""The `tfscale` command: argparse subcommands, one module each; thin: parse, call one function, print.

Each command module has ``add_parser(subparsers)`` which registers the
subcommand and sets ``func`` to a function of the parsed args returning an
exit code. A `TfscaleError` becomes a one-paragraph message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Command modules, in the order `tfscale --help` lists them.
_COMMANDS = ("info", "demo", "train", "launch", "data", "export", "quantize", "tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tfscale", description="Scale one Keras 3 model from a laptop to "
                                     "GPUs, TPUs and clusters, and export it to TFLite.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log tfscale's decisions")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"tfscale.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"tfscale.cli.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s tfscale: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from tfscale.errors import TfscaleError

    try:
        return int(args.func(args) or 0)
    except TfscaleError as e:
        print(f"tfscale {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfscale {args.command}: interrupted", file=sys.stderr)
        return 130
