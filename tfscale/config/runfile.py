"""Run files: the one loader and the one set of rules of `tfscale train run.toml` and `tfscale tune run.toml`.

A run file of either command holds the same shared keys, which mean the same thing in both:

- ``model = "module:function"`` (and ``model_args``): the model function;
- ``[data]`` (`DataConfig`): ``train`` and ``validation`` functions, ``args``, ``shuffle_buffer``, ``seed``;
- ``strategy``: a strategy name (``"mirrored"``), a preset file (a string ending in ``.toml``: tried in the
  run file's folder, then the working directory, then the presets shipped with tfscale) or a ``[strategy]`` table;

and the tables of its command: ``[train]`` and ``[export]`` (`tfscale train`), ``[tune]`` (`tfscale tune`).
A ``module:function`` (or ``file.py:function``) is looked up in the run file's folder, then the working
directory, as a preset file is (`tfscale.config.functions.load_function` with ``base_dir``).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any

from tfscale.config.loading import apply_overrides, from_mapping, load_toml
from tfscale.config.strategy import StrategyConfig, find_preset, load_strategy_preset
from tfscale.errors import ConfigError

T = typing.TypeVar("T")

# The tables only one command reads: a file given to the other command is told which one reads them.
COMMAND_TABLES = {"train": ("train", "export"), "tune": ("tune",)}


def folder_of(path: str | os.PathLike) -> str:
    """The run file's folder: where its ``module:function`` names and preset files are looked up first."""
    return os.path.dirname(os.path.abspath(os.fspath(path)))


def read_run_file(cls: type[T], path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = (), *,
                  command: str) -> T:
    """Reads a run file into `cls` (`RunConfig`, `TuneRunConfig`): ``--set key=value`` overrides applied,
    every key checked, ``strategy`` made a `StrategyConfig` by `strategy_from_run_file`.

    Args:
        cls: the command's config dataclass; it has a ``strategy`` field.
        path: the run file.
        overrides: ``key=value`` items, e.g. ``train.epochs=3``, ``strategy=laptop.toml``.
        command: "train" or "tune", for the messages about the other command's tables.

    Raises:
        ConfigError: an unreadable file, an unknown key, a wrong type, a spelling of the old tune file.
    """
    source = os.fspath(path)
    data = apply_overrides(load_toml(source), list(overrides))
    _check_tables(data, source, command)
    strategy = strategy_from_run_file(data.pop("strategy", "auto"), source=source, base_dir=folder_of(source))
    return dataclasses.replace(from_mapping(cls, data, source=source), strategy=strategy)


def strategy_from_run_file(value: Any, *, source: str, base_dir: str | os.PathLike | None) -> StrategyConfig:
    """A run file's ``strategy``: a ``[strategy]`` table, a preset file ("x.toml") or a strategy name.

    Raises:
        ConfigError: a value of another type, a missing preset, or a preset path without ``.toml``.
    """
    if isinstance(value, StrategyConfig):
        return value
    if isinstance(value, Mapping):
        return from_mapping(StrategyConfig, value, source=source, prefix="strategy.")
    if not isinstance(value, str):
        raise ConfigError(f"'strategy' must be a name, a preset file or a table, got {value!r}",
                          where=f"{source}, strategy", fix=_STRATEGY_FORMS)
    if value.endswith(".toml"):
        return load_strategy_preset(find_preset(value, base_dir))
    if "/" in value or os.sep in value:  # the old tune file's spelling of a preset: "strategies/laptop"
        raise ConfigError(f"strategy {value!r} is neither a strategy name nor a preset file (a preset file's "
                          "name ends in .toml)", where=f"{source}, strategy", fix=f'write strategy = "{value}.toml"')
    return StrategyConfig(name=value)  # an unknown name is an error when the Scale is built, listing the names


_STRATEGY_FORMS = ('strategy = "mirrored" (a name, `tfscale info` lists them), strategy = "laptop.toml" (a preset '
                   'file, or one shipped with tfscale), or a [strategy] table')


def _check_tables(data: Mapping[str, Any], source: str, command: str) -> None:
    for other, tables in COMMAND_TABLES.items():
        found = [t for t in tables if t in data] if other != command else []
        if found:
            hint = " (a search exports its best model with tune.export)" if found[0] == "export" else ""
            raise ConfigError(f"[{found[0]}] is read by `tfscale {other}`, and this is `tfscale {command}`",
                              where=f"{source}, {found[0]}",
                              fix=f"remove [{found[0]}], or run `tfscale {other} {source}`{hint}")
    if isinstance(data.get("data"), str):  # the old tune file: data = "module:function" returning both
        raise ConfigError(f"data = {data['data']!r}: in a run file, data is a table, as for `tfscale train`",
                          where=f"{source}, data",
                          fix='write [data] with train = "module:train_function" and validation = '
                              '"module:validation_function" (each returns unbatched examples)')
