"""`tfscale tune run.toml`: a search described by a file.

A run file names the model and the data as ``module:function`` (a module
importable from the run file's folder, or a ``path/to/file.py``), the
strategy, and the search::

    model = "digits_model:build_model"     # hp (and scale=, if it asks) -> compiled keras.Model
    data = "digits_model:load_data"        # () -> (train, validation), unbatched examples

    [strategy]                             # a StrategyConfig table, or strategy = "strategies/laptop.toml"
    name = "mirrored"
    replicas = 2

    [tune]                                 # TuneConfig
    tuner = "hyperband"
    objective = "val_accuracy"

Relative paths of ``model``, ``data`` and a strategy preset are read from the
run file's folder; the search's ``directory`` and ``export`` from the working directory.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping

from tfscale import config as config_lib
from tfscale.config import StrategyConfig, TuneConfig
from tfscale.errors import ConfigError
from tfscale.scale import Scale
from tfscale.tuning.search import tune

RUN_KEYS = ("model", "data", "strategy", "tune")


@dataclasses.dataclass(frozen=True)
class TuneRun:
    """A run file, read and checked.

    Attributes:
        path: the run file.
        model: the model-building function, "module:function" or "file.py:function".
        data: the function returning (train, validation).
        strategy: how every trial is distributed.
        tune: the search.
    """

    path: str
    model: str
    data: str
    strategy: StrategyConfig
    tune: TuneConfig

    @property
    def project_dir(self) -> str:
        return os.path.join(self.tune.directory, self.tune.project_name)


def load_run(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> TuneRun:
    """Reads a run file and ``--set key=value`` overrides (e.g. ``tune.max_trials=4``).

    Raises:
        ConfigError: a missing or unknown key, a value of the wrong type, an unreadable preset.
    """
    path = os.fspath(path)
    data = config_lib.apply_overrides(config_lib.load_toml(path), list(overrides))
    unknown = sorted(set(data) - set(RUN_KEYS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in a tune run file", where=path,
                          fix=f"use only: {', '.join(RUN_KEYS)} (search options go in the [tune] table)")
    for key in ("model", "data"):
        if not isinstance(data.get(key), str) or ":" not in data[key]:
            raise ConfigError(f"{key!r} must be a string 'module:function'", where=f"{path}, {key}",
                              fix=f'e.g. {key} = "my_model:{"build_model" if key == "model" else "load_data"}"')
    tune = data.get("tune", {})
    if not isinstance(tune, Mapping):
        raise ConfigError("'tune' must be a table", where=path, fix="write the search options under [tune]")
    return TuneRun(path=path, model=data["model"], data=data["data"], strategy=_strategy(data.get("strategy"), path),
                   tune=config_lib.from_mapping(TuneConfig, tune, source=path, prefix="tune."))


def _strategy(value, path: str) -> StrategyConfig:
    if value is None:
        return StrategyConfig()
    if isinstance(value, Mapping):
        return config_lib.from_mapping(StrategyConfig, value, source=path, prefix="strategy.")
    if isinstance(value, str):
        preset = os.path.join(os.path.dirname(os.path.abspath(path)), value)
        return config_lib.load_strategy_preset(preset if os.path.exists(preset) else value)
    raise ConfigError("'strategy' must be a table or the path of a preset", where=path,
                      fix='write [strategy] name = "mirrored", or strategy = "strategies/laptop.toml"')


def resolve(ref: str, base_dir: str, where: str) -> Callable:
    """The function `ref` ("module:function" or "file.py:function") names."""
    module_name, _, attr = ref.rpartition(":")
    if module_name.endswith(".py"):
        file = os.path.join(base_dir, module_name)
        if not os.path.isfile(file):
            raise ConfigError(f"no file {file}", where=where, fix="give the .py file's path from the run file's folder")
        spec = importlib.util.spec_from_file_location(os.path.basename(file)[:-3], file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        if base_dir not in sys.path:
            sys.path.insert(0, base_dir)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if not e.name or not (module_name + ".").startswith(e.name + "."):
                raise  # something the user's module imports is missing
            raise ConfigError(f"cannot import {module_name!r}", where=where,
                              fix=f"put {module_name}.py beside the run file, or give a path to a .py file") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"{module_name!r} has no function {attr!r}", where=where, fix="check the name after ':'")
    return function


def run(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()):
    """Runs the search a run file describes (this process's part of it, under `tfscale tune --workers`).

    Returns:
        The `TuneResult`.
    """
    spec = load_run(path, overrides)
    scale = Scale(config=spec.strategy)  # first: logical CPU devices exist only if made before TF starts
    base_dir = os.path.dirname(os.path.abspath(spec.path))
    build_model = resolve(spec.model, base_dir, f"{spec.path}, model")
    load_data = resolve(spec.data, base_dir, f"{spec.path}, data")
    train, validation = _split(load_data(), spec.data)
    return tune(build_model, train, validation, scale=scale, config=spec.tune)


def _split(data, where: str):
    if isinstance(data, Mapping) and "train" in data:
        return data["train"], data.get("validation")
    if isinstance(data, tuple) and len(data) == 2:
        return data
    raise ConfigError(f"the data function returned a {type(data).__name__}", where=where,
                      fix="return (train, validation), or {'train': ..., 'validation': ...}")
