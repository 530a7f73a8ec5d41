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
import os
from collections.abc import Mapping

from tfscale import config as config_lib
from tfscale.config import StrategyConfig, TuneConfig
from tfscale.config.functions import load_function
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
        base = os.path.dirname(os.path.abspath(path))  # the run file's folder, then the working directory
        return config_lib.load_strategy_preset(config_lib.find_preset(value, base))
    raise ConfigError("'strategy' must be a table or the path of a preset", where=path,
                      fix='[strategy] name = "mirrored", or strategy = "laptop.toml" (a file or a shipped preset)')


def run(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()):
    """Runs the search a run file describes (this process's part of it, under `tfscale tune --workers`).

    Returns:
        The `TuneResult`.
    """
    spec = load_run(path, overrides)
    scale = Scale(config=spec.strategy)  # first: logical CPU devices exist only if made before TF starts
    base_dir = os.path.dirname(os.path.abspath(spec.path))
    build_model = load_function(spec.model, where=f"{spec.path}, model", base_dir=base_dir)
    load_data = load_function(spec.data, where=f"{spec.path}, data", base_dir=base_dir)
    train, validation = _split(load_data(), spec.data)
    return tune(build_model, train, validation, scale=scale, config=spec.tune)


def _split(data, where: str):
    if isinstance(data, Mapping) and "train" in data:
        return data["train"], data.get("validation")
    if isinstance(data, tuple) and len(data) == 2:
        return data
    raise ConfigError(f"the data function returned a {type(data).__name__}", where=where,
                      fix="return (train, validation), or {'train': ..., 'validation': ...}")
