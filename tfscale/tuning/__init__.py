"""Hyperparameter search with keras-tuner, under a Scale and across tuner processes.

    result = tfscale.tune(build_model, train, validation, tuner="hyperband", objective="val_accuracy",
                          scale=tfscale.Scale("mirrored", replicas=2), global_batch_size=64, epochs=4)

`tfscale tune run.toml [--workers N]` runs the same search from a file, in one
process or as a chief oracle and N tuner workers on this machine.
keras-tuner (the ``tune`` extra) is imported only when a search runs.
"""

from tfscale.tuning.results import TrialRow, TuneResult
from tfscale.tuning.search import export_model, tune

__all__ = ["TrialRow", "TuneResult", "export_model", "tune"]
