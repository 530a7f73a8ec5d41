"""`tfscale tune run.toml`: a search described by a file.

A run file of `tfscale tune` has the keys of a `tfscale train` file, meaning the same and read by the same
loader (`tfscale.config.runfile`): the model and the data as ``module:function`` (a module importable from
the run file's folder, or a ``path/to/file.py``), the strategy, and the search::

    model = "digits_model:build_model"     # hp (and scale=, if it asks) -> compiled keras.Model

    [data]                                 # as in a train file: unbatched examples
    train = "digits_model:train_data"
    validation = "digits_model:validation_data"

    [strategy]                             # a StrategyConfig table, or strategy = "mirrored" (a name),
    name = "mirrored"                      # or strategy = "laptop.toml" (a preset file)
    replicas = 2

    [tune]                                 # TuneConfig
    tuner = "hyperband"
    objective = "val_accuracy"

Relative paths of ``model``, ``data`` and a strategy preset are read from the
run file's folder; the search's ``directory`` and ``export`` from the working directory.
"""

from __future__ import annotations

import functools
import os

from tfscale.config import TuneRunConfig, load_tune_run_config
from tfscale.config.functions import load_function
from tfscale.config.runfile import folder_of
from tfscale.scale import Scale
from tfscale.train.loading import load_data
from tfscale.tuning.search import tune

TuneRun = TuneRunConfig  # a run file, read and checked (its name before run files shared one loader)


def load_run(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> TuneRunConfig:
    """Reads a run file and ``--set key=value`` overrides (e.g. ``tune.max_trials=4``): `load_tune_run_config`.

    Raises:
        ConfigError: a missing or unknown key, a value of the wrong type, an unreadable preset.
    """
    return load_tune_run_config(path, overrides)


def run(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()):
    """Runs the search a run file describes (this process's part of it, under `tfscale tune --workers`).

    Returns:
        The `TuneResult`.
    """
    spec = load_run(path, overrides)
    scale = Scale(config=spec.strategy)  # first: logical CPU devices exist only if made before TF starts
    base_dir = folder_of(path)
    build_model = load_function(spec.model, where=f"{os.fspath(path)}, model", base_dir=base_dir)
    if spec.model_args:
        build_model = functools.update_wrapper(functools.partial(build_model, **spec.model_args), build_model)
    train, validation = load_data(spec.data, base_dir=base_dir)
    return tune(build_model, train, validation, scale=scale, config=spec.tune)
