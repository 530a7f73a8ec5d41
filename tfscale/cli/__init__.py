"""The `tfscale` command: argparse subcommands, one module each; thin: parse, call one function, print.

Each command module has ``add_parser(subparsers)`` which registers the
subcommand and sets ``func`` to a function of the parsed args returning an
exit code. A `TfscaleError` becomes a one-paragraph message and exit code 2,
never a traceback. Runs are quiet (`tfscale.quiet`) unless ``--verbose`` or
``TFSCALE_VERBOSE=1``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import textwrap
import time

from tfscale import __version__, quiet

STARTED = time.monotonic()  # "done in" counts from here: TensorFlow's start-up is part of the run

# Command modules, in the order `tfscale --help` lists them.
_COMMANDS = ("info", "demo", "train", "launch", "checkpoints", "data", "export", "quantize", "tune")
# Commands that never load TensorFlow in this process: no stderr filter, only the workers' environment.
_NO_TENSORFLOW = ("launch", "checkpoints")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and examples as written, and shows each option's default.

    A default is shown when it says something: not for flags (False), not for
    None (the help says what happens then), and not when the help names it.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text.lower() or default in (None, False, argparse.SUPPRESS)
                or default == [] or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands use `HelpFormatter` too."""

    def __init__(self, *args, **kwargs):
        if kwargs.get("formatter_class") in (None, argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter):
            kwargs["formatter_class"] = HelpFormatter  # the same layout, plus defaults
        super().__init__(*args, **kwargs)


def paragraphs(text: str, width: int = 100) -> str:
    """`text` wrapped to `width` columns, paragraph by paragraph (blank lines between them kept)."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width) for p in text.split("\n\n"))


def command(subparsers, name: str, *, help: str, description: str, examples: list[str]) -> argparse.ArgumentParser:
    """Registers subcommand `name` with a one-line `help`, a wrapped `description` and the examples under it."""
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    return subparsers.add_parser(name, help=help, description=paragraphs(description), epilog=epilog)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tfscale",
                    description=paragraphs("Scale one Keras 3 model from a laptop to GPUs, TPUs and clusters, feed "
                                           "it with streaming tf.data input, and export it to validated, quantized "
                                           "TFLite. Runs are quiet: TensorFlow's own start-up and info lines are "
                                           "hidden unless --verbose."),
                    epilog="examples:\n  tfscale info\n  tfscale demo\n  tfscale launch -n 2 -- python train.py\n\n"
                           "`tfscale COMMAND --help` shows each command's options and an example.")
    parser.add_argument("--version", action="version", version=f"tfscale {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show everything: tfscale's decisions and TensorFlow's own output "
                             f"(the same as {quiet.VERBOSE_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"  # the processes this one starts show everything too
    if args.command in _NO_TENSORFLOW:
        for key, value in quiet.variables().items():
            os.environ.setdefault(key, value)
    else:
        quiet.enable()
    logging.basicConfig(level=logging.INFO if quiet.verbose() else logging.WARNING,
                        format="%(levelname)s tfscale: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from tfscale.errors import TfscaleError, missing_module

    try:
        try:  # an optional package the command needs (TensorFlow on a JAX-only install): the extra to install
            code = int(args.func(args) or 0)
        except ModuleNotFoundError as e:
            raise missing_module(e, where=f"tfscale {args.command}") from None
    except TfscaleError as e:
        print(f"tfscale {args.command}: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"tfscale {args.command}: interrupted", file=sys.stderr)
        code = 130
    engine = sys.modules.get("tfscale.strategy.tf_engine")  # loaded where a TensorFlow engine was built
    if code and engine is not None:
        engine.leave_at_once()  # a failed command skips the workers' exit barrier: its launcher sees it at once
    return code
