"""`tfscale --help` and every command's: a description, an example, help for every option, defaults shown."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import procs
import tfscale
from tfscale.cli import build_parser


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    # argparse privates (`_actions`, `_SubParsersAction`; also `_HelpAction` below): argparse has no public way
    # to list a parser's options or subcommands. A rename in a Python release gives an AttributeError at
    # collection, so every test in this file errors (none passes silently).
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix} {name}".strip()
                yield full, sub
                yield from _commands(sub, full)


COMMANDS = dict(_commands(build_parser()))


def _params():
    for name in sorted(COMMANDS):
        yield pytest.param(name, id=name.replace(" ", "-"))


def test_every_command_is_covered():
    assert {"info", "demo", "train", "launch", "data", "export", "quantize", "tune", "data convert",
            "data inspect", "data serve"} <= set(COMMANDS)


@pytest.mark.parametrize("name", _params())
def test_command_help_has_a_description_an_example_and_help_for_every_option(name):
    parser = COMMANDS[name]
    text = parser.format_help()
    assert parser.description and len(parser.description.split()) >= 8, f"{name}: no description"
    assert parser.epilog and "example" in parser.epilog and f"tfscale {name}" in parser.epilog, f"{name}: no example"
    undocumented = [a.dest for a in parser._actions
                    if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert not undocumented, f"{name}: options without help: {undocumented}"
    assert "(default: None" not in text and "(default: False" not in text


@pytest.mark.parametrize("name", ["demo", "quantize", "export", "tune", "train"])
def test_defaults_are_shown(name):
    parser = COMMANDS[name]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
                and not isinstance(action, argparse._HelpAction):
            assert f"default: {action.default}" in text, action.dest  # the value itself, not the word


def test_top_level_help_and_version():
    parser = build_parser()
    assert parser.description and "examples:" in parser.epilog
    env = {k: v for k, v in procs.base_env().items()}
    done = subprocess.run([sys.executable, "-m", "tfscale", "--version"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"tfscale {tfscale.__version__}"
    done = subprocess.run([sys.executable, "-m", "tfscale", "--help"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert "--version" in done.stdout and "--verbose" in done.stdout and "TFSCALE_VERBOSE" in done.stdout


def test_demo_replicas_trains_on_that_many_replicas(tmp_path):
    """`tfscale demo --replicas N` (README's command table): N logical CPU devices under mirrored, the global batch
    a multiple of N split evenly (3: 63 = 3 x 21, where the default is 64)."""
    done = procs.run_one(["-m", "tfscale", "demo", "--replicas", "3", "--epochs", "1", "--no-export",
                          "--out", str(tmp_path / "demo")], timeout=300,
                         hide=procs.hiding("sklearn"))  # the demo's data comes with scikit-learn
    lines = done.stdout.splitlines()
    print("\n".join(lines[-5:]))
    assert any(line.startswith("tfscale demo on Scale(mirrored: 3 replica(s) = 1 worker(s) x 3 CPU; chief;")
               and line.endswith(": 3 CPU replicas asked for (logical devices)") for line in lines), done.stdout
    assert any(line.startswith("batch 63 (21 per replica), ") for line in lines), done.stdout
    assert any(line.startswith("test accuracy: ") for line in lines) and not (tmp_path / "demo").exists()
