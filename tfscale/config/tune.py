"""`TuneConfig`: a hyperparameter search (`tfscale.tune`, the ``[tune]`` table); `TuneRunConfig`: a whole
`tfscale tune run.toml`, read by the loader and rules of every run file (`tfscale.config.runfile`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tfscale.config.loading import check_choice as _check_choice
from tfscale.config.run import RunFile
from tfscale.config.runfile import read_run_file
from tfscale.errors import ConfigError
from tfscale.vocabulary import TUNERS, Tuner


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A hyperparameter search (`tfscale.tune` options; the ``[tune]`` table of `tfscale tune run.toml`).

    Attributes:
        tuner: "hyperband", "random" or "bayesian".
        objective: the metric to optimize, e.g. "val_accuracy".
        direction: "max" or "min"; "" infers it from the objective's name.
        max_trials: trials for random and bayesian search (Hyperband's count follows from epochs and factor).
        epochs: epochs per trial (Hyperband: the most any trial gets); also for retraining.
        factor: Hyperband's reduction factor between rounds.
        global_batch_size: examples per step over all replicas, the same in every trial (the batch contract).
        executions_per_trial: trainings per trial, averaged.
        seed: the oracle's random seed (None: random; a resumed search keeps its own).
        directory: where searches live; the project is ``directory/project_name``.
        project_name: the search's name; rerunning the same one continues it.
        overwrite: delete a previous search of that name instead of continuing it.
        retrain: train the best model again from scratch for `epochs` after the search.
        export: where the best model goes: "" (only ``best_model.keras`` in the project),
            or a path ("x.keras", "x.tflite", or a folder for every TFLite variant), or a
            table {path, quantize, modes}.
    """

    tuner: Tuner = "hyperband"
    objective: str = "val_loss"
    direction: str = ""
    max_trials: int = 10
    epochs: int = 10
    factor: int = 3
    global_batch_size: int = 64
    executions_per_trial: int = 1
    seed: int | None = None
    directory: str = "tuning"
    project_name: str = "search"
    overwrite: bool = False
    retrain: bool = False
    export: str | dict[str, Any] = ""

    def __post_init__(self):
        _check_choice("tune.tuner", self.tuner, TUNERS)
        _check_choice("tune.direction", self.direction, ("", "max", "min"))
        for key, low in (("max_trials", 1), ("epochs", 1), ("factor", 2), ("global_batch_size", 1),
                         ("executions_per_trial", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key} must be at least {low}, got {getattr(self, key)}", where=f"tune.{key}",
                                  fix=f"give a whole number >= {low}")
        if not self.objective or not self.project_name:
            raise ConfigError("objective and project_name must not be empty", where="tune",
                              fix='e.g. objective = "val_accuracy", project_name = "digits"')
        export = {"path": self.export} if isinstance(self.export, str) else dict(self.export)
        unknown = sorted(set(export) - {"path", "quantize", "modes"})
        if unknown or (len(export) > 1 and not export.get("path")):
            raise ConfigError(f"export {self.export!r} is not a path or a table with a path", where="tune.export",
                              fix='give export = "best.tflite", or {path = "out/", modes = ["float32", "int8"]}')

    @property
    def export_spec(self) -> dict[str, Any] | None:
        """`export` as a table {path, quantize?, modes?}, or None for no export."""
        spec = {"path": self.export} if isinstance(self.export, str) else dict(self.export)
        return spec if spec.get("path") else None


@dataclasses.dataclass(frozen=True)
class TuneRunConfig(RunFile):
    """A whole `tfscale tune run.toml`: the keys of every run file (`RunFile`: model, model_args, strategy,
    [data]), meaning what they mean in a `tfscale train` file, then ``[tune]`` in place of ``[train]`` and
    ``[export]``. The model function takes the hyperparameters first: ``build_model(hp)``, or
    ``build_model(hp, scale)``.

    Attributes:
        tune: the ``[tune]`` table.
    """

    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)

    @property
    def project_dir(self) -> str:
        """The search's folder, ``tune.directory/tune.project_name``."""
        return os.path.join(self.tune.directory, self.tune.project_name)


def load_tune_run_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> TuneRunConfig:
    """Loads a `tfscale tune` run file, with ``--set key=value`` overrides (e.g. ``tune.max_trials=4``).

    Raises:
        ConfigError: a missing or unknown key, a value of the wrong type, an unreadable preset, or the old
            tune file's ``data = "module:function"`` (now a ``[data]`` table, as in a `tfscale train` file).
    """
    return read_run_file(TuneRunConfig, path, overrides, command="tune")
